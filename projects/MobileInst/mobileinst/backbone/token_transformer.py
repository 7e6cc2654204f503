# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Building blocks shared by the mobile backbones (TopFormer's design, which
SeaFormer keeps for everything but its attention).

Module and parameter names follow the official TopFormer / SeaFormer code, so
the official ImageNet checkpoints load unchanged:

* ``Conv2dBN``: conv without bias + BatchNorm, keys ``.c.`` / ``.bn.``
* ``ConvBN``: the same with keys ``.conv.`` / ``.bn.`` (semantic injection)
* ``InvertedResidual``: MobileNetV2 block, ``.conv.<i>``;
  :func:`add_inverted_residuals` stacks them as ``layer1``, ``layer2``, ...
* ``TokenTransformer``: ``transformer_blocks.<i>.{attn,mlp}``: with TopFormer's
  ``Attention``, the 4 blocks over the pooled token pyramid whose output is
  the global feature X6; with SeaFormer's squeeze-axial attention
  (``sea_attention.py``), a SeaFormer layer
* ``SemanticInjection``: ``local_embedding``, ``global_embedding``,
  ``global_act``; fuses a local level with its X6 slice into X3/X4/X5.
"""
from typing import List

import torch
import torch.nn.functional as F
from ..layers import get_norm
from torch import nn


def variant_spec(variants: dict, variant: str, config_key: str) -> dict:
    """``variants[variant]``, or a ValueError naming ``config_key`` and the choices."""
    if variant not in variants:
        raise ValueError(f"{config_key}={variant!r}: expected one of {sorted(variants)}")
    return variants[variant]


def make_divisible(v: float, divisor: int = 8, min_value: int = None) -> int:
    """Round channels to a multiple of ``divisor`` (MobileNetV2's rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dBN(nn.Sequential):
    """Conv (no bias) + norm; state-dict keys ``c.weight`` and ``bn.*``."""

    def __init__(self, in_ch, out_ch, ks=1, stride=1, pad=0, groups=1, norm="BN",
                 bn_weight_init=1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, ks, stride, pad, groups=groups, bias=False))
        bn = get_norm(norm, out_ch)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0)
        self.add_module("bn", bn)


