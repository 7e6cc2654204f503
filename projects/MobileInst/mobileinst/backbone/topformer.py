# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""TopFormer backbone: local features X3, X4, X5 and global features X6
(and the token pyramid's stride-4 level as X2, for a stride-4 X_mask).

    image -> token pyramid (MobileNetV2 blocks, strides 4/8/16/32)
          -> average-pool every level to stride 64, concatenate (tokens)
          -> 4 transformer blocks                               -> X6 (1/64)
          -> split X6 on channels, inject slice i into level i  -> X3, X4, X5

Parameter names match the official TopFormer ImageNet checkpoints
(``tpm.*``, ``trans.*``, ``SIM.*``), so ``load_state_dict(strict=True)``
accepts them unchanged.
"""
import logging

import torch
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from torch import nn

from ..utils.checkpoint import load_backbone_weights
from .token_transformer import (
    Conv2dBN,
    SemanticInjection,
    TokenTransformer,
    add_inverted_residuals,
    pyramid_pool,
    variant_spec,
)

logger = logging.getLogger(__name__)

# Rows: [kernel, expand ratio t, out channels, stride]
TOPFORMER_VARIANTS = {
    "tiny": dict(
        cfgs=[[3, 1, 16, 1], [3, 4, 16, 2], [3, 3, 16, 1], [5, 3, 32, 2], [5, 3, 32, 1],
              [3, 3, 64, 2], [3, 3, 64, 1], [5, 6, 96, 2], [5, 6, 96, 1]],
        channels=[16, 32, 64, 96], out_channels=[None, 128, 128, 128],
        embed_out_indice=[2, 4, 6, 8], num_heads=4,
    ),
    "small": dict(
        cfgs=[[3, 1, 16, 1], [3, 4, 24, 2], [3, 3, 24, 1], [5, 3, 48, 2], [5, 3, 48, 1],
              [3, 3, 96, 2], [3, 3, 96, 1], [5, 6, 128, 2], [5, 6, 128, 1], [3, 6, 128, 1]],
        channels=[24, 48, 96, 128], out_channels=[None, 192, 192, 192],
        embed_out_indice=[2, 4, 6, 9], num_heads=6,
    ),
    "base": dict(
        cfgs=[[3, 1, 16, 1], [3, 4, 32, 2], [3, 3, 32, 1], [5, 3, 64, 2], [5, 3, 64, 1],
              [3, 3, 128, 2], [3, 3, 128, 1], [5, 6, 160, 2], [5, 6, 160, 1], [3, 6, 160, 1]],
        channels=[32, 64, 128, 160], out_channels=[None, 256, 256, 256],
        embed_out_indice=[2, 4, 6, 9], num_heads=8,
    ),
}


class TokenPyramid(nn.Module):
    """Stem + MobileNetV2 rows; returns the rows in ``embed_out_indice``."""

    def __init__(self, cfgs, embed_out_indice, in_ch=3, stem_ch=16, norm="BN"):
        super().__init__()
        self.embed_out_indice = list(embed_out_indice)
        self.stem = nn.Sequential(Conv2dBN(in_ch, stem_ch, 3, 2, 1, norm=norm), nn.ReLU(inplace=True))
        self.layers = add_inverted_residuals(self, cfgs, stem_ch, norm)

    def forward(self, x):
        outs = []
        x = self.stem(x)
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.embed_out_indice:
                outs.append(x)
        return outs


class TopFormer(Backbone):
    """TopFormer as a detectron2 backbone.

    Returns ``{"x2": X2, "x3": X3, "x4": X4, "x5": X5, "x6": X6}`` with strides
    4, 8, 16, 32, 64. X2 is the token pyramid's stride-4 level as it is (the
    paper's mask decoder does not use it; the stride-4 mask decoder HighResMaskDecoder does).
    """

    def __init__(self, variant="base", drop_path_rate=0.1, norm="BN", depth=4, key_dim=16,
                 mlp_ratio=2.0, attn_ratio=2.0, c2t_stride=2):
        """``norm``: norm of every layer (TopFormer's BN; GN for small-batch training)."""
        super().__init__()
        spec = variant_spec(TOPFORMER_VARIANTS, variant, "MODEL.TOPFORMER.VARIANT")
        self.variant = variant
        self.channels = list(spec["channels"])
        self.c2t_stride = c2t_stride
        self.tpm = TokenPyramid(spec["cfgs"], spec["embed_out_indice"], norm=norm)
        embed_dim = sum(self.channels)
        self.trans = TokenTransformer(embed_dim, depth, key_dim, spec["num_heads"], mlp_ratio,
                                      attn_ratio, drop_path_rate, norm=norm)
        # Level 0 (stride 4) gets no injection: nn.Identity keeps the indices.
        self.SIM = nn.ModuleList(
            nn.Identity() if oc is None else SemanticInjection(c, oc, norm)
            for c, oc in zip(self.channels, spec["out_channels"])
        )
        out_ch = spec["out_channels"]
        self._out_features = ["x2", "x3", "x4", "x5", "x6"]
        self._out_feature_channels = {"x2": self.channels[0], "x3": out_ch[1], "x4": out_ch[2],
                                      "x5": out_ch[3], "x6": embed_dim}
        self._out_feature_strides = {"x2": 4, "x3": 8, "x4": 16, "x5": 32, "x6": 64}

    @property
    def size_divisibility(self):
        return 64

    def forward(self, x):
        levels = self.tpm(x)
        x6 = self.trans(pyramid_pool(levels, self.c2t_stride))
        slices = torch.split(x6, self.channels, dim=1)
        return {
            "x2": levels[0],
            "x3": self.SIM[1](levels[1], slices[1]),
            "x4": self.SIM[2](levels[2], slices[2]),
            "x5": self.SIM[3](levels[3], slices[3]),
            "x6": x6,
        }

    def output_shape(self):
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_topformer_backbone(cfg, input_shape):
    """TopFormer-{tiny,small,base} (``MODEL.TOPFORMER.VARIANT``)."""
    if input_shape.channels != 3:
        raise ValueError(f"TopFormer expects 3 input channels, got {input_shape.channels}")
    c = cfg.MODEL.TOPFORMER
    model = TopFormer(c.VARIANT, c.DROP_PATH_RATE, c.NORM)
    if c.WEIGHTS:
        load_backbone_weights(model, c.WEIGHTS, "MODEL.TOPFORMER.WEIGHTS")
    return model
