# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Choose the dataset mapper for a dataset (images, videos or pseudo videos), build
the training set (annotations without a usable mask dropped) and its loader (the
sets of DATASETS.TRAIN in the shares of DATASETS.TRAIN_RATIOS), and check
NUM_CLASSES against it."""
import contextlib
import itertools
import json
import logging
from typing import Iterable, List, Optional

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from .dataset_mapper import MobileInstDatasetMapper

logger = logging.getLogger(__name__)


def is_video_dataset(dataset_name: str) -> bool:
    """True for datasets registered with ``evaluator_type == "ytvis"``."""
    return MetadataCatalog.get(dataset_name).get("evaluator_type", None) == "ytvis"


def is_pseudo_video_dataset(dataset_name: str) -> bool:
    """True for image sets registered as pseudo videos (``datasets.pseudo_video``)."""
    return bool(MetadataCatalog.get(dataset_name).get("pseudo_video", False))


def trains_on_frame_pairs(cfg) -> bool:
    """True for a video meta-architecture (``MobileInstVideo`` or a subclass): it trains on
    frame pairs (temporal query passing), and takes image sets as pseudo videos."""
    from detectron2.modeling import META_ARCH_REGISTRY

    from ..video import MobileInstVideo

    arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    return isinstance(arch, type) and issubclass(arch, MobileInstVideo)


def build_train_mapper(cfg, dataset_dicts=None):
    """The frame-pair mapper when a set of DATASETS.TRAIN is a video or pseudo-video
    set, or for a video meta-architecture (which takes image dicts as pseudo
    videos), else the image mapper (``dataset_dicts``: the training set, which
    copy-paste takes objects from)."""
    names = cfg.DATASETS.TRAIN
    if trains_on_frame_pairs(cfg) or any(is_video_dataset(n) or is_pseudo_video_dataset(n) for n in names):
        from .ytvis_mapper import build_pair_mapper

        return build_pair_mapper(cfg)
    return MobileInstDatasetMapper(cfg, is_train=True, dataset_dicts=dataset_dicts)


def check_min_size_test(cfg):
    """INPUT.MIN_SIZE_TEST is the shorter side at test time: an int > 0, or 0 for no
    resize (what detectron2's ResizeShortestEdge does with 0); else ``ValueError``
    naming the key (before: a PIL error at the first image)."""
    v = cfg.INPUT.MIN_SIZE_TEST
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"INPUT.MIN_SIZE_TEST is {v!r}; expected an int > 0 (the shorter side of test images) "
                         "or 0 (no resize, as in detectron2)")


def check_batch_size(cfg, world_size: int):
    """SOLVER.IMS_PER_BATCH is the batch over all processes: an int >= 1 divisible by
    the number of processes; else ``ValueError`` naming the key."""
    v = cfg.SOLVER.IMS_PER_BATCH
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"SOLVER.IMS_PER_BATCH is {v!r}; expected an int >= 1 (images per iteration over all "
                         "processes)")
    if v % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH is {v} but training runs {world_size} processes (--num-gpus x "
                         f"--num-machines): expected a multiple of {world_size}")


def unknown_category_error(dataset_name: str) -> Optional[ValueError]:
    """For a COCO-format set (its metadata's ``json_file``) whose annotation has a
    ``category_id`` that its "categories" do not list (detectron2's loader then raises a
    KeyError naming neither the file nor the annotation): a ``ValueError`` naming the
    file and the first such annotation; None if there is none."""
    json_file = MetadataCatalog.get(dataset_name).get("json_file", None)
    if not json_file:
        return None
    with open(json_file) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "annotations" not in data:
        return None
    ids = {c.get("id") for c in data.get("categories", [])}
    for a in data["annotations"]:
        if a.get("category_id") not in ids:
            return ValueError(f"'{json_file}' (dataset '{dataset_name}'): annotation {a.get('id')} (image "
                              f"{a.get('image_id')}) has category_id {a.get('category_id')!r}, which is not one of "
                              f"the json's categories {sorted(ids, key=str)}")
    return None


@contextlib.contextmanager
def naming_unknown_categories(dataset_name: str):
    """Loading ``dataset_name`` within the block: a KeyError of an annotation's unknown
    category becomes :func:`unknown_category_error`'s ValueError."""
    try:
        yield
    except KeyError as e:
        err = unknown_category_error(dataset_name)
        if err is None:
            raise
        raise err from e


def build_test_mapper(cfg, dataset_name: str):
    check_min_size_test(cfg)
    if is_video_dataset(dataset_name):
        from .ytvis_mapper import YTVISTestMapper

        return YTVISTestMapper(cfg)
    return MobileInstDatasetMapper(cfg, is_train=False)


def get_train_datasets(cfg) -> List[list]:
    """The dicts of each set of ``DATASETS.TRAIN``, in order, as detectron2's
    ``get_detection_dataset_dicts`` loads them, with the annotations that have no
    usable mask dropped first (:func:`drop_annotations_without_masks`, one warning
    per set); then, for image sets and ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``, the
    images left without objects are removed, as detectron2 does (video sets keep
    every video). The sets must have the same ``thing_classes``."""
    from detectron2.data import get_detection_dataset_dicts
    from detectron2.data.detection_utils import check_metadata_consistency

    from .filters import drop_annotations_without_masks

    sets = []
    for name in cfg.DATASETS.TRAIN:
        with naming_unknown_categories(name):
            dicts = get_detection_dataset_dicts([name], filter_empty=False)
        if not isinstance(dicts, list):  # a torch Dataset: loaded lazily, nothing to filter here
            sets.append(dicts)
            continue
        dicts = drop_annotations_without_masks(dicts, name)
        if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS and not is_video_dataset(name):
            # detectron2's filter_images_with_only_crowd_annotations (whose signature varies by version)
            before = len(dicts)
            dicts = [d for d in dicts if any(a.get("iscrowd", 0) == 0 for a in d.get("annotations", ()))]
            logger.info(f"{name}: removed {before - len(dicts)} images with no usable annotations. "
                        f"{len(dicts)} images left.")
        if not dicts:
            raise ValueError(f"DATASETS.TRAIN '{name}': no image with objects left to train on")
        sets.append(dicts)
    if len(sets) > 1:
        try:
            check_metadata_consistency("thing_classes", list(cfg.DATASETS.TRAIN))
        except AttributeError:  # classes unknown for a set: nothing to compare
            pass
    return sets


def _concatenated(sets):
    if all(isinstance(s, list) for s in sets):
        return list(itertools.chain.from_iterable(sets))
    return sets[0] if len(sets) == 1 else torch.utils.data.ConcatDataset(sets)


def get_train_dataset_dicts(cfg):
    """The dicts of :func:`get_train_datasets`, concatenated (a torch Dataset stays
    as loaded)."""
    return _concatenated(get_train_datasets(cfg))


def build_train_loader(cfg):
    """detectron2's ``build_detection_train_loader`` on :func:`get_train_datasets`,
    with :func:`build_train_mapper` and, with ``DATASETS.TRAIN_RATIOS``, the sampler
    that draws the sets in those shares (``sampler.build_train_sampler``)."""
    from detectron2.data import build_detection_train_loader

    from .sampler import build_train_sampler

    from detectron2.utils import comm

    check_batch_size(cfg, comm.get_world_size())
    sets = get_train_datasets(cfg)
    sampler = build_train_sampler(cfg, [len(s) for s in sets]) if cfg.DATASETS.TRAIN_RATIOS else None
    dataset = _concatenated(sets)
    return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg, dataset), dataset=dataset,
                                        sampler=sampler)


