"""Tests for the matcher and the training loss."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from fvcore.nn import sigmoid_focal_loss

from mobileinst import add_mobileinst_config
from mobileinst.criterion import SetCriterion, dice_loss, mask_iou
from mobileinst.criterion.matcher import HungarianMatcher, batch_indices, pairwise_dice

BIG = 20.0


def _logits(binary):
    """Large-magnitude logits reproducing a binary mask."""
    return (binary.float() * 2 - 1) * BIG


def _pairs(idx):
    q, t = idx
    return sorted(zip(q.tolist(), t.tolist()))


# --------------------------------------------------------------------------- matcher


def test_pairwise_dice_by_hand():
    inputs = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    d = pairwise_dice(inputs, targets, eps=0.0)
    expected = torch.tensor([
        [2 * 1 / (2 + 1), 0.0, 2 * 2 / (2 + 2)],
        [2 * 0.5 / (2 + 1), 2 * 1 / (2 + 2), 2 * 1 / (2 + 2)],
    ])
    torch.testing.assert_close(d, expected)
    assert tuple(pairwise_dice(inputs, targets).shape) == (2, 3)


def _masks():
    t0 = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)
    t1 = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.float32)
    return t0, t1


def test_matcher_mask_decides():
    t0, t1 = _masks()
    junk = torch.full((2, 4), -BIG)
    pred_masks = torch.stack([_logits(t1), junk, _logits(t0)])[None]  # q0 ~ t1, q2 ~ t0
    pred_logits = torch.zeros(1, 3, 4)  # all classes p = 0.5
    targets = [{"labels": torch.tensor([2, 1]), "masks": torch.stack([t0, t1])}]
    (idx,) = HungarianMatcher(0.8, 0.2)(pred_logits, pred_masks, targets)
    assert idx[0].dtype == torch.int64 and idx[1].dtype == torch.int64
    assert _pairs(idx) == [(0, 1), (2, 0)]


def test_matcher_class_decides():
    t0, t1 = _masks()
    # q0 and q1 have the same (perfect) mask for t0; q1 is confident about t0's class 3
    pred_masks = torch.stack([_logits(t0), _logits(t0), _logits(t1)])[None]
    pred_logits = torch.full((1, 3, 4), -2.0)
    pred_logits[0, 0, 3] = -3.0
    pred_logits[0, 1, 3] = 3.0
    targets = [{"labels": torch.tensor([3, 1]), "masks": torch.stack([t0, t1])}]
    (idx,) = HungarianMatcher(0.8, 0.2)(pred_logits, pred_masks, targets)
    assert _pairs(idx) == [(1, 0), (2, 1)]
    # swapping the class confidences swaps the match
    pred_logits[0, 0, 3], pred_logits[0, 1, 3] = 3.0, -3.0
    (idx,) = HungarianMatcher(0.8, 0.2)(pred_logits, pred_masks, targets)
    assert _pairs(idx) == [(0, 0), (2, 1)]


def test_matcher_batch_and_empty_image():
    t0, t1 = _masks()
    pred_masks = torch.stack([_logits(t1), _logits(t0), torch.full((2, 4), -BIG)])[None].repeat(2, 1, 1, 1)
    pred_logits = torch.zeros(2, 3, 4)
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 2, 4)},
        {"labels": torch.tensor([0]), "masks": t0[None]},
    ]
    out = HungarianMatcher()(pred_logits, pred_masks, targets)
    assert len(out) == 2
    assert out[0][0].numel() == 0 and out[0][1].numel() == 0
    assert out[0][0].dtype == torch.int64
    assert _pairs(out[1]) == [(1, 0)]
    b, q = batch_indices(out)
    assert b.tolist() == [1] and q.tolist() == [1]


# --------------------------------------------------------------------------- loss pieces


def test_dice_loss_by_hand():
    inputs = torch.tensor([[0.0, 0.0], [math.log(3.0), -math.log(3.0)]])  # sigmoid: [.5, .5], [.75, .25]
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    eps = 1e-4
    l0 = 1 - (2 * 0.5 + eps) / (0.25 + 0.25 + 1 + eps)
    l1 = 1 - (2 * 0.75 + eps) / (0.5625 + 0.0625 + 1 + eps)
    torch.testing.assert_close(dice_loss(inputs, targets), torch.tensor(l0 + l1))
    # perfect prediction -> ~0, inverted -> ~1 per row
    t = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert dice_loss(_logits(t), t) < 1e-4
    assert dice_loss(_logits(1 - t), t) > 0.99


def test_mask_iou_by_hand():
    pred = torch.tensor([[5.0, 5.0, -5.0, -5.0], [-0.2, -5.0, 5.0, -5.0], [-5.0, -5.0, -5.0, -5.0]])
    tgt = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # row 0: inter 1, union 3; row 1: sigmoid(-0.2)=0.45 > 0.4 -> pred {0, 2}, inter 2, union 3
    # row 2: both empty -> 0 (union clamped to 1)
    torch.testing.assert_close(mask_iou(pred, tgt, 0.4), torch.tensor([1 / 3, 2 / 3, 0.0]))
    # a higher threshold drops pixel 0 of row 1
    torch.testing.assert_close(mask_iou(pred, tgt, 0.5)[1], torch.tensor(1 / 3))


# --------------------------------------------------------------------------- SetCriterion


def _cfg(*opts):
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.merge_from_list(["MODEL.MOBILEINST.NUM_CLASSES", "4"] + list(opts))
    return cfg


def _problem(perfect: bool):
    """2 images, 3 queries, 4 classes, 8x8 masks; image 0 has 2 instances, image 1 has 1."""
    m0 = torch.zeros(8, 8)
    m0[:4, :4] = 1
    m1 = torch.zeros(8, 8)
    m1[4:, 2:7] = 1
    m2 = torch.zeros(8, 8)
    m2[1:6, 5:] = 1
    targets = [
        {"labels": torch.tensor([1, 3]), "masks": torch.stack([m0, m1])},
        {"labels": torch.tensor([2]), "masks": m2[None]},
    ]
    logits = torch.full((2, 3, 4), -BIG)
    masks = torch.full((2, 3, 8, 8), -BIG)
    if perfect:
        masks[0, 0], masks[0, 2], masks[1, 1] = _logits(m1), _logits(m0), _logits(m2)
        logits[0, 0, 3] = logits[0, 2, 1] = logits[1, 1, 2] = BIG
    else:
        masks[0, 0], masks[0, 2], masks[1, 1] = _logits(1 - m1), _logits(1 - m0), _logits(1 - m2)
        logits[0, 0, 0] = logits[0, 2, 2] = logits[1, 1, 3] = BIG
    objectness = torch.zeros(2, 3)
    outputs = {"pred_logits": logits, "pred_masks": masks, "pred_objectness": objectness}
    return outputs, targets


def test_criterion_perfect_vs_wrong():
    crit = SetCriterion(_cfg())
    good = crit(*_problem(perfect=True))
    bad = crit(*_problem(perfect=False))
    assert set(good) == {"loss_cls", "loss_mask_dice", "loss_mask_bce", "loss_obj"}
    assert good["loss_mask_dice"] < 1e-3 and good["loss_mask_bce"] < 1e-3 and good["loss_cls"] < 1e-3
    assert bad["loss_mask_dice"] > 1.0 and bad["loss_mask_bce"] > 1.0 and bad["loss_cls"] > 1.0
    for k in ("loss_cls", "loss_mask_dice", "loss_mask_bce"):
        assert bad[k] > 100 * good[k], k
    # objectness target = IoU: 1 for perfect masks, 0 for inverted ones; logit 0 -> BCE = ln 2 both
    torch.testing.assert_close(good["loss_obj"], torch.tensor(math.log(2.0)))


def test_criterion_cls_matches_focal_loss():
    """loss_cls = w * focal(logits, one-hot on matched queries) / num_instances."""
    torch.manual_seed(0)
    outputs, targets = _problem(perfect=True)
    outputs["pred_logits"] = torch.randn(2, 3, 4)
    crit = SetCriterion(_cfg())
    losses = crit(outputs, targets)
    onehot = torch.zeros(2, 3, 4)
    onehot[0, 0, 3] = onehot[0, 2, 1] = onehot[1, 1, 2] = 1
    expected = 2.0 * sigmoid_focal_loss(outputs["pred_logits"], onehot, 0.25, 2.0, "sum") / 3
    torch.testing.assert_close(losses["loss_cls"], expected)


def test_criterion_weights_from_config():
    outputs, targets = _problem(perfect=False)
    outputs["pred_objectness"] = torch.full((2, 3), 0.7)
    base = SetCriterion(_cfg())(outputs, targets)
    scaled = SetCriterion(_cfg("MODEL.MOBILEINST.LOSS.CLASS_WEIGHT", "4.0",
                               "MODEL.MOBILEINST.LOSS.MASK_DICE_WEIGHT", "1.0",
                               "MODEL.MOBILEINST.LOSS.MASK_PIXEL_WEIGHT", "6.0",
                               "MODEL.MOBILEINST.LOSS.OBJECTNESS_WEIGHT", "3.0"))(outputs, targets)
    torch.testing.assert_close(scaled["loss_cls"], 2 * base["loss_cls"])
    torch.testing.assert_close(scaled["loss_mask_dice"], 0.5 * base["loss_mask_dice"])
    torch.testing.assert_close(scaled["loss_mask_bce"], 3 * base["loss_mask_bce"])
    torch.testing.assert_close(scaled["loss_obj"], 3 * base["loss_obj"])


def test_given_assignment_and_mask_only():
    """``indices`` replaces the matching; ``mask_only`` gives the dice and pixel BCE
    of the same call without it, nothing else."""
    outputs, targets = _problem(perfect=True)
    crit = SetCriterion(_cfg())
    losses, matched = crit.set_losses(outputs, targets, return_indices=True)
    assert [_pairs(m) for m in matched] == [[(0, 1), (2, 0)], [(1, 0)]]
    assert crit.set_losses(outputs, targets, matched) == losses == crit(outputs, targets)
    # swap the queries of image 0: its masks now go to the wrong targets
    swapped = [(matched[0][0].flip(0), matched[0][1]), matched[1]]
    wrong = crit.set_losses(outputs, targets, swapped)
    assert wrong["loss_mask_dice"] > 0.5 and wrong["loss_cls"] > 1.0
    crit.matcher.forward = None  # any matching now fails
    only = crit.set_losses({"pred_masks": outputs["pred_masks"]}, targets, swapped, mask_only=True)
    assert set(only) == {"loss_mask_dice", "loss_mask_bce"}
    for k in only:
        torch.testing.assert_close(only[k], wrong[k])


def test_forward_adds_the_passed_losses():
    """forward: the losses of the instance predictions, then "_qp" of the passed masks
    (L_mask under the assignment of the instance predictions of the last images)."""
    outputs, targets = _problem(perfect=True)
    crit = SetCriterion(_cfg())
    own, matched = crit.set_losses(outputs, targets, return_indices=True)
    # passed masks of image 1: target 0 at query 0, junk at query 1 (the query of its assignment)
    passed = torch.full((1, 3, 8, 8), -BIG)
    passed[0, 0] = outputs["pred_masks"][1, 1]
    passed = {"pred_masks": passed}
    losses = crit(dict(outputs, passed_outputs=passed), targets)
    expected = dict(own)
    qp = crit.set_losses(passed, targets[1:], matched[1:], mask_only=True)
    expected.update({k + "_qp": v for k, v in qp.items()})
    assert list(losses) == list(expected)
    for k, v in expected.items():
        torch.testing.assert_close(losses[k], v, msg=k)
    # matched on their own, the passed masks would have been near perfect
    rematched = crit.set_losses(dict(passed, pred_logits=outputs["pred_logits"][1:]), targets[1:], mask_only=True)
    assert losses["loss_mask_dice_qp"] > 0.5 > rematched["loss_mask_dice"]


def test_pooled_class_losses_need_the_head_and_a_weight():
    """LOSS.POOLED_CLASS_WEIGHT: cross-entropy of the pooled class head on the
    features averaged in each ground-truth mask; LOSS.DENSE_CLASS_WEIGHT its MLP
    per position. Only with the head given and a weight above 0."""
    from mobileinst.instance_decoder import PooledClassHead

    outputs, targets = _problem(perfect=True)
    torch.manual_seed(0)
    head = PooledClassHead(channels=6, hidden_dim=8, num_classes=4, mask_stride=8)
    x_mask = torch.randn(2, 6, 8, 8)  # the grid of the targets: their covers are the masks
    outputs = dict(outputs, mask_features=x_mask)
    crit = SetCriterion(_cfg("MODEL.MOBILEINST.LOSS.POOLED_CLASS_WEIGHT", "2.0",
                             "MODEL.MOBILEINST.LOSS.DENSE_CLASS_WEIGHT", "0.5"))
    assert set(crit(outputs, targets)) == {"loss_cls", "loss_mask_dice", "loss_mask_bce", "loss_obj"}
    losses = crit(outputs, targets, class_head=head)
    feats = head.feature_map(x_mask)
    logits = torch.cat([head.pool_logits(feats[i: i + 1], t["masks"][None])[0] for i, t in enumerate(targets)])
    expected = 2.0 * F.cross_entropy(logits, torch.cat([t["labels"] for t in targets]))
    torch.testing.assert_close(losses["loss_pooled_cls"], expected)
    torch.testing.assert_close(losses["loss_dense_cls"], 0.5 * crit.dense_class_loss(head, feats, targets))
    off = SetCriterion(_cfg("MODEL.MOBILEINST.LOSS.POOLED_CLASS_WEIGHT", "0.0"))(outputs, targets, class_head=head)
    assert not {"loss_pooled_cls", "loss_dense_cls"} & set(off)


@pytest.mark.parametrize("mixed", [False, True])
def test_criterion_images_without_instances(mixed):
    outputs, targets = _problem(perfect=True)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8)}
    targets = [empty, targets[1]] if mixed else [empty, dict(empty)]
    masks = outputs["pred_masks"].clone().requires_grad_(True)
    obj = outputs["pred_objectness"].clone().requires_grad_(True)
    logits = torch.randn(2, 3, 4, requires_grad=True)
    losses = SetCriterion(_cfg())({"pred_logits": logits, "pred_masks": masks, "pred_objectness": obj}, targets)
    for k, v in losses.items():
        assert torch.isfinite(v), k
    if not mixed:
        assert losses["loss_mask_dice"] == 0 and losses["loss_mask_bce"] == 0 and losses["loss_obj"] == 0
        # every query is a negative: focal loss over all logits, normalised by max(num, 1) = 1
        expected = 2.0 * sigmoid_focal_loss(logits.detach(), torch.zeros(2, 3, 4), 0.25, 2.0, "sum")
        torch.testing.assert_close(losses["loss_cls"], expected)
    sum(losses.values()).backward()
    assert masks.grad is not None and torch.isfinite(masks.grad).all()
    assert obj.grad is not None and logits.grad is not None
    if not mixed:
        assert masks.grad.abs().sum() == 0
    else:
        # only the matched query of image 1 receives a mask gradient
        assert masks.grad[0].abs().sum() == 0 and masks.grad[1, 0].abs().sum() == 0
        assert masks.grad[1, 1].abs().sum() > 0


@pytest.mark.parametrize("obj_logit", [-2.0, 0.0, 2.0])
def test_objectness_target_is_iou(obj_logit):
    # one image, 2 queries, one target of 4 pixels; query 1 predicts 2 of them + 2 extra -> IoU 2/6
    tgt = torch.zeros(4, 4)
    tgt[0, :4] = 1
    pred = torch.zeros(4, 4)
    pred[0, :2] = 1
    pred[1, :2] = 1
    masks = torch.stack([torch.full((4, 4), -BIG), _logits(pred)])[None]
    logits = torch.full((1, 2, 3), -BIG)
    logits[0, 1, 0] = BIG
    obj = torch.tensor([[0.5, obj_logit]], requires_grad=True)
    targets = [{"labels": torch.tensor([0]), "masks": tgt[None]}]
    losses = SetCriterion(_cfg("MODEL.MOBILEINST.LOSS.OBJECTNESS_WEIGHT", "1.5"))(
        {"pred_logits": logits, "pred_masks": masks, "pred_objectness": obj}, targets)
    iou = 2 / 6
    expected = 1.5 * F.binary_cross_entropy_with_logits(torch.tensor([obj_logit]), torch.tensor([iou]))
    torch.testing.assert_close(losses["loss_obj"], expected)
    losses["loss_obj"].backward()
    g = obj.grad[0]
    assert g[0] == 0  # unmatched query: no objectness loss
    # d/dx BCE(x, iou) = sigmoid(x) - iou
    torch.testing.assert_close(g[1], torch.tensor(1.5 * (torch.sigmoid(torch.tensor(obj_logit)).item() - iou)))
    assert (g[1] > 0) == (torch.sigmoid(torch.tensor(obj_logit)).item() > iou)


def test_criterion_float32_under_mixed_precision():
    """SOLVER.AMP.ENABLED: half-precision outputs of a large image (mask sums far
    above float16's 65504) give the float32 losses, in float32, with gradients."""
    torch.manual_seed(0)
    size = 300  # 90,000 pixels per mask
    tgt = torch.zeros(2, size, size)
    tgt[0, :200] = 1
    tgt[1, 150:, 100:] = 1
    targets = [{"labels": torch.tensor([0, 2]), "masks": tgt}]
    masks = torch.randn(1, 3, size, size) * 2 + 4.0  # mostly "on": dice sums ~ 1e5
    logits, obj = torch.randn(1, 3, 4), torch.randn(1, 3)
    crit = SetCriterion(_cfg())
    ref = crit({"pred_logits": logits, "pred_masks": masks.half().float(), "pred_objectness": obj}, targets)
    half_masks = masks.half().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = crit({"pred_logits": logits.half(), "pred_masks": half_masks, "pred_objectness": obj.half()}, targets)
    for k, v in ref.items():
        assert mixed[k].dtype == torch.float32, k
        assert torch.isfinite(mixed[k]), k
        torch.testing.assert_close(mixed[k], v, rtol=2e-3, atol=1e-3, msg=k)
    sum(mixed.values()).backward()
    assert half_masks.grad.dtype == torch.float16 and torch.isfinite(half_masks.grad).all()
