# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""SeaFormer backbone: local features X3, X4, X5 and global features X6
(and the stride-4 stage output as X2, for a stride-4 X_mask).

    image -> smb1 (stem + MobileNetV2 rows, 1/4)                     -> X2
          -> smb2 (1/8)                                              -> X3
          -> smb3 (1/16)  [+ SeaFormer layer trans1 for large]       -> X4
          -> smb4 (1/32)  + SeaFormer layer                          -> X5
          -> smb5 (1/64)  + SeaFormer layer                          -> X6

A SeaFormer layer is a stack of blocks with squeeze-enhanced axial attention
(``sea_attention.py``) and the MLP of TopFormer. Unlike TopFormer there is no
token pooling and no semantic injection: X3..X5 are raw stage outputs (the
official segmentation head does the fusion; here the mask decoder does).
Which stage outputs MobileInst used is not published; this mapping is an
assumption (SEAFORMER.md, "MobileInst mapping").

Parameter names match the official SeaFormer ImageNet checkpoints
(``smb<i>.*``, ``trans<j>.*``; the classifier ``linear.*`` is not part of the
backbone), so ``load_state_dict(strict=True)`` accepts them unchanged.
"""
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ..utils.checkpoint import load_backbone_weights
from .sea_attention import SeaAttention
from .token_transformer import Conv2dBN, TokenTransformer, add_inverted_residuals, variant_spec

# cfgs: per stage smb1..smb5, rows [kernel, expand ratio t, out channels, stride];
# channels: stem width, then the output channels of smb1..smb5; the SeaFormer
# layers follow the last len(depths) stages, with width emb_dims (= their channels).
SEAFORMER_VARIANTS = {
    "tiny": dict(
        cfgs=[[[3, 1, 16, 1], [3, 4, 16, 2], [3, 3, 16, 1]], [[5, 3, 32, 2], [5, 3, 32, 1]],
              [[3, 3, 64, 2], [3, 3, 64, 1]], [[5, 3, 128, 2]], [[3, 6, 160, 2]]],
        channels=[16, 16, 32, 64, 128, 160], emb_dims=[128, 160], key_dims=[16, 24], depths=[2, 2],
        num_heads=4, mlp_ratios=[2, 4],
    ),
    "small": dict(
        cfgs=[[[3, 1, 16, 1], [3, 4, 24, 2], [3, 3, 24, 1]], [[5, 3, 48, 2], [5, 3, 48, 1]],
              [[3, 3, 96, 2], [3, 3, 96, 1]], [[5, 4, 160, 2]], [[3, 6, 192, 2]]],
        channels=[16, 24, 48, 96, 160, 192], emb_dims=[160, 192], key_dims=[16, 24], depths=[3, 3],
        num_heads=6, mlp_ratios=[2, 4],
    ),
    "base": dict(
        cfgs=[[[3, 1, 16, 1], [3, 4, 32, 2], [3, 3, 32, 1]], [[5, 3, 64, 2], [5, 3, 64, 1]],
              [[3, 3, 128, 2], [3, 3, 128, 1]], [[5, 4, 192, 2]], [[3, 6, 256, 2]]],
        channels=[16, 32, 64, 128, 192, 256], emb_dims=[192, 256], key_dims=[16, 24], depths=[4, 4],
        num_heads=8, mlp_ratios=[2, 4],
    ),
    "large": dict(
        cfgs=[[[3, 3, 32, 1], [3, 4, 64, 2], [3, 4, 64, 1]], [[5, 4, 128, 2], [5, 4, 128, 1]],
              [[3, 4, 192, 2], [3, 4, 192, 1]], [[5, 4, 256, 2]], [[3, 6, 320, 2]]],
        channels=[32, 64, 128, 192, 256, 320], emb_dims=[192, 256, 320], key_dims=[16, 20, 24],
        depths=[3, 3, 3], num_heads=8, mlp_ratios=[2, 4, 6],
    ),
}
ATTN_RATIO = 2  # value dim / key dim, all variants


class StackedMV2Block(nn.Module):
    """One conv stage ``smb<i>``: the stem (``stem_block``: 3x3 stride-2 Conv2dBN +
    ReLU; first stage only) and MobileNetV2 rows ``layer1``, ``layer2``, ..."""

    def __init__(self, cfgs, in_ch, stem=False, norm="BN"):
        super().__init__()
        self.stem_block = (nn.Sequential(Conv2dBN(3, in_ch, 3, 2, 1, norm=norm), nn.ReLU(inplace=True))
                           if stem else None)
        self.layers = add_inverted_residuals(self, cfgs, in_ch, norm)

    def forward(self, x):
        if self.stem_block is not None:
            x = self.stem_block(x)
        for name in self.layers:
            x = getattr(self, name)(x)
        return x


class SeaFormer(Backbone):
    """SeaFormer as a detectron2 backbone.

    Returns ``{"x2": X2, "x3": X3, "x4": X4, "x5": X5, "x6": X6}``, the outputs of
    stages smb1..smb5 (each after its SeaFormer layer, if it has one), with
    strides 4, 8, 16, 32, 64. X6, the last SeaFormer layer's output, is the
    global feature; X2 is for the stride-4 HighResMaskDecoder only (the paper's
    mask decoder does not use it).
    """

    def __init__(self, variant="base", drop_path_rate=0.1, norm="BN"):
        super().__init__()
        spec = variant_spec(SEAFORMER_VARIANTS, variant, "MODEL.SEAFORMER.VARIANT")
        self.variant = variant
        channels = spec["channels"]
        self.num_stages = len(spec["cfgs"])
        for i, rows in enumerate(spec["cfgs"]):
            self.add_module(f"smb{i + 1}", StackedMV2Block(rows, channels[i], stem=i == 0, norm=norm))
        # the j-th SeaFormer layer follows stage first_trans + j
        self.first_trans = self.num_stages - len(spec["depths"])
        for j, depth in enumerate(spec["depths"]):
            self.add_module(f"trans{j + 1}", TokenTransformer(
                spec["emb_dims"][j], depth, spec["key_dims"][j], spec["num_heads"], spec["mlp_ratios"][j],
                ATTN_RATIO, drop_path_rate, norm=norm, attention=SeaAttention))
        # read by detectron2's Backbone.output_shape()
        self._out_features = [f"x{i + 2}" for i in range(self.num_stages)]
        self._out_feature_channels = {n: channels[i + 1] for i, n in enumerate(self._out_features)}
        self._out_feature_strides = {n: 2 ** (i + 2) for i, n in enumerate(self._out_features)}

    @property
    def size_divisibility(self):
        return 64

    def _stage(self, i, x):
        x = getattr(self, f"smb{i + 1}")(x)
        if i >= self.first_trans:
            x = getattr(self, f"trans{i - self.first_trans + 1}")(x)
        return x

    def forward(self, x):
        out = {}
        for i in range(self.num_stages):
            x = self._stage(i, x)
            out[self._out_features[i]] = x
        return out


@BACKBONE_REGISTRY.register()
def build_seaformer_backbone(cfg, input_shape):
    """SeaFormer-{tiny,small,base,large} (``MODEL.SEAFORMER.VARIANT``)."""
    if input_shape.channels != 3:
        raise ValueError(f"SeaFormer expects 3 input channels, got {input_shape.channels}")
    c = cfg.MODEL.SEAFORMER
    model = SeaFormer(c.VARIANT, c.DROP_PATH_RATE, c.NORM)
    if c.WEIGHTS:
        load_backbone_weights(model, c.WEIGHTS, "MODEL.SEAFORMER.WEIGHTS")
    return model
