"""Temporal query passing on frame pairs (t, t+d) as in the paper, checked against a
matcher whose assignment is fixed by hand."""
import pytest
import torch
from conftest import small_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from mobileinst.data.ytvis_mapper import YTVISPairMapper


@pytest.fixture(scope="module")
def pairs(synthetic_root):
    """Two frame pairs of the synthetic videos with objects in both frames."""
    mapper = YTVISPairMapper([T.NoOpTransform()], "RGB", "bitmask", sampling_frame_range=3, seed=0)
    out = []
    for v in DatasetCatalog.get("test_synthetic_ytvis_train"):
        x = mapper(v)
        if all(len(i) for i in x["instances"]):
            out.append(x)
        if len(out) == 2:
            return out
    raise AssertionError("fewer than 2 pairs with objects in both frames")


def _model(*opts):
    torch.manual_seed(0)
    cfg = small_cfg("MODEL.META_ARCHITECTURE", "MobileInstVideo", *opts)
    return build_model(cfg).train()


def _hand_assignment(pred_logits, pred_masks, targets):
    """Target j of image i goes to query (5 i + 3 j + 1) mod N: distinct per image
    and different between images, unlike anything a real matching would give."""
    n = pred_logits.shape[1]
    return [(torch.tensor([(5 * i + 3 * j + 1) % n for j in range(len(t["labels"]))], dtype=torch.int64),
             torch.arange(len(t["labels"]))) for i, t in enumerate(targets)]


@pytest.fixture
def spy(monkeypatch):
    """Install the hand assignment as the matcher of ``model``; returns the calls:
    (labels of the targets it was given, the assignment it returned)."""
    def install(model):
        calls = []

        def forward(pred_logits, pred_masks, targets):
            out = _hand_assignment(pred_logits, pred_masks, targets)
            calls.append(([t["labels"].clone() for t in targets], out))
            return out

        monkeypatch.setattr(model.criterion.matcher, "forward", forward)
        return calls
    return install


def _labels(pairs, frame):
    return [x["instances"][frame].gt_classes for x in pairs]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _passed_mask_losses_by_hand(model, pairs, assignment):
    """Dice and pixel BCE of frame t's Q_G through frame t+d's local stage, on
    frame t+d's targets, under ``assignment`` (the frames t+d's (query, target))."""
    b = len(pairs)
    with torch.no_grad():
        images = model.preprocess([x["image"][0] for x in pairs] + [x["image"][1] for x in pairs])
        targets = model.prepare_targets([x["instances"][1] for x in pairs], images.tensor.shape[-2:])
        x6, x_mask = model.encode(images.tensor)
        dec = model.instance_decoder
        kernels = dec.forward_local(dec.forward_global(x6[:b]), x_mask[b:], x6.shape[-2:])["pred_kernels"]
        masks = model.mask_logits(kernels, x_mask[b:])
    dice, bce, pixels = 0.0, 0.0, 0
    for i, (queries, tgts) in enumerate(assignment):
        for q, j in zip(queries.tolist(), tgts.tolist()):
            p, t = masks[i, q].sigmoid().flatten(), targets[i]["masks"][j].flatten()
            dice += 1 - (2 * (p * t).sum() + 1e-4) / ((p * p).sum() + (t * t).sum() + 1e-4)
            logit = masks[i, q].flatten()
            bce += -(t * torch.nn.functional.logsigmoid(logit)
                     + (1 - t) * torch.nn.functional.logsigmoid(-logit)).sum()
            pixels += logit.numel()
    num = sum(len(t["labels"]) for t in targets)
    return 2.0 * dice / num, 2.0 * bce / pixels  # MASK_DICE_WEIGHT, MASK_PIXEL_WEIGHT


def test_passed_branch_shares_the_matching_of_frame_t_plus_d(pairs, spy):
    model = _model()
    calls = spy(model)
    losses = model(pairs)
    # one matching, of the frames' own predictions (t and t+d, each on its own); none for the passed branch
    assert len(calls) == 1
    labels, assignment = calls[0]
    own = _labels(pairs, 0) + _labels(pairs, 1)
    assert _same(labels, own)
    # the passed branch: mask losses only, under frame t+d's assignment
    assert {k for k in losses if k.endswith("_qp")} == {"loss_mask_dice_qp", "loss_mask_bce_qp"}
    assert {"loss_cls", "loss_mask_dice", "loss_mask_bce", "loss_obj"} <= set(losses)
    dice, bce = _passed_mask_losses_by_hand(model, pairs, assignment[-len(pairs):])
    torch.testing.assert_close(losses["loss_mask_dice_qp"].detach(), dice, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses["loss_mask_bce_qp"].detach(), bce, rtol=1e-4, atol=1e-5)
    # frame t's assignment would give other losses: the check above can fail
    other = [((q + 1) % model.instance_decoder.num_queries, j) for q, j in assignment[-len(pairs):]]
    assert abs(float(_passed_mask_losses_by_hand(model, pairs, other)[0]) - float(dice)) > 1e-3


def test_query_passing_training_lowers_the_loss(pairs):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(12):
        losses = model(pairs)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert all(torch.isfinite(torch.tensor(totals)))
    assert sum(totals[-3:]) / 3 < 0.8 * totals[0], totals
