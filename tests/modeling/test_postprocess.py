"""Tests for the NMS-free inference post-processing."""
import math

import pytest
import torch
from detectron2.structures import Instances

from mobileinst.postprocess import (
    _binarize_resized_cpu,
    binarize_masks,
    masks_to_boxes,
    postprocess_instances,
    rescore_by_masks,
    resize_masks,
    score_queries,
)

BIG = 10.0


def test_masks_to_boxes_by_hand():
    m = torch.zeros(3, 6, 8, dtype=torch.bool)
    m[0, 1:4, 2:5] = True  # rows 1..3, cols 2..4
    m[1, 5, 7] = True  # single pixel in the corner
    m[1, 0, 0] = True  # ... and the opposite corner
    # m[2] is empty
    boxes = masks_to_boxes(m)
    expected = torch.tensor([[2.0, 1.0, 5.0, 4.0], [0.0, 0.0, 8.0, 6.0], [0.0, 0.0, 0.0, 0.0]])
    assert boxes.dtype == torch.float32
    torch.testing.assert_close(boxes, expected)
    assert tuple(masks_to_boxes(torch.zeros(0, 6, 8, dtype=torch.bool)).shape) == (0, 4)


def test_score_queries():
    logits = torch.tensor([[0.0, 2.0, -1.0], [-3.0, -4.0, 1.0]])
    obj = torch.tensor([1.0, -2.0])
    scores, labels = score_queries(logits, obj)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = torch.tensor([math.sqrt(sig(2.0) * sig(1.0)), math.sqrt(sig(1.0) * sig(-2.0))])
    torch.testing.assert_close(scores, expected)
    assert labels.tolist() == [1, 2]


def test_rescore_by_masks():
    prob = torch.tensor([[[0.9, 0.5], [0.2, 0.1]], [[0.3, 0.3], [0.3, 0.3]]])
    scores = torch.tensor([0.8, 0.6])
    out = rescore_by_masks(scores, prob, 0.45)
    # mask 0: mean(0.9, 0.5) = 0.7; mask 1: empty -> 0
    torch.testing.assert_close(out, torch.tensor([0.8 * 0.7, 0.0]), atol=1e-5, rtol=1e-5)


# the synthetic configs' INFERENCE thresholds, written out for these hand-made cases
THRESHOLDS = dict(cls_threshold=0.005, mask_threshold=0.45, max_detections=100)


def _square_logits(n, h, w, boxes):
    """(n, h, w) mask logits: +BIG inside each (y0, y1, x0, x1), -BIG elsewhere."""
    m = torch.full((n, h, w), -BIG)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        m[i, y0:y1, x0:x1] = BIG
    return m


def test_postprocess_basic():
    # 4 queries, 3 classes, masks at 1/4 of a 64x64 padded input (16x16)
    logits = torch.tensor([[4.0, -4.0, -4.0], [-4.0, -4.0, 3.0], [-9.0, -9.0, -9.0], [-4.0, 2.0, -4.0]])
    obj = torch.tensor([3.0, 2.0, -9.0, 1.0])
    masks = _square_logits(4, 16, 16, [(0, 8, 0, 8), (8, 16, 4, 12), (0, 16, 0, 16), (2, 4, 10, 15)])
    res = postprocess_instances(logits, obj, masks, (64, 64), (64, 64), (64, 64), cls_threshold=0.05,
                                mask_threshold=0.45, max_detections=100)
    assert isinstance(res, Instances) and res.image_size == (64, 64)
    assert len(res) == 3  # query 2 is below the threshold
    assert res.pred_masks.dtype == torch.bool and tuple(res.pred_masks.shape) == (3, 64, 64)
    assert res.pred_classes.tolist() == [0, 2, 1]
    # 4x bilinear upsampling of a sharp edge thresholded at 0.45 keeps the edge at 4 * index
    expected_boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [16.0, 32.0, 48.0, 64.0], [40.0, 8.0, 60.0, 16.0]])
    torch.testing.assert_close(res.pred_boxes.tensor, expected_boxes)
    for mask, box in zip(res.pred_masks, res.pred_boxes.tensor):
        x0, y0, x1, y1 = box.int().tolist()
        # inside the box (corners are rounded off by the bilinear resize), interior filled
        assert mask.sum() == mask[y0:y1, x0:x1].sum()
        assert mask[y0 + 2:y1 - 2, x0 + 2:x1 - 2].all()
    ref = resize_masks(masks[[0, 1, 3]].sigmoid(), (64, 64), (64, 64), (64, 64)) > 0.45
    assert (ref != res.pred_masks).sum() <= 2
    # scores: sqrt(p_cls * p_obj) times the mean mask probability (~1 for sharp masks)
    s, _ = score_queries(logits, obj)
    torch.testing.assert_close(res.scores, s[[0, 1, 3]], atol=1e-3, rtol=1e-3)


