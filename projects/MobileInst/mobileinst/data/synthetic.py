"""Deterministic synthetic instance-segmentation data sets (images and videos).

The shapes, scenes and clips are drawn by :mod:`mobileinst.data.synthetic_shapes`
(see :data:`SYNTHETIC_CATEGORIES`); this module writes them in the two
annotation formats the project trains on.  Nothing is downloaded; every byte
follows from the seed (``numpy.random.Generator``, one per image or video,
from (seed, split, index)), so the same arguments give identical JSON files
and identical JPEG files.

COCO instances (``generate_coco``)::

    out_dir/<split>/000001.jpg ...              JPEG, quality 95
    out_dir/annotations/instances_<split>.json
      {"info": {...}, "licenses": [],
       "images": [{"id", "file_name" (relative to out_dir/<split>),
                   "height", "width"}],
       "annotations": [{"id", "image_id", "category_id", "iscrowd": 0,
                        "segmentation": {"size": [H, W], "counts": str},
                        "area": int, "bbox": [x, y, w, h]}],
       "categories": SYNTHETIC_CATEGORIES}

  ``segmentation`` is compressed RLE (``pycocotools.mask.encode``) with the
  counts decoded to ``str``; ``bbox`` is ``pycocotools.mask.toBbox`` of it and
  ``area`` its pixel count.  About 5% of the images contain no objects (they
  are still listed in "images").

YouTube-VIS (``generate_ytvis``)::

    out_dir/<split>/JPEGImages/<video_name>/00000.jpg ...
    out_dir/annotations/<split>.json
      {"info": {...}, "licenses": [],
       "videos": [{"id", "width", "height", "length",
                   "file_names": ["<video_name>/00000.jpg", ...]}],
                   (relative to out_dir/<split>/JPEGImages)
       "annotations": [{"id", "video_id", "category_id", "iscrowd": 0,
                        "segmentations": [RLE dict or None] * length,
                        "bboxes": [[x, y, w, h] or None] * length,
                        "areas": [int or None] * length}],
       "categories": SYNTHETIC_CATEGORIES}

  One annotation per object track.  Objects move with their own velocity
  (a few % of the image size per frame), slowly rotate and scale, some enter or
  leave the frame, and they pass in front of each other.  The background
  either stays or drifts slowly.

Files are written images first and JSON last; the JSON is written to a
temporary name and moved into place with ``os.replace``, and an existing JSON
of the same split is removed before its images are regenerated, so a crashed
run never leaves a JSON that points to missing or different images.

``generate_showcase`` writes one longer scripted clip (360x480, 120 frames:
objects that cross, pass behind another, leave and come back) as the
YouTube-VIS split ``showcase``: make demo tracks it.

``generate_all(root)`` writes ``root/synthetic_coco`` and
``root/synthetic_ytvis`` (train, val and showcase) and skips parts whose JSON exists.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from mobileinst_core.files import atomic_write_json

from .synthetic_shapes import (MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION, SYNTHETIC_CATEGORIES, make_image,
                               make_showcase_video, make_video)

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_COCO_DIRNAME",
    "SYNTHETIC_YTVIS_DIRNAME",
    "MIN_VISIBLE_AREA",
    "MIN_VISIBLE_FRACTION",
    "generate_coco",
    "generate_ytvis",
    "generate_showcase",
    "generate_all",
    "coco_json_path",
    "ytvis_json_path",
]

SYNTHETIC_COCO_DIRNAME = "synthetic_coco"
SYNTHETIC_YTVIS_DIRNAME = "synthetic_ytvis"

JPEG_QUALITY = 95


def coco_json_path(out_dir: str, split: str) -> str:
    return os.path.join(out_dir, "annotations", f"instances_{split}.json")


def ytvis_json_path(out_dir: str, split: str) -> str:
    return os.path.join(out_dir, "annotations", f"{split}.json")


# ----------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------
def _split_key(split: str) -> int:
    # stable (not python-hash based) integer from the split name
    return int.from_bytes(split.encode("utf-8")[:8].ljust(8, b"\0"), "little") % (2**31)


def _rng(seed: int, kind: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % (2**32), kind, _split_key(split), int(index)])


def _write_jpeg(path: str, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def _encode(mask: np.ndarray) -> Tuple[Dict, int, List[float]]:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    area = int(mask_util.area(rle))
    bbox = [float(x) for x in mask_util.toBbox(rle).tolist()]
    rle["counts"] = rle["counts"].decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}, area, bbox


def _remove_stale(directory: str, pattern: str, keep: set, is_dir: bool) -> None:
    if not os.path.isdir(directory):
        return
    rx = re.compile(pattern)
    for name in os.listdir(directory):
        if rx.fullmatch(name) and name not in keep:
            p = os.path.join(directory, name)
            if is_dir and os.path.isdir(p):
                shutil.rmtree(p)
            elif not is_dir and os.path.isfile(p):
                os.remove(p)


def _check_size(image_size) -> Tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    H, W = int(image_size[0]), int(image_size[1])
    if H < 16 or W < 16:
        raise ValueError(f"image_size too small: {image_size}")
    return H, W


# ----------------------------------------------------------------------------
# COCO images
# ----------------------------------------------------------------------------
def generate_coco(
    out_dir: str,
    split: str,
    num_images: int,
    image_size: Tuple[int, int] = (256, 256),
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 6,
) -> str:
    """Write ``num_images`` JPEGs to ``out_dir/<split>/`` and a COCO instances
    json to ``out_dir/annotations/instances_<split>.json``; return the json path.

    ``image_size`` is (H, W).  Deterministic in (seed, split, index).
    """
    H, W = _check_size(image_size)
    json_path = coco_json_path(out_dir, split)
    img_dir = os.path.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    if os.path.exists(json_path):  # never leave a json describing other images
        os.remove(json_path)
    images, annotations = [], []
    ann_id = 1
    names = set()
    for idx in range(int(num_images)):
        rng = _rng(seed, 1, split, idx)
        img, anns = make_image(rng, H, W, min_objects, max_objects)
        image_id = idx + 1
        name = f"{image_id:06d}.jpg"
        names.add(name)
        _write_jpeg(os.path.join(img_dir, name), img)
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
        for cat, m in anns:
            rle, area, bbox = _encode(m)
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                "segmentation": rle, "area": area, "bbox": bbox,
            })
            ann_id += 1
    data = {
        "info": {"description": "MobileInst synthetic shapes (COCO instances)",
                 "version": "1.0", "seed": int(seed), "split": split},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in SYNTHETIC_CATEGORIES],
    }
    atomic_write_json(json_path, data, separators=(",", ":"))
    _remove_stale(img_dir, r"\d{6}\.jpg", names, is_dir=False)
    return json_path


# ----------------------------------------------------------------------------
# YouTube-VIS videos
# ----------------------------------------------------------------------------
def generate_ytvis(
    out_dir: str,
    split: str,
    num_videos: int,
    num_frames: int = 12,
    image_size: Tuple[int, int] = (256, 256),
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 4,
) -> str:
    """Write ``num_videos`` videos of ``num_frames`` JPEG frames to
    ``out_dir/<split>/JPEGImages/<video>/`` and a YouTube-VIS json to
    ``out_dir/annotations/<split>.json``; return the json path.

    ``image_size`` is (H, W).  Tracks never visible in any frame are omitted;
    a video is re-drawn (deterministically) if it would have no track at all.
    """
    H, W = _check_size(image_size)
    T = int(num_frames)
    if T < 1:
        raise ValueError("num_frames must be >= 1")
    json_path, root = _start_ytvis_split(out_dir, split)
    videos, annotations = [], []
    for idx in range(int(num_videos)):
        rng = _rng(seed, 2, split, idx)
        for _attempt in range(10):
            frames, tracks = make_video(rng, H, W, T, min_objects, max_objects)
            tracks = [(c, v) for c, v in tracks if any(x is not None for x in v)]
            if tracks:
                break
        video, anns = _write_video(root, idx + 1, frames, tracks, len(annotations) + 1)
        videos.append(video)
        annotations.extend(anns)
    _write_ytvis_json(json_path, root, videos, annotations, seed, split)
    return json_path


def _start_ytvis_split(out_dir: str, split: str):
    """(json path, frame root) of a YouTube-VIS split; the frame root is created and an
    existing json removed first, so that a crash never leaves a json over other frames."""
    json_path = ytvis_json_path(out_dir, split)
    root = os.path.join(out_dir, split, "JPEGImages")
    os.makedirs(root, exist_ok=True)
    if os.path.exists(json_path):
        os.remove(json_path)
    return json_path, root


def _write_video(root: str, video_id: int, frames, tracks, first_ann_id: int):
    """Write the JPEG frames of one video to ``root/video_<id>/``; returns its
    YouTube-VIS video entry and one annotation per track (ids from ``first_ann_id``)."""
    vname = f"video_{video_id:05d}"
    vdir = os.path.join(root, vname)
    os.makedirs(vdir, exist_ok=True)
    file_names = []
    for f, img in enumerate(frames):
        fname = f"{f:05d}.jpg"
        _write_jpeg(os.path.join(vdir, fname), img)
        file_names.append(f"{vname}/{fname}")
    _remove_stale(vdir, r"\d{5}\.jpg", {os.path.basename(p) for p in file_names}, is_dir=False)
    H, W = frames[0].shape[:2]
    video = {"id": video_id, "width": W, "height": H, "length": len(frames), "file_names": file_names}
    annotations = []
    for k, (cat, vis) in enumerate(tracks):
        encoded = [_encode(v) if v is not None else (None, None, None) for v in vis]
        annotations.append({
            "id": first_ann_id + k, "video_id": video_id, "category_id": cat, "iscrowd": 0,
            "segmentations": [e[0] for e in encoded], "bboxes": [e[2] for e in encoded],
            "areas": [e[1] for e in encoded],
        })
    return video, annotations


def _write_ytvis_json(json_path: str, root: str, videos, annotations, seed: int, split: str) -> None:
    """The YouTube-VIS json of a split (atomically), then stale video folders removed."""
    data = {
        "info": {"description": "MobileInst synthetic shapes (YouTube-VIS)",
                 "version": "1.0", "seed": int(seed), "split": split},
        "licenses": [],
        "videos": videos,
        "annotations": annotations,
        "categories": [dict(c) for c in SYNTHETIC_CATEGORIES],
    }
    atomic_write_json(json_path, data, separators=(",", ":"))
    _remove_stale(root, r"video_\d{5}", {v["file_names"][0].split("/")[0] for v in videos}, is_dir=True)


SHOWCASE_SPLIT = "showcase"


def generate_showcase(out_dir: str, seed: int = 0, image_size: Tuple[int, int] = (360, 480),
                      num_frames: int = 120) -> str:
    """Write the showcase clip (:func:`~.synthetic_shapes.make_showcase_video`:
    objects that cross, pass behind another, leave and come back) as the one
    video of the YouTube-VIS split ``out_dir/showcase``; return the json path."""
    H, W = _check_size(image_size)
    if int(num_frames) < 2:
        raise ValueError("num_frames must be >= 2")
    json_path, root = _start_ytvis_split(out_dir, SHOWCASE_SPLIT)
    frames, tracks = make_showcase_video(_rng(seed, 3, SHOWCASE_SPLIT, 0), H, W, int(num_frames))
    tracks = [(c, v) for c, v in tracks if any(x is not None for x in v)]
    video, annotations = _write_video(root, 1, frames, tracks, 1)
    _write_ytvis_json(json_path, root, [video], annotations, seed, SHOWCASE_SPLIT)
    return json_path


# ----------------------------------------------------------------------------
# everything
# ----------------------------------------------------------------------------
def generate_all(
    root: str,
    seed: int = 0,
    num_train_images: int = 600,
    num_val_images: int = 100,
    num_train_videos: int = 60,
    num_val_videos: int = 48,
    image_size: Tuple[int, int] = (256, 256),
    num_frames: int = 12,
    showcase_size: Tuple[int, int] = (360, 480),
    showcase_frames: int = 120,
    overwrite: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, str]:
    """Write ``root/synthetic_coco/{train,val}``, ``root/synthetic_ytvis/{train,val}``
    and the showcase clip ``root/synthetic_ytvis/showcase`` (:func:`generate_showcase`).

    Parts whose json already exists are skipped unless ``overwrite``.  Train
    uses ``seed``, val ``seed + 1000``, the showcase ``seed + 2000``.  Returns
    ``{"coco_train"|"coco_val"|"ytvis_train"|"ytvis_val"|"ytvis_showcase": json_path}``.
    """
    coco_dir = os.path.join(root, SYNTHETIC_COCO_DIRNAME)
    ytvis_dir = os.path.join(root, SYNTHETIC_YTVIS_DIRNAME)
    jobs = [
        ("coco_train", coco_json_path(coco_dir, "train"),
         lambda: generate_coco(coco_dir, "train", num_train_images, image_size, seed)),
        ("coco_val", coco_json_path(coco_dir, "val"),
         lambda: generate_coco(coco_dir, "val", num_val_images, image_size, seed + 1000)),
        ("ytvis_train", ytvis_json_path(ytvis_dir, "train"),
         lambda: generate_ytvis(ytvis_dir, "train", num_train_videos, num_frames, image_size, seed)),
        ("ytvis_val", ytvis_json_path(ytvis_dir, "val"),
         lambda: generate_ytvis(ytvis_dir, "val", num_val_videos, num_frames, image_size, seed + 1000)),
        ("ytvis_showcase", ytvis_json_path(ytvis_dir, SHOWCASE_SPLIT),
         lambda: generate_showcase(ytvis_dir, seed + 2000, showcase_size, showcase_frames)),
    ]
    out = {}
    for name, path, fn in jobs:
        if os.path.exists(path) and not overwrite:
            if log:
                log(f"[skip] {name}: {path} exists")
        else:
            path = fn()
            if log:
                log(f"[done] {name}: {path}")
        out[name] = path
    return out
