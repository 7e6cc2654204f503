# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Instance decoders: X6 and X_mask -> class logits, IoU-aware objectness and mask kernels K.

``MODEL.MOBILEINST.INSTANCE_DECODER.NAME`` picks one from
``INSTANCE_DECODER_REGISTRY``: the paper's :class:`DualInstanceDecoder`,
:class:`PooledClassDualInstanceDecoder` (beyond the paper: class logits also
from X_mask pooled inside each query's mask), or one a user registers. An
instance decoder is built as ``cls(cfg, input_shape, mask_shape)``
(``input_shape``: the backbone's output shapes, X6 under
``mobileinst.features.global_feature_key(cfg)``; ``mask_shape``: the
:class:`ShapeSpec` of X_mask) and provides

* ``forward(x6, x_mask)`` -> {"pred_logits" (B, N, C), "pred_objectness" (B, N),
  "pred_kernels" (B, N, D)};
* for temporal query passing (``mobileinst.video``), the two stages apart:
  ``forward_global(x6)`` -> Q_G (B, N, hidden) and
  ``forward_local(q_global, x_mask, x6_size)`` -> the outputs above;
* ``num_queries``.
"""
from detectron2.utils.registry import Registry

INSTANCE_DECODER_REGISTRY = Registry("INSTANCE_DECODER")
INSTANCE_DECODER_REGISTRY.__doc__ = """
Registry for MobileInst's instance decoders: (X6, X_mask) -> classes, objectness
and mask kernels. The registered object is called with
``(cfg, input_shape, mask_shape)`` and must return an ``nn.Module``.
"""


def build_instance_decoder(cfg, input_shape, mask_shape):
    """The instance decoder named by ``MODEL.MOBILEINST.INSTANCE_DECODER.NAME``."""
    name = cfg.MODEL.MOBILEINST.INSTANCE_DECODER.NAME
    return INSTANCE_DECODER_REGISTRY.get(name)(cfg, input_shape, mask_shape)


from .dual import DualInstanceDecoder, sine_position_embedding  # noqa: E402,F401
from .pooled_class import PooledClassDualInstanceDecoder, PooledClassHead  # noqa: E402,F401