class ConvBN(nn.Module):
    """1x1 conv (no bias) + norm; state-dict keys ``conv.weight`` and ``bn.*``."""

    def __init__(self, in_ch, out_ch, norm="BN"):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = get_norm(norm, out_ch)

    def forward(self, x):
        return self.bn(self.conv(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual with ReLU activations (TopFormer's and SeaFormer's)."""

    def __init__(self, in_ch, out_ch, ks, stride, expand_ratio, norm="BN"):
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers += [Conv2dBN(in_ch, hidden, 1, norm=norm), nn.ReLU(inplace=True)]
        layers += [
            Conv2dBN(hidden, hidden, ks, stride, ks // 2, groups=hidden, norm=norm),
            nn.ReLU(inplace=True),
            Conv2dBN(hidden, out_ch, 1, norm=norm),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


def add_inverted_residuals(parent: nn.Module, cfgs, in_ch: int, norm: str = "BN") -> List[str]:
    """Add one :class:`InvertedResidual` per row ``[kernel, expand t, channels, stride]``
    of ``cfgs`` to ``parent`` as ``layer1``, ``layer2``, ... (the official names).
    Returns the names in order."""
    names = []
    for i, (k, t, c, s) in enumerate(cfgs):
        out = make_divisible(c, 8)
        names.append(f"layer{i + 1}")
        parent.add_module(names[-1], InvertedResidual(in_ch, out, k, s, t, norm=norm))
        in_ch = out
    return names


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at inference)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """TopFormer's multi-head attention over a (C, H, W) token map.

    q, k: ``num_heads * key_dim`` channels, v: ``num_heads * attn_ratio *
    key_dim``. As in the official code the logits are *not* scaled by
    ``1/sqrt(key_dim)``: the checkpoints were trained that way.
    """

    def __init__(self, dim, key_dim, num_heads, attn_ratio=2, norm="BN"):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        nh_kd = key_dim * num_heads
        self.to_q = Conv2dBN(dim, nh_kd, 1, norm=norm)
        self.to_k = Conv2dBN(dim, nh_kd, 1, norm=norm)
        self.to_v = Conv2dBN(dim, self.dh, 1, norm=norm)
        self.proj = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, dim, 1, norm=norm, bn_weight_init=0.0))

    def forward(self, x):
        b, _, h, w = x.shape
        q = self.to_q(x).reshape(b, self.num_heads, self.key_dim, h * w).permute(0, 1, 3, 2)
        k = self.to_k(x).reshape(b, self.num_heads, self.key_dim, h * w)
        v = self.to_v(x).reshape(b, self.num_heads, self.d, h * w).permute(0, 1, 3, 2)
        attn = torch.matmul(q, k).softmax(dim=-1)
        out = torch.matmul(attn, v).permute(0, 1, 3, 2).reshape(b, self.dh, h, w)
        return self.proj(out)


class Mlp(nn.Module):
    """1x1 Conv2dBN -> 3x3 depthwise conv (bias) -> ReLU6 -> 1x1 Conv2dBN."""

    def __init__(self, dim, hidden, norm="BN"):
        super().__init__()
        self.fc1 = Conv2dBN(dim, hidden, 1, norm=norm)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=True)
        self.act = nn.ReLU6()
        self.fc2 = Conv2dBN(hidden, dim, 1, norm=norm)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    """``x + attn(x)``, then ``x + mlp(x)`` (drop path on both branches in training).
    ``attention``: the attention class, built as ``attention(dim, key_dim, num_heads,
    attn_ratio, norm=norm)``."""

    def __init__(self, dim, key_dim, num_heads, mlp_ratio=2.0, attn_ratio=2.0, drop_path=0.0,
                 norm="BN", attention=Attention):
        super().__init__()
        self.attn = attention(dim, key_dim, num_heads, attn_ratio, norm=norm)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), norm=norm)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


class TokenTransformer(nn.Module):
    """A stack of ``depth`` transformer blocks (the official ``BasicLayer``): over the
    pooled tokens (-> X6) with TopFormer's :class:`Attention`, or a SeaFormer layer
    with ``attention=SeaAttention``. Drop path grows linearly from 0 to
    ``drop_path_rate`` over the blocks."""

    def __init__(self, dim, depth=4, key_dim=16, num_heads=8, mlp_ratio=2.0, attn_ratio=2.0,
                 drop_path_rate=0.0, norm="BN", attention=Attention):
        super().__init__()
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)] if depth > 1 else [drop_path_rate]
        self.transformer_blocks = nn.ModuleList(
            Block(dim, key_dim, num_heads, mlp_ratio, attn_ratio, dpr[i], norm=norm, attention=attention)
            for i in range(depth)
        )

    def forward(self, x):
        for blk in self.transformer_blocks:
            x = blk(x)
        return x


def pyramid_pool(features: List[torch.Tensor], stride: int = 2) -> torch.Tensor:
    """Average-pool every pyramid level to the token size and concatenate.

    The token grid is ``((H32 - 1) // stride + 1, (W32 - 1) // stride + 1)``
    where ``H32 x W32`` is the size of the last (stride-32) level.
    """
    h, w = (int(s) for s in features[-1].shape[-2:])
    h = (h - 1) // stride + 1
    w = (w - 1) // stride + 1
    return torch.cat([_avg_pool_to(f, h, w) for f in features], dim=1)


def _avg_pool_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, (h, w))``; a fixed-window pool when the sizes divide
    (always the case for inputs padded to a multiple of 64), which exports to ONNX."""
    xh, xw = (int(s) for s in x.shape[-2:])
    if xh % h == 0 and xw % w == 0:
        kh, kw = xh // h, xw // w
        return x if kh == kw == 1 else F.avg_pool2d(x, (kh, kw), (kh, kw))
    return F.adaptive_avg_pool2d(x, (h, w))


def h_sigmoid(x):
    return F.relu6(x + 3.0) / 6.0


class SemanticInjection(nn.Module):
    """TopFormer's InjectionMultiSum: ``local * h_sigmoid(gate) + embed``."""

    def __init__(self, in_ch, out_ch, norm="BN", local_norm=None):
        super().__init__()
        self.local_embedding = ConvBN(in_ch, out_ch, local_norm or norm)
        self.global_embedding = ConvBN(in_ch, out_ch, norm)
        self.global_act = ConvBN(in_ch, out_ch, norm)

    def forward(self, x_local, x_global):
        size = x_local.shape[-2:]
        local = self.local_embedding(x_local)
        gate = F.interpolate(h_sigmoid(self.global_act(x_global)), size=size, mode="bilinear",
                             align_corners=False)
        emb = F.interpolate(self.global_embedding(x_global), size=size, mode="bilinear",
                            align_corners=False)
        return local * gate + emb
