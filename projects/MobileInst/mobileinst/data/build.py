# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Choose the dataset mapper for a dataset: images or videos."""
from detectron2.data import MetadataCatalog

from .dataset_mapper import MobileInstDatasetMapper


def is_video_dataset(dataset_name: str) -> bool:
    """True for datasets registered with ``evaluator_type == "ytvis"``."""
    return MetadataCatalog.get(dataset_name).get("evaluator_type", None) == "ytvis"


def build_train_mapper(cfg):
    """Frame-pair mapper for video sets (and pseudo videos), else the image mapper."""
    if is_video_dataset(cfg.DATASETS.TRAIN[0]) or cfg.INPUT.PSEUDO_VIDEO:
        from .ytvis_mapper import build_pair_mapper

        return build_pair_mapper(cfg)
    return MobileInstDatasetMapper(cfg, is_train=True)


def build_test_mapper(cfg, dataset_name: str):
    if is_video_dataset(dataset_name):
        from .ytvis_mapper import YTVISTestMapper

        return YTVISTestMapper(cfg)
    return MobileInstDatasetMapper(cfg, is_train=False)
