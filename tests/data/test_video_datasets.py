"""OVIS and YouTube-VIS 2022: the registered splits read their official layouts (tiny
jsons and frames written here), their configs train and evaluate (AP where there is
ground truth, the submission zip where there is none), and bad input gets errors that
name the file and the field."""
import json
import os
import zipfile

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from conftest import ROOT, catalog_names_set_aside
from detectron2.data import DatasetCatalog, MetadataCatalog

from mobileinst.data.datasets import ovis, ytvis
from mobileinst.data.datasets.ovis import OVIS_CATEGORIES
from mobileinst.data.datasets.ytvis import YTVIS_2021_CATEGORIES

H, W, FRAMES = 48, 64, 4
# the configs' model at a size that trains in a second on a CPU
TINY = ["MODEL.WEIGHTS", "", "MODEL.TOPFORMER.WEIGHTS", "", "MODEL.TOPFORMER.VARIANT", "tiny", "MODEL.DEVICE", "cpu",
        "MODEL.MOBILEINST.INSTANCE_DECODER.NUM_QUERIES", "10", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
        "DATALOADER.NUM_WORKERS", "0"]


def write_split(root, image_root, json_path, names, categories, video_names, frame_name, annotated=True):
    """Frames (a square moving right) under ``root/image_root/<video>/`` and a
    YouTube-VIS-format json at ``root/json_path`` (with annotations if ``annotated``)."""
    videos, annotations = [], []
    for vid, video in enumerate(video_names, start=1):
        files, segms = [], []
        for t in range(FRAMES):
            mask = np.zeros((H, W), np.uint8)
            mask[10:30, 5 + 6 * t:25 + 6 * t] = 1
            files.append(f"{video}/{frame_name(t)}")
            path = os.path.join(root, image_root, files[-1])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            cv2.imwrite(path, np.where(mask[..., None], 200, 30).astype(np.uint8).repeat(3, axis=2))
            rle = mask_util.encode(np.asfortranarray(mask))
            segms.append({"size": [H, W], "counts": rle["counts"].decode()})
        videos.append({"id": vid, "width": W, "height": H, "length": FRAMES, "file_names": files})
        annotations.append({"id": vid, "video_id": vid, "category_id": categories[vid % len(categories)]["id"],
                            "iscrowd": 0, "segmentations": segms, "bboxes": None, "areas": None})
    data = {"videos": videos, "categories": categories, "info": {}, "licenses": []}
    if annotated:
        data["annotations"] = annotations
    os.makedirs(os.path.dirname(os.path.join(root, json_path)), exist_ok=True)
    with open(os.path.join(root, json_path), "w") as f:
        json.dump(data, f)


@pytest.fixture()
def registered(tmp_path):
    """The builtin OVIS and YouTube-VIS splits registered under ``tmp_path`` (the
    registrations made on import put back afterwards)."""
    with catalog_names_set_aside(list(ovis._PREDEFINED_SPLITS_OVIS) + list(ytvis._PREDEFINED_SPLITS_YTVIS)):
        ovis.register_all_ovis(str(tmp_path))
        ytvis.register_all_ytvis(str(tmp_path))
        yield str(tmp_path)


def ovis_layout(root):
    """ovis/{train,valid}/<video>/img_0000001.jpg, ovis/annotations/annotations_{train,valid}.json."""
    frame = lambda t: f"img_{t + 1:07d}.jpg"  # noqa: E731
    write_split(root, "ovis/train", "ovis/annotations/annotations_train.json", None, OVIS_CATEGORIES,
                ["2524877e", "37d9e1c6"], frame)
    write_split(root, "ovis/valid", "ovis/annotations/annotations_valid.json", None, OVIS_CATEGORIES,
                ["0b97736357"], frame, annotated=False)


def ytvis2022_layout(root):
    """ytvis_2021/train/JPEGImages + train.json; ytvis_2022/valid/JPEGImages + valid/instances.json."""
    frame = lambda t: f"{5 * t:05d}.jpg"  # noqa: E731
    write_split(root, "ytvis_2021/train/JPEGImages", "ytvis_2021/train.json", None, YTVIS_2021_CATEGORIES,
                ["3245e049fb", "a9f23c9150"], frame)
    write_split(root, "ytvis_2022/valid/JPEGImages", "ytvis_2022/valid/instances.json", None,
                YTVIS_2021_CATEGORIES, ["00f88c4f0a", "long_0001"], frame, annotated=False)


def _cfg(config, out, *opts):
    from mobileinst.config import load_mobileinst_config

    cfg = load_mobileinst_config(os.path.join(ROOT, "configs", config), freeze=False)
    cfg.merge_from_list(TINY + ["OUTPUT_DIR", str(out)] + list(opts))
    return cfg


