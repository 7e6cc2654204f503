"""Tests for the synthetic COCO / YouTube-VIS data (mobileinst.data.synthetic, synthetic_shapes)."""
import json
import os
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

_PROJECT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "projects", "MobileInst")
if _PROJECT not in sys.path:
    sys.path.insert(0, _PROJECT)

from mobileinst.data.synthetic import (  # noqa: E402
    MIN_VISIBLE_AREA,
    SYNTHETIC_CATEGORIES,
    generate_all,
    generate_coco,
    generate_showcase,
    generate_ytvis,
)

SIZE = (96, 128)  # H, W (non-square on purpose)
NUM_IMAGES = 40
NUM_VIDEOS = 6
NUM_FRAMES = 8


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("coco"))
    path = generate_coco(d, "train", NUM_IMAGES, image_size=SIZE, seed=3)
    return d, path


@pytest.fixture(scope="module")
def ytvis_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ytvis"))
    path = generate_ytvis(d, "train", NUM_VIDEOS, num_frames=NUM_FRAMES, image_size=SIZE, seed=3)
    return d, path


def _decode(rle):
    return mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})


def test_categories():
    ids = [c["id"] for c in SYNTHETIC_CATEGORIES]
    assert ids == list(range(1, len(ids) + 1))
    assert len(ids) == 5
    assert len({c["name"] for c in SYNTHETIC_CATEGORIES}) == 5


def test_coco_json_structure(coco_dir):
    d, path = coco_dir
    assert path == os.path.join(d, "annotations", "instances_train.json")
    coco = COCO(path)
    assert len(coco.getImgIds()) == NUM_IMAGES
    assert sorted(coco.getCatIds()) == [1, 2, 3, 4, 5]
    assert len(coco.getAnnIds()) > NUM_IMAGES  # on average several objects per image
    for img in coco.dataset["images"]:
        assert (img["height"], img["width"]) == SIZE
        f = os.path.join(d, "train", img["file_name"])
        assert os.path.isfile(f)
        assert cv2.imread(f).shape == (SIZE[0], SIZE[1], 3)
    ann_ids = [a["id"] for a in coco.dataset["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    # no temporary files left behind
    assert os.listdir(os.path.join(d, "annotations")) == ["instances_train.json"]


def test_coco_masks_consistent(coco_dir):
    d, path = coco_dir
    coco = COCO(path)
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        union = np.zeros(SIZE, np.int32)
        for a in anns:
            assert a["iscrowd"] == 0
            assert isinstance(a["segmentation"]["counts"], str)
            m = _decode(a["segmentation"])
            assert m.shape == SIZE
            assert int(m.sum()) == a["area"]
            assert a["area"] >= MIN_VISIBLE_AREA
            assert np.allclose(a["bbox"], mask_util.toBbox(coco.annToRLE(a)))
            assert np.array_equal(coco.annToMask(a), m)
            union += m
        assert union.max() <= 1, "visible masks of one image overlap"


def test_coco_pixels_match_masks(coco_dir):
    d, path = coco_dir
    coco = COCO(path)
    kernel = np.ones((3, 3), np.uint8)
    n, good = 0, 0
    for img_info in coco.dataset["images"]:
        img = cv2.imread(os.path.join(d, "train", img_info["file_name"])).astype(np.float32)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_info["id"]])):
            m = _decode(a["segmentation"])
            inner = cv2.erode(m, kernel, iterations=1).astype(bool)
            ring = (cv2.dilate(m, kernel, iterations=3) - cv2.dilate(m, kernel, iterations=1)).astype(bool)
            if inner.sum() < 10 or ring.sum() < 10:
                continue
            n += 1
            diff = np.linalg.norm(img[inner].mean(0) - img[ring].mean(0))
            good += diff > 12
    assert n >= 20
    assert good / n >= 0.75, (good, n)


def test_coco_has_empty_images(tmp_path):
    # ~5% of the images have no objects but are still listed
    path = generate_coco(str(tmp_path), "val", 120, image_size=(96, 96), seed=0, max_objects=1)
    data = json.load(open(path))
    with_ann = {a["image_id"] for a in data["annotations"]}
    assert len(data["images"]) == 120
    assert 0 < sum(img["id"] not in with_ann for img in data["images"]) < 20


