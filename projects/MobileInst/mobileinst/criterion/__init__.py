# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Training losses (:class:`SetCriterion`) and the bipartite matching they use (:class:`HungarianMatcher`)."""
from .matcher import HungarianMatcher, batch_indices, pairwise_dice  # noqa: F401
from .set_criterion import SetCriterion, dice_loss, mask_covers, mask_iou  # noqa: F401