def test_ovis_config_trains_on_the_official_layout_and_evaluates(registered, tmp_path):
    from train_net import Trainer

    ovis_layout(registered)
    meta = MetadataCatalog.get("ovis_train")
    assert len(meta.thing_classes) == 25 and meta.thing_classes[24] == "Vehical"
    assert meta.thing_dataset_id_to_contiguous_id == {i: i - 1 for i in range(1, 26)}
    dicts = DatasetCatalog.get("ovis_train")
    assert dicts[0]["file_names"][0] == os.path.join(registered, "ovis", "train", "2524877e", "img_0000001.jpg")
    # category id 2 (Bird) of the json -> contiguous 1
    assert dicts[0]["annotations"][0][0]["category_id"] == 1

    out = tmp_path / "out"
    # the training set with ground truth as a second test set: the YouTube-VIS protocol's AP
    cfg = _cfg("ovis/MobileInst_TopFormer_base_ovis.yaml", out, "DATASETS.TEST", "('ovis_train', 'ovis_val')")
    assert cfg.MODEL.MOBILEINST.NUM_CLASSES == 25 and cfg.DATASETS.TRAIN == ("ovis_train",)
    trainer = Trainer(cfg)
    trainer.train()
    res = Trainer.test(cfg, trainer.model)
    assert np.isfinite(res["ovis_train"]["ytvis"]["AP"])
    assert res["ovis_val"] == {}
    with zipfile.ZipFile(out / "inference" / "ovis_val" / "submission.zip") as zf:
        assert zf.namelist() == ["results.json"]
        entries = json.loads(zf.read("results.json"))
    assert entries and {e["video_id"] for e in entries} == {1}
    assert all(1 <= e["category_id"] <= 25 and len(e["segmentations"]) == FRAMES for e in entries)


def test_ytvis2022_config_trains_on_2021_and_writes_the_submission_zip(registered, tmp_path):
    from train_net import Trainer

    ytvis2022_layout(registered)
    out = tmp_path / "out"
    cfg = _cfg("youtubevis/MobileInst_TopFormer_base_ytvis2022.yaml", out)
    assert cfg.DATASETS.TRAIN == ("ytvis_2021_train",) and cfg.DATASETS.TEST == ("ytvis_2022_val",)
    trainer = Trainer(cfg)
    trainer.train()
    assert Trainer.test(cfg, trainer.model) == {}  # detectron2 unwraps the results of a single set
    with zipfile.ZipFile(out / "inference" / "ytvis_2022_val" / "submission.zip") as zf:
        assert zf.namelist() == ["results.json"]
        entries = json.loads(zf.read("results.json"))
    assert {e["video_id"] for e in entries} == {1, 2}
    assert all(1 <= e["category_id"] <= 40 for e in entries)


# ------------------------------------------------------------------------------ bad input
def test_missing_annotation_json_and_frame_folders_are_named(registered):
    with pytest.raises(FileNotFoundError, match=r"Dataset 'ovis_train'.*annotations_train\.json.*songbai"):
        DatasetCatalog.get("ovis_train")
    ovis_layout(registered)
    frames = os.path.join(registered, "ovis", "train", "37d9e1c6")
    for f in os.listdir(frames):
        os.remove(os.path.join(frames, f))
    os.rmdir(frames)
    with pytest.raises(FileNotFoundError, match=r"'ovis_train'.*1 frame folder.*annotations_train\.json.*"
                                                r"video id=2: '.*37d9e1c6'"):
        DatasetCatalog.get("ovis_train")
    os.rename(os.path.join(registered, "ovis", "train"), os.path.join(registered, "ovis", "moved"))
    with pytest.raises(FileNotFoundError, match=r"frame folder '.*ovis/train' does not exist.*annotations_train"):
        DatasetCatalog.get("ovis_train")


def _edit_json(root, edit):
    path = os.path.join(root, "ovis", "annotations", "annotations_train.json")
    data = json.load(open(path))
    edit(data)
    json.dump(data, open(path, "w"))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][0].update(category_id=99), r"annotation id=1 has category_id=99"),
    (lambda d: d["categories"].append({"id": 99, "name": "x"}), r"'categories' has ids \[99\].*'ovis_train'"),
    (lambda d: d["videos"][1].update(height="48"), r"video id=2: 'height' is '48'; expected an int > 0"),
    (lambda d: d["videos"][0].pop("width"), r"video id=1: no 'width' field"),
    (lambda d: d["videos"][0].update(file_names="a.jpg"), r"video id=1: 'file_names' is 'a.jpg'; expected a list"),
    (lambda d: d["annotations"][1].update(segmentations={"counts": "x"}), r"annotation id=2: 'segmentations' is"),
    (lambda d: d["annotations"][1]["segmentations"].__setitem__(2, {"counts": "x"}),
     r"annotation id=2: 'segmentations'\[2\]: invalid RLE"),
    (lambda d: d["annotations"][0].pop("video_id"), r"annotations\[0\]: no 'video_id' field"),
], ids=["unknown category_id", "unknown category", "height", "width", "file_names", "segmentations",
        "one frame's RLE", "video_id"])
def test_malformed_ovis_json_names_file_entry_and_field(registered, edit, message):
    ovis_layout(registered)
    path = _edit_json(registered, edit)
    with pytest.raises(ValueError, match=message) as e:
        DatasetCatalog.get("ovis_train")
    assert path in str(e.value)
