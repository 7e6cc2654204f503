# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Streaming video predictor and frame sources.

    predictor = StreamingPredictor(cfg)            # like DefaultPredictor
    for index, frame in iter_frames("video.mp4"):   # or a folder, or 0 (camera)
        instances = predictor(frame)                # BGR uint8 -> Instances with track_ids
"""
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from mobileinst_core.frames import check_frame, iter_frames, video_fps  # noqa: F401  (re-exported)

from ..predictor import check_predictor_config
from ..utils.checkpoint import load_weights
from ..utils.fuse import fuse_conv_bn
from .tracker import VideoTracker


class StreamingPredictor:
    """Online video instance segmentation of a frame stream, one frame per call.

    Like detectron2's DefaultPredictor: builds the model from ``cfg``, loads
    ``cfg.MODEL.WEIGHTS`` (as data, and only if it fits the model), resizes
    frames with ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``; frames are HxWx3
    BGR uint8 numpy arrays (cv2), anything else is refused with an error that
    says what was given. NUM_CLASSES must match the classes of
    ``DATASETS.TEST[0]`` (class names) when they are known. Tracking follows
    ``MODEL.MOBILEINST.VIDEO`` (REUSE_INTERVAL, ASSOCIATION). Memory does not
    grow with the stream unless ``keep_results`` is set (for a YouTube-VIS json).

    The model it builds has BatchNorm folded into the convolutions once the
    weights are loaded (:func:`mobileinst.utils.fuse.fuse_conv_bn`, as the
    export does); a ``model`` given to it is used as it is.
    """

    def __init__(self, cfg, keep_results: bool = False, model=None):
        check_predictor_config(cfg)
        self.cfg = cfg.clone()
        if model is None:
            model = build_model(self.cfg)
            load_weights(model, cfg.MODEL.WEIGHTS)
            model = fuse_conv_bn(model, inplace=True)  # after the weights: BN folded as in the export
        self.model = model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.keep_results = keep_results
        self.tracker = None

    def reset(self):
        self.tracker = None

    @torch.no_grad()
    def __call__(self, frame_bgr: np.ndarray):
        index = 0 if self.tracker is None else self.tracker.frame_index
        check_frame(frame_bgr, f"Frame {index}")
        h, w = frame_bgr.shape[:2]
        if self.tracker is None:
            self.tracker = VideoTracker(self.cfg, self.model, output_size=(h, w), keep_results=self.keep_results)
        elif (h, w) != tuple(self.tracker.output_size):
            raise ValueError(
                f"Frame {self.tracker.frame_index} is {w}x{h} (WxH) but the stream is "
                f"{self.tracker.output_size[1]}x{self.tracker.output_size[0]}"
            )
        image = frame_bgr[:, :, ::-1] if self.input_format == "RGB" else frame_bgr
        image = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return self.tracker.step(tensor)

    def top_tracks(self):
        """(slot, class, score) of the top tracks so far (``OnlineTracker.top_tracks``)."""
        return [] if self.tracker is None else self.tracker.top_tracks()

    def ytvis_result(self, video_id=None):
        if self.tracker is None:
            return {"video_id": video_id, "tracks": []}
        return self.tracker.ytvis_result(video_id)
