# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""SeaFormer's squeeze-enhanced axial attention (Wan et al., ICLR 2023).

For an input X (C, H, W), with h heads, key dim kd, d = attn_ratio * kd and
dh = h * d:

    q, k = Conv2dBN(X) to h*kd channels;   v = Conv2dBN(X) to dh channels
    detail = Conv2dBN(ReLU6(dwConv3x3BN([q, k, v])))               -> C
    row    = Conv2dBN(ReLU6(attn(mean_W(q) + P_rq, mean_W(k) + P_rk, mean_W(v))))  (dh, H, 1)
    column = Conv2dBN(ReLU6(attn(mean_H(q) + P_cq, mean_H(k) + P_ck, mean_H(v))))  (dh, 1, W)
    out    = h_sigmoid(Conv2dBN(ReLU6(v + row + column))) * detail   -> C

where attn is per-head softmax(q^T k * kd^-0.5) v over the H (or W) squeezed
positions and P_* are learned 16-entry position tables resampled linearly to
H (or W). Unlike TopFormer's attention the logits ARE scaled by kd^-0.5.
Module and parameter names are the official ones (``to_q``, ``proj_encode_row``,
``pos_emb_rowq.pos_embed``, ``dwconv``, ``pwconv``, ...).
"""
import torch
import torch.nn.functional as F
from torch import nn

from .token_transformer import Attention, Conv2dBN, h_sigmoid

# Length of the learned squeeze-axial position tables (the official value).
POS_EMBED_LENGTH = 16


class SqueezeAxialPositionalEmbedding(nn.Module):
    """A learned (1, dim, 16) table added to a squeezed (B, dim, N) sequence,
    resampled to length N by 1-D linear interpolation (align_corners=False)."""

    def __init__(self, dim: int, length: int = POS_EMBED_LENGTH):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, dim, length))

    def forward(self, x):
        return x + F.interpolate(self.pos_embed, size=int(x.shape[-1]), mode="linear", align_corners=False)


class SeaAttention(Attention):
    """Squeeze-enhanced axial attention (the official ``Sea_Attention``); the
    output has the input's shape. It keeps TopFormer's q, k, v projections
    (``to_q``, ``to_k``, ``to_v``) and output projection (``proj``: ReLU6 +
    Conv2dBN to ``dim``) and replaces the computation between them."""

    def __init__(self, dim, key_dim, num_heads, attn_ratio=2, norm="BN"):
        super().__init__(dim, key_dim, num_heads, attn_ratio, norm)
        self.scale = key_dim ** -0.5
        nh_kd = key_dim * num_heads
        self.proj_encode_row = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, self.dh, 1, norm=norm,
                                                                  bn_weight_init=0.0))
        self.pos_emb_rowq = SqueezeAxialPositionalEmbedding(nh_kd)
        self.pos_emb_rowk = SqueezeAxialPositionalEmbedding(nh_kd)
        self.proj_encode_column = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, self.dh, 1, norm=norm,
                                                                     bn_weight_init=0.0))
        self.pos_emb_columnq = SqueezeAxialPositionalEmbedding(nh_kd)
        self.pos_emb_columnk = SqueezeAxialPositionalEmbedding(nh_kd)
        # detail enhancement on [q, k, v]: 2*nh_kd + dh = 2*dh channels
        self.dwconv = Conv2dBN(2 * self.dh, 2 * self.dh, 3, 1, 1, groups=2 * self.dh, norm=norm)
        self.act = nn.ReLU6()
        self.pwconv = Conv2dBN(2 * self.dh, dim, 1, norm=norm)

    def _axial(self, q, k, v):
        """Multi-head attention over one squeezed axis: (B, h*kd, N) x2, (B, dh, N)
        -> (B, dh, N). Channels are head-major (channel = head * kd + j)."""
        b, _, n = q.shape
        q = q.reshape(b, self.num_heads, self.key_dim, n).transpose(2, 3)  # B h N kd
        k = k.reshape(b, self.num_heads, self.key_dim, n)  # B h kd N
        v = v.reshape(b, self.num_heads, self.d, n).transpose(2, 3)  # B h N d
        attn = (torch.matmul(q, k) * self.scale).softmax(dim=-1)
        return torch.matmul(attn, v).transpose(2, 3).reshape(b, self.dh, n)

    def forward(self, x):
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        detail = self.pwconv(self.act(self.dwconv(torch.cat([q, k, v], dim=1))))
        row = self._axial(self.pos_emb_rowq(q.mean(-1)), self.pos_emb_rowk(k.mean(-1)), v.mean(-1))
        row = self.proj_encode_row(row.unsqueeze(-1))  # B dh H 1
        column = self._axial(self.pos_emb_columnq(q.mean(-2)), self.pos_emb_columnk(k.mean(-2)), v.mean(-2))
        column = self.proj_encode_column(column.unsqueeze(-2))  # B dh 1 W
        return h_sigmoid(self.proj(v + (row + column))) * detail
