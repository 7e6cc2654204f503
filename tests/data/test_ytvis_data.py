"""Tests for YouTube-VIS json loading and dataset registration."""

import importlib.util
import json
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest

if importlib.util.find_spec("mobileinst") is None:  # PYTHONPATH not set: use the repo copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "projects" / "MobileInst"))

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import annotations_to_instances  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402

import mobileinst.data.datasets.ytvis as ytvis  # noqa: E402
from mobileinst.data.datasets.ytvis import (  # noqa: E402
    YTVIS_2019_CATEGORIES,
    YTVIS_2021_CATEGORIES,
    _get_ytvis_metadata,
    load_ytvis_json,
    register_all_ytvis,
    register_ytvis_instances,
)

H, W = 24, 20


def box_mask(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def compressed(mask):
    r = mask_util.encode(np.asfortranarray(mask))
    return {"size": [H, W], "counts": r["counts"].decode("ascii")}


def uncompressed(mask):
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


M0 = box_mask(2, 10, 3, 9)
M1 = box_mask(5, 15, 0, 4)
POLY = [[10.0, 10.0, 18.0, 10.0, 18.0, 20.0, 10.0, 20.0]]


def make_json():
    return {
        "videos": [
            {
                "id": 4,
                "width": W,
                "height": H,
                "length": 3,
                "file_names": ["vidA/00000.jpg", "vidA/00005.jpg", "vidA/00010.jpg"],
            },
            {
                "id": 9,
                "width": W,
                "height": H,
                "length": 2,
                "file_names": ["vidB/00000.jpg", "vidB/00005.jpg"],
            },
        ],
        "annotations": [
            # compressed RLE, uncompressed RLE (bbox missing -> derived), None
            {
                "id": 100,
                "video_id": 4,
                "category_id": 5,
                "iscrowd": 0,
                "segmentations": [compressed(M0), uncompressed(M1), None],
                "bboxes": [[3, 2, 6, 8], None, None],
                "areas": [48, 40, None],
                "extra_field": "x",
            },
            # polygons; absent in frame 0
            {
                "id": 101,
                "video_id": 4,
                "category_id": 2,
                "iscrowd": 0,
                "segmentations": [None, POLY, POLY],
                "bboxes": [None, [10, 10, 8, 10], [10, 10, 8, 10]],
                "areas": [None, 80, 80],
            },
            {
                "id": 102,
                "video_id": 9,
                "category_id": 2,
                "iscrowd": 1,
                "segmentations": [compressed(M0), compressed(M1)],
                "bboxes": [[3, 2, 6, 8], [0, 5, 4, 10]],
                "areas": [48, 40],
            },
        ],
        # unsorted on purpose: contiguous ids follow sorted dataset ids (2 -> 0, 5 -> 1)
        "categories": [{"id": 5, "name": "cat"}, {"id": 2, "name": "bear"}],
    }


def write(tmp_path, data):
    p = tmp_path / f"{uuid.uuid4().hex}.json"
    p.write_text(json.dumps(data))
    return str(p)


def test_categories():
    assert len(YTVIS_2019_CATEGORIES) == len(YTVIS_2021_CATEGORIES) == 40
    assert [c["id"] for c in YTVIS_2019_CATEGORIES] == list(range(1, 41))
    assert YTVIS_2019_CATEGORIES[0] == {"id": 1, "name": "person"}
    assert YTVIS_2019_CATEGORIES[-1] == {"id": 40, "name": "tennis_racket"}
    assert YTVIS_2021_CATEGORIES[25] == {"id": 26, "name": "person"}
    assert YTVIS_2021_CATEGORIES[-1] == {"id": 40, "name": "zebra"}
    meta = _get_ytvis_metadata(YTVIS_2021_CATEGORIES)
    assert meta["thing_classes"][0] == "airplane"
    assert meta["thing_dataset_id_to_contiguous_id"][40] == 39
    assert len(meta["thing_colors"]) == 40 and all(len(c) == 3 for c in meta["thing_colors"])


def test_load_ytvis_json(tmp_path):
    json_file = write(tmp_path, make_json())
    image_root = str(tmp_path / "JPEGImages")
    name = f"ytvis_data_test_{uuid.uuid4().hex}"
    try:
        dicts = load_ytvis_json(
            json_file, image_root, dataset_name=name, extra_keys=("extra_field",)
        )
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["bear", "cat"]
        assert meta.thing_dataset_id_to_contiguous_id == {2: 0, 5: 1}
    finally:
        MetadataCatalog.remove(name)

    assert [d["video_id"] for d in dicts] == [4, 9]
    v = dicts[0]
    assert (v["height"], v["width"], v["length"]) == (H, W, 3)
    assert v["file_names"] == [
        os.path.join(image_root, "vidA", f) for f in ["00000.jpg", "00005.jpg", "00010.jpg"]
    ]
    assert len(v["annotations"]) == 3
    assert [[o["id"] for o in frame] for frame in v["annotations"]] == [[100], [100, 101], [101]]

    f0 = v["annotations"][0][0]
    assert f0["category_id"] == 1 and f0["iscrowd"] == 0
    assert f0["bbox"] == [3, 2, 6, 8] and f0["bbox_mode"] == BoxMode.XYWH_ABS
    assert f0["extra_field"] == "x"
    np.testing.assert_array_equal(mask_util.decode(f0["segmentation"]), M0)

    # uncompressed RLE was converted to compressed RLE; bbox derived from the mask
    f1 = v["annotations"][1][0]
    assert isinstance(f1["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_util.decode(f1["segmentation"]), M1)
    assert f1["bbox"] == [0.0, 5.0, 4.0, 10.0]

    poly = v["annotations"][1][1]
    assert poly["category_id"] == 0 and poly["segmentation"] == POLY

    v2 = dicts[1]
    assert [len(f) for f in v2["annotations"]] == [1, 1]
    assert v2["annotations"][0][0]["iscrowd"] == 1

    # every frame can be turned into Instances by detectron2 (bitmask format)
    for frame in v["annotations"]:
        inst = annotations_to_instances(
            [dict(o, bbox_mode=BoxMode.XYWH_ABS) for o in frame], (H, W), mask_format="bitmask"
        )
        assert len(inst) == len(frame)
        assert inst.gt_masks.tensor.shape[1:] == (H, W)


def test_existing_metadata_mapping_is_kept(tmp_path):
    json_file = write(tmp_path, make_json())
    name = f"ytvis_data_test_{uuid.uuid4().hex}"
    MetadataCatalog.get(name).set(
        thing_classes=["cat", "bear"], thing_dataset_id_to_contiguous_id={5: 0, 2: 1}
    )
    try:
        dicts = load_ytvis_json(json_file, str(tmp_path), dataset_name=name)
        assert dicts[0]["annotations"][0][0]["category_id"] == 0  # category 5
    finally:
        MetadataCatalog.remove(name)


def test_test_split_has_no_annotations(tmp_path):
    data = make_json()
    del data["annotations"]
    dicts = load_ytvis_json(write(tmp_path, data), str(tmp_path))
    assert len(dicts) == 2 and all("annotations" not in d for d in dicts)
    assert len(dicts[1]["file_names"]) == 2


def test_missing_json():
    missing = "/nonexistent_dir_for_test/ytvis_2019/train.json"
    with pytest.raises(FileNotFoundError) as e:
        load_ytvis_json(missing, "/nonexistent_dir_for_test")
    assert missing in str(e.value)
    assert "prepare_synthetic.py" in str(e.value)


def test_length_mismatch_names_field(tmp_path):
    data = make_json()
    data["annotations"][1]["segmentations"] = data["annotations"][1]["segmentations"][:2]
    json_file = write(tmp_path, data)
    with pytest.raises(ValueError) as e:
        load_ytvis_json(json_file, str(tmp_path))
    msg = str(e.value)
    assert "segmentations" in msg and "101" in msg and json_file in msg

    data = make_json()
    data["annotations"][0]["bboxes"].append(None)
    with pytest.raises(ValueError, match="bboxes"):
        load_ytvis_json(write(tmp_path, data), str(tmp_path))

    data = make_json()
    del data["videos"][1]["file_names"]
    json_file = write(tmp_path, data)
    with pytest.raises(ValueError) as e:
        load_ytvis_json(json_file, str(tmp_path))
    assert "file_names" in str(e.value) and "id=9" in str(e.value) and json_file in str(e.value)


def test_register_ytvis_instances_is_lazy(tmp_path):
    json_file = write(tmp_path, make_json())
    name = f"ytvis_data_test_{uuid.uuid4().hex}"
    register_ytvis_instances(name, {}, json_file, str(tmp_path / "imgs"))
    for video in ("vidA", "vidB"):  # the frame folders are checked when the set is loaded
        (tmp_path / "imgs" / video).mkdir(parents=True)
    try:
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "ytvis" and meta.json_file == json_file
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == 2
        # mapping was filled in by the loader
        assert meta.thing_dataset_id_to_contiguous_id == {2: 0, 5: 1}
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


class _NoFileAccess:
    def __getattr__(self, item):
        raise AssertionError(f"registration must not touch files (PathManager.{item})")


def test_register_all_ytvis_reads_nothing_and_is_idempotent(tmp_path, monkeypatch):
    from conftest import catalog_names_set_aside

    names = list(ytvis._PREDEFINED_SPLITS_YTVIS)
    root = str(tmp_path / "does_not_exist")
    # registrations made elsewhere (e.g. on import) are set aside meanwhile
    with catalog_names_set_aside(names):
        monkeypatch.setattr(ytvis, "PathManager", _NoFileAccess())
        try:
            register_all_ytvis(root)
            register_all_ytvis(root)  # second call skips existing names
            assert set(names) <= set(DatasetCatalog.list())
            m19 = MetadataCatalog.get("ytvis_2019_val")
            assert m19.json_file == os.path.join(root, "ytvis_2019", "valid.json")
            assert m19.image_root == os.path.join(root, "ytvis_2019", "valid", "JPEGImages")
            assert m19.thing_classes[0] == "person" and m19.evaluator_type == "ytvis"
            m21 = MetadataCatalog.get("ytvis_2021_train")
            assert m21.json_file == os.path.join(root, "ytvis_2021", "train.json")
            assert m21.thing_classes[0] == "airplane"
            # 2022: the archive's valid/instances.json, the 2021 categories
            m22 = MetadataCatalog.get("ytvis_2022_val")
            assert m22.json_file == os.path.join(root, "ytvis_2022", "valid", "instances.json")
            assert m22.image_root == os.path.join(root, "ytvis_2022", "valid", "JPEGImages")
            assert m22.thing_dataset_id_to_contiguous_id == m21.thing_dataset_id_to_contiguous_id
            assert m22.thing_classes == m21.thing_classes
            monkeypatch.undo()
            with pytest.raises(FileNotFoundError, match="ytvis_2021"):
                DatasetCatalog.get("ytvis_2021_train")
        finally:
            monkeypatch.undo()