def dataset_num_classes(dataset_name: str, load: bool = True) -> Optional[int]:
    """The number of ``thing_classes`` of a registered dataset, from its metadata.
    With ``load``, a dataset whose metadata does not list them yet (a COCO-format
    set registered with ``register_coco_instances``) is loaded once, which sets
    them. None if they stay unknown."""
    meta = MetadataCatalog.get(dataset_name)
    classes = meta.get("thing_classes", None)
    if classes is None and load and dataset_name in DatasetCatalog.list():
        with naming_unknown_categories(dataset_name):
            DatasetCatalog.get(dataset_name)
        classes = meta.get("thing_classes", None)
    return None if classes is None else len(classes)


def check_num_classes(cfg, dataset_names: Optional[Iterable[str]] = None, load: bool = True):
    """Raise a ``ValueError`` if ``MODEL.MOBILEINST.NUM_CLASSES`` differs from the
    number of classes of a dataset (default: every one of ``DATASETS.TRAIN`` and
    ``DATASETS.TEST``). Datasets whose classes are unknown are skipped (see
    :func:`dataset_num_classes` for ``load``)."""
    expected = cfg.MODEL.MOBILEINST.NUM_CLASSES
    if dataset_names is None:
        fields = [("DATASETS.TRAIN", n) for n in cfg.DATASETS.TRAIN] + [("DATASETS.TEST", n) for n in cfg.DATASETS.TEST]
    else:
        fields = [("DATASETS.TRAIN" if n in cfg.DATASETS.TRAIN else "DATASETS.TEST" if n in cfg.DATASETS.TEST
                   else "dataset", n) for n in dataset_names]
    for field, name in fields:
        n = dataset_num_classes(name, load)
        if n is None:
            logger.debug(f"{field} '{name}': classes unknown, NUM_CLASSES not checked")
            continue
        if n != expected:
            classes = MetadataCatalog.get(name).thing_classes
            shown = ", ".join(classes[:5]) + (", ..." if n > 5 else "")
            raise ValueError(
                f"MODEL.MOBILEINST.NUM_CLASSES is {expected} but {field} '{name}' has {n} classes ({shown}). "
                f"Set MODEL.MOBILEINST.NUM_CLASSES {n} (a checkpoint trained with another number of classes "
                "still loads: only its class head is skipped)."
            )
