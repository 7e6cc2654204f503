# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""``DATASETS.TRAIN_RATIOS``: the shares of the training samples drawn from each
set of ``DATASETS.TRAIN`` (e.g. YouTube-VIS videos and COCO pseudo videos).

detectron2 0.7's own option (``DATASETS.TRAIN_REPEAT_FACTOR`` with
``DATALOADER.SAMPLER_TRAIN "WeightedTrainingSampler"``) multiplies each set by a
repeat factor, so the shares still follow the sets' sizes, and it loads every
set a second time. Here the shares r_k are given and set k's n_k samples (N in
all) get the repeat factor r_k * N / n_k: in expectation a share r_k of the
samples comes from set k, in epochs of about N samples. detectron2's
``RepeatFactorTrainingSampler`` draws them (stochastic rounding per epoch,
shuffled, seeded like detectron2's TrainingSampler).
"""
from typing import Optional, Sequence

import torch
from detectron2.data.samplers import RepeatFactorTrainingSampler

__all__ = ["ratio_repeat_factors", "build_train_sampler"]


def ratio_repeat_factors(sizes: Sequence[int], ratios: Sequence[float]) -> torch.Tensor:
    """Per sample of the concatenated sets (``sizes`` samples each), the repeat
    factor that draws set k with the share ``ratios[k] / sum(ratios)``."""
    if len(sizes) != len(ratios):
        raise ValueError(f"DATASETS.TRAIN_RATIOS {tuple(ratios)}: expected one ratio per set of "
                         f"DATASETS.TRAIN ({len(sizes)})")
    if any(r <= 0 for r in ratios) or any(n <= 0 for n in sizes):
        raise ValueError(f"DATASETS.TRAIN_RATIOS {tuple(ratios)} for sets of {tuple(sizes)} samples: "
                         "expected positive ratios and non-empty sets")
    total, norm = float(sum(sizes)), float(sum(ratios))
    return torch.cat([torch.full((n,), r / norm * total / n) for n, r in zip(sizes, ratios)])


def build_train_sampler(cfg, sizes: Sequence[int]) -> Optional[RepeatFactorTrainingSampler]:
    """The sampler of ``DATASETS.TRAIN_RATIOS`` for sets of ``sizes`` samples (in the
    order of ``DATASETS.TRAIN``), or None without ratios (detectron2 then builds
    the sampler that ``DATALOADER.SAMPLER_TRAIN`` names)."""
    ratios = tuple(cfg.DATASETS.TRAIN_RATIOS)
    if not ratios:
        return None
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ValueError(f"DATASETS.TRAIN_RATIOS {ratios} replaces DATALOADER.SAMPLER_TRAIN, "
                         f"which is {cfg.DATALOADER.SAMPLER_TRAIN!r}: set it to 'TrainingSampler'")
    return RepeatFactorTrainingSampler(ratio_repeat_factors(sizes, ratios))
