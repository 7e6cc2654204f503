# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Which backbone features are the paper's X3, X4, X5 (local) and X6 (global).

``MODEL.MOBILEINST.IN_FEATURES`` names X3, X4, X5 in stride order (X3 at the
stride of X_mask, 8) and ``MODEL.MOBILEINST.GLOBAL_FEATURE`` names X6. The
mobile backbones (TopFormer, MobileNetV2) compute X6 themselves: the token
transformer's output over the pooled pyramid, ``"x6"`` (stride 64). Any other
detectron2 backbone can carry the heads too: ResNet gives ``res3``, ``res4``,
``res5`` and no global branch, and ``GLOBAL_FEATURE ""`` then derives X6 from
X5 (:class:`PooledGlobalFeature`).
"""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from torch import nn

# The key of a derived X6 in the feature dict the decoders read.
DERIVED_GLOBAL_FEATURE = "x6_pooled"
# The stride of X6 (paper Fig. 3: 1/64).
GLOBAL_STRIDE = 64


class PooledGlobalFeature(nn.Module):
    """X6 = AvgPool_{k, stride k}(X5) with k = 64 / stride(X5): X5 at stride 64.

    For backbones without the paper's global branch (e.g. ResNet). Average
    pooling to stride 64 is how TopFormer forms the tokens its transformer
    turns into X6; without that transformer this X6 holds X5's content at
    X6's stride, with X5's receptive field rather than attention over the
    whole image. It has no parameters and no projection: both readers of X6
    project it already (the mask decoder's 1x1 conv + norm + ReLU to
    MASK_DECODER.CHANNELS for the semantic enhancer, the instance decoder's
    linear map to HIDDEN_DIM for the global stage's keys and values), so a
    projection here would be a third linear map in series with theirs.
    ``ceil_mode`` keeps the last partial window of an input that is not a
    multiple of 64 (the model pads inputs to one).
    """

    def __init__(self, source: str, source_shape: ShapeSpec):
        """``source``: the name of X5; ``source_shape``: its channels and stride."""
        super().__init__()
        stride = int(source_shape.stride or 0)
        if stride < 1 or GLOBAL_STRIDE % stride:
            raise ValueError(
                f"MODEL.MOBILEINST.GLOBAL_FEATURE '' derives X6 by pooling X5 ('{source}', stride {stride}) "
                f"to stride {GLOBAL_STRIDE}: X5's stride must divide {GLOBAL_STRIDE}"
            )
        self.source = source
        self.kernel = GLOBAL_STRIDE // stride
        self.channels = int(source_shape.channels)

    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self.channels, stride=GLOBAL_STRIDE)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.source]
        if self.kernel == 1:
            return x
        return F.avg_pool2d(x, self.kernel, self.kernel, ceil_mode=True)


def global_feature_key(cfg) -> str:
    """The key of X6 among the features the decoders read."""
    return cfg.MODEL.MOBILEINST.GLOBAL_FEATURE or DERIVED_GLOBAL_FEATURE


def build_global_feature(cfg, input_shape: Dict[str, ShapeSpec]) -> Optional[PooledGlobalFeature]:
    """Check IN_FEATURES and GLOBAL_FEATURE against the backbone's ``input_shape``;
    returns the module that derives X6 (GLOBAL_FEATURE ""), or None when the
    backbone gives X6."""
    c = cfg.MODEL.MOBILEINST
    local, name = list(c.IN_FEATURES), c.GLOBAL_FEATURE
    gives = ", ".join(f"{k} (stride {v.stride})" for k, v in sorted(input_shape.items(), key=lambda kv: kv[1].stride))
    backbone = cfg.MODEL.BACKBONE.NAME
    if len(local) != 3:
        raise ValueError(
            f"MODEL.MOBILEINST.IN_FEATURES={local}: expected the 3 local features X3, X4, X5 in stride order "
            f"(the global feature X6 is MODEL.MOBILEINST.GLOBAL_FEATURE); the backbone {backbone} gives {gives}"
        )
    missing = [f for f in local if f not in input_shape]
    if missing:
        raise ValueError(f"MODEL.MOBILEINST.IN_FEATURES={local}: {missing} not among the features of the "
                         f"backbone {backbone}: {gives}")
    strides = [input_shape[f].stride for f in local]
    if strides[0] != 8 or not strides[0] < strides[1] < strides[2]:
        raise ValueError(
            f"MODEL.MOBILEINST.IN_FEATURES={local} have strides {strides}: expected X3 at stride 8 (the stride "
            f"of X_mask) and increasing strides (8, 16, 32 in the paper); the backbone {backbone} gives {gives}"
        )
    if name:
        if name not in input_shape:
            raise ValueError(
                f"MODEL.MOBILEINST.GLOBAL_FEATURE='{name}' is not a feature of the backbone {backbone} "
                f"({gives}); set GLOBAL_FEATURE \"\" to derive X6 from X5 ('{local[2]}') by average pooling"
            )
        return None
    if DERIVED_GLOBAL_FEATURE in input_shape:
        raise ValueError(f"The backbone {backbone} has a feature named '{DERIVED_GLOBAL_FEATURE}', the name of "
                         "a derived X6 (MODEL.MOBILEINST.GLOBAL_FEATURE \"\"); name it in GLOBAL_FEATURE instead")
    return PooledGlobalFeature(local[2], input_shape[local[2]])
