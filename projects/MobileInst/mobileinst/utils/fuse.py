# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Fold BatchNorm into the preceding convolution for inference and export.

The fused model computes the same function (up to float rounding) with one
op less per conv. It is for deployment only: its state dict no longer
matches checkpoints, so fuse after loading weights.
"""
import copy

import torch
from detectron2.layers import Conv2d as D2Conv2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..backbone.token_transformer import Conv2dBN, ConvBN


def _is_bn(m) -> bool:
    return isinstance(m, nn.BatchNorm2d)


@torch.no_grad()
def fuse_conv_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` (in eval mode) with conv+BN pairs folded into convs."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    # NHWC weights (a MobileInst model keeps them so): the fused convs get them too
    channels_last = any(p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] * p.shape[-2] > 1 and not p.is_contiguous()
                        and p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters())
    for module in list(model.modules()):
        if isinstance(module, Conv2dBN) and _is_bn(module.bn):
            module.c = fuse_conv_bn_eval(module.c, module.bn)
            module.bn = nn.Identity()
        elif isinstance(module, ConvBN) and _is_bn(module.bn):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
        elif isinstance(module, D2Conv2d) and _is_bn(module.norm):
            fused = fuse_conv_bn_eval(module, module.norm)
            module.weight = fused.weight
            module.bias = fused.bias
            module.norm = None
        elif isinstance(module, nn.Sequential):
            # torchvision-style Sequential(Conv2d, BatchNorm2d, ...) pairs (MobileNetV2)
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if type(conv) is nn.Conv2d and _is_bn(bn):
                    module._modules[a] = fuse_conv_bn_eval(conv, bn)
                    module._modules[b] = nn.Identity()
    if channels_last:  # fused convs are new tensors
        model.to(memory_format=torch.channels_last)
    return model
