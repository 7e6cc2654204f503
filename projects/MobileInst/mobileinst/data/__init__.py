"""Datasets (synthetic, YouTube-VIS) and dataset mappers."""
from . import datasets  # noqa: F401  (registers the builtin datasets)
from .build import build_test_mapper, build_train_mapper, is_video_dataset  # noqa: F401
from .dataset_mapper import MobileInstDatasetMapper  # noqa: F401
