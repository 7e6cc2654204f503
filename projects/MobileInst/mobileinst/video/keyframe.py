# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""What a keyframe gives the tracker: the scores of its N queries.

Used by the PyTorch tracker (:class:`mobileinst.video.VideoTracker`) and the
exported keyframe graph (``mobileinst.export``), for any MobileInst model.
"""
from typing import Dict, Tuple

import torch

from ..postprocess import class_scores, decay_duplicates, score_queries


def keyframe_scores(model, out: Dict[str, torch.Tensor], x_mask: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query of one frame: (scores (N,), classes (N,), class scores (N, C)).

    ``out``: the instance decoder's outputs on the frame, ``x_mask`` its X_mask.
    With INFERENCE.NMS_SIGMA > 0 (``model.nms_sigma``) the scores and class
    scores of same-class duplicate masks are decayed by Matrix NMS (masks on the
    mask grid), so that duplicates of one object do not become tracks of their own.
    """
    logits, objectness = out["pred_logits"][0], out["pred_objectness"][0]
    scores, classes = score_queries(logits, objectness)
    per_class = class_scores(logits, objectness)
    if model.nms_sigma > 0:
        probs = model.mask_logits(out["pred_kernels"][:1], x_mask[:1])[0].sigmoid()
        order = scores.argsort(descending=True)
        decayed, resort = decay_duplicates(scores[order], classes[order], probs[order], model.mask_threshold,
                                           model.nms_sigma)
        order = order[resort]
        factor = torch.zeros_like(scores).scatter(0, order, decayed / scores[order].clamp(min=1e-12))
        scores, per_class = scores * factor, per_class * factor[:, None]
    return scores, classes, per_class
