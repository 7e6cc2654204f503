# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""export_meta.json: what a runtime needs to know about the exported graphs.

``tools/export.py`` builds an :class:`ExportMeta` from the config
(``mobileinst.export.build_export_meta``) and writes it with
:func:`write_export_meta`; the runtime reads it back with
:func:`read_export_meta`. Every field is required: a missing or invalid field
is an error naming the file and the field, never a default (the defaults live
in ``mobileinst/config.py``, which the runtime cannot import).

The ranking settings (max_detections, multi_class, nms_sigma) are inside the
ONNX image and keyframe graphs; a backend that runs the ranking outside its
graph (ncnn: ``mobileinst_runtime.ranking``) reads them from here.

Layout (json)::

    {"input_size": [H, W], "padded_size": [H', W'], "input_format": "RGB"|"BGR",
     "pixel_mean": [3 floats], "pixel_std": [3 floats], "num_classes", "num_queries",
     "class_names": [str] | null, "category_ids": [int] | null,
     "mask_threshold", "cls_threshold", "max_detections", "multi_class", "nms_sigma",
     "video": {TrackerSettings fields except mask_threshold,
               "nonkey_input_size": [h, w], "nonkey_padded_size": [h', w']},
     "weights": str,
     "files": {file name: {"sha256": hex, "bytes": int, "precision": "fp32"|"int8"}}}

