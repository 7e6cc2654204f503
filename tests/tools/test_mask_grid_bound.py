"""tools/analysis/mask_grid_bound.py: the mask AP bound of the X_mask grid, by hand and end to end."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools", "analysis"))
import mask_grid_bound  # noqa: E402


def test_grid_mask_by_hand():
    # a band on cells of the 1/8 grid comes back exactly: across a 0 -> 1 cell
    # border the bilinear value of pixel i is (i + 0.5) / 8 - 1.5 + 1, which
    # passes 0.5 between pixels 15 (0.4375) and 16 (0.5625)
    band = np.zeros((64, 64), np.uint8)
    band[16:32] = 1
    np.testing.assert_array_equal(mask_grid_bound.grid_mask(band, 8), band)
    # a rectangle's corners round off: at its corner pixel both weights are
    # 0.5625 and 0.5625^2 = 0.316 < 0.5; one pixel further in, 0.6875 * 0.5625 = 0.387
    # and 0.6875^2 = 0.473 are still out, 0.8125 * 0.5625 = 0.457 too, 0.8125 * 0.6875 = 0.559 is in
    rect = np.zeros((64, 64), np.uint8)
    rect[16:32, 8:40] = 1
    out = mask_grid_bound.grid_mask(rect, 8)
    assert out[16, 8] == 0 and out[17, 9] == 0 and out[16, 10] == 0 and out[18, 9] == 1
    assert out[24, 8] == 1 and out[16, 24] == 1 and out[24, 7] == 0 and out[15, 24] == 0
    # a 4x4 blob is 1/4 of a 1/8 cell and vanishes; it is one whole 1/4 cell:
    # per axis its pixels get weights 0.625, 0.875, 0.875, 0.625, so the 4
    # corners (0.39) are lost and the other 12 pixels (0.547, 0.766) kept
    blob = np.zeros((64, 64), np.uint8)
    blob[4:8, 4:8] = 1
    assert mask_grid_bound.grid_mask(blob, 8).sum() == 0
    expected = blob.copy()
    expected[[4, 4, 7, 7], [4, 7, 4, 7]] = 0
    np.testing.assert_array_equal(mask_grid_bound.grid_mask(blob, 4), expected)
    # a non-multiple-of-64 size is padded, then cropped back
    assert mask_grid_bound.grid_mask(np.ones((50, 70), np.uint8), 8).shape == (50, 70)


def test_bound_on_synthetic_val(synthetic_root, tmp_path):
    path = os.path.join(synthetic_root, "synthetic_coco", "annotations", "instances_val.json")
    out = tmp_path / "bound.json"
    rows = mask_grid_bound.main([path, "--strides", "8", "4", "1", "--output", str(out)])
    by = {r["stride"]: r for r in rows}
    # stride 1 reproduces every mask: AP 100; finer grids bound higher
    assert by[1]["AP"] == pytest.approx(100.0) and by[1]["mean_iou"] == pytest.approx(1.0)
    assert by[8]["mean_iou"] < by[4]["mean_iou"] < 1.0
    assert by[8]["AP"] <= by[4]["AP"] <= 100.0
    assert json.loads(out.read_text())["bounds"] == json.loads(json.dumps(rows))
    assert not os.path.exists(str(out) + ".tmp")


def test_bound_rejects_a_missing_file(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        mask_grid_bound.main([str(tmp_path / "nope.json")])
