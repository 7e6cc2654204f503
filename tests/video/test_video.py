"""Online video inference: kernel reuse, kernel association, constant memory."""
import math

import numpy as np
import pytest
import torch
from conftest import small_cfg
from detectron2.modeling import build_model

from mobileinst.video import VideoTracker, keyframe_scores
from mobileinst_core import kernel_association


def _np(x):
    return None if x is None else x.detach().float().numpy()


def associate(prev, cur, mask_features=None, prev_scores=None, cur_scores=None, **kwargs):
    """:func:`mobileinst_core.kernel_association.associate` on tensors."""
    return torch.as_tensor(kernel_association.associate(_np(prev), _np(cur), _np(mask_features), _np(prev_scores),
                                                        _np(cur_scores), **kwargs))


def cosine_cost(prev, cur):
    return torch.as_tensor(kernel_association.cosine_cost(_np(prev).astype(np.float64), _np(cur).astype(np.float64)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(small_cfg("MODEL.META_ARCHITECTURE", "MobileInstVideo")).eval()


def _frames(n, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=g) for _ in range(n)]


def test_associate_recovers_a_permutation():
    torch.manual_seed(0)
    k = torch.randn(12, 16)
    perm = torch.randperm(12)
    cur = k[perm] + 0.01 * torch.randn(12, 16)
    p = associate(k, cur)
    # current query p[i] continues slot i, i.e. cur[p[i]] ~ k[i]
    assert torch.equal(perm[p], torch.arange(12))
    assert torch.allclose(cosine_cost(k, k).diagonal(), torch.zeros(12, dtype=torch.float64), atol=1e-5)
    # one-to-one even with duplicates: two identical current kernels go to two slots
    cur2 = torch.stack([k[0], k[0], k[2]])
    p2 = associate(k[:3], cur2)
    assert sorted(p2.tolist()) == [0, 1, 2]


def test_mask_overlap_cost_by_hand():
    from mobileinst_core.kernel_association import mask_overlap_cost

    # 4 pixels: two with feature (10, 0), two with (0, 10)
    x = np.array([[10.0, 10.0, 0.0, 0.0], [0.0, 0.0, 10.0, 10.0]]).reshape(2, 1, 4)
    k_left, k_right, k_all, k_none = [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]
    cost = mask_overlap_cost(np.array([k_left, k_none]), np.array([k_left, k_right, k_all, k_none]), x, 0.45)
    # IoU: left/left 1, left/right 0, left/all 2/4, anything with an empty mask 0
    np.testing.assert_allclose(cost, [[0.0, 1.0, 0.5, 1.0], [1.0, 1.0, 1.0, 1.0]])


def test_confident_query_that_took_over_an_object_continues_its_track():
    """Slot 0 tracked the left object. On the new keyframe a weak duplicate (query 0)
    keeps slot 0's kernel direction; a confident query (query 1) covers the object
    with another kernel. Cosine alone keeps query 0; the mask-overlap association
    gives slot 0 to query 1; without overlap (min IoU) it falls back to cosine."""
    x = np.array([[10.0, 10.0, 0.0, 0.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 1.0, 1.0]]).reshape(3, 1, 4)
    prev = torch.tensor([[1.0, -1.0, 0.5], [0.0, 0.0, -1.0]])
    cur = torch.tensor([[1.0, -1.0, 0.6], [0.2, -1.0, -1.5], [0.0, 0.0, -1.0]])
    prev_scores, cur_scores = torch.tensor([0.9, 0.01]), torch.tensor([0.1, 0.8, 0.01])
    xm = torch.as_tensor(x)
    assert associate(prev, cur).tolist()[0] == 0  # the paper's cosine
    p = associate(prev, cur, xm, prev_scores, cur_scores, mask_weight=10.0, score_threshold=0.2, min_iou=0.1,
                  mask_threshold=0.45)
    assert p.tolist()[0] == 1 and len(set(p.tolist())) == 2
    # query 1 now covers the right object instead: no overlap, cosine decides
    cur_right = cur.clone()
    cur_right[1] = torch.tensor([-1.0, 0.2, -1.5])
    p = associate(prev, cur_right, xm, prev_scores, cur_scores, mask_weight=10.0, score_threshold=0.2, min_iou=0.1,
                  mask_threshold=0.45)
    assert p.tolist()[0] == 0
    with pytest.raises(ValueError, match="mask features"):
        associate(prev, cur, mask_weight=1.0)


@pytest.mark.parametrize("interval", [1, 3])
def test_kernel_reuse_runs_the_decoder_on_keyframes_only(model, interval, monkeypatch):
    calls = []
    orig = model.instance_decoder.forward
    monkeypatch.setattr(model.instance_decoder, "forward", lambda *a: calls.append(1) or orig(*a))
    tracker = VideoTracker.from_model(model, reuse_interval=interval, track_score_threshold=0.0)
    frames = _frames(7)
    outs = [tracker.step(f) for f in frames]
    assert len(calls) == len(range(0, 7, interval))
    if interval == 3:
        assert outs[1].pred_masks.shape[0] == len(outs[1].track_ids)
    for o in outs:
        assert o.image_size == (64, 96)
        assert o.pred_masks.shape[1:] == (64, 96)
        assert o.track_ids.numel() == len(o)


def test_reused_kernels_give_the_keyframe_masks_on_the_keyframe(model):
    frame = _frames(1)[0]
    tracker = VideoTracker.from_model(model, reuse_interval=3, track_score_threshold=0.0)
    a = tracker.step(frame)
    b = tracker.step(frame)  # same image, reused kernels -> identical masks and ids
    assert torch.equal(a.pred_masks, b.pred_masks)
    assert torch.equal(a.track_ids, b.track_ids)


def test_association_keeps_slots_when_queries_are_permuted(model, monkeypatch):
    """A keyframe whose queries come out permuted is mapped back to the same slots."""
    frame = _frames(1)[0]
    tracker = VideoTracker.from_model(model, reuse_interval=1, track_score_threshold=0.0)
    first = tracker.step(frame)
    kernels0 = tracker.kernels.clone()
    orig = model.instance_decoder.forward
    perm = torch.randperm(model.instance_decoder.num_queries, generator=torch.Generator().manual_seed(1))

    def permuted(*a):
        return {k: v[:, perm] for k, v in orig(*a).items()}

    monkeypatch.setattr(model.instance_decoder, "forward", permuted)
    second = tracker.step(frame)
    assert torch.allclose(tracker.kernels, kernels0)
    assert torch.equal(first.track_ids, second.track_ids)
    # without association the slots follow the (permuted) query order
    t2 = VideoTracker.from_model(model, reuse_interval=1, association=False, track_score_threshold=0.0)
    monkeypatch.setattr(model.instance_decoder, "forward", orig)
    t2.step(frame)
    monkeypatch.setattr(model.instance_decoder, "forward", permuted)
    t2.step(frame)
    assert not torch.allclose(t2.kernels, kernels0)


def test_ytvis_result_and_size_change_error(model):
    tracker = VideoTracker.from_model(model, reuse_interval=2, max_tracks=4, track_score_threshold=0.0,
                                      output_size=(32, 48))
    for f in _frames(5):
        tracker.step(f)
    res = tracker.ytvis_result(video_id=7)
    assert res["video_id"] == 7 and 0 < len(res["tracks"]) <= 4
    for t in res["tracks"]:
        assert len(t["segmentations"]) == 5
        assert 0 <= t["category_id"] < 5 and 0 <= t["score"] <= 1
        seg = next(s for s in t["segmentations"] if s is not None)
        assert list(seg["size"]) == [32, 48]
    scores = [t["score"] for t in res["tracks"]]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match="Frame 5 has size 80x64"):
        tracker.step(torch.zeros(3, 64, 80, dtype=torch.uint8))


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def test_ten_thousand_frame_stream_runs_in_constant_memory(model):
    """Neither the tracker's state nor the process grows over a 10,000-frame stream."""
    tracker = VideoTracker.from_model(model, reuse_interval=5, keep_results=False, track_score_threshold=0.0)
    frame = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        for _ in range(500):
            tracker.step(frame)
        base = _rss_mb()
        state = {k: v.shape for k, v in vars(tracker).items() if isinstance(v, torch.Tensor)}
        for _ in range(10_000 - 500):
            out = tracker.step(frame)
    grown = _rss_mb() - base
    assert tracker.frame_index == 10_000
    assert tracker.results == []
    assert {k: v.shape for k, v in vars(tracker).items() if isinstance(v, torch.Tensor)} == state
    assert len(out) > 0  # every frame produced masks (64x64 each): a leak would be > 100 MB
    assert grown < 50, f"RSS grew by {grown:.1f} MB over 9500 frames"


