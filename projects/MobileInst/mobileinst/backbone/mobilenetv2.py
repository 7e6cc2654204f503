# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""MobileNetV2 backbone with TopFormer's pooled-token transformer.

torchvision's MobileNetV2 ``features`` is the body (so torchvision's ImageNet
weights load into ``features``); its stride-4/8/16/32 outputs are pooled to
stride-64 tokens, passed through the same transformer blocks as TopFormer to
give the global features X6, and X6 is injected back into the stride-8/16/32
levels to give the local features X3, X4, X5. The stride-4 level is returned
as it is, as X2 (for the stride-4 mask decoder HighResMaskDecoder).

How MobileNetV2 gives X6 the paper does not say: here with TopFormer-base's
token transformer and semantic injection (256 channels for X3..X5, 8 heads,
4 blocks, drop path 0.1).
"""
import torch
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from torch import nn
from torchvision.models import mobilenet_v2

from ..layers import get_norm
from ..utils.checkpoint import check_state_dict
from ..utils.weights_io import read_state_dict
from .token_transformer import SemanticInjection, TokenTransformer, pyramid_pool

# Indices in ``features`` after which the feature stride becomes 4, 8, 16, 32
# (the last block before a stride-2 block, and the last inverted residual).
_STAGE_ENDS = (3, 6, 13, 17)


class MobileNetV2Backbone(Backbone):
    """Returns ``{"x2", "x3", "x4", "x5", "x6"}`` at strides 4, 8, 16, 32, 64."""

    def __init__(self, norm="BN", width_mult=1.0, out_channels=256, num_heads=8, depth=4, drop_path_rate=0.1):
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm == "BN" else (lambda ch: get_norm(norm, ch))
        self.features = mobilenet_v2(weights=None, width_mult=width_mult, norm_layer=norm_layer).features[:18]
        # read from the blocks: a probe forward in train mode would change BN running stats
        chans = [self.features[i].out_channels for i in _STAGE_ENDS]
        self.channels = chans
        embed_dim = sum(chans)
        self.trans = TokenTransformer(embed_dim, depth, 16, num_heads, 2.0, 2.0, drop_path_rate, norm=norm)
        self.SIM = nn.ModuleList(SemanticInjection(c, out_channels, norm) for c in chans[1:])
        self._out_features = ["x2", "x3", "x4", "x5", "x6"]
        self._out_feature_channels = {"x2": chans[0], "x3": out_channels, "x4": out_channels,
                                      "x5": out_channels, "x6": embed_dim}
        self._out_feature_strides = {"x2": 4, "x3": 8, "x4": 16, "x5": 32, "x6": 64}

    @property
    def size_divisibility(self):
        return 64

    def forward(self, x):
        levels = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in _STAGE_ENDS:
                levels.append(x)
        x6 = self.trans(pyramid_pool(levels, 2))
        slices = torch.split(x6, self.channels, dim=1)
        out = {f"x{i + 3}": self.SIM[i](levels[i + 1], slices[i + 1]) for i in range(3)}
        out["x2"] = levels[0]
        out["x6"] = x6
        return out

    def output_shape(self):
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }

    def load_torchvision_weights(self, path: str):
        """Load torchvision's ``mobilenet_v2`` ImageNet state dict into the body."""
        sd = read_state_dict(path, "MODEL.MOBILENETV2.WEIGHTS")
        body = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
        # torchvision's features[18] is the final 1x1 conv to 1280: not used here.
        body = {k: v for k, v in body.items() if int(k.split(".")[0]) < len(self.features)}
        check_state_dict(self.features, body, f"MODEL.MOBILENETV2.WEIGHTS='{path}' (features.*)")
        self.features.load_state_dict(body, strict=True)


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_backbone(cfg, input_shape):
    c = cfg.MODEL.MOBILENETV2
    model = MobileNetV2Backbone(c.NORM)
    if c.WEIGHTS:
        model.load_torchvision_weights(c.WEIGHTS)
    return model