def test_coco_deterministic(tmp_path, coco_dir):
    d, path = coco_dir
    d2 = str(tmp_path / "again")
    path2 = generate_coco(d2, "train", NUM_IMAGES, image_size=SIZE, seed=3)
    with open(path, "rb") as f1, open(path2, "rb") as f2:
        assert f1.read() == f2.read()
    for name in ["000001.jpg", "000007.jpg", f"{NUM_IMAGES:06d}.jpg"]:
        with open(os.path.join(d, "train", name), "rb") as f1, open(os.path.join(d2, "train", name), "rb") as f2:
            assert f1.read() == f2.read()
    # a different seed gives different data
    path3 = generate_coco(str(tmp_path / "other"), "train", 4, image_size=SIZE, seed=4)
    with open(path3, "rb") as f3, open(path, "rb") as f1:
        assert f3.read() != f1.read()


def test_ytvis_structure(ytvis_dir):
    d, path = ytvis_dir
    assert path == os.path.join(d, "annotations", "train.json")
    data = json.load(open(path))
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5]
    assert len(data["videos"]) == NUM_VIDEOS
    vids = {v["id"]: v for v in data["videos"]}
    for v in data["videos"]:
        assert v["length"] == NUM_FRAMES == len(v["file_names"])
        assert (v["height"], v["width"]) == SIZE
        for fn in v["file_names"]:
            assert os.path.isfile(os.path.join(d, "train", "JPEGImages", fn))
    assert len(data["annotations"]) >= NUM_VIDEOS
    partial = 0
    for a in data["annotations"]:
        v = vids[a["video_id"]]
        assert a["iscrowd"] == 0 and 1 <= a["category_id"] <= 5
        for key in ("segmentations", "bboxes", "areas"):
            assert len(a[key]) == v["length"]
        present = [s is not None for s in a["segmentations"]]
        assert present == [b is not None for b in a["bboxes"]] == [x is not None for x in a["areas"]]
        assert any(present)
        partial += (not all(present))
        for s, b, area in zip(a["segmentations"], a["bboxes"], a["areas"]):
            if s is None:
                continue
            m = _decode(s)
            assert m.shape == SIZE
            assert int(m.sum()) == area >= MIN_VISIBLE_AREA
            assert np.allclose(b, mask_util.toBbox({"size": s["size"], "counts": s["counts"].encode()}))
    assert partial >= 1, "no track enters/leaves/gets occluded"


def test_ytvis_masks_disjoint_and_moving(ytvis_dir):
    d, path = ytvis_dir
    data = json.load(open(path))
    moved = 0
    for v in data["videos"]:
        anns = [a for a in data["annotations"] if a["video_id"] == v["id"]]
        for f in range(v["length"]):
            union = np.zeros(SIZE, np.int32)
            for a in anns:
                if a["segmentations"][f] is not None:
                    union += _decode(a["segmentations"][f])
            assert union.max() <= 1
        for a in anns:
            boxes = [np.array(b) for b in a["bboxes"] if b is not None]
            centers = [b[:2] + b[2:] / 2 for b in boxes]
            if len(centers) >= 2:
                steps = [np.linalg.norm(c1 - c0) for c0, c1 in zip(centers, centers[1:])]
                moved += max(steps) > 0.5
                # motion per frame stays small (boxes can jump a bit when occluded/clipped)
                assert np.median(steps) < 0.15 * max(SIZE)
    assert moved >= 1


def test_ytvis_deterministic(tmp_path, ytvis_dir):
    d, path = ytvis_dir
    d2 = str(tmp_path / "again")
    path2 = generate_ytvis(d2, "train", NUM_VIDEOS, num_frames=NUM_FRAMES, image_size=SIZE, seed=3)
    assert open(path, "rb").read() == open(path2, "rb").read()
    data = json.load(open(path))
    for fn in [data["videos"][0]["file_names"][0], data["videos"][-1]["file_names"][-1]]:
        a = open(os.path.join(d, "train", "JPEGImages", fn), "rb").read()
        b = open(os.path.join(d2, "train", "JPEGImages", fn), "rb").read()
        assert a == b