def test_postprocess_max_detections_and_threshold():
    torch.manual_seed(0)
    n = 12
    logits = torch.randn(n, 5) * 3
    obj = torch.randn(n) * 2
    masks = _square_logits(n, 8, 8, [(i % 8, i % 8 + 1, 0, 8) for i in range(n)])
    s, _ = score_queries(logits, obj)
    res = postprocess_instances(logits, obj, masks, (32, 32), (32, 32), (32, 32), cls_threshold=0.0,
                                mask_threshold=0.45, max_detections=4)
    assert len(res) == 4
    assert torch.all(res.scores[:-1] >= res.scores[1:])  # top-k is sorted
    torch.testing.assert_close(res.scores, s.sort(descending=True).values[:4], atol=1e-3, rtol=1e-3)
    # threshold between the 3rd and 4th best query: exactly 3 survive
    srt = s.sort(descending=True).values
    thr = float((srt[2] + srt[3]) / 2)
    res = postprocess_instances(logits, obj, masks, (32, 32), (32, 32), (32, 32), cls_threshold=thr,
                                mask_threshold=0.45, max_detections=100)
    assert len(res) == 3
    assert bool((res.scores > thr * 0.99).all())


def test_postprocess_resize_to_output_size():
    """Padded 64x64 input holding a 48x64 image, reported at 96x128 (2x)."""
    logits = torch.tensor([[5.0, -5.0]])
    obj = torch.tensor([5.0])
    # square in the top-left quadrant of the valid image: padded rows 0..31, cols 0..31
    masks = _square_logits(1, 16, 16, [(0, 8, 0, 8)])
    res = postprocess_instances(logits, obj, masks, (64, 64), (48, 64), (96, 128), **THRESHOLDS)
    assert res.image_size == (96, 128) and tuple(res.pred_masks.shape) == (1, 96, 128)
    m = res.pred_masks[0]
    torch.testing.assert_close(res.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 64.0, 64.0]]))
    assert m[:62, :62].all() and m.sum() == m[:64, :64].sum()
    assert 64 * 64 - 16 < m.sum() <= 64 * 64  # only the corner is rounded off
    # the same mask at the input size of a 64x64 image reported at 32x48 (non-uniform scale)
    res = postprocess_instances(logits, obj, masks, (64, 64), (64, 64), (32, 48), **THRESHOLDS)
    box = res.pred_boxes.tensor[0].tolist()
    assert box == [0.0, 0.0, 24.0, 16.0]
    m = res.pred_masks[0]
    assert m[:15, :23].all() and m.sum() == m[:16, :24].sum()


def test_postprocess_no_detections():
    logits = torch.full((5, 3), -20.0)
    obj = torch.full((5,), -20.0)
    masks = torch.randn(5, 16, 16)
    res = postprocess_instances(logits, obj, masks, (64, 64), (60, 50), (120, 100), **THRESHOLDS)
    assert len(res) == 0 and res.image_size == (120, 100)
    assert tuple(res.pred_masks.shape) == (0, 120, 100) and res.pred_masks.dtype == torch.bool
    assert tuple(res.pred_boxes.tensor.shape) == (0, 4)
    assert tuple(res.scores.shape) == (0,) and tuple(res.pred_classes.shape) == (0,)


def test_cpu_fast_path_matches_interpolate():
    torch.manual_seed(0)
    k, h, w = 20, 64, 64
    # smooth random probabilities (upsampled noise) so that masks have real structure
    prob = torch.nn.functional.interpolate(torch.randn(k, 1, 8, 8), size=(h, w), mode="bilinear",
                                           align_corners=False)[:, 0].sigmoid()
    prob[3] = 0.0  # one empty mask
    padded, image, output = (256, 256), (240, 200), (480, 400)
    masks, boxes = _binarize_resized_cpu(prob, padded, image, output, 0.45)
    ref = resize_masks(prob, padded, image, output) > 0.45
    assert masks.dtype == torch.bool and tuple(masks.shape) == (k, 480, 400)
    diff = (masks != ref).sum().item()
    assert diff / ref.numel() < 1e-5, diff
    assert ref.any() and not ref.all()
    torch.testing.assert_close(boxes, masks_to_boxes(masks))
    assert boxes[3].tolist() == [0.0, 0.0, 0.0, 0.0]
    # binarize_masks uses the fast path on CPU
    m2, b2 = binarize_masks(prob, padded, image, output, 0.45)
    assert torch.equal(m2, masks) and torch.equal(b2, boxes)


