# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Streaming video predictor and frame sources.

    predictor = StreamingPredictor(cfg)            # like DefaultPredictor
    for index, frame in iter_frames("video.mp4"):   # or a folder, or 0 (camera)
        instances = predictor(frame)                # BGR uint8 -> Instances with track_ids
"""
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from mobileinst_runtime.frames import iter_frames, video_fps  # noqa: F401  (re-exported)

from .tracker import VideoTracker

class StreamingPredictor:
    """Online video instance segmentation of a frame stream, one frame per call.

    Like detectron2's DefaultPredictor: builds the model from ``cfg``, loads
    ``cfg.MODEL.WEIGHTS``, resizes frames with ``INPUT.MIN_SIZE_TEST`` /
    ``MAX_SIZE_TEST``; frames are BGR uint8 (cv2). Tracking follows
    ``MODEL.MOBILEINST.VIDEO`` (REUSE_INTERVAL, ASSOCIATION). Memory does not
    grow with the stream unless ``keep_results`` is set (for a YouTube-VIS json).
    """

    def __init__(self, cfg, keep_results: bool = False, model=None):
        self.cfg = cfg.clone()
        if model is None:
            model = build_model(self.cfg)
            DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
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
        if frame_bgr is None or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise ValueError(f"Expected an HxWx3 BGR frame, got {None if frame_bgr is None else frame_bgr.shape}")
        h, w = frame_bgr.shape[:2]
        if self.tracker is None:
            self.tracker = VideoTracker.from_model(self.model, output_size=(h, w), keep_results=self.keep_results)
        elif (h, w) != tuple(self.tracker.output_size):
            raise ValueError(
                f"Frame {self.tracker.frame_index} is {w}x{h} (WxH) but the stream is "
                f"{self.tracker.output_size[1]}x{self.tracker.output_size[0]}"
            )
        image = frame_bgr[:, :, ::-1] if self.input_format == "RGB" else frame_bgr
        image = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return self.tracker.step(tensor)

    def ytvis_result(self, video_id=None):
        if self.tracker is None:
            return {"video_id": video_id, "tracks": []}
        return self.tracker.ytvis_result(video_id)
