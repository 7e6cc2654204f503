# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Online video instance segmentation: kernel reuse + kernel association.

Frames arrive one at a time. Every T-th frame (T = REUSE_INTERVAL) is a
keyframe: the whole model runs and gives kernels K_t, class scores and
objectness. On the T-1 frames after it only the backbone and the mask
decoder run, and the keyframe's kernels are reused:
``M_{t+i} = K_t . X_mask^{t+i}``. Beyond the paper, ``nonkey_scale`` < 1 runs
those frames at a smaller size (the kernels are 1x1 dynamic convs, so they
apply at any scale) and pastes their masks at the full size.

Track identity = query slot. At each keyframe the new kernels are matched to
the previous keyframe's by cosine similarity with a one-to-one (Hungarian)
assignment and permuted into the slots they continue (kernel association);
without association slot i is simply query i. Class scores are averaged over
keyframes per slot (MinVIS).

State is O(N x (D + C)): the memory of a stream does not grow with its length,
unless ``keep_results`` asks the tracker to keep the per-frame RLEs of the
YouTube-VIS output (those grow with the video, as the output itself does).
"""

import cv2
import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from mobileinst_runtime.tracking import TrackBook

from ..export import nonkey_size
from ..postprocess import binarize_masks
from .association import associate


class VideoTracker:
    def __init__(self, model, reuse_interval: int = 3, association: bool = True, max_tracks: int = 10,
                 track_score_threshold: float = 0.05, output_size=None, keep_results: bool = True,
                 reuse_global_features: bool = False, association_mask_weight: float = 0.0,
                 association_score_threshold: float = 0.2, association_min_iou: float = 0.1,
                 nonkey_scale: float = 1.0):
        """
        Args:
            model: a :class:`mobileinst.MobileInst` in eval mode.
            reuse_interval: T; 1 runs the instance decoder on every frame.
            association: match keyframe kernels to the previous keyframe's.
            max_tracks: (slot, class) pairs kept in :meth:`ytvis_result`.
            track_score_threshold: slots whose keyframe score is below this
                produce no mask on that keyframe's frames.
            output_size: (height, width) of the returned masks; default the
                size of the input frames.
            keep_results: keep per-frame RLEs for :meth:`ytvis_result`.
            reuse_global_features: non-keyframes also reuse the keyframe's X6.
            association_mask_weight: > 0 matches confident tracks first, on
                cosine + this weight x (1 - mask IoU) (0: the paper's cosine
                only); see :func:`mobileinst_runtime.tracking.associate`.
            association_score_threshold: keyframe score of a confident track.
            association_min_iou: least mask IoU of a confident pair.
            nonkey_scale: non-keyframes run the backbone and mask decoder on the
                frame resized by this factor (beyond the paper; 1 = full size).
                The keyframe's kernels apply at any scale (1x1 dynamic convs),
                and the masks are pasted at the full frame size.
        """
        if int(reuse_interval) < 1:
            raise ValueError(f"REUSE_INTERVAL must be >= 1, got {reuse_interval}")
        if not 0.0 < float(nonkey_scale) <= 1.0:
            raise ValueError(f"NONKEY_SCALE must be in (0, 1], got {nonkey_scale}")
        self.nonkey_scale = float(nonkey_scale)
        self.model = model
        self.reuse_interval = int(reuse_interval)
        self.association = association
        self.max_tracks = max_tracks
        self.track_score_threshold = track_score_threshold
        self.output_size = output_size if output_size and None not in output_size else None
        self.keep_results = keep_results
        self.reuse_global_features = reuse_global_features
        self.association_kwargs = {
            "mask_weight": float(association_mask_weight),
            "score_threshold": float(association_score_threshold),
            "min_iou": float(association_min_iou),
            "mask_threshold": float(model.mask_threshold),
        }
        self.reset()

    @classmethod
    def from_model(cls, model, **overrides):
        cfg = dict(model.video_cfg)
        cfg.update(overrides)
        return cls(model, **cfg)

    def reset(self):
        self.frame_index = 0
        self.input_size = None
        self.kernels = None  # K of the last keyframe, in slot order
        self.x6 = None  # X6 of the last keyframe
        self.frame_scores = None  # (N,) scores of the last keyframe, slot order
        self.class_scores = None  # (N, C) class scores averaged over keyframes
        self.book = TrackBook(self.max_tracks, self.keep_results)

    @property
    def results(self):
        return self.book.results

    # ----------------------------------------------------------------------
    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> Instances:
        """Segment one frame (C, H, W, model input format). Returns its instances.

        The returned Instances (at ``output_size``) hold the tracked slots whose
        keyframe score passes ``track_score_threshold``: ``pred_masks``,
        ``pred_boxes``, ``scores``, ``pred_classes`` (argmax of the averaged
        class scores) and ``track_ids`` (the slot), all on the CPU whatever
        the model's device.
        """
        model = self.model
        size = tuple(frame.shape[-2:])
        if self.input_size is None:
            self.input_size = size
        elif size != self.input_size:
            raise ValueError(
                f"Frame {self.frame_index} has size {size[1]}x{size[0]} (WxH) but the stream started at "
                f"{self.input_size[1]}x{self.input_size[0]}; start a new stream (reset()) for a new size"
            )
        keyframe = self.frame_index % self.reuse_interval == 0
        if not keyframe and self.nonkey_scale != 1.0:
            frame = rescale_frame(frame, self.nonkey_scale)
        images = model.preprocess([frame])
        reuse_x6 = self.x6 if (self.reuse_global_features and not keyframe) else None
        x6, x_mask = model.encode(images.tensor, x6=reuse_x6)
        if keyframe:
            self._keyframe(x6, x_mask)
            self.x6 = x6 if self.reuse_global_features else None
        out_size = self.output_size or size
        slots = torch.nonzero(self.frame_scores > self.track_score_threshold).flatten()
        mask_logits = model.mask_logits(self.kernels[slots][None], x_mask)[0]
        if slots.numel():
            masks, boxes = binarize_masks(mask_logits.sigmoid(), images.tensor.shape[-2:], images.image_sizes[0],
                                          out_size, model.mask_threshold)
            masks, boxes = masks.cpu(), boxes.cpu()  # one device for every field, whatever the model's
        else:
            masks = torch.zeros((0,) + tuple(int(s) for s in out_size), dtype=torch.bool)
            boxes = torch.zeros((0, 4))
        inst = Instances(tuple(int(s) for s in out_size))
        inst.pred_masks = masks
        inst.pred_boxes = Boxes(boxes)
        inst.scores = self.frame_scores[slots].cpu()
        inst.pred_classes = self.class_scores[slots.cpu()].argmax(-1)
        inst.track_ids = slots.cpu()
        if self.keep_results:
            self.book.add_frame(masks.numpy(), slots.tolist())
        self.frame_index += 1
        return inst

    def _keyframe(self, x6, x_mask):
        out = self.model.instance_decoder(x6, x_mask)
        kernels = out["pred_kernels"][0]
        scores, _, per_class = self.model.keyframe_scores(out, x_mask)
        if self.association and self.kernels is not None:
            perm = associate(self.kernels, kernels, x_mask[0], self.frame_scores, scores,
                             **self.association_kwargs)
            kernels, scores, per_class = kernels[perm], scores[perm], per_class[perm]
        self.kernels = kernels
        self.frame_scores = scores
        self.book.add_keyframe(per_class.float().cpu().numpy())
        self.class_scores = torch.from_numpy(self.book.mean_class_scores())

    # ----------------------------------------------------------------------
    def ytvis_result(self, video_id=None) -> dict:
        """The YouTube-VIS prediction of the frames seen so far.

        Returns {"video_id", "tracks": [{"score", "category_id" (contiguous),
        "track_id" (slot), "segmentations": [RLE or None per frame]}]}: the
        top ``max_tracks`` (slot, class) pairs by class score averaged over
        keyframes.
        """
        return self.book.ytvis_result(video_id)


def rescale_frame(frame: torch.Tensor, scale: float) -> torch.Tensor:
    """(C, H, W) frame resized by ``scale`` with OpenCV's bilinear filter (the
    ONNX runtime's letterbox resize, so that both paths see the same pixels)."""
    h, w = nonkey_size(frame.shape[-2], frame.shape[-1], scale)  # the exported non-keyframe graph's size
    arr = cv2.resize(np.ascontiguousarray(frame.permute(1, 2, 0).cpu().numpy()), (w, h), interpolation=cv2.INTER_LINEAR)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1)
