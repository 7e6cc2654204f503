# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Normalisation layers by config name."""
import math

import torch
import torch.nn.functional as F
from detectron2.layers import get_norm as d2_get_norm
from torch import nn

__all__ = ["GroupNorm", "get_norm"]


class _ChannelsLastGroupNorm(torch.autograd.Function):
    """GroupNorm of an NHWC (channels_last) tensor with a backward pass written
    as reductions over the positions, vectorised over the channels.

    The forward is PyTorch's own kernel; PyTorch's channels-last GroupNorm
    backward on CPU is 3-9x slower than its NCHW one (on 8x16x128x128, 8.6 ms
    against 3.0 ms for this one), and it was a quarter of a training step. With
    x_hat = (x - mu) * rstd per (image, group) and g = dy * gamma, the gradients
    are (M positions x channels in a group):

        dx     = rstd * g + a * x + b,  a = (sum(g) * mu - sum(g x)) * rstd^3 / M,
                                         b = -a * mu - sum(g) * rstd / M
        dgamma = sum_n,hw(dy * x_hat),  dbeta = sum_n,hw(dy)

    the same formula as ``aten::native_group_norm_backward``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        n, c, h, w = x.shape
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, n, c, h * w, groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        g = ctx.groups
        d = c // g
        xs = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # views of NHWC memory
        dys = dy.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n, h * w, c)
        sum_dy_x = (dys * xs).sum(1)  # (n, c)
        sum_dy = dys.sum(1)
        mean, rstd = mean.view(n, g), rstd.view(n, g)
        per_channel = lambda t: t.view(n, g, 1).expand(n, g, d).reshape(n, c)  # noqa: E731
        dweight = ((sum_dy_x - per_channel(mean) * sum_dy) * per_channel(rstd)).sum(0)
        dbias = sum_dy.sum(0)
        sum_g_x = (sum_dy_x * weight).view(n, g, d).sum(2)
        sum_g = (sum_dy * weight).view(n, g, d).sum(2)
        m = h * w * d
        a = (sum_g * mean - sum_g_x) * rstd.pow(3) / m
        b = -a * mean - sum_g * rstd / m
        scale = (weight.view(1, g, d) * rstd.view(n, g, 1)).reshape(n, 1, c)
        dx = torch.addcmul(per_channel(b).unsqueeze(1), dys, scale)
        dx.addcmul_(xs, per_channel(a).unsqueeze(1))
        return dx.view(n, h, w, c).permute(0, 3, 1, 2), dweight, dbias, None, None


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state dict) whose training backward
    on channels_last CPU tensors of 32x32 positions or more runs
    :class:`_ChannelsLastGroupNorm`; everywhere else (inference, export, CUDA,
    NCHW) it is ``F.group_norm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not torch.jit.is_tracing() and not torch.jit.is_scripting() and torch.is_grad_enabled()
                and self.affine and x.dim() == 4 and x.device.type == "cpu"
                and x.shape[2] * x.shape[3] >= 1024 and x.is_contiguous(memory_format=torch.channels_last)):
            return _ChannelsLastGroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def get_norm(norm: str, channels: int) -> nn.Module:
    """detectron2's ``get_norm``, except that "GN" uses gcd(32, channels) groups,
    so that it works for the narrow layers of mobile backbones (16, 24, 48 ...),
    and is :class:`GroupNorm` (a faster CPU training backward).

    BatchNorm over the tiny 1/64 token grid makes small-image, small-batch
    training depend on batch statistics (eval-mode outputs then collapse);
    "GN" has no batch dependence.
    """
    if norm == "GN":
        return GroupNorm(math.gcd(32, channels), channels)
    return d2_get_norm(norm, channels)
