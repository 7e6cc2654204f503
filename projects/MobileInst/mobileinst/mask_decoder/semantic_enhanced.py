# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The paper's semantic-enhanced mask decoder: {X3, X4, X5, X6} -> X_mask (1/8).

    L_i = lateral_i(X_i), X_G = proj(X6)              (1x1 conv + norm + ReLU)
    top-down:   P5 = SE(L5, X_G), P4 = L4 + up(P5), P3 = L3 + up(P4); 3x3 conv
    bottom-up:  N3 = P3, N4 = P4 + down(N3), N5 = P5 + down(N4);      3x3 conv
    top-down:   O5 = SE(N5, X_G), O4 = N4 + up(O5), O3 = N3 + up(O4)
    X_mask = 1x1 conv(O3) -> KERNEL_DIM channels

with the semantic enhancer SE(X_l, X_G) = X_l * X_G + X_G (X_G resized to
X_l). Resampling is bilinear. The instance masks are M = K . X_mask.
The 3x3 fusion conv and the output conv are pieces chosen by config
(:mod:`mobileinst.mask_decoder.blocks`: MASK_DECODER.DEPTHWISE, COORD_FEATURES).
"""
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn

from ..features import global_feature_key
from . import MASK_DECODER_REGISTRY
from .blocks import conv1x1, conv_norm_act, fusion_conv, output_layer


def semantic_enhance(x_local: torch.Tensor, x_global: torch.Tensor) -> torch.Tensor:
    """SE(X_l, X_G) = X_l * X_G + X_G, with X_G bilinearly resized to X_l."""
    g = F.interpolate(x_global, size=x_local.shape[-2:], mode="bilinear", align_corners=False)
    return x_local * g + g


def resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` bilinearly resized to the size of ``ref``."""
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


@MASK_DECODER_REGISTRY.register()
class SemanticEnhancedMaskDecoder(nn.Module):
    output_stride = 8  # the stride of X_mask

    @configurable
    def __init__(self, *, input_shape: Dict[str, ShapeSpec], in_features: List[str], channels: int,
                 kernel_dim: int, norm: str, conv: Callable[..., nn.Module] = conv_norm_act,
                 output: Callable[[int, int], nn.Module] = conv1x1):
        """
        Args:
            input_shape: backbone output shapes.
            in_features: the names of X3, X4, X5, X6, in that order.
            channels: width of the fusion blocks (MASK_DECODER.CHANNELS).
            kernel_dim: channels of X_mask (= the dimension of the kernels K).
            norm: norm of the fusion convs.
            conv: the fusion conv, ``conv(in, out, k, norm)``
                (:func:`~mobileinst.mask_decoder.blocks.fusion_conv`).
            output: X_mask's 1x1 output conv, ``output(channels, kernel_dim)``
                (:func:`~mobileinst.mask_decoder.blocks.output_layer`).
        """
        super().__init__()
        if len(in_features) != 4:
            raise ValueError(f"MODEL.MOBILEINST.IN_FEATURES and GLOBAL_FEATURE must name X3, X4, X5 and X6; "
                             f"got {in_features}")
        self.in_features = list(in_features)
        self.local_features = self.in_features[:3]
        self.kernel_dim = kernel_dim
        self.build_finer_levels(input_shape, channels, norm, conv)
        self.lateral = nn.ModuleList(
            conv_norm_act(input_shape[f].channels, channels, 1, norm) for f in self.local_features
        )
        self.global_proj = conv_norm_act(input_shape[self.in_features[3]].channels, channels, 1, norm)
        self.top_down_convs = nn.ModuleList(conv(channels, channels, 3, norm) for _ in range(3))
        self.bottom_up_convs = nn.ModuleList(conv(channels, channels, 3, norm) for _ in range(3))
        self.output = output(channels, kernel_dim)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg, input_shape):
        c = cfg.MODEL.MOBILEINST
        return {
            "input_shape": input_shape,
            "in_features": [*c.IN_FEATURES, global_feature_key(cfg)],
            "channels": c.MASK_DECODER.CHANNELS,
            "kernel_dim": c.MASK_DECODER.KERNEL_DIM,
            "norm": c.MASK_DECODER.NORM,
            "conv": fusion_conv(c.MASK_DECODER.DEPTHWISE),
            "output": output_layer(c.MASK_DECODER.COORD_FEATURES),
        }

    def build_finer_levels(self, input_shape: Dict[str, ShapeSpec], channels: int, norm: str, conv) -> None:
        """Where a decoder with levels finer than X3 builds them (none here): first,
        so that their weights are drawn before the paper's layers."""

    def fuse(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The three passes over X3..X5 with X6: O3, (B, CHANNELS, H/8, W/8)."""
        l3, l4, l5 = [lat(features[f]) for lat, f in zip(self.lateral, self.local_features)]
        x_g = self.global_proj(features[self.in_features[3]])
        # first top-down pass, semantic enhancer on the coarsest level
        p5 = semantic_enhance(l5, x_g)
        p4 = l4 + resize_to(p5, l4)
        p3 = l3 + resize_to(p4, l3)
        p3, p4, p5 = [conv(p) for conv, p in zip(self.top_down_convs, (p3, p4, p5))]
        # bottom-up pass
        n3 = p3
        n4 = p4 + resize_to(n3, p4)
        n5 = p5 + resize_to(n4, p5)
        n3, n4, n5 = [conv(n) for conv, n in zip(self.bottom_up_convs, (n3, n4, n5))]
        # second top-down pass
        o5 = semantic_enhance(n5, x_g)
        o4 = n4 + resize_to(o5, n4)
        return n3 + resize_to(o4, n3)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns X_mask, (B, KERNEL_DIM, H/8, W/8)."""
        return self.output(self.fuse(features))
