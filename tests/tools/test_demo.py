"""demo.py on a folder of frames / a video file, and its errors on bad input."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import small_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import demo


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("demo_weights")
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(small_cfg()), str(out)).save("w")
    return small_cfg("MODEL.WEIGHTS", str(out / "w.pth"), "DATASETS.TEST", "('test_synthetic_ytvis_val',)",
                     "MODEL.MOBILEINST.VIDEO.TRACK_SCORE_THRESHOLD", "0.0")


def _video_dir(root):
    d = os.path.join(root, "synthetic_ytvis", "val", "JPEGImages")
    return os.path.join(d, sorted(os.listdir(d))[0])


def test_demo_on_frames_and_video_file(cfg, synthetic_root, tmp_path):
    frames = _video_dir(synthetic_root)
    video, js, n = demo.run(cfg, frames, str(tmp_path / "a"), score_threshold=0.0)
    assert n == 8 and os.path.getsize(video) > 0
    res = json.load(open(js))
    assert res and all(len(t["segmentations"]) == 8 and 1 <= t["category_id"] <= 5 for t in res)
    # the same frames as an mp4 file
    mp4 = str(tmp_path / "clip.mp4")
    imgs = [cv2.imread(os.path.join(frames, f)) for f in sorted(os.listdir(frames))]
    w = cv2.VideoWriter(mp4, cv2.VideoWriter_fourcc(*"mp4v"), 5, imgs[0].shape[1::-1])
    for im in imgs:
        w.write(im)
    w.release()
    video2, js2, n2 = demo.run(cfg, mp4, str(tmp_path / "b"))
    assert n2 == 8
    cap = cv2.VideoCapture(video2)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8


def test_demo_bad_inputs(cfg, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        demo.run(cfg, str(empty), str(tmp_path / "o1"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(OSError, match="bad.mp4"):
        demo.run(cfg, str(bad), str(tmp_path / "o2"))
    # a frame of a different size mid-stream: clear error, nothing half-written left
    # (and no output folder: the run created it, the run removes it)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, size in enumerate([(64, 64), (64, 64), (48, 80)]):
        cv2.imwrite(str(mixed / f"{i:05d}.jpg"), np.full(size + (3,), 120, np.uint8))
    with pytest.raises(ValueError, match="Frame 2"):
        demo.run(cfg, str(mixed), str(tmp_path / "o3"))
    assert not (tmp_path / "o3").exists()
    # an output folder that was there stays, empty
    (tmp_path / "o4").mkdir()
    with pytest.raises(ValueError, match="Frame 2"):
        demo.run(cfg, str(mixed), str(tmp_path / "o4"))
    assert os.listdir(tmp_path / "o4") == []
