"""mobileinst.evaluation.mot_metrics: motmetrics (IDF1, MOTA, identity switches) on mask IoU,
on hand-made tracks whose counts are worked out by hand."""
import numpy as np
import pytest
import torch
from detectron2.structures import Instances

from mobileinst.evaluation.mot_metrics import (
    accumulate_video,
    mask_distances,
    mask_iou,
    summarize_tracking,
    ytvis_gt_tracks,
)


def rect(y0, y1, x0, x1, size=(8, 8)):
    m = np.zeros(size, bool)
    m[y0:y1, x0:x1] = True
    return m


A = rect(0, 4, 0, 4)  # top-left 4x4
B = rect(4, 8, 4, 8)  # bottom-right 4x4


def frame(masks, ids, size=(8, 8)):
    inst = Instances(size)
    inst.pred_masks = torch.as_tensor(np.stack(masks)) if masks else torch.zeros((0,) + size, dtype=torch.bool)
    inst.track_ids = torch.tensor(ids, dtype=torch.long)
    return inst


def metrics(gt, preds, **kwargs):
    return summarize_tracking([accumulate_video(gt, preds, **kwargs)])


def test_mask_iou_is_vectorised_iou():
    rng = np.random.default_rng(0)
    g = rng.random((3, 9, 7)) < 0.4
    p = rng.random((4, 9, 7)) < 0.4
    p[3] = False  # an empty prediction: IoU 0
    want = np.array([[(gi & pj).sum() / max((gi | pj).sum(), 1) for pj in p] for gi in g])
    np.testing.assert_allclose(mask_iou(g, torch.as_tensor(p)), want)
    np.testing.assert_allclose(mask_iou(list(g), p), want)
    assert mask_iou(g, np.zeros((0, 9, 7), bool)).shape == (3, 0)
    half = rect(0, 4, 2, 6)  # IoU(half, A) = 8 / 24
    d = mask_distances([A, B], [A, half], iou_threshold=0.5)
    assert d[0, 0] == 0.0 and np.isnan(d[0, 1]) and np.isnan(d[1]).all()
    with pytest.raises(ValueError, match="pixels"):
        mask_iou([A], [np.zeros((4, 4), bool)])


def test_perfect_tracking():
    preds = [frame([A, B], [1, 2])] * 4
    m = metrics({10: [A] * 4, 11: [B] * 4}, preds)
    assert m["idf1"] == 1.0 and m["mota"] == 1.0 and m["motp"] == 0.0
    assert (m["num_switches"], m["num_misses"], m["num_false_positives"]) == (0, 0, 0)
    assert m["num_objects"] == m["num_predictions"] == m["num_matches"] == 8
    assert m["num_unique_objects"] == m["mostly_tracked"] == 2 and m["num_frames"] == 4


def test_one_object_changes_id_midway():
    """Ids 1, 1, 3, 3 on one object: one switch. MOTA = 1 - 1/4; the best identity
    assignment keeps 2 of 4 frames: IDF1 = 2 * 2 / (4 + 4)."""
    preds = [frame([A], [1]), frame([A], [1]), frame([A], [3]), frame([A], [3])]
    m = metrics([[A] * 4], preds)
    assert m["num_switches"] == 1 and m["num_misses"] == 0 and m["num_false_positives"] == 0
    assert m["mota"] == pytest.approx(0.75) and m["idf1"] == pytest.approx(0.5)


def test_two_objects_swap_ids_midway():
    """Ids swap between A and B on frame 2: a switch for each object (CLEAR-MOT counts
    per object). MOTA = 1 - 2/8; IDF1 = 2 * (2 + 2) / (8 + 8)."""
    preds = [frame([A, B], [1, 2]), frame([A, B], [1, 2]), frame([A, B], [2, 1]), frame([A, B], [2, 1])]
    m = metrics([[A] * 4, [B] * 4], preds)
    assert m["num_switches"] == 2 and m["num_matches"] == 6
    assert m["mota"] == pytest.approx(0.75) and m["idf1"] == pytest.approx(0.5)
    # an object absent on the frame of the swap: it switches when it is back
    assert metrics([[A, A, None, A]], preds)["num_switches"] == 1


def test_missed_frame_is_a_miss_not_a_switch():
    """No prediction on frame 2, the same id before and after: one miss (FN), a
    fragmentation, no switch. MOTA = 1 - 1/4; IDF1 = 2 * 3 / (4 + 3)."""
    preds = [frame([A], [1]), frame([A], [1]), frame([], []), frame([A], [1])]
    m = metrics([[A] * 4], preds)
    assert (m["num_misses"], m["num_switches"], m["num_false_positives"], m["num_fragmentations"]) == (1, 0, 0, 1)
    assert m["mota"] == pytest.approx(0.75) and m["idf1"] == pytest.approx(6 / 7)
    # a prediction below the IoU threshold is no match: a miss and a false positive
    off = rect(0, 4, 2, 6)  # IoU 1/3 with A
    m = metrics([[A] * 4], preds[:2] + [frame([off], [1])] + preds[3:])
    assert (m["num_misses"], m["num_false_positives"], m["num_switches"]) == (1, 1, 0)
    # fewer prediction frames than ground-truth frames: the missing frames are misses
    assert metrics([[A] * 4], preds[:2])["num_misses"] == 2


