# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""OVIS (Occluded Video Instance Segmentation, Qi et al., IJCV 2022): its categories and
splits. OVIS ships YouTube-VIS-format jsons, loaded by :func:`.ytvis.load_ytvis_json`.

Layout under the datasets root (datasets/README.md): the frame archives unpacked as
``ovis/{train,valid,test}/<video>/<frame>.jpg`` and the annotation files as
``ovis/annotations/annotations_{train,valid,test}.json`` (the folders MinVIS, DVIS
and IDOL use). Only the train json has annotations; valid and test are scored by
the OVIS evaluation server.
"""
import os
from typing import Optional

from detectron2.data import DatasetCatalog

from .ytvis import _get_ytvis_metadata, register_ytvis_instances

__all__ = ["OVIS_CATEGORIES", "register_all_ovis"]

# the "categories" of the official jsons, ids 1..25 (names as spelled there: "Vehical")
_OVIS_NAMES = [
    "Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra",
    "Giraffe", "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger",
    "Fish", "Turtle", "Bicycle", "Motorcycle", "Airplane", "Boat", "Vehical",
]  # fmt: skip
OVIS_CATEGORIES = [{"id": i + 1, "name": n} for i, n in enumerate(_OVIS_NAMES)]

# name -> (image_root, json_file), relative to the datasets root
_PREDEFINED_SPLITS_OVIS = {
    "ovis_train": ("ovis/train", "ovis/annotations/annotations_train.json"),
    "ovis_val": ("ovis/valid", "ovis/annotations/annotations_valid.json"),
    "ovis_test": ("ovis/test", "ovis/annotations/annotations_test.json"),
}
OVIS_SERVER = "https://songbai.site/ovis/"


def register_all_ovis(root: Optional[str] = None) -> None:
    """Register ovis_{train,val,test} under ``root`` (default: $DETECTRON2_DATASETS or
    "datasets"). No file is read; names already in DatasetCatalog are skipped."""
    if root is None:
        root = os.getenv("DETECTRON2_DATASETS", "datasets")
    registered = set(DatasetCatalog.list())
    for name, (image_root, json_file) in _PREDEFINED_SPLITS_OVIS.items():
        if name not in registered:
            register_ytvis_instances(name, dict(_get_ytvis_metadata(OVIS_CATEGORIES), evaluation_server=OVIS_SERVER),
                                     os.path.join(root, json_file), os.path.join(root, image_root))
