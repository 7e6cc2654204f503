# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""MobileInst: video instance segmentation on the mobile, for detectron2.

Importing this package registers the meta-architectures ``MobileInst``
(images) and ``MobileInstVideo`` (video), the backbones
``build_topformer_backbone``, ``build_seaformer_backbone`` and
``build_mobilenetv2_backbone``, the heads (``MASK_DECODER_REGISTRY``:
``SemanticEnhancedMaskDecoder``, ``HighResMaskDecoder``;
``INSTANCE_DECODER_REGISTRY``: ``DualInstanceDecoder``,
``PooledClassDualInstanceDecoder``) and the datasets (synthetic, YouTube-VIS
2019/2021).
"""
try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "MobileInst needs detectron2. On CPython 3.10: `pip install sal-detectron2==0.7.2` "
        "(or `make install`, which sets up .venv); elsewhere install detectron2 from source: "
        "https://detectron2.readthedocs.io/en/latest/tutorials/install.html"
    ) from e

from . import data  # noqa: F401  (registers datasets)
from .backbone import build_mobilenetv2_backbone, build_seaformer_backbone, build_topformer_backbone  # noqa: F401
from .config import add_mobileinst_config  # noqa: F401
from .instance_decoder import INSTANCE_DECODER_REGISTRY, build_instance_decoder  # noqa: F401
from .mask_decoder import MASK_DECODER_REGISTRY, build_mask_decoder  # noqa: F401
from .mobileinst import MobileInst  # noqa: F401
from .video import MobileInstVideo  # noqa: F401

__version__ = "0.1.0"
