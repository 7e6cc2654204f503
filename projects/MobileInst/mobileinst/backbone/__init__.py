"""Mobile backbones: local features X3, X4, X5 and global features X6."""
from .mobilenetv2 import MobileNetV2Backbone, build_mobilenetv2_backbone  # noqa: F401
from .topformer import TOPFORMER_VARIANTS, TopFormer, build_topformer_backbone  # noqa: F401
from .seaformer import SEAFORMER_VARIANTS, SeaFormer, build_seaformer_backbone  # noqa: F401