def test_cpu_fast_path_many_masks_wide_output():
    """K * W beyond 32767 columns (OpenCV image-size limits)."""
    torch.manual_seed(1)
    k = 100
    prob = torch.rand(k, 20, 30)
    masks, boxes = _binarize_resized_cpu(prob, (80, 120), (80, 100), (200, 400), 0.5)
    ref = resize_masks(prob, (80, 120), (80, 100), (200, 400)) > 0.5
    assert tuple(masks.shape) == (k, 200, 400)
    assert (masks != ref).sum().item() / ref.numel() < 1e-5
    torch.testing.assert_close(boxes, masks_to_boxes(masks))


@pytest.mark.parametrize("size", [(64, 64), (48, 64)])
def test_resize_masks_crop(size):
    """resize_masks maps the valid image region of the padded grid onto output_size."""
    prob = torch.zeros(1, 16, 16)
    prob[0, :, :] = torch.arange(16.0)[None, :] / 15  # horizontal ramp
    out = resize_masks(prob, (64, 64), size, (size[0] * 2, size[1] * 2))
    assert tuple(out.shape) == (1, size[0] * 2, size[1] * 2)
    # full-padded upsampling by 8x, cropped
    full = torch.nn.functional.interpolate(prob[:, None], size=(128, 128), mode="bilinear",
                                           align_corners=False)[:, 0]
    torch.testing.assert_close(out, full[:, :size[0] * 2, :size[1] * 2])


def test_multi_class_ranks_query_class_pairs():
    from mobileinst.postprocess import postprocess_instances

    logits = torch.tensor([[4.0, 3.0, -9.0], [-9.0, -9.0, 2.0]])
    objectness = torch.tensor([9.0, 9.0])
    masks = torch.full((2, 8, 8), -9.0)
    masks[0, :4, :4] = 9.0
    masks[1, 4:, 4:] = 9.0
    inst = postprocess_instances(logits, objectness, masks, (8, 8), (8, 8), (8, 8), cls_threshold=0.05,
                                 mask_threshold=0.45, max_detections=3, multi_class=True)
    # query 0 appears with classes 0 and 1, query 1 with class 2; sorted by score
    assert inst.pred_classes.tolist() == [0, 1, 2]
    assert torch.equal(inst.pred_masks[0], inst.pred_masks[1])
    assert inst.pred_masks[2][4:, 4:].all() and not inst.pred_masks[2][:4, :4].any()
    p = torch.sigmoid(torch.tensor([4.0, 3.0, 2.0])) * torch.sigmoid(torch.tensor(9.0))
    torch.testing.assert_close(inst.scores, p.sqrt() * torch.sigmoid(torch.tensor(9.0)), rtol=1e-4, atol=1e-4)
    single = postprocess_instances(logits, objectness, masks, (8, 8), (8, 8), (8, 8), cls_threshold=0.05,
                                   mask_threshold=0.45, max_detections=100)
    assert sorted(single.pred_classes.tolist()) == [0, 2]


def test_matrix_nms_by_hand():
    from mobileinst.postprocess import matrix_nms

    a = [1, 1, 1, 0, 0, 0, 0, 0]
    b = [0, 1, 1, 1, 0, 0, 0, 0]  # IoU(a, b) = 2 / 4
    c = [0, 0, 0, 0, 0, 1, 1, 0]  # disjoint
    binary = torch.tensor([a, b, c, a, b], dtype=torch.float32)
    labels = torch.tensor([0, 0, 0, 1, 0])  # the 4th is a duplicate of another class: untouched
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    out = matrix_nms(binary, labels, scores, sigma=2.0)
    # b decays by exp(-2 * 0.5^2); the last (IoU 1 with b, which itself overlaps a by 0.5):
    # min(exp(-2 * (0.5^2 - 0)), exp(-2 * (1 - 0.5^2))) = exp(-1.5)
    expected = torch.tensor([0.9, 0.8 * math.exp(-0.5), 0.7, 0.6, 0.5 * math.exp(-1.5)])
    torch.testing.assert_close(out, expected)


