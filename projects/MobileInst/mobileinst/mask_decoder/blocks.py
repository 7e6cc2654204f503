# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The mask decoders' building blocks, each chosen by config as a piece of its own:

* the fusion conv: :func:`conv_norm_act` (the paper's plain conv) or, with
  MASK_DECODER.DEPTHWISE (beyond the paper), :func:`depthwise_separable_conv`;
* the output layer X_mask = 1x1 conv: :class:`nn.Conv2d` (the paper's) or, with
  MASK_DECODER.COORD_FEATURES (beyond the paper, SparseInst's),
  :class:`CoordConv2d` on the features and 2 coordinate channels.
"""
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from torch import nn

from ..layers import get_norm


def conv_norm_act(in_ch: int, out_ch: int, k: int, norm: str) -> nn.Module:
    """k x k conv + norm + ReLU."""
    return Conv2d(in_ch, out_ch, k, padding=k // 2, bias=not norm, norm=get_norm(norm, out_ch),
                  activation=F.relu)


def depthwise_separable_conv(in_ch: int, out_ch: int, k: int, norm: str) -> nn.Module:
    """k x k depthwise conv + norm + ReLU, then 1x1 pointwise conv + norm + ReLU
    (a plain :func:`conv_norm_act` for k = 1)."""
    if k == 1:
        return conv_norm_act(in_ch, out_ch, k, norm)
    return nn.Sequential(
        Conv2d(in_ch, in_ch, k, padding=k // 2, groups=in_ch, bias=False, norm=get_norm(norm, in_ch),
               activation=F.relu),
        Conv2d(in_ch, out_ch, 1, bias=False, norm=get_norm(norm, out_ch), activation=F.relu),
    )


def fusion_conv(depthwise: bool):
    """The fusion conv of MASK_DECODER.DEPTHWISE."""
    return depthwise_separable_conv if depthwise else conv_norm_act


def coordinate_features(x: torch.Tensor) -> torch.Tensor:
    """Two channels of normalised (x, y) coordinates in [-1, 1], like x."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], 0).unsqueeze(0).expand(b, -1, -1, -1)


class CoordConv2d(nn.Conv2d):
    """1x1 conv of [x, coords] (2 coordinate channels appended, SparseInst's).

    The coordinates are the same for every image, so their share of the conv is
    computed once, on one (2, h, w) map, and added: the same function as the
    conv on the concatenation (whose weight it is), without a (B, C + 2, h, w)
    copy of ``x``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels + 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        coords = coordinate_features(x[:1])
        return F.conv2d(x, self.weight[:, :c], self.bias) + F.conv2d(coords, self.weight[:, c:])


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The paper's output layer: a 1x1 conv with a bias."""
    return nn.Conv2d(in_channels, out_channels, 1)


def output_layer(coord_features: bool):
    """X_mask's 1x1 output conv of MASK_DECODER.COORD_FEATURES: (in, out) -> module."""
    return CoordConv2d if coord_features else conv1x1