def test_false_positive():
    """An extra id 5 on B, where there is no object, on frame 1: one FP.
    MOTA = 1 - 1/4; IDF1 = 2 * 4 / (4 + 5)."""
    preds = [frame([A], [1]), frame([A, B], [1, 5]), frame([A], [1]), frame([A], [1])]
    m = metrics([[A] * 4], preds)
    assert (m["num_false_positives"], m["num_misses"], m["num_switches"]) == (1, 0, 0)
    assert m["mota"] == pytest.approx(0.75) and m["idf1"] == pytest.approx(8 / 9)


def test_coexisting_duplicate_is_not_a_switch():
    """On frame 1 id 3 covers A exactly and id 1 (IoU 16/17) still covers it: the object
    keeps id 1, id 3 is a false positive. MOTA = 1 - 1/2; IDF1 = 2 * 2 / (2 + 3)."""
    a2 = A.copy()
    a2[4, 0] = True
    m = metrics([[A, A]], [frame([A, B], [1, 2])[:1], frame([a2, A], [1, 3])])
    assert (m["num_switches"], m["num_false_positives"], m["num_misses"]) == (0, 1, 0)
    assert m["mota"] == pytest.approx(0.5) and m["idf1"] == pytest.approx(0.8)


def test_drift_away_and_back_is_two_switches():
    """Id 1 drifts off A (IoU 1/3) and id 3 takes over, then id 1 is back on A: 1 -> 3 -> 1."""
    half = rect(0, 4, 2, 6)
    drift = [frame([A, B], [1, 2]), frame([half, A, B], [1, 3, 2]), frame([A, B], [1, 2])]
    m = metrics([[A, A, A]], drift)
    assert m["num_switches"] == 2
    assert m["num_false_positives"] == 4  # B on every frame, half on frame 1
    # one prediction per object: two objects on the same pixels cannot both take id 1
    m = metrics([[A, A], [A, A]], [frame([A, B], [1, 2]), frame([A, A], [1, 4])])
    assert (m["num_switches"], m["num_misses"]) == (0, 1)


def test_candidate_match_is_not_lost_to_overlaps_below_the_threshold():
    """The assignment is over candidate pairs (IoU >= 0.5) only. Here g1-X is the only
    candidate (IoU 12/22); X-g0 (6/28) and Y-g1 (8/18) are not, but their IoUs sum to
    more than g1-X's, so an assignment that maximised IoU over all pairs and dropped
    the low pairs afterwards (the rule the project used before motmetrics) would match
    nothing and see no switch. motmetrics matches g1 to X: a switch from id 7 (a
    switch is not counted in ``num_matches``)."""
    g1, g0 = rect(0, 4, 0, 4), rect(0, 4, 4, 8)
    x, y = rect(0, 3, 0, 6), rect(0, 5, 0, 2)
    iou = mask_iou([g1, g0], [x, y])
    assert iou[0, 0] >= 0.5 and iou[1, 0] < 0.5 and iou[0, 1] < 0.5 and iou[1, 0] + iou[0, 1] > iou[0, 0]
    m = metrics({1: [g1, g1], 0: [g0, g0]}, [frame([g1, g0], [7, 8]), frame([x, y], [1, 2])])
    assert (m["num_switches"], m["num_matches"], m["num_misses"], m["num_false_positives"]) == (1, 2, 1, 1)


def test_summary_over_videos():
    """Counts add up over videos; ids are per video (the same numbers in two videos are
    not the same track); a video without any match leaves MOTP defined."""
    swap = [frame([A, B], [1, 2]), frame([A, B], [2, 1])]
    perfect = [frame([A, B], [1, 2])] * 2
    missed = [frame([], [])] * 2
    accs = [accumulate_video([[A, A], [B, B]], p) for p in (swap, perfect, missed)]
    m = summarize_tracking(accs)
    assert m["num_switches"] == 2 and m["num_objects"] == 12 and m["num_misses"] == 4
    assert m["mota"] == pytest.approx(1 - (2 + 4) / 12)
    assert m["idf1"] == pytest.approx(2 * (2 + 4) / (12 + 8))
    assert m["motp"] == 0.0
    assert summarize_tracking([accs[2]])["motp"] is None  # no match anywhere: undefined
    assert summarize_tracking([accumulate_video([], [frame([], [])])])["mota"] is None  # no object
    with pytest.raises(ValueError, match="not unique"):
        accumulate_video([[A]], [frame([A, B], [1, 1])])


def test_gt_tracks_from_a_ytvis_video():
    video = {"height": 8, "width": 8, "length": 3, "annotations": [
        [{"id": 4, "bbox": [0, 0, 4, 4], "bbox_mode": 1, "category_id": 0,
          "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}],
        [],
        [{"id": 4, "bbox": [0, 0, 4, 4], "bbox_mode": 1, "category_id": 0, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
         {"id": 9, "bbox": [4, 4, 4, 4], "bbox_mode": 1, "category_id": 1, "segmentation": [[4, 4, 8, 4, 8, 8, 4, 8]]}],
    ]}
    tracks = ytvis_gt_tracks(video)
    assert sorted(tracks) == [4, 9]
    assert tracks[4][1] is None and tracks[9][0] is None and tracks[9][1] is None
    np.testing.assert_array_equal(tracks[4][0], A)
    np.testing.assert_array_equal(tracks[9][2], B)