def test_nms_sigma_drops_a_duplicate_below_its_original():
    """Two identical masks of one class: with NMS_SIGMA the second keeps a decayed score."""
    logits = torch.full((3, 2), -8.0)
    logits[0, 0] = logits[1, 0] = 4.0
    logits[2, 1] = 3.0
    objectness = torch.full((3,), 4.0)
    masks = torch.full((3, 8, 8), -10.0)
    masks[0, :4, :4] = masks[1, :4, :4] = 10.0
    masks[2, 4:, 4:] = 10.0
    args = ((32, 32), (32, 32), (32, 32), 0.005, 0.45, 100)
    plain = postprocess_instances(logits, objectness, masks, *args)
    nms = postprocess_instances(logits, objectness, masks, *args, nms_sigma=2.0)
    assert len(plain) == len(nms) == 3
    s_plain = plain.scores.sort(descending=True).values
    s_nms = nms.scores.sort(descending=True).values
    # the duplicate (IoU 1) is decayed by exp(-2); the others are untouched
    torch.testing.assert_close(s_nms[0], s_plain[0])
    assert math.isclose(float(s_nms.min()), float(s_plain[1]) * math.exp(-2.0), rel_tol=1e-4)


def test_rank_detections_pairs_or_queries_and_the_decay():
    """The one ranking of the post-processing and the exported image graph: (query,
    class) pairs or each query's top class, the top K by score; NMS_SIGMA decays a
    same-class duplicate below the rest and re-sorts; a score threshold before the
    decay keeps what is above it after the decay unchanged."""
    from mobileinst.postprocess import rank_detections

    logits = torch.tensor([[4.0, 3.0, -9.0], [4.0, -9.0, -9.0], [-9.0, -9.0, 2.0]])
    objectness = torch.full((3,), 9.0)
    prob = torch.zeros(3, 8, 8)
    prob[0, :4, :4] = prob[1, :4, :4] = 1.0  # query 1 duplicates query 0's mask
    prob[2, 4:, 4:] = 1.0

    def score(c):
        return float((torch.sigmoid(torch.tensor(c)) * torch.sigmoid(torch.tensor(9.0))).sqrt())

    scores, queries, classes = rank_detections(logits, objectness, prob, 0.5, 4, multi_class=True)
    assert classes.tolist() == [0, 0, 1, 2] and queries.tolist()[2:] == [0, 2]
    assert sorted(queries.tolist()[:2]) == [0, 1]  # the tie of query 0 and its duplicate
    torch.testing.assert_close(scores, torch.tensor([score(4.0), score(4.0), score(3.0), score(2.0)]))
    # each query with its top class; K = 2 of 3 queries
    scores, queries, classes = rank_detections(logits, objectness, prob, 0.5, 2)
    assert classes.tolist() == [0, 0] and sorted(queries.tolist()) == [0, 1]
    # the duplicate (class 0, IoU 1) decays by exp(-2) to the end; class 1 on the same mask does not
    scores, queries, classes = rank_detections(logits, objectness, prob, 0.5, 4, multi_class=True, nms_sigma=2.0)
    assert classes.tolist() == [0, 1, 2, 0] and queries.tolist()[1:3] == [0, 2]
    torch.testing.assert_close(scores, torch.tensor([score(4.0), score(3.0), score(2.0), score(4.0) * math.exp(-2)]))
    # a threshold between the pairs' scores: it drops query 2 (before the decay) and the
    # decayed duplicate (after it); the same as keeping the unthresholded ranking's scores above it
    threshold = (score(3.0) + score(2.0)) / 2
    cut = rank_detections(logits, objectness, prob, 0.5, 4, True, 2.0, score_threshold=threshold)
    assert cut[2].tolist() == [0, 1] and cut[1].tolist()[1] == 0
    keep = scores > threshold
    assert [x.tolist() for x in cut] == [x[keep].tolist() for x in (scores, queries, classes)]


def _score(cls_logit, obj_logit):
    return math.sqrt(1 / (1 + math.exp(-cls_logit)) / (1 + math.exp(-obj_logit)))


