"""tools/analysis/video_ap_breakdown.py on hand-made tracks."""
import json
import os
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "analysis"))
import video_ap_breakdown as vab  # noqa: E402

H, W = 4, 6


def _rle(mask):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _mask(rows, cols):
    m = np.zeros((H, W), np.uint8)
    m[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return m


A = _mask((0, 2), (0, 2))  # 4 pixels
B = _mask((2, 4), (3, 6))  # 6 pixels


def _gt(b_frames=(B, B)):
    return {
        "videos": [{"id": 1, "height": H, "width": W, "length": 2}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentations": [_rle(A), _rle(A)], "areas": [4, 4]},
            {"id": 2, "video_id": 1, "category_id": 2, "iscrowd": 0,
             "segmentations": [None if m is None else _rle(m) for m in b_frames],
             "areas": [None if m is None else int(m.sum()) for m in b_frames]},
        ],
    }


def _track(cat, score, frames):
    return {"video_id": 1, "category_id": cat, "score": score,
            "segmentations": [None if m is None else _rle(m) for m in frames]}


def test_perfect_tracks():
    b = vab.breakdown(_gt(), [_track(1, 0.9, (A, A)), _track(2, 0.8, (B, B))])
    for key in ("as_submitted", "class_agnostic", "oracle_class"):
        assert b[key]["AP"] == pytest.approx(100.0)
    assert b["track_iou"] == {"gt_tracks": 2, "mean": 1.0, "share_ge_0.5": 1.0, "share_ge_0.75": 1.0}
    assert b["frames"] == {"gt_only": 0, "prediction_only": 0, "both": 4, "mean_iou_on_both": 1.0}


def test_swapped_classes_cost_all_the_ap_and_the_oracle_gives_it_back():
    b = vab.breakdown(_gt(), [_track(2, 0.9, (A, A)), _track(1, 0.8, (B, B))])
    assert b["as_submitted"]["AP"] == pytest.approx(0.0)
    assert b["class_agnostic"]["AP"] == pytest.approx(100.0)
    assert b["oracle_class"]["AP"] == pytest.approx(100.0)


def test_a_track_listed_under_two_classes_counts_once():
    results = [_track(1, 0.9, (A, A)), _track(2, 0.85, (A, A)), _track(2, 0.8, (B, B))]
    b = vab.breakdown(_gt(), results)
    assert b["predicted_tracks"] == 2
    # class-agnostic: kept, the duplicate (0.85) would be a false positive ranked above B
    assert b["class_agnostic"]["AP"] == pytest.approx(100.0)
    assert b["class_agnostic"]["AR10"] == pytest.approx(100.0)


def test_missing_and_extra_frames_by_hand():
    # GT B is gone on frame 1; its prediction stays there: IoU (6 + 0) / (6 + 6) = 0.5.
    # Prediction A misses frame 1: IoU 4 / 8 = 0.5.
    gt = _gt(b_frames=(B, None))
    b = vab.breakdown(gt, [_track(1, 0.9, (A, None)), _track(2, 0.8, (B, B))])
    assert b["track_iou"]["mean"] == pytest.approx(0.5)
    assert b["track_iou"]["share_ge_0.5"] == 1.0 and b["track_iou"]["share_ge_0.75"] == 0.0
    assert b["frames"] == {"gt_only": 1, "prediction_only": 1, "both": 2, "mean_iou_on_both": 1.0}
    # IoU 0.5 passes only the 0.5 threshold of the ten (0.5:0.95): AP = 100 / 10
    assert b["as_submitted"]["AP50"] == pytest.approx(100.0)
    assert b["as_submitted"]["AP"] == pytest.approx(10.0)


def test_bad_results_name_the_field():
    gt = _gt()
    bad = [_track(1, 0.9, (A, A))]
    del bad[0]["segmentations"]
    with pytest.raises(ValueError, match="'segmentations'"):
        vab.breakdown(gt, bad)
    with pytest.raises(ValueError, match="has 1 frames; video 1 has 2"):
        vab.breakdown(gt, [_track(1, 0.9, (A,))])
    with pytest.raises(ValueError, match="video_id 7"):
        vab.breakdown(gt, [dict(_track(1, 0.9, (A, A)), video_id=7)])


def test_cli_writes_json_and_reports_a_missing_file(tmp_path):
    gt_path, res_path, out = tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "out" / "b.json"
    gt_path.write_text(json.dumps(_gt()))
    res_path.write_text(json.dumps([_track(1, 0.9, (A, A)), _track(1, 0.8, (B, B))]))
    script = os.path.join(ROOT, "tools", "analysis", "video_ap_breakdown.py")
    run = subprocess.run([sys.executable, script, "--gt", str(gt_path), "--results", str(res_path),
                          "--output", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "class-agnostic  AP 100.0" in run.stdout
    written = json.loads(out.read_text())
    assert written["as_submitted"]["AP"] == pytest.approx(50.0)  # A right; B under the wrong class
    assert not os.path.exists(str(out) + ".tmp")
    run = subprocess.run([sys.executable, script, "--gt", str(tmp_path / "nope.json"), "--results", str(res_path)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "ground-truth json" in run.stderr and "nope.json" in run.stderr