def test_generate_all_skips_and_overwrites(tmp_path):
    root = str(tmp_path)
    kw = dict(num_train_images=3, num_val_images=2, num_train_videos=2, num_val_videos=1,
              image_size=(48, 48), num_frames=3, showcase_size=(48, 64), showcase_frames=4)
    logs = []
    paths = generate_all(root, seed=1, log=logs.append, **kw)
    assert set(paths) == {"coco_train", "coco_val", "ytvis_train", "ytvis_val", "ytvis_showcase"}
    assert all(os.path.isfile(p) for p in paths.values())
    assert os.path.isfile(os.path.join(root, "synthetic_coco", "train", "000003.jpg"))
    assert os.path.isdir(os.path.join(root, "synthetic_ytvis", "val", "JPEGImages"))
    assert len(json.load(open(paths["coco_val"]))["images"]) == 2
    # train and val differ (different seeds)
    t = json.load(open(paths["coco_train"]))["annotations"]
    v = json.load(open(paths["coco_val"]))["annotations"]
    assert [a["segmentation"] for a in t[:2]] != [a["segmentation"] for a in v[:2]]

    mtimes = {k: os.path.getmtime(p) for k, p in paths.items()}
    logs.clear()
    generate_all(root, seed=1, log=logs.append, **kw)
    assert all("skip" in line for line in logs) and len(logs) == 5
    assert mtimes == {k: os.path.getmtime(p) for k, p in paths.items()}

    # overwrite with fewer images removes the stale files
    kw["num_train_images"] = 2
    generate_all(root, seed=1, overwrite=True, **kw)
    assert len(json.load(open(paths["coco_train"]))["images"]) == 2
    assert not os.path.exists(os.path.join(root, "synthetic_coco", "train", "000003.jpg"))


def test_cli(tmp_path):
    import subprocess

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "datasets", "prepare_synthetic.py")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [sys.executable, script, "--root", str(tmp_path), "--num-train-images", "2", "--num-val-images", "1",
         "--num-train-videos", "1", "--num-val-videos", "1", "--num-frames", "2", "--image-size", "40"],
        check=True, capture_output=True, text=True, env=env, cwd=str(tmp_path),
    ).stdout
    assert "instances_train.json" in out
    assert os.path.isfile(tmp_path / "synthetic_ytvis" / "annotations" / "val.json")


def test_painted_pixels_equal_masks():
    """Object texture is painted exactly through the mask (checked before blur/noise/JPEG)."""
    from mobileinst.data import synthetic_shapes as syn

    rng = np.random.default_rng(0)
    H, W = 80, 100
    for trial in range(60):
        states = []
        for k in range(int(rng.integers(1, 5))):
            obj = syn._Obj(rng, int(rng.integers(1, 6)), rng.uniform(4, 40))
            states.append((obj, rng.uniform(-20, W + 20), rng.uniform(-20, H + 20), obj.radius,
                           rng.uniform(0, 2 * np.pi)))
        bg = np.full((H, W, 3), -1000.0, np.float32)
        img, vis = syn._render(bg, states)
        painted = (img != -1000.0).any(-1)
        union = np.zeros((H, W), bool)
        for v in vis:
            if v is not None:
                assert not (union & v).any()
                union |= v
        assert np.array_equal(painted, union), trial


def test_showcase_clip(tmp_path):
    """make demo's showcase clip: one video whose objects cross (two circles swap
    sides), pass behind another (the ring), leave and come back (the star) and
    enter late (the triangle); one track each, with its gaps."""
    path = generate_showcase(str(tmp_path), seed=2, image_size=(96, 128), num_frames=40)
    data = json.load(open(path))
    (video,) = data["videos"]
    assert (video["height"], video["width"], video["length"]) == (96, 128, 40)
    assert all(os.path.isfile(os.path.join(str(tmp_path), "showcase", "JPEGImages", f)) for f in video["file_names"])
    tracks = {a["id"]: a for a in data["annotations"]}
    assert [a["category_id"] for a in tracks.values()] == [1, 1, 5, 4, 3, 2]
    seen = {i: [s is not None for s in a["segmentations"]] for i, a in tracks.items()}

    def gap(v):  # visible, then absent, then visible again
        first, last = v.index(True), len(v) - 1 - v[::-1].index(True)
        return not all(v[first:last + 1])

    assert gap(seen[3]) and gap(seen[4])  # the ring behind the square, the star out of the frame
    assert not seen[5][0] and seen[5][-1]  # the triangle enters
    assert all(seen[6])  # the square stays
    centre_x = {i: [bb[0] + bb[2] / 2 for bb in tracks[i]["bboxes"] if bb] for i in (1, 2)}
    assert centre_x[1][0] < centre_x[2][0] and centre_x[1][-1] > centre_x[2][-1]  # the circles cross
    # the star is out through the right edge: its last box before the gap touches it
    before = [bb for bb, v in zip(tracks[4]["bboxes"], seen[4]) if v][:seen[4].index(False)]
    assert before[-1][0] + before[-1][2] >= 127
