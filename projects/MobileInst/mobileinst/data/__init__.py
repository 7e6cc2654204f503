"""Datasets (synthetic, YouTube-VIS) and dataset mappers."""
from . import datasets  # noqa: F401  (registers the builtin datasets)
from .build import (  # noqa: F401
    build_test_mapper,
    build_train_loader,
    build_train_mapper,
    check_batch_size,
    check_min_size_test,
    check_num_classes,
    naming_unknown_categories,
    get_train_dataset_dicts,
    get_train_datasets,
    is_pseudo_video_dataset,
    is_video_dataset,
)
from .filters import drop_annotations_without_masks, mask_problem  # noqa: F401
from .dataset_mapper import MobileInstDatasetMapper  # noqa: F401