def test_nonkey_scale_runs_non_keyframes_smaller_and_pastes_full_size(model, monkeypatch):
    """VIDEO.NONKEY_SCALE: keyframes at full size, non-keyframes at the scale
    (padded to 64), all masks at the frame size; bad scales are refused."""
    sizes = []
    orig = model.encode
    monkeypatch.setattr(model, "encode", lambda x: sizes.append(tuple(x.shape[-2:])) or orig(x))
    tracker = VideoTracker.from_model(model, reuse_interval=3, nonkey_scale=0.5, track_score_threshold=0.0)
    frames = [torch.randint(0, 255, (3, 128, 192), dtype=torch.uint8) for _ in range(4)]
    outs = [tracker.step(f) for f in frames]
    assert sizes == [(128, 192), (64, 128), (64, 128), (128, 192)]  # 64x96 padded to 64x128
    assert all(o.pred_masks.shape[1:] == (128, 192) for o in outs)
    assert [len(o) for o in outs[:3]] == [len(outs[0])] * 3  # the keyframe's tracks on every frame
    # the resize is OpenCV's bilinear one (as the ONNX runtime's letterbox)
    import cv2

    from mobileinst.video.tracker import rescale_frame

    small = rescale_frame(frames[0], 0.5)
    ref = cv2.resize(frames[0].permute(1, 2, 0).numpy(), (96, 64), interpolation=cv2.INTER_LINEAR)
    assert torch.equal(small, torch.from_numpy(ref).permute(2, 0, 1))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="NONKEY_SCALE"):
            VideoTracker.from_model(model, nonkey_scale=bad)


