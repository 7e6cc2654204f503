# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Normalisation layers by config name."""
import math

from detectron2.layers import get_norm as d2_get_norm
from torch import nn


def get_norm(norm: str, channels: int) -> nn.Module:
    """detectron2's ``get_norm``, except that "GN" uses gcd(32, channels) groups,
    so that it works for the narrow layers of mobile backbones (16, 24, 48 ...).

    BatchNorm over the tiny 1/64 token grid makes small-image, small-batch
    training depend on batch statistics (eval-mode outputs then collapse);
    "GN" has no batch dependence.
    """
    if norm == "GN":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return d2_get_norm(norm, channels)
