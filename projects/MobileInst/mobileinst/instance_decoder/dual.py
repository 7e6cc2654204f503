# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The paper's dual transformer instance decoder.

    Q (N learnable queries)
      -> global stage: cross-attention on X6 (1/64), self-attention   -> Q_G
      -> local stage:  cross-attention on X_L = maxpool(X_mask) at the
                       size of X6, self-attention
      -> FFN -> class logits (N, C), IoU-aware objectness (N, 1),
                mask kernels K (N, KERNEL_DIM)

Both key/value maps get sine position embeddings. There is no FFN inside the
stages (the paper removes them); one FFN follows the local stage. Attention
is pre-norm, without dropout (DEFAULT). The two stages are exposed separately
(``forward_global``, ``forward_local``) for temporal query passing, where Q_G
of frame t meets X_L of frame t+d.
"""
import math
from typing import Dict

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn

from ..features import GLOBAL_STRIDE, global_feature_key
from . import INSTANCE_DECODER_REGISTRY


def sine_position_embedding(x: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine embedding for a (B, C, H, W) map -> (B, H*W, 2*num_feats)."""
    b, _, h, w = x.shape
    y_embed = torch.arange(1, h + 1, device=x.device, dtype=torch.float32).view(1, h, 1).expand(b, h, w)
    x_embed = torch.arange(1, w + 1, device=x.device, dtype=torch.float32).view(1, 1, w).expand(b, h, w)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = y_embed / (h + eps) * scale
    x_embed = x_embed / (w + eps) * scale
    dim_t = torch.arange(num_feats, device=x.device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    pos = torch.cat((pos_y, pos_x), dim=3)  # B, H, W, 2*num_feats
    return pos.flatten(1, 2).to(x.dtype)


def pool_to_x6_size(x_mask: torch.Tensor, x6_size) -> torch.Tensor:
    """The paper's X_L: X_mask max-pooled to the size of X6. With inputs padded to a
    multiple of 64 the ratio is an integer and a fixed-window pool is used
    (exportable); otherwise adaptive pooling."""
    h, w = (int(s) for s in x_mask.shape[-2:])
    sh, sw = int(x6_size[0]), int(x6_size[1])
    if h % sh == 0 and w % sw == 0:
        k = (h // sh, w // sw)
        return F.max_pool2d(x_mask, k, k)
    return F.adaptive_max_pool2d(x_mask, (sh, sw))


class StridePool:
    """Beyond the paper (LOCAL_POOL_STRIDE < 64): X_L = X_mask max-pooled by ``kernel``,
    a finer X_L than the size of X6 (helps small inputs)."""

    def __init__(self, kernel: int):
        self.kernel = int(kernel)

    def __call__(self, x_mask: torch.Tensor, x6_size) -> torch.Tensor:
        k = self.kernel
        return x_mask if k == 1 else F.max_pool2d(x_mask, k, k, ceil_mode=True)


def local_pool(local_pool_stride: int, mask_stride: int):
    """The pool X_mask -> X_L of INSTANCE_DECODER.LOCAL_POOL_STRIDE: ``pool(x_mask, x6_size)``."""
    if local_pool_stride % mask_stride or local_pool_stride < mask_stride:
        raise ValueError(
            f"MODEL.MOBILEINST.INSTANCE_DECODER.LOCAL_POOL_STRIDE={local_pool_stride}: expected a multiple of "
            f"the stride of X_mask ({mask_stride})"
        )
    return pool_to_x6_size if local_pool_stride == GLOBAL_STRIDE else StridePool(local_pool_stride // mask_stride)


class MultiHeadAttention(nn.Module):
    """Plain multi-head attention (matmul + softmax): exports to ONNX/TorchScript."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"HIDDEN_DIM={dim} must be divisible by NUM_HEADS={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, q, k, v):
        b, nq, d = q.shape
        nk = k.shape[1]
        q = self.q_proj(q).view(b, nq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(k).view(b, nk, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(v).view(b, nk, self.num_heads, self.head_dim).transpose(1, 2)
        attn = torch.matmul(q * (self.head_dim ** -0.5), k.transpose(-1, -2)).softmax(-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, nq, d)
        return self.out_proj(out)


class DecoderStage(nn.Module):
    """Cross-attention to a feature map, then self-attention (pre-norm)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.cross_attn = MultiHeadAttention(dim, num_heads)
        self.self_attn = MultiHeadAttention(dim, num_heads)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_self = nn.LayerNorm(dim)

    def forward(self, query, query_pos, memory, memory_pos):
        q = self.norm_cross(query)
        query = query + self.cross_attn(q + query_pos, memory + memory_pos, memory)
        q = self.norm_self(query)
        return query + self.self_attn(q + query_pos, q + query_pos, q)


@INSTANCE_DECODER_REGISTRY.register()
class DualInstanceDecoder(nn.Module):
    @configurable
    def __init__(self, *, global_channels: int, mask_channels: int, mask_stride: int, num_classes: int,
                 num_queries: int, hidden_dim: int, num_heads: int, dim_feedforward: int, kernel_dim: int,
                 local_pool_stride: int, prior_prob: float = 0.01):
        """
        Args:
            global_channels: channels of X6.
            mask_channels, mask_stride: channels and stride of X_mask.
            local_pool_stride: the stride X_mask is max-pooled to for X_L
                (INSTANCE_DECODER.LOCAL_POOL_STRIDE; the paper's 64 is the size of X6).
            prior_prob: the initial class probability (focal loss's prior).
        """
        super().__init__()
        self._pool = local_pool(local_pool_stride, mask_stride)
        self.num_queries, self.num_classes, self.hidden_dim = num_queries, num_classes, hidden_dim
        self.mask_channels, self.mask_stride = mask_channels, mask_stride  # of X_mask
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_pos = nn.Embedding(num_queries, hidden_dim)
        self.global_proj = nn.Linear(global_channels, hidden_dim)
        self.local_proj = nn.Linear(mask_channels, hidden_dim)
        self.global_stage = DecoderStage(hidden_dim, num_heads)
        self.local_stage = DecoderStage(hidden_dim, num_heads)
        self.ffn_norm = nn.LayerNorm(hidden_dim)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_dim, dim_feedforward), nn.ReLU(inplace=True), nn.Linear(dim_feedforward, hidden_dim),
        )
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.cls_head = nn.Linear(hidden_dim, num_classes)
        self.objectness_head = nn.Linear(hidden_dim, 1)
        self.kernel_head = nn.Linear(hidden_dim, kernel_dim)
        nn.init.constant_(self.cls_head.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.constant_(self.objectness_head.bias, 0.0)
        self.build_extra_heads()
        nn.init.normal_(self.kernel_head.weight, std=0.01)
        nn.init.zeros_(self.kernel_head.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec], mask_shape: ShapeSpec):
        c = cfg.MODEL.MOBILEINST
        d = c.INSTANCE_DECODER
        return {
            "global_channels": input_shape[global_feature_key(cfg)].channels,
            "mask_channels": mask_shape.channels,
            "mask_stride": mask_shape.stride,
            "num_classes": c.NUM_CLASSES,
            "num_queries": d.NUM_QUERIES,
            "hidden_dim": d.HIDDEN_DIM,
            "num_heads": d.NUM_HEADS,
            "dim_feedforward": d.DIM_FEEDFORWARD,
            "kernel_dim": c.MASK_DECODER.KERNEL_DIM,
            "local_pool_stride": d.LOCAL_POOL_STRIDE,
        }

    def build_extra_heads(self) -> None:
        """Where a decoder with more heads builds them (none here): after the
        paper's heads, before the kernel head is initialised."""

    def _tokens(self, x: torch.Tensor, proj: nn.Linear):
        pos = sine_position_embedding(x, self.hidden_dim // 2)
        return proj(x.flatten(2).transpose(1, 2)), pos

    def pool_local(self, x_mask: torch.Tensor, size) -> torch.Tensor:
        """X_L: X_mask max-pooled to ``size``, the size of X6 (:func:`pool_to_x6_size`),
        or by LOCAL_POOL_STRIDE (:class:`StridePool`)."""
        return self._pool(x_mask, size)

    def forward_global(self, x6: torch.Tensor) -> torch.Tensor:
        """Global stage: learnable queries attend to X6. Returns Q_G (B, N, D)."""
        b = x6.shape[0]
        memory, pos = self._tokens(x6, self.global_proj)
        query = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)
        query_pos = self.query_pos.weight.unsqueeze(0).expand(b, -1, -1)
        return self.global_stage(query, query_pos, memory, pos)

    def forward_local(self, q_global: torch.Tensor, x_mask: torch.Tensor, x6_size) -> Dict[str, torch.Tensor]:
        """Local stage on X_L, FFN and heads. ``q_global`` may come from another frame."""
        x_local = self.pool_local(x_mask, x6_size)
        memory, pos = self._tokens(x_local, self.local_proj)
        query_pos = self.query_pos.weight.unsqueeze(0).expand(q_global.shape[0], -1, -1)
        return self.predict_heads(self.local_stage(q_global, query_pos, memory, pos))

    def predict_heads(self, query: torch.Tensor) -> Dict[str, torch.Tensor]:
        """FFN, then the class, objectness and kernel heads."""
        query = query + self.ffn(self.ffn_norm(query))
        query = self.out_norm(query)
        return {
            "pred_logits": self.cls_head(query),
            "pred_objectness": self.objectness_head(query).squeeze(-1),
            "pred_kernels": self.kernel_head(query),
        }

    def forward(self, x6: torch.Tensor, x_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.forward_local(self.forward_global(x6), x_mask, x6.shape[-2:])