def test_keyframe_scores_decay_duplicate_queries():
    """NMS_SIGMA: a query whose kernel (hence mask) and class copy a better one
    keeps exp(-sigma) of its score; the others are untouched."""
    from conftest import small_cfg
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(small_cfg("MODEL.MOBILEINST.INFERENCE.NMS_SIGMA", "2.0")).eval()
    x_mask = torch.randn(1, 64, 8, 8)
    kernels = torch.randn(1, 3, 64)
    kernels[0, 1] = kernels[0, 0]  # same mask as query 0
    logits = torch.full((1, 3, 5), -6.0)
    logits[0, 0, 2], logits[0, 1, 2], logits[0, 2, 2] = 3.0, 2.0, 1.0
    out = {"pred_logits": logits, "pred_objectness": torch.zeros(1, 3), "pred_kernels": kernels}
    scores, classes, per_class = keyframe_scores(model, out, x_mask)
    model.nms_sigma = 0.0
    plain, _, plain_per_class = keyframe_scores(model, out, x_mask)
    binary = (model.mask_logits(kernels, x_mask)[0].sigmoid() > model.mask_threshold).flatten(1).float()
    inter = binary[2] @ binary[0]
    iou = float(inter / (binary[2].sum() + binary[0].sum() - inter).clamp(min=1))
    torch.testing.assert_close(scores[0], plain[0])
    torch.testing.assert_close(scores[1], plain[1] * math.exp(-2.0))
    torch.testing.assert_close(scores[2], plain[2] * math.exp(-2.0 * iou ** 2), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(per_class[1], plain_per_class[1] * math.exp(-2.0))
