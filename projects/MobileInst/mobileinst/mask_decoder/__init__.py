# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Mask decoders: backbone features {X3, X4, X5, X6} -> mask features X_mask.

``MODEL.MOBILEINST.MASK_DECODER.NAME`` picks one from ``MASK_DECODER_REGISTRY``,
as detectron2 picks its ROI heads: the paper's
:class:`SemanticEnhancedMaskDecoder` (X_mask at 1/8), :class:`HighResMaskDecoder`
(beyond the paper: X_mask at 1/4), or one a user registers. A mask decoder is
built as ``cls(cfg, input_shape)`` (``input_shape``: the backbone's output
shapes, X6 included under ``mobileinst.features.global_feature_key(cfg)``),
takes the feature dict and returns X_mask (B, KERNEL_DIM, H/s, W/s), and has
the attributes ``output_stride`` (s) and ``kernel_dim``.
"""
from detectron2.utils.registry import Registry

MASK_DECODER_REGISTRY = Registry("MASK_DECODER")
MASK_DECODER_REGISTRY.__doc__ = """
Registry for MobileInst's mask decoders: features {X3, X4, X5, X6} -> X_mask.
The registered object is called with ``(cfg, input_shape)`` and must return an
``nn.Module`` with the attributes ``output_stride`` and ``kernel_dim``.
"""


def build_mask_decoder(cfg, input_shape):
    """The mask decoder named by ``MODEL.MOBILEINST.MASK_DECODER.NAME``."""
    return MASK_DECODER_REGISTRY.get(cfg.MODEL.MOBILEINST.MASK_DECODER.NAME)(cfg, input_shape)


from .semantic_enhanced import SemanticEnhancedMaskDecoder, semantic_enhance  # noqa: E402,F401
from .high_res import HighResMaskDecoder  # noqa: E402,F401
