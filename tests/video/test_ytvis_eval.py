"""Tests for the YouTube-VIS evaluation protocol and YTVISEvaluator."""

import importlib.util
import json
import logging
import math
import os
import sys
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest

if importlib.util.find_spec("mobileinst") is None:  # PYTHONPATH not set: use the repo copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "projects" / "MobileInst"))

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from mobileinst.data.datasets.ytvis import (  # noqa: E402
    _get_ytvis_metadata,
    register_ytvis_instances,
)
from mobileinst.evaluation.ytvis_evaluation import YTVISEvaluator, write_submission_zip  # noqa: E402
from mobileinst.evaluation.ytvis_metric import (  # noqa: E402
    YTVIS_METRICS,
    compute_track_ious,
    evaluate_ytvis,
    track_iou,
)
from mobileinst_core.ytvis_json import to_rle  # noqa: E402

H = W = 32
T = 4
CAT_A = 3  # dataset ids are deliberately not 1..K
CAT_C = 7
CATEGORIES = [{"id": CAT_C, "name": "dog"}, {"id": CAT_A, "name": "person"}]


def box_mask(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def rle(mask, str_counts=True):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    if str_counts:
        r["counts"] = r["counts"].decode("ascii")
    return r


def uncompressed_rle(mask):
    """Uncompressed (counts list) RLE, column-major, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": [int(c) for c in counts]}


MASK_A = box_mask(0, 8, 0, 8)  # area 64
MASK_B = box_mask(16, 24, 16, 24)  # area 64, disjoint from A
MASK_C = box_mask(4, 12, 4, 16)  # area 96
MASK_C_ELSEWHERE = box_mask(20, 28, 16, 28)  # area 96, disjoint from C


def make_gt():
    """Video 1: tracks A, B (class 3) in all 4 frames. Video 2: track C (class 7) in frames 0-2,
    stored as uncompressed RLE, absent (None) in frame 3."""
    videos = [
        {
            "id": 1,
            "width": W,
            "height": H,
            "length": T,
            "file_names": [f"v1/{t:05d}.jpg" for t in range(T)],
        },
        {
            "id": 2,
            "width": W,
            "height": H,
            "length": T,
            "file_names": [f"v2/{t:05d}.jpg" for t in range(T)],
        },
    ]
    anns = [
        {
            "id": 11,
            "video_id": 1,
            "category_id": CAT_A,
            "iscrowd": 0,
            "segmentations": [rle(MASK_A)] * T,
            "bboxes": [[0, 0, 8, 8]] * T,
            "areas": [64] * T,
        },
        {
            "id": 12,
            "video_id": 1,
            "category_id": CAT_A,
            "iscrowd": 0,
            "segmentations": [rle(MASK_B)] * T,
            "bboxes": [[16, 16, 8, 8]] * T,
            "areas": [64] * T,
        },
        {
            "id": 21,
            "video_id": 2,
            "category_id": CAT_C,
            "iscrowd": 0,
            "segmentations": [uncompressed_rle(MASK_C)] * 3 + [None],
            "bboxes": [[4, 4, 12, 8]] * 3 + [None],
            "areas": [96] * 3 + [None],
        },
    ]
    return {"videos": videos, "annotations": anns, "categories": CATEGORIES}


def pred(video_id, cat, score, masks):
    return {
        "video_id": video_id,
        "category_id": cat,
        "score": score,
        "segmentations": [None if m is None else rle(m, str_counts=False) for m in masks],
    }


def perfect_preds():
    return [
        pred(1, CAT_A, 1.0, [MASK_A] * T),
        pred(1, CAT_A, 1.0, [MASK_B] * T),
        pred(2, CAT_C, 1.0, [MASK_C] * 3 + [None]),
    ]


# ------------------------------------------------------------------------------------ IoU
def test_track_iou_hand_computed_with_none_frames():
    x = [box_mask(0, 4, 0, 4), None, box_mask(0, 4, 0, 4), None]  # 16, -, 16, -
    y = [box_mask(2, 6, 0, 4), box_mask(0, 2, 0, 5), None, None]  # 16 (overlap 8), 10, -, -
    xr = [to_rle(m) if m is not None else None for m in x]
    yr = [to_rle(m) if m is not None else None for m in y]
    # frame 0: I=8, U=24; frame 1: U=10 (only y); frame 2: U=16 (only x); frame 3: nothing
    assert track_iou(xr, yr) == pytest.approx(8 / 50)
    assert track_iou(yr, xr) == pytest.approx(8 / 50)
    assert track_iou(xr, xr) == 1.0
    assert track_iou([None] * 4, [None] * 4) == 0.0
    assert track_iou([None] * 4, yr) == 0.0
    # str counts, bytes counts and uncompressed RLE give the same result
    yr_str = [rle(m) if m is not None else None for m in y]
    y_unc = [uncompressed_rle(m) if m is not None else None for m in y]
    assert track_iou(xr, yr_str) == pytest.approx(8 / 50)
    assert track_iou(xr, [to_rle(s) for s in y_unc]) == pytest.approx(8 / 50)


def test_identity_switch_iou_is_one_third():
    switched = [to_rle(m) for m in [MASK_A, MASK_A, MASK_B, MASK_B]]
    a = [to_rle(MASK_A)] * T
    b = [to_rle(MASK_B)] * T
    # vs A: I = 2*64; U = 2*64 (frames 0-1) + 2*(64+64) (frames 2-3) = 6*64
    ious = compute_track_ious([switched], [a, b])
    np.testing.assert_allclose(ious, [[1 / 3, 1 / 3]])


def test_compute_track_ious_matches_numpy_bruteforce():
    rng = np.random.RandomState(0)
    n_frames = 5

    def random_track():
        frames = []
        for _ in range(n_frames):
            if rng.rand() < 0.25:
                frames.append(None)
            else:
                frames.append((rng.rand(H, W) < rng.rand() * 0.5).astype(np.uint8))
        return frames

    dts = [random_track() for _ in range(4)]
    gts = [random_track() for _ in range(3)]
    expected = np.zeros((4, 3))
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            inter = union = 0
            for dm, gm in zip(d, g):
                dm = np.zeros((H, W), bool) if dm is None else dm.astype(bool)
                gm = np.zeros((H, W), bool) if gm is None else gm.astype(bool)
                inter += (dm & gm).sum()
                union += (dm | gm).sum()
            expected[i, j] = inter / union if union else 0.0
    got = compute_track_ious(
        [[to_rle(m) if m is not None else None for m in d] for d in dts],
        [[to_rle(m) if m is not None else None for m in g] for g in gts],
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ AP numbers
def test_perfect_predictions():
    res = evaluate_ytvis(make_gt(), perfect_preds())
    assert res["AP"] == pytest.approx(100.0)
    assert res["AP50"] == pytest.approx(100.0)
    assert res["AP75"] == pytest.approx(100.0)
    assert res["APs"] == pytest.approx(100.0)  # every track's mean area < 32**2
    assert math.isnan(res["APm"]) and math.isnan(res["APl"])  # no GT in those ranges
    assert res["AR10"] == pytest.approx(100.0)
    # maxDets=1 is per (video, category): video 1 has 2 class-3 tracks, so class 3 recall
    # is 1/2 and class 7 recall is 1 -> AR1 = 75.
    assert res["AR1"] == pytest.approx(75.0)
    assert res["AP-person"] == pytest.approx(100.0)
    assert res["AP-dog"] == pytest.approx(100.0)


def test_perfect_predictions_single_track_per_video_ar1_is_100():
    gt = make_gt()
    gt["annotations"] = [a for a in gt["annotations"] if a["id"] != 12]
    preds = [p for i, p in enumerate(perfect_preds()) if i != 1]
    res = evaluate_ytvis(gt, preds)
    for k in ["AP", "AP50", "AP75", "AR1", "AR10"]:
        assert res[k] == pytest.approx(100.0), k


def test_identity_switch_track():
    switched = pred(1, CAT_A, 1.0, [MASK_A, MASK_A, MASK_B, MASK_B])  # IoU 1/3 with A and B
    correct_a = pred(1, CAT_A, 0.9, [MASK_A] * T)
    correct_b = pred(1, CAT_A, 0.8, [MASK_B] * T)
    perfect_c = pred(2, CAT_C, 1.0, [MASK_C] * 3 + [None])

    # Switched track alone: below every threshold -> class 3 AP = 0.
    res = evaluate_ytvis(make_gt(), [switched, perfect_c])
    assert res["AP-person"] == 0.0
    assert res["AP-dog"] == pytest.approx(100.0)
    assert res["AP"] == pytest.approx(50.0)

    # With the correct tracks at lower scores: class 3 ranking is FP, TP, TP at every IoU
    # threshold -> precision 0, 1/2, 2/3 at recall 0, .5, 1; interpolated precision is 2/3 at
    # all 101 recall points -> class-3 AP = 200/3.
    res = evaluate_ytvis(make_gt(), [switched, correct_a, correct_b, perfect_c])
    assert res["AP-person"] == pytest.approx(200 / 3)
    assert res["AP-dog"] == pytest.approx(100.0)
    assert res["AP"] == pytest.approx((200 / 3 + 100) / 2)
    assert res["AP50"] == pytest.approx((200 / 3 + 100) / 2)
    assert res["AP75"] == pytest.approx((200 / 3 + 100) / 2)
    # maxDets=1 keeps only the switched track in video 1 -> class 3 recall 0.
    assert res["AR1"] == pytest.approx(50.0)
    assert res["AR10"] == pytest.approx(100.0)


def test_iou_exactly_half_is_tp_only_at_050():
    # GT C: frames 0-2 (96 px each), None at 3. Prediction: C in frames 0-1, None in frame 2,
    # a disjoint 96-px mask in frame 3 -> I = 192, U = 3*96 + 96 = 384 -> IoU = 0.5.
    half = pred(2, CAT_C, 1.0, [MASK_C, MASK_C, None, MASK_C_ELSEWHERE])
    gt = make_gt()
    c = [to_rle(s) for s in gt["annotations"][2]["segmentations"]]
    assert track_iou(half["segmentations"], c) == 0.5

    # Only class 7 in the ground truth: AP = 10 (TP only at IoU .50 out of 10 thresholds).
    gt_c = make_gt()
    gt_c["annotations"] = [a for a in gt_c["annotations"] if a["category_id"] == CAT_C]
    res = evaluate_ytvis(gt_c, [half])
    assert res["AP"] == pytest.approx(10.0)
    assert res["AP50"] == pytest.approx(100.0)
    assert res["AP75"] == 0.0
    assert res["AR1"] == pytest.approx(10.0)
    assert res["AR10"] == pytest.approx(10.0)

    # Together with perfect class-3 predictions: averages over the two classes.
    res = evaluate_ytvis(make_gt(), perfect_preds()[:2] + [half])
    assert res["AP"] == pytest.approx(55.0)
    assert res["AP50"] == pytest.approx(100.0)
    assert res["AP75"] == pytest.approx(50.0)
    assert res["AR1"] == pytest.approx((50 + 10) / 2)
    assert res["AR10"] == pytest.approx(55.0)


def test_empty_results():
    res = evaluate_ytvis(make_gt(), [])
    for k in YTVIS_METRICS:
        assert res[k] == 0.0, k
    assert res["AP-person"] == 0.0 and res["AP-dog"] == 0.0


def test_wrong_class_prediction():
    wrong = pred(2, CAT_A, 0.5, [MASK_C] * 3 + [None])  # perfect mask, wrong class
    res = evaluate_ytvis(make_gt(), perfect_preds()[:2] + [wrong])
    assert res["AP-dog"] == 0.0
    assert res["AP-person"] == pytest.approx(100.0)  # the wrong pred ranks after both TPs
    assert res["AP"] == pytest.approx(50.0)


def test_gt_json_path_and_bad_results(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(make_gt()))
    assert evaluate_ytvis(str(path), perfect_preds())["AP"] == pytest.approx(100.0)
    bad = pred(1, CAT_A, 1.0, [MASK_A] * (T - 1))
    with pytest.raises(ValueError, match="segmentations"):
        evaluate_ytvis(str(path), [bad])
    with pytest.raises(ValueError, match="unknown video_id"):
        evaluate_ytvis(str(path), [pred(99, CAT_A, 1.0, [MASK_A] * T)])
    no_anns = make_gt()
    del no_anns["annotations"]
    with pytest.raises(ValueError, match="annotations"):
        evaluate_ytvis(no_anns, perfect_preds())


# ------------------------------------------------------------------------------ evaluator
def _register(tmp_path, gt):
    json_file = tmp_path / f"{uuid.uuid4().hex}.json"
    json_file.write_text(json.dumps(gt))
    name = f"ytvis_eval_test_{uuid.uuid4().hex}"
    register_ytvis_instances(
        name, _get_ytvis_metadata(gt["categories"]), str(json_file), str(tmp_path / "JPEGImages")
    )
    return name


def _cleanup(name):
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _model_output(video_id, tracks):
    out = []
    for cat, score, masks in tracks:
        segms = [None if m is None else mask_util.encode(np.asfortranarray(m)) for m in masks]
        out.append({"score": score, "category_id": cat, "segmentations": segms})
    return {"video_id": video_id, "tracks": out}


def test_ytvis_evaluator_end_to_end(tmp_path):
    gt = make_gt()
    name = _register(tmp_path, gt)
    try:
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "ytvis"
        cont = meta.thing_dataset_id_to_contiguous_id
        assert cont == {CAT_A: 0, CAT_C: 1}
        out_dir = tmp_path / "out"
        evaluator = YTVISEvaluator(name, output_dir=str(out_dir))
        evaluator.reset()
        inputs = [{"video_id": 1}, {"video_id": 2}]
        outputs = [
            _model_output(1, [(cont[CAT_A], 1.0, [MASK_A] * T), (cont[CAT_A], 0.9, [MASK_B] * T)]),
            _model_output(2, [(cont[CAT_C], 0.7, [MASK_C] * 3 + [None])]),
        ]
        evaluator.process(inputs[:1], outputs[:1])
        evaluator.process(inputs[1:], outputs[1:])
        res = evaluator.evaluate()
        assert list(res.keys()) == ["ytvis"]
        for k in YTVIS_METRICS:
            assert k in res["ytvis"]
        assert res["ytvis"]["AP"] == pytest.approx(100.0)
        assert res["ytvis"]["AR10"] == pytest.approx(100.0)

        files = os.listdir(out_dir)
        assert files == ["results.json"]  # no temp file left behind
        saved = json.loads((out_dir / "results.json").read_text())
        assert len(saved) == 3
        assert sorted(r["category_id"] for r in saved) == [CAT_A, CAT_A, CAT_C]  # dataset ids
        c_res = [r for r in saved if r["video_id"] == 2][0]
        assert c_res["score"] == pytest.approx(0.7)
        assert c_res["segmentations"][3] is None
        assert isinstance(c_res["segmentations"][0]["counts"], str)
        np.testing.assert_array_equal(mask_util.decode(to_rle(c_res["segmentations"][0])), MASK_C)
        # the saved file is a valid submission: evaluating it gives the same AP
        assert evaluate_ytvis(gt, saved)["AP"] == pytest.approx(100.0)

        # reset() clears the state; evaluating nothing gives zeros
        evaluator.reset()
        res = evaluator.evaluate()
        assert res["ytvis"]["AP"] == 0.0
        assert json.loads((out_dir / "results.json").read_text()) == []
    finally:
        _cleanup(name)


def test_ytvis_evaluator_without_annotations_writes_the_submission_zip(tmp_path, caplog):
    gt = make_gt()
    del gt["annotations"]
    name = _register(tmp_path, gt)
    MetadataCatalog.get(name).set(evaluation_server="https://example.org/server")
    try:
        out_dir = tmp_path / "out_test_split"
        evaluator = YTVISEvaluator(name, output_dir=str(out_dir), distributed=False)
        evaluator.process([{"video_id": 1}], [_model_output(1, [(0, 0.5, [MASK_A] * T)])])
        with caplog.at_level(logging.INFO):
            assert evaluator.evaluate() == {}
        saved = json.loads((out_dir / "results.json").read_text())
        assert len(saved) == 1 and saved[0]["category_id"] == CAT_A
        assert len(saved[0]["segmentations"]) == T
        # the zip the servers take: results.json at its root, the same entries; the log says where
        zip_path = out_dir / "submission.zip"
        with zipfile.ZipFile(zip_path) as zf:
            assert zf.namelist() == ["results.json"]
            assert json.loads(zf.read("results.json")) == saved
        assert str(zip_path) in caplog.text and "https://example.org/server" in caplog.text
        assert sorted(os.listdir(out_dir)) == ["results.json", "submission.zip"]
        # a zip whose writing fails leaves the earlier one whole and no temporary file
        before = zip_path.read_bytes()
        with pytest.raises(TypeError):
            write_submission_zip(str(zip_path), [{"video_id": object()}])
        assert zip_path.read_bytes() == before
        assert sorted(os.listdir(out_dir)) == ["results.json", "submission.zip"]
    finally:
        _cleanup(name)
