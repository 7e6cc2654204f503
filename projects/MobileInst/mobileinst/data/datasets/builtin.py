# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Register the datasets under ``$DETECTRON2_DATASETS`` (default ``./datasets``).

* ``synthetic_coco_{train,val}``: ``synthetic_coco/{train,val}`` and
  ``synthetic_coco/annotations/instances_{train,val}.json``
* ``synthetic_ytvis_{train,val,showcase}``: ``synthetic_ytvis/<split>/JPEGImages``
  and ``synthetic_ytvis/annotations/<split>.json`` (showcase: make demo's one
  longer clip)
* ``ytvis_{2019,2021}_{train,val}``, ``ytvis_2022_val`` (see ``ytvis.register_all_ytvis``)
* ``ovis_{train,val,test}`` (see ``ovis.register_all_ovis``)
* pseudo videos (``pseudo_video``): ``coco2ytvis{2019,2021}_train``, the
  images of ``coco_2017_train`` with YouTube-VIS 2019 / 2021 labels, and
  ``synthetic_coco2ytvis_train``, those of ``synthetic_coco_train`` with
  synthetic YouTube-VIS labels (maps in ``coco_to_ytvis``)

COCO and LVIS come from detectron2's own builtin registration. Nothing is read
at registration time.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..synthetic import SHOWCASE_SPLIT, SYNTHETIC_CATEGORIES
from .ovis import register_all_ovis
from .coco_to_ytvis import COCO_TO_YTVIS_2019, COCO_TO_YTVIS_2021, SYNTHETIC_COCO_TO_YTVIS
from .pseudo_video import register_pseudo_video_instances
from .ytvis import (
    YTVIS_2019_CATEGORIES,
    YTVIS_2021_CATEGORIES,
    _get_ytvis_metadata,
    register_all_ytvis,
    register_ytvis_instances,
)

HOW_TO_MAKE = "make it with `python datasets/prepare_synthetic.py --root {root}` (or `make data`)"


def synthetic_metadata():
    cats = sorted(SYNTHETIC_CATEGORIES, key=lambda c: c["id"])
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def _check_exists(path: str, root: str, name: str):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Dataset '{name}': '{path}' does not exist; " + HOW_TO_MAKE.format(root=root)
        )


def _load_synthetic_coco(json_file, image_root, name, root):
    _check_exists(image_root, root, name)
    _check_exists(json_file, root, name)
    # annotation ids kept: messages about bad annotations name them
    return load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])


def register_all_synthetic(root: str, prefix: str = "synthetic"):
    """Register ``{prefix}_coco_{train,val}``, ``{prefix}_ytvis_{train,val,showcase}``
    under ``root`` and the pseudo videos ``{prefix}_coco2ytvis_train``."""
    for split in ("train", "val"):
        name = f"{prefix}_coco_{split}"
        if name not in DatasetCatalog.list():
            image_root = os.path.join(root, "synthetic_coco", split)
            json_file = os.path.join(root, "synthetic_coco", "annotations", f"instances_{split}.json")
            DatasetCatalog.register(
                name, lambda j=json_file, i=image_root, n=name: _load_synthetic_coco(j, i, n, root)
            )
            MetadataCatalog.get(name).set(
                json_file=json_file, image_root=image_root, evaluator_type="coco", **synthetic_metadata()
            )
    for split in ("train", "val", SHOWCASE_SPLIT):
        name = f"{prefix}_ytvis_{split}"
        if name not in DatasetCatalog.list():
            register_ytvis_instances(
                name,
                _get_ytvis_metadata(SYNTHETIC_CATEGORIES),
                os.path.join(root, "synthetic_ytvis", "annotations", f"{split}.json"),
                os.path.join(root, "synthetic_ytvis", split, "JPEGImages"),
            )
    name = f"{prefix}_coco2ytvis_train"
    if name not in DatasetCatalog.list():
        register_pseudo_video_instances(name, f"{prefix}_coco_train", SYNTHETIC_COCO_TO_YTVIS, SYNTHETIC_CATEGORIES)


def register_all_pseudo_videos():
    """Register ``coco2ytvis{2019,2021}_train`` (COCO 2017 train as YouTube-VIS pseudo videos)."""
    for name, category_map, categories in (("coco2ytvis2019_train", COCO_TO_YTVIS_2019, YTVIS_2019_CATEGORIES),
                                           ("coco2ytvis2021_train", COCO_TO_YTVIS_2021, YTVIS_2021_CATEGORIES)):
        if name not in DatasetCatalog.list():
            register_pseudo_video_instances(name, "coco_2017_train", category_map, categories)


_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_all_synthetic(_root)
register_all_ytvis(_root)
register_all_ovis(_root)
register_all_pseudo_videos()
