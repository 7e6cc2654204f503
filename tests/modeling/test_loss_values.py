"""The loss dict of fixed-seed batches, against the values the model gave before
its losses moved into the criterion (issue 18; computed on the commit before)
and before its heads became registered components (issue 25): a refactor must
leave every loss and its value as it was (and the initial weights a seed gives)."""
import pytest
import torch
from conftest import small_cfg
from detectron2.modeling import build_model
from test_model import _instances


def _images():
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8, generator=g)
    img2 = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8, generator=g)
    return [{"image": img, "instances": _instances(96, 128, [(10, 10, 60, 50), (70, 30, 120, 90)], [1, 3])},
            {"image": img2, "instances": _instances(96, 128, [], [])}]


def _pairs():
    g = torch.Generator().manual_seed(2)
    imgs = [torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8, generator=g) for _ in range(4)]
    return [
        {"image": [imgs[0], imgs[1]],
         "instances": [_instances(96, 96, [(10, 10, 40, 40)], [2]), _instances(96, 96, [(14, 12, 44, 42)], [2])]},
        {"image": [imgs[2], imgs[3]],
         "instances": [_instances(96, 96, [(50, 20, 90, 70), (5, 5, 30, 30)], [0, 4]),
                       _instances(96, 96, [(52, 22, 92, 72), (8, 6, 33, 31)], [0, 4])]},
    ]


VIDEO = ("MODEL.META_ARCHITECTURE", "MobileInstVideo")
# The loss names changed with issue 25 (the paper's: L_cls, L_mask = dice + BCE, L_obj); the values did not.
CASES = {
    # images, one without objects; the pooled and the dense class losses (synthetic config)
    "images": ((), _images, {
        "loss_cls": 2.0934128761291504, "loss_mask_dice": 1.1424156427383423, "loss_mask_bce": 1.2801785469055176,
        "loss_obj": 0.6984507441520691, "loss_pooled_cls": 1.7059459686279297,
        "loss_dense_cls": 1.7213950157165527}),
    # frame pairs with query passing (MobileInstVideo), both frames supervised as images
    "pairs": (VIDEO, _pairs, {
        "loss_cls": 1.773678183555603, "loss_mask_dice": 1.6059366464614868, "loss_mask_bce": 2.19815993309021,
        "loss_obj": 0.6078946590423584, "loss_mask_dice_qp": 1.6057929992675781,
        "loss_mask_bce_qp": 2.1483819484710693, "loss_pooled_cls": 1.5485261678695679,
        "loss_dense_cls": 1.5501954555511475}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_loss_values_of_a_fixed_seed_batch(case):
    opts, batch, expected = CASES[case]
    torch.manual_seed(0)
    model = build_model(small_cfg(*opts)).train()
    losses = model(batch())
    assert set(losses) == set(expected)
    for k, v in expected.items():
        assert float(losses[k]) == pytest.approx(v, rel=1e-4, abs=1e-6), k