def test_single_class_threshold_applies_to_the_rescored_score():
    """The one order: the threshold keeps the score rescored by the mask. Query 0
    (raw 0.98) has a faint mask (probability 0.5 inside): rescored 0.49, below the
    threshold 0.6 it is dropped although its raw score is above; query 1's sharp
    mask keeps it; query 2's empty mask rescores it to 0 (dropped)."""
    logits = torch.tensor([[4.0, -9.0], [-9.0, 2.0], [5.0, -9.0]])
    objectness = torch.full((3,), 9.0)
    masks = torch.full((3, 8, 8), -20.0)
    masks[0, :4, :4] = 0.0  # probability 0.5 > MASK_THRESHOLD 0.45
    masks[1, 4:, 4:] = 20.0
    raw = [_score(4.0, 9.0), _score(2.0, 9.0), _score(5.0, 9.0)]
    assert min(raw) > 0.6 and raw[0] * 0.5 < 0.6
    res = postprocess_instances(logits, objectness, masks, (8, 8), (8, 8), (8, 8), cls_threshold=0.6,
                                mask_threshold=0.45, max_detections=100)
    assert res.pred_classes.tolist() == [1]
    torch.testing.assert_close(res.scores, torch.tensor([raw[1]]), atol=1e-5, rtol=1e-5)
    # a lower threshold keeps query 0 at its rescored score, sorted below query 1; the empty mask stays out
    res = postprocess_instances(logits, objectness, masks, (8, 8), (8, 8), (8, 8), cls_threshold=0.005,
                                mask_threshold=0.45, max_detections=100)
    assert res.pred_classes.tolist() == [1, 0]
    torch.testing.assert_close(res.scores, torch.tensor([raw[1], raw[0] * 0.5]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("multi_class", [False, True])
def test_top_k_comes_before_the_decay(multi_class):
    """The one order: the top MAX_DETECTIONS by rescored score, then the decay. Queries
    0 and 1 share a mask and class 0 (scores s0 > s1), query 2 has its own mask and
    class 1 (s2 < s1). With MAX_DETECTIONS 2 the top two are queries 0 and 1; the
    duplicate decays by exp(-2) (IoU 1) below s2, but query 2, outside the top two,
    does not come back: the detections are query 0 and the decayed query 1."""
    logits = torch.tensor([[5.0, -9.0], [4.0, -9.0], [-9.0, 3.0]])
    objectness = torch.full((3,), 9.0)
    masks = torch.full((3, 8, 8), -20.0)
    masks[0, :4, :4] = masks[1, :4, :4] = 20.0
    masks[2, 4:, 4:] = 20.0
    s = [_score(5.0, 9.0), _score(4.0, 9.0), _score(3.0, 9.0)]
    assert s[0] > s[1] > s[2] > s[1] * math.exp(-2.0)
    args = ((8, 8), (8, 8), (8, 8), 0.005, 0.45)
    res = postprocess_instances(logits, objectness, masks, *args, 2, multi_class, nms_sigma=2.0)
    assert res.pred_classes.tolist() == [0, 0]
    assert res.pred_masks[1][:4, :4].all() and not res.pred_masks[1][4:, 4:].any()
    torch.testing.assert_close(res.scores, torch.tensor([s[0], s[1] * math.exp(-2.0)]), atol=1e-5, rtol=1e-5)
    # with room for all three, query 2 ranks between them
    res = postprocess_instances(logits, objectness, masks, *args, 3, multi_class, nms_sigma=2.0)
    assert res.pred_classes.tolist() == [0, 1, 0]
    torch.testing.assert_close(res.scores, torch.tensor([s[0], s[2], s[1] * math.exp(-2.0)]), atol=1e-5,
                               rtol=1e-5)
    # a threshold between the decayed duplicate and s2 drops it after the decay
    thr = (s[2] + s[1] * math.exp(-2.0)) / 2
    res = postprocess_instances(logits, objectness, masks, (8, 8), (8, 8), (8, 8), thr, 0.45, 3, multi_class, 2.0)
    assert res.pred_classes.tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(3))
def test_postprocess_is_the_ranking_kept_above_the_threshold(seed):
    """postprocess_instances == rank_detections without a threshold (the exported
    graph's) then scores > CLS_THRESHOLD (the runtime's), single- and multi-class,
    with and without Matrix NMS, on random inputs."""
    from mobileinst.postprocess import rank_detections

    g = torch.Generator().manual_seed(seed)
    n, c = 16, 4
    logits, objectness = torch.randn(n, c, generator=g) * 2, torch.randn(n, generator=g) * 2
    masks = torch.randn(n, 8, 8, generator=g) * 3
    masks[4] = masks[2] + 0.1 * torch.randn(8, 8, generator=g)  # a duplicate for the decay
    logits[4] = logits[2] - 0.2
    for multi_class in (False, True):
        for sigma in (0.0, 2.0):
            scores, queries, classes = rank_detections(logits, objectness, masks.sigmoid(), 0.45, 10,
                                                       multi_class, sigma)
            thr = float(scores.median())
            keep = scores > thr
            assert 0 < keep.sum() < len(scores)
            res = postprocess_instances(logits, objectness, masks, (8, 8), (8, 8), (8, 8), thr, 0.45, 10,
                                        multi_class, sigma)
            assert torch.equal(res.scores, scores[keep]) and torch.equal(res.pred_classes, classes[keep])
            ref, _ = binarize_masks(masks.sigmoid()[queries[keep]], (8, 8), (8, 8), (8, 8), 0.45)
            assert torch.equal(res.pred_masks, ref)
