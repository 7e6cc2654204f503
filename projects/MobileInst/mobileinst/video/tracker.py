# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Online video instance segmentation with the PyTorch model: the online tracker
of :mod:`mobileinst_core.online_tracker` (kernel reuse every T frames, kernel
association between keyframes, track bookkeeping; shared with the ONNX
runtime) driven by the model.

* a keyframe runs the whole model: X6, X_mask, the dual instance decoder ->
  kernels K, scores, class scores;
* every frame gets the masks of the tracked kernels: on the keyframe from its
  own X_mask, on the T-1 frames after it from their X_mask (only the backbone
  and the mask decoder run, ``M_{t+i} = K_t . X_mask^{t+i}``). Beyond the paper,
  ``nonkey_scale`` < 1 runs those frames at a smaller size (the kernels are 1x1
  dynamic convs, so they apply at any scale) and pastes their masks at the full
  size.
"""
import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.structures import Boxes, Instances
from mobileinst_core.sizes import nonkey_size
from mobileinst_core.online_tracker import Keyframe, OnlineTracker, TrackerSettings

from ..config import build_tracker_settings
from ..postprocess import binarize_masks
from .keyframe import keyframe_scores


class VideoTracker(OnlineTracker):
    @configurable
    def __init__(self, model, *, settings: TrackerSettings, output_size=None, keep_results: bool = True):
        """
        Args:
            model: a :class:`mobileinst.MobileInst` (or ``MobileInstVideo``) in eval mode.
            settings: the video settings (:func:`mobileinst.config.build_tracker_settings`).
            output_size: (height, width) of the returned masks; default the
                size of the input frames.
            keep_results: keep per-frame RLEs for :meth:`ytvis_result`.

        ``VideoTracker(cfg, model, ...)`` builds the settings from the config;
        :meth:`from_model` takes a ``MobileInstVideo``'s (from the config it was built from).
        """
        self.model = model
        self.nonkey_scale = float(settings.nonkey_scale)
        self.output_size = output_size if output_size and None not in output_size else None
        super().__init__(settings, self._run_keyframe, self._frame_masks, keep_results)

    @classmethod
    def from_config(cls, cfg, model, output_size=None, keep_results: bool = True):
        return {"model": model, "settings": build_tracker_settings(cfg), "output_size": output_size,
                "keep_results": keep_results}

    @classmethod
    def from_model(cls, model, output_size=None, keep_results: bool = True, **overrides):
        """The tracker of ``model``'s settings (``model.tracker_settings``, from its
        config), with ``overrides`` of :class:`~mobileinst_core.online_tracker.TrackerSettings` fields."""
        if getattr(model, "tracker_settings", None) is None:
            raise ValueError(f"{type(model).__name__} has no tracker_settings (MobileInstVideo has); "
                             "use VideoTracker(cfg, model)")
        return cls(model, settings=model.tracker_settings.replace(**overrides), output_size=output_size,
                   keep_results=keep_results)

    @property
    def kernels(self):
        """K of the last keyframe in slot order, (N, D), on the model's device."""
        return None if self.slot_kernels is None else torch.from_numpy(self.slot_kernels).to(self.model.device)

    # ------------------------------------------------------------ the two callables
    def _run_keyframe(self, frame: torch.Tensor) -> Keyframe:
        model = self.model
        images = model.preprocess([frame])
        x6, x_mask = model.encode(images.tensor)
        out = model.instance_decoder(x6, x_mask)
        scores, _, per_class = keyframe_scores(model, out, x_mask)
        return Keyframe(_np(out["pred_kernels"][0]), _np(scores), _np(per_class), _np(x_mask[0]),
                        context=(images, x_mask))

    def _frame_masks(self, frame: torch.Tensor, kernels: np.ndarray, keyframe):
        model = self.model
        if keyframe is not None:
            images, x_mask = keyframe
        else:
            if self.nonkey_scale != 1.0:
                frame = rescale_frame(frame, self.nonkey_scale)
            images = model.preprocess([frame])
            _, x_mask = model.encode(images.tensor)
        out_size = tuple(int(s) for s in (self.output_size or self.frame_size))
        if not len(kernels):
            return np.zeros((0,) + out_size, dtype=bool), torch.zeros((0, 4))
        k = torch.from_numpy(kernels).to(device=x_mask.device, dtype=x_mask.dtype)
        mask_logits = model.mask_logits(k[None], x_mask)[0]
        masks, boxes = binarize_masks(mask_logits.sigmoid(), images.tensor.shape[-2:], images.image_sizes[0],
                                      out_size, self.settings.mask_threshold)
        return masks.cpu().numpy(), boxes.cpu()  # one device for every field, whatever the model's

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
        out = self.track(frame, frame.shape[-2:])
        inst = Instances(tuple(int(s) for s in (self.output_size or self.frame_size)))
        inst.pred_masks = torch.from_numpy(out.masks)
        inst.pred_boxes = Boxes(out.boxes)
        inst.scores = torch.from_numpy(out.scores)
        inst.pred_classes = torch.from_numpy(out.classes)
        inst.track_ids = torch.from_numpy(out.slots)
        return inst


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def rescale_frame(frame: torch.Tensor, scale: float) -> torch.Tensor:
    """(C, H, W) frame resized by ``scale`` with OpenCV's bilinear filter (the
    ONNX runtime's letterbox resize, so that both paths see the same pixels)."""
    h, w = nonkey_size(frame.shape[-2], frame.shape[-1], scale)  # the exported non-keyframe graph's size
    arr = cv2.resize(np.ascontiguousarray(frame.permute(1, 2, 0).cpu().numpy()), (w, h), interpolation=cv2.INTER_LINEAR)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1)
