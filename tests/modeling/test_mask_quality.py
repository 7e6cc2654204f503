"""mobileinst.evaluation.mask_quality: stray-pixel and duplicate figures on hand-made masks."""
import numpy as np
import pycocotools.mask as mask_util
import pytest

from mobileinst.evaluation.mask_quality import largest_part, mask_quality


def _rle(mask):
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def _square(y, x, size, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[y:y + size, x:x + size] = True
    return m


def test_largest_part_by_hand():
    clean = _square(2, 2, 10)
    assert largest_part(clean) == (100, 100, 100, 100)
    stray = clean.copy()
    stray[35, 35] = True  # one pixel far away: the box grows from 10x10 to 34x34
    assert largest_part(stray) == (101, 100, 34 * 34, 100)
    diagonal = clean.copy()
    diagonal[12, 12] = True  # touches the square's corner: one part (8-connectivity)
    assert largest_part(diagonal) == (101, 101, 11 * 11, 11 * 11)
    assert largest_part(np.zeros((5, 5), bool)) == (0, 0, 0, 0)


def test_mask_quality_by_hand():
    clean, other = _square(2, 2, 10), _square(20, 20, 10)
    stray = clean.copy()
    stray[35, 35] = True
    near_dup = _square(2, 2, 9)  # IoU 81/100 with `clean`
    results = [
        {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": _rle(clean)},
        {"image_id": 1, "category_id": 1, "score": 0.8, "segmentation": _rle(near_dup)},  # a duplicate
        {"image_id": 1, "category_id": 2, "score": 0.7, "segmentation": _rle(clean)},  # other class: none
        {"image_id": 2, "category_id": 1, "score": 0.6, "segmentation": _rle(clean)},  # other image: none
        {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": _rle(other)},
        {"image_id": 3, "category_id": 1, "score": 0.4, "segmentation": _rle(stray)},
        {"image_id": 3, "category_id": 1, "score": 0.2, "segmentation": _rle(stray)},  # below 0.3: not counted
    ]
    q = mask_quality(results, num_objects=4)
    assert q["masks"] == 6 and q["duplicates"] == 1 and q["duplicates_per_object"] == 0.25
    assert q["stray_box_share"] == pytest.approx(1 / 6)
    assert q["stray_pixel_share"] == pytest.approx((1 / 101) / 6)
    assert mask_quality(results, duplicate_iou=0.85)["duplicates"] == 0
    assert mask_quality(results, score_threshold=0.1)["stray_box_share"] == pytest.approx(2 / 7)
    assert mask_quality([])["masks"] == 0


def test_mask_quality_tool(tmp_path, capsys):
    """tools/analysis/mask_quality.py on a results json written by hand; bad input named."""
    import json
    import os
    import sys

    from conftest import ROOT

    sys.path.insert(0, os.path.join(ROOT, "tools", "analysis"))
    import mask_quality as tool

    stray = _square(2, 2, 10)
    stray[35, 35] = True
    rle = _rle(stray)
    rle["counts"] = rle["counts"].decode()
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": rle}]))
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"annotations": [{"id": 1}, {"id": 2}]}))
    out = tool.main([str(results), "--gt", str(gt), "--output", str(tmp_path / "q.json")])
    assert out["stray_box_share"] == 1.0 and out["objects"] == 2
    assert json.loads((tmp_path / "q.json").read_text())["masks"] == 1
    assert "stray_box_share: 1.0000" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(SystemExit, match="bad.json: expected a list of COCO results"):
        tool.main([str(tmp_path / "bad.json")])
    with pytest.raises(SystemExit, match="missing.json: cannot read"):
        tool.main([str(tmp_path / "missing.json")])