"files" lists every graph file of the export (ONNX, TorchScript, int8, OpenVINO IR,
ncnn): the runtime opens only files listed there and checks each one's size and
sha256 when it opens it (:func:`verify_file`), so a graph of another export, a
stale file or a damaged copy is refused with the file and the field named.
"""
import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .files import atomic_write_json
from .online_tracker import TrackerSettings, is_int, is_real

_MASK_THRESHOLD = next(f for f in dataclasses.fields(TrackerSettings) if f.name == "mask_threshold")

META_FILE = "export_meta.json"


@dataclass(frozen=True)
class ExportMeta:
    input_size: Tuple[int, int]  # the fixed input of the image and keyframe graphs
    padded_size: Tuple[int, int]  # what the graphs pad it to; mask_probs cover this
    input_format: str  # INPUT.FORMAT
    pixel_mean: Tuple[float, ...]
    pixel_std: Tuple[float, ...]
    num_classes: int
    num_queries: int  # N
    class_names: Optional[List[str]]  # of DATASETS.TEST[0], if any
    category_ids: Optional[List[int]]  # contiguous class index -> dataset category id, if known
    cls_threshold: float  # INFERENCE.CLS_THRESHOLD
    max_detections: int  # INFERENCE.MAX_DETECTIONS: K, the candidates the image graph ranks
    multi_class: bool  # INFERENCE.MULTI_CLASS: rank (query, class) pairs, not queries
    nms_sigma: float  # INFERENCE.NMS_SIGMA: Matrix NMS's Gaussian sigma (0: no decay)
    tracker: TrackerSettings  # the video settings (mask_threshold = INFERENCE.MASK_THRESHOLD)
    nonkey_input_size: Tuple[int, int]  # input of nonkeyframe.onnx (VIDEO.NONKEY_SCALE)
    nonkey_padded_size: Tuple[int, int]
    weights: str  # MODEL.WEIGHTS
    # graph file name -> {"sha256", "bytes", "precision"} (:func:`file_record`); the export
    # fills it in once every graph is written (:func:`record_files`)
    files: Dict[str, dict] = dataclasses.field(default_factory=dict)

    @property
    def mask_threshold(self) -> float:
        return self.tracker.mask_threshold

    def to_json(self) -> dict:
        video = dataclasses.asdict(self.tracker)
        del video["mask_threshold"]
        video.update(nonkey_input_size=list(self.nonkey_input_size), nonkey_padded_size=list(self.nonkey_padded_size))
        return {
            "input_size": list(self.input_size),
            "padded_size": list(self.padded_size),
            "input_format": self.input_format,
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
            "num_classes": self.num_classes,
            "num_queries": self.num_queries,
            "class_names": None if self.class_names is None else list(self.class_names),
            "category_ids": None if self.category_ids is None else list(self.category_ids),
            "mask_threshold": self.mask_threshold,
            "cls_threshold": self.cls_threshold,
            "max_detections": self.max_detections,
            "multi_class": self.multi_class,
            "nms_sigma": self.nms_sigma,
            "video": video,
            "weights": self.weights,
            "files": {name: dict(rec) for name, rec in sorted(self.files.items())},
        }


# ---------------------------------------------------------------------------- validation
def _size(v):
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(is_int(x) and x > 0 for x in v)


def _triple(v):
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(is_real(x) for x in v)


def _optional_list(kind):
    return lambda v: v is None or (isinstance(v, (list, tuple)) and all(kind(x) for x in v))


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PRECISIONS = ("fp32", "int8")


def _file_entry(name, rec) -> bool:
    return (isinstance(name, str) and name == os.path.basename(name) and not name.startswith(".")
            and name != META_FILE and isinstance(rec, dict) and set(rec) == {"sha256", "bytes", "precision"}
            and isinstance(rec["sha256"], str) and bool(_SHA256.match(rec["sha256"]))
            and is_int(rec["bytes"]) and rec["bytes"] >= 0 and rec["precision"] in PRECISIONS)


# field -> (check, what it must be, convert)
_TOP = {
    "input_size": (_size, "[height, width] of positive ints", tuple),
    "padded_size": (_size, "[height, width] of positive ints", tuple),
    "input_format": (lambda v: v in ("RGB", "BGR"), '"RGB" or "BGR"', str),
    "pixel_mean": (_triple, "3 numbers", lambda v: tuple(float(x) for x in v)),
    "pixel_std": (_triple, "3 numbers", lambda v: tuple(float(x) for x in v)),
    "num_classes": (lambda v: is_int(v) and v > 0, "a positive int", int),
    "num_queries": (lambda v: is_int(v) and v > 0, "a positive int", int),
    "class_names": (_optional_list(lambda x: isinstance(x, str)), "a list of str or null",
                    lambda v: None if v is None else list(v)),
    "category_ids": (_optional_list(is_int), "a list of ints or null", lambda v: None if v is None else list(v)),
    "mask_threshold": tuple(_MASK_THRESHOLD.metadata[k] for k in ("check", "expected", "convert")),
    "cls_threshold": (lambda v: is_real(v) and 0 <= v <= 1, "a number in [0, 1]", float),
    "max_detections": (lambda v: is_int(v) and v > 0, "a positive int", int),
    "multi_class": (lambda v: isinstance(v, bool), "true or false", bool),
    "nms_sigma": (lambda v: is_real(v) and v >= 0, "a number >= 0", float),
    "video": (lambda v: isinstance(v, dict), "an object", dict),
    "weights": (lambda v: isinstance(v, str), "a str", str),
    "files": (lambda v: isinstance(v, dict) and all(_file_entry(k, r) for k, r in v.items()),
              '{file name: {"sha256": 64 hex digits, "bytes": int >= 0, "precision": "fp32" or "int8"}}',
              lambda v: {k: dict(r) for k, r in v.items()}),
}
# the video settings: TrackerSettings' fields (but mask_threshold, above) and the non-keyframe graph's sizes
_VIDEO = {
    **{f.name: (f.metadata["check"], f.metadata["expected"], f.metadata["convert"])
       for f in dataclasses.fields(TrackerSettings) if f.name != "mask_threshold"},
    "nonkey_input_size": (_size, "[height, width] of positive ints", tuple),
    "nonkey_padded_size": (_size, "[height, width] of positive ints", tuple),
}


def _fields(data: dict, spec: dict, path: str, prefix: str = "") -> dict:
    out = {}
    for name, (check, expected, convert) in spec.items():
        if name not in data:
            raise ValueError(f"'{path}': field '{prefix}{name}' is missing (expected {expected}); "
                             "re-export the model with tools/export.py")
        value = data[name]
        if not check(value):
            raise ValueError(f"'{path}': field '{prefix}{name}' is {value!r}; expected {expected}")
        out[name] = convert(value)
    return out


def parse_export_meta(data: dict, path: str = META_FILE) -> ExportMeta:
    """The json object of export_meta.json -> :class:`ExportMeta`; raises ``ValueError``
    naming ``path`` and the field that is missing or invalid."""
    if not isinstance(data, dict):
        raise ValueError(f"'{path}': expected a json object, got {type(data).__name__}")
    top = _fields(data, _TOP, path)
    for field in ("class_names", "category_ids"):
        if top[field] is not None and len(top[field]) != top["num_classes"]:
            raise ValueError(f"'{path}': field '{field}' has {len(top[field])} entries but 'num_classes' is "
                             f"{top['num_classes']}; expected one per class")
    video = _fields(top.pop("video"), _VIDEO, path, "video.")
    nonkey_input_size, nonkey_padded_size = video.pop("nonkey_input_size"), video.pop("nonkey_padded_size")
    tracker = TrackerSettings(mask_threshold=top.pop("mask_threshold"), **video)
    return ExportMeta(tracker=tracker, nonkey_input_size=nonkey_input_size, nonkey_padded_size=nonkey_padded_size,
                      **top)


def write_export_meta(model_dir: str, meta: ExportMeta) -> str:
    """Write ``meta`` to ``model_dir``/export_meta.json (checked as :func:`read_export_meta`
    would, then written atomically). Returns the path."""
    path = os.path.join(model_dir, META_FILE)
    data = meta.to_json()
    parse_export_meta(data, path)
    return atomic_write_json(path, data, indent=2)


def read_export_meta(model_dir: str) -> ExportMeta:
    """Read ``model_dir``/export_meta.json (a ``tools/export.py`` output folder)."""
    path = os.path.join(model_dir, META_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"'{path}' does not exist: '{model_dir}' is not a tools/export.py output folder")
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"'{path}' is not valid json: {e}") from e
    return parse_export_meta(data, path)


# ---------------------------------------------------------------------------- the graph files
def precision_of(name: str) -> str:
    """"int8" for the quantized graphs (``*_int8.*``), else "fp32"."""
    return "int8" if "_int8." in name else "fp32"


def file_record(path: str) -> dict:
    """{"sha256", "bytes", "precision"} of a graph file (hashlib, 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"sha256": h.hexdigest(), "bytes": os.path.getsize(path), "precision": precision_of(os.path.basename(path))}


