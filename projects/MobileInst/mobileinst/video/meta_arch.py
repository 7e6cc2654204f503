# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The MobileInst meta-architecture for video: the image model (:class:`mobileinst.MobileInst`)
with the paper's two video parts.

* Training, on frame pairs (t, t+d) (the YouTube-VIS mapper's): temporal query
  passing. Both frames run the whole model and are supervised as images (their
  own matching; the DEFAULT of MOBILEINST.md); frame t's global-stage queries
  Q_G^t also go through frame t+d's local stage (on its X_L) and, with frame
  t+d's X_mask, give masks that the criterion supervises by L_mask alone under
  frame t+d's assignment M^{t+d} ("_qp" losses). No new parameters.
* Inference, on a clip ("image" a list of frames): online segmentation and
  tracking with kernel reuse every T frames and kernel association between
  keyframes (:class:`mobileinst.video.VideoTracker`, the tracker of
  :mod:`mobileinst_core.online_tracker`), settings in MODEL.MOBILEINST.VIDEO.

Images (dicts whose "image" is a tensor) go to the image model as they are,
so one config can train on videos and evaluate on images.
"""
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from mobileinst_core.online_tracker import TrackerSettings

from ..config import build_tracker_settings
from ..mobileinst import MobileInst


@META_ARCH_REGISTRY.register()
class MobileInstVideo(MobileInst):
    @configurable
    def __init__(self, *, tracker_settings: TrackerSettings, **kwargs):
        """
        Args:
            tracker_settings: the video settings of :meth:`inference_video`
                (:func:`mobileinst.config.build_tracker_settings`).
            kwargs: those of :class:`mobileinst.MobileInst`.
        """
        super().__init__(**kwargs)
        self.tracker_settings = tracker_settings

    @classmethod
    def from_config(cls, cfg):
        return {**super().from_config(cfg), "tracker_settings": build_tracker_settings(cfg)}

    def forward(self, batched_inputs: List[dict]):
        if not batched_inputs or isinstance(batched_inputs[0]["image"], torch.Tensor):
            return super().forward(batched_inputs)
        if self.training:
            return self.query_passing_losses(batched_inputs)
        return [self.inference_video(x) for x in batched_inputs]

    # --------------------------------------------------------------- training
    def query_passing_losses(self, batched_inputs: List[dict]) -> Dict[str, torch.Tensor]:
        """Frame pairs ("image" and "instances" lists of two): the frames t then the
        frames t+d in one batch through the networks, then the criterion."""
        pairs = len(batched_inputs)
        frames = [x["image"][0] for x in batched_inputs] + [x["image"][1] for x in batched_inputs]
        insts = [x["instances"][0] for x in batched_inputs] + [x["instances"][1] for x in batched_inputs]
        images = self.preprocess(frames)
        targets = self.prepare_targets(insts, images.tensor.shape[-2:])
        x6, x_mask = self.encode(images.tensor)
        return self.criterion_losses(self.query_passing_outputs(x6, x_mask, pairs), targets)

    def query_passing_outputs(self, x6: torch.Tensor, x_mask: torch.Tensor, pairs: int) -> Dict[str, torch.Tensor]:
        """The outputs the criterion supervises on ``pairs`` frame pairs, the frames t
        ([:pairs]) then t+d ([pairs:]): every frame's instance predictions, and
        "passed_outputs", the masks of frame t's Q_G^t through frame t+d's local
        stage with frame t+d's X_mask."""
        dec = self.instance_decoder
        size = x6.shape[-2:]
        q_global = dec.forward_global(x6)
        outputs = self.with_masks(dec.forward_local(q_global, x_mask, size), x_mask)
        passed = dec.forward_local(q_global[:pairs], x_mask[pairs:], size)
        outputs["passed_outputs"] = self.with_masks(passed, x_mask[pairs:])
        outputs["mask_features"] = x_mask
        return outputs

    # -------------------------------------------------------------- inference
    def inference_video(self, video: dict) -> dict:
        """Online inference on one clip: see :class:`mobileinst.video.VideoTracker`."""
        from .tracker import VideoTracker

        tracker = VideoTracker.from_model(self, output_size=(video.get("height"), video.get("width")))
        for frame in video["image"]:
            tracker.step(frame)
        return tracker.ytvis_result(video.get("video_id"))
