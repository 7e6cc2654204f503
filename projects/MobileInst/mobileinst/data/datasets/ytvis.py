"""YouTube-VIS-format dataset loading and registration (YouTube-VIS 2019 / 2021 / 2022;
OVIS, in the same format, is registered by :mod:`.ovis`).

The YouTube-VIS json format is::

    {
      "videos": [{"id", "width", "height", "length",
                  "file_names": [frame path relative to image_root, ...]}],
      "annotations": [{"id", "video_id", "category_id", "iscrowd",
                       "segmentations": [RLE | uncompressed RLE | polygons | None, ...],
                       "bboxes": [[x, y, w, h] | None, ...],
                       "areas": [number | None, ...]}],   # absent in test/valid splits
      "categories": [{"id", "name"}],
    }

:func:`load_ytvis_json` turns it into one detectron2-style dict per *video*. See its
docstring for the exact output format.
"""

import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import pycocotools.mask as mask_util
from fvcore.common.timer import Timer

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.colormap import colormap
from detectron2.utils.file_io import PathManager

from ..filters import NAMED, mask_problem

logger = logging.getLogger(__name__)

__all__ = [
    "YTVIS_2019_CATEGORIES",
    "YTVIS_2021_CATEGORIES",
    "check_frame_folders",
    "load_ytvis_json",
    "register_ytvis_instances",
    "register_all_ytvis",
]

_YTVIS_2019_NAMES = [
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog",
    "snake", "monkey", "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse",
    "turtle", "bear", "motorbike", "giraffe", "leopard", "fox", "deer", "owl", "surfboard",
    "airplane", "truck", "zebra", "tiger", "elephant", "snowboard", "boat", "shark",
    "mouse", "frog", "eagle", "earless_seal", "tennis_racket",
]  # fmt: skip

_YTVIS_2021_NAMES = [
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck",
    "earless_seal", "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda",
    "giraffe", "horse", "leopard", "lizard", "monkey", "motorbike", "mouse", "parrot",
    "person", "rabbit", "shark", "skateboard", "snake", "snowboard", "squirrel",
    "surfboard", "tennis_racket", "tiger", "train", "truck", "turtle", "whale", "zebra",
]  # fmt: skip

YTVIS_2019_CATEGORIES = [{"id": i + 1, "name": n} for i, n in enumerate(_YTVIS_2019_NAMES)]
YTVIS_2021_CATEGORIES = [{"id": i + 1, "name": n} for i, n in enumerate(_YTVIS_2021_NAMES)]

# name -> (image_root, json_file), relative to the datasets root. YouTube-VIS 2022
# trains on the 2021 train set (ytvis_2021_train); its valid set (the 2021 videos
# and long ones) is registered as the archive unpacks (valid/instances.json).
_PREDEFINED_SPLITS_YTVIS = {
    "ytvis_2019_train": ("ytvis_2019/train/JPEGImages", "ytvis_2019/train.json"),
    "ytvis_2019_val": ("ytvis_2019/valid/JPEGImages", "ytvis_2019/valid.json"),
    "ytvis_2021_train": ("ytvis_2021/train/JPEGImages", "ytvis_2021/train.json"),
    "ytvis_2021_val": ("ytvis_2021/valid/JPEGImages", "ytvis_2021/valid.json"),
    "ytvis_2022_val": ("ytvis_2022/valid/JPEGImages", "ytvis_2022/valid/instances.json"),
}
_PREDEFINED_CATEGORIES = {
    "ytvis_2019": YTVIS_2019_CATEGORIES,
    "ytvis_2021": YTVIS_2021_CATEGORIES,
    "ytvis_2022": YTVIS_2021_CATEGORIES,  # 2022 keeps the 2021 categories
}
# where a set without ground truth is scored (the submission zip of the evaluator)
YTVIS_SERVER = "https://youtube-vos.org/dataset/vis/"


def _get_ytvis_metadata(categories: Sequence[dict]) -> dict:
    """
    Args:
        categories: list of {"id", "name"} (any order; contiguous ids follow sorted dataset ids).

    Returns:
        dict with "thing_classes", "thing_dataset_id_to_contiguous_id", "thing_colors".
    """
    cats = sorted(categories, key=lambda c: c["id"])
    palette = colormap(rgb=True, maximum=255)
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
        "thing_colors": [[int(x) for x in palette[i % len(palette)]] for i in range(len(cats))],
    }