def record_files(model_dir: str) -> ExportMeta:
    """Rewrite ``model_dir``'s export_meta.json with "files": every file in the folder
    (but export_meta.json and hidden temporary names) with its hash and size."""
    meta = read_export_meta(model_dir)
    names = sorted(n for n in os.listdir(model_dir) if n != META_FILE and not n.startswith(".")
                   and os.path.isfile(os.path.join(model_dir, n)))
    meta = dataclasses.replace(meta, files={n: file_record(os.path.join(model_dir, n)) for n in names})
    write_export_meta(model_dir, meta)
    return meta


def verify_file(model_dir: str, meta: ExportMeta, name: str) -> str:
    """The path of graph file ``name`` of the export in ``model_dir``, after checking that
    export_meta.json lists it and that its size and sha256 are those listed; else
    ``FileNotFoundError`` / ``ValueError`` naming the file and the field."""
    path = os.path.join(model_dir, name)
    meta_path = os.path.join(model_dir, META_FILE)
    rec = meta.files.get(name)
    if rec is None:
        raise ValueError(f"'{path}' is not one of the files of this export ('{meta_path}' field 'files' lists "
                         f"{sorted(meta.files) or 'none'}): a file from another export is not used; re-export "
                         "with tools/export.py (--ncnn for the ncnn graphs, --quantize for the int8 ones)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'{path}' does not exist, but '{meta_path}' field 'files' lists it; "
                                "the export folder is incomplete: re-export with tools/export.py")
    size = os.path.getsize(path)
    if size != rec["bytes"]:
        raise ValueError(f"'{path}' has {size} bytes but '{meta_path}' field 'files.{name}.bytes' is "
                         f"{rec['bytes']}: the file is not this export's (or is damaged); re-export")
    actual = file_record(path)["sha256"]
    if actual != rec["sha256"]:
        raise ValueError(f"'{path}' has sha256 {actual[:16]}... but '{meta_path}' field 'files.{name}.sha256' is "
                         f"{rec['sha256'][:16]}...: the file is not this export's (or is damaged); re-export")
    return path