def _missing_json_message(json_file: str, dataset_name: Optional[str] = None) -> str:
    return (
        (f"Dataset '{dataset_name}': " if dataset_name else "")
        + f"YouTube-VIS-format annotation file not found: {json_file}. "
        "Download YouTube-VIS 2019/2021/2022 (https://youtube-vos.org/dataset/vis/) or OVIS "
        "(https://songbai.site/ovis/) and place it under $DETECTRON2_DATASETS as datasets/README.md "
        "describes (e.g. ytvis_2019/train.json + ytvis_2019/train/JPEGImages/, "
        "ovis/annotations/annotations_train.json + ovis/train/). "
        "For the small synthetic dataset run `python datasets/prepare_synthetic.py`."
    )


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_field(obj: dict, field: str, ok, expected: str, where: str):
    """The value of ``obj[field]``; a ``ValueError`` naming ``where`` (the json and the
    entry) and the field when it is missing or not ``expected``."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a json object, got {type(obj).__name__}")
    if field not in obj:
        raise ValueError(f"{where}: no '{field}' field (expected {expected})")
    value = obj[field]
    if not ok(value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ValueError(f"{where}: '{field}' is {shown}; expected {expected}")
    return value


def _normalize_segmentation(segm, height: int, width: int):
    """
    Returns a segmentation that detectron2's mapper utilities accept, or None if the frame
    has no (valid) mask:
      * compressed RLE (counts bytes/str) -> unchanged (counts bytes decoded to str);
      * uncompressed RLE (counts list)    -> converted to compressed RLE with counts as str
        (``mask_util.decode`` does not accept uncompressed RLE);
      * polygons                          -> invalid polygons (< 3 points / odd length) dropped.
    """
    if segm is None:
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError(f"invalid RLE (needs 'counts' and 'size'): keys={list(segm)}")
        if isinstance(segm["counts"], list):
            h, w = segm["size"]
            segm = mask_util.frPyObjects(segm, h, w)
        if isinstance(segm["counts"], bytes):
            segm = {"size": list(segm["size"]), "counts": segm["counts"].decode("ascii")}
        return segm
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
        return polys if polys else None
    raise ValueError(f"unknown segmentation type {type(segm)}")


def _bbox_from_segmentation(segm, height: int, width: int) -> List[float]:
    if isinstance(segm, dict):
        rle = segm
    else:
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    return [float(x) for x in mask_util.toBbox(rle)]


def load_ytvis_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    extra_keys: Sequence[str] = (),
) -> List[dict]:
    """
    Load a YouTube-VIS json into a list of per-video dicts.

    Args:
        json_file: path to the YouTube-VIS json.
        image_root: directory the videos' "file_names" are relative to.
        dataset_name: if given, "thing_classes" and "thing_dataset_id_to_contiguous_id" are set
            in its MetadataCatalog entry (unless already set; an existing mapping is then used).
        extra_keys: annotation-level keys (besides the standard ones) copied as-is into every
            per-frame object of that annotation.

    Returns:
        list of dicts, one per video::

            {"video_id": int, "height": int, "width": int, "length": int,
             "file_names": [os.path.join(image_root, f) for each frame],
             "annotations": [  # only present if the json has "annotations" (not for test splits)
                 [  # frame t: one entry per track that is present (not None) in frame t
                     {"id": annotation (track) id, "category_id": contiguous id,
                      "iscrowd": 0/1, "bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS,
                      "segmentation": compressed RLE dict (counts as str) or polygon list},
                 ], ...  # len == length
             ]}

        Uncompressed RLE in the json is converted to compressed RLE, so every mask can be handled
        by ``detectron2.data.detection_utils`` (``annotations_to_instances(..., mask_format=
        "bitmask")`` accepts RLE dicts and polygons). A missing per-frame bbox is derived from the
        mask; a frame whose segmentation is None is left out, and so is one without a usable mask
        (no valid polygon, zero area; counted and named in one warning).
    """
    timer = Timer()
    if not PathManager.exists(json_file):
        raise FileNotFoundError(_missing_json_message(json_file, dataset_name))
    with PathManager.open(json_file, "r") as f:
        dataset = json.load(f)
    if timer.seconds() > 1:
        logger.info("Loading {} takes {:.2f} seconds.".format(json_file, timer.seconds()))

    if not isinstance(dataset, dict) or "videos" not in dataset:
        raise ValueError(f"{json_file}: not a YouTube-VIS json (no 'videos' field)")
    _check_field(dataset, "videos", lambda v: isinstance(v, list), "a list", json_file)
    categories = dataset.get("categories", [])
    for i, c in enumerate(categories):
        _check_field(c, "id", _is_int, "an int", f"{json_file}: categories[{i}]")

    # --- category mapping
    id_map = None
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        id_map = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
        if id_map is None:
            ytvis_meta = _get_ytvis_metadata(categories)
            meta.set(
                thing_classes=ytvis_meta["thing_classes"],
                thing_dataset_id_to_contiguous_id=ytvis_meta["thing_dataset_id_to_contiguous_id"],
            )
            id_map = ytvis_meta["thing_dataset_id_to_contiguous_id"]
        else:
            unknown = sorted({int(c["id"]) for c in categories} - set(id_map))
            if unknown:
                raise ValueError(
                    f"{json_file}: 'categories' has ids {unknown} that dataset '{dataset_name}' does not "
                    f"have (its category ids: {sorted(id_map)}); is this the json of another data set?"
                )
    if id_map is None:
        id_map = _get_ytvis_metadata(categories)["thing_dataset_id_to_contiguous_id"]

    # --- videos
    has_annotations = "annotations" in dataset
    dataset_dicts = []
    video_index: Dict[int, dict] = {}
    for i, video in enumerate(dataset["videos"]):
        vid = _check_field(video, "id", _is_int, "an int", f"{json_file}: videos[{i}]")
        where = f"{json_file}: video id={vid}"
        file_names = _check_field(video, "file_names", lambda v: isinstance(v, list) and all(
            isinstance(f, str) for f in v), "a list of frame paths", where)
        for field in ("height", "width"):
            _check_field(video, field, lambda v: _is_int(v) and v > 0, "an int > 0", where)
        length = video.get("length", len(file_names))
        if len(file_names) != length:
            raise ValueError(
                f"{json_file}: video id={vid}: 'file_names' has {len(file_names)} entries "
                f"but 'length' is {length}"
            )
        record = {
            "video_id": vid,
            "height": video["height"],
            "width": video["width"],
            "length": length,
            "file_names": [os.path.join(image_root, fn) for fn in file_names],
        }
        if has_annotations:
            record["annotations"] = [[] for _ in range(length)]
        dataset_dicts.append(record)
        video_index[vid] = record

    # --- annotations (tracks)
    num_dropped, reasons, named = 0, {}, []
    if has_annotations:
        _check_field(dataset, "annotations", lambda v: isinstance(v, list), "a list", json_file)
    for i, anno in enumerate(dataset.get("annotations", [])):
        _check_field(anno, "video_id", _is_int, "an int", f"{json_file}: annotations[{i}]")
        aid = anno.get("id")
        _check_field(anno, "category_id", _is_int, "an int", f"{json_file}: annotation id={aid}")
        record = video_index.get(anno.get("video_id"))
        if record is None:
            raise ValueError(
                f"{json_file}: annotation id={aid} refers to unknown video_id={anno.get('video_id')}"
            )
        length, h, w = record["length"], record["height"], record["width"]
        segms = anno.get("segmentations")
        if segms is None:
            raise ValueError(f"{json_file}: annotation id={aid} has no 'segmentations' field")
        _check_field(anno, "segmentations", lambda v: isinstance(v, list), "a list (one entry per frame)",
                     f"{json_file}: annotation id={aid}")
        bboxes = anno.get("bboxes")
        if bboxes is None:
            bboxes = [None] * length
        _check_field({"bboxes": bboxes}, "bboxes", lambda v: isinstance(v, list), "a list (one entry per frame)",
                     f"{json_file}: annotation id={aid}")
        for field, values in (("segmentations", segms), ("bboxes", bboxes)):
            if len(values) != length:
                raise ValueError(
                    f"{json_file}: annotation id={aid} (video id={record['video_id']}): "
                    f"'{field}' has {len(values)} entries but the video has {length} frames"
                )
        if anno["category_id"] not in id_map:
            raise ValueError(
                f"{json_file}: annotation id={aid} has category_id={anno['category_id']} which "
                f"is not among the dataset's categories {sorted(id_map)}"
            )
        cat = id_map[anno["category_id"]]
        extras = {k: anno[k] for k in extra_keys if k in anno}
        for t in range(length):
            if segms[t] is None:  # the object is not in this frame
                continue
            try:
                segm = _normalize_segmentation(segms[t], h, w)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{json_file}: annotation id={aid}: 'segmentations'[{t}]: {e}") from e
            if segm is None:
                why = "no polygon with 3 or more points"
            else:  # crowd regions are not trained on: an empty one does no harm
                why = None if anno.get("iscrowd", 0) else mask_problem(segm, h, w)
            if why is not None:
                num_dropped += 1
                reasons[why] = reasons.get(why, 0) + 1
                if len(named) < NAMED:
                    named.append(f"'{record['file_names'][t]}' annotation id {aid} ({why})")
                continue
            bbox = bboxes[t]
            if bbox is None:
                bbox = _bbox_from_segmentation(segm, h, w)
            obj = {
                "id": aid,
                "category_id": cat,
                "iscrowd": anno.get("iscrowd", 0),
                "bbox": list(bbox),
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": segm,
            }
            obj.update(extras)
            record["annotations"][t].append(obj)
    if num_dropped > 0:
        logger.warning(
            f"{json_file}: dropped {num_dropped} per-frame annotations without a usable mask ("
            + ", ".join(f"{why}: {k}" for why, k in sorted(reasons.items())) + "), e.g. " + "; ".join(named)
            + (f"; ... and {num_dropped - len(named)} more" if num_dropped > len(named) else "")
        )

    logger.info(
        "Loaded {} videos{} in YouTube-VIS format from {}".format(
            len(dataset_dicts),
            f" with {len(dataset['annotations'])} tracks" if has_annotations else "",
            json_file,
        )
    )
    return dataset_dicts


def check_frame_folders(dataset_dicts: List[dict], json_file: str, image_root: str,
                        dataset_name: Optional[str] = None) -> List[dict]:
    """Raise a ``FileNotFoundError`` naming ``json_file`` and the videos whose frame
    folders (those of their "file_names") are missing, or ``image_root`` if it is;
    one ``isdir`` per folder, no frame is opened. Returns ``dataset_dicts``."""
    prefix = f"Dataset '{dataset_name}': " if dataset_name else ""
    if not os.path.isdir(image_root):
        raise FileNotFoundError(
            f"{prefix}frame folder '{image_root}' does not exist; the 'file_names' of {json_file} are "
            "relative to it (layouts: datasets/README.md)"
        )
    missing = []
    for d in dataset_dicts:
        for folder in sorted({os.path.dirname(f) for f in d["file_names"]}):
            if not os.path.isdir(folder):
                missing.append(f"video id={d['video_id']}: '{folder}'")
    if missing:
        raise FileNotFoundError(
            f"{prefix}{len(missing)} frame folder(s) named by the 'file_names' of {json_file} do not exist "
            f"under '{image_root}': " + "; ".join(missing[:NAMED])
            + (f"; ... and {len(missing) - NAMED} more" if len(missing) > NAMED else "")
            + " (layouts: datasets/README.md)"
        )
    return dataset_dicts


def register_ytvis_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """
    Register a YouTube-VIS-format dataset (like detectron2's ``register_coco_instances``).
    Nothing is read until the dataset is requested from DatasetCatalog; then the json
    is loaded (:func:`load_ytvis_json`) and the videos' frame folders are checked
    (:func:`check_frame_folders`).

    Args:
        name: dataset name, e.g. "ytvis_2019_train".
        metadata: extra metadata (e.g. ``_get_ytvis_metadata(categories)``); may be {}.
        json_file: path to the YouTube-VIS json.
        image_root: directory containing the videos' frames.
    """
    assert isinstance(name, str), name
    assert isinstance(json_file, (str, os.PathLike)), json_file
    assert isinstance(image_root, (str, os.PathLike)), image_root
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(
        name, lambda: check_frame_folders(load_ytvis_json(json_file, image_root, name), json_file, image_root, name)
    )
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="ytvis", **metadata
    )


def register_all_ytvis(root: Optional[str] = None) -> None:
    """
    Register ytvis_2019_{train,val}, ytvis_2021_{train,val} and ytvis_2022_val under ``root``
    (default: $DETECTRON2_DATASETS or "datasets"), with the layout of datasets/README.md. The
    "val" splits are YouTube-VIS' "valid" splits, whose jsons have no annotations (the
    evaluator writes the zip the evaluation server takes).
    No file is read; names already in DatasetCatalog are skipped.
    """
    if root is None:
        root = os.getenv("DETECTRON2_DATASETS", "datasets")
    registered = set(DatasetCatalog.list())
    for name, (image_root, json_file) in _PREDEFINED_SPLITS_YTVIS.items():
        if name in registered:
            continue
        categories = _PREDEFINED_CATEGORIES[name.rsplit("_", 1)[0]]
        register_ytvis_instances(
            name,
            dict(_get_ytvis_metadata(categories), evaluation_server=YTVIS_SERVER),
            os.path.join(root, json_file),
            os.path.join(root, image_root),
        )
