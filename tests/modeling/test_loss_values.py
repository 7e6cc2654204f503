"""The loss dict of fixed-seed batches, against the values the model gave before
its losses moved into the criterion (issue 18; computed on the commit before):
a refactor of the losses must leave every loss, its name and its value as it was."""
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


DEEP = ("MODEL.MOBILEINST.DECODER.DEEP_SUPERVISION", "True")
QP = ("MODEL.MOBILEINST.VIDEO.QUERY_PASSING", "True")
CASES = {
    # images, one without objects; deep supervision, the pooled and the dense class losses (synthetic config)
    "images": (DEEP, _images, {
        "loss_cls": 2.0934128761291504, "loss_dice": 1.1424156427383423, "loss_mask": 1.2801785469055176,
        "loss_objectness": 0.6984507441520691, "loss_cls_global": 1.977584958076477,
        "loss_dice_global": 1.1127650737762451, "loss_mask_global": 1.206491231918335,
        "loss_objectness_global": 0.6366959810256958, "loss_pooled_cls": 1.7059459686279297,
        "loss_dense_cls": 1.7213950157165527}),
    # frame pairs with query passing, both frames supervised as images
    "pairs": (QP + DEEP, _pairs, {
        "loss_cls": 1.773678183555603, "loss_dice": 1.6059366464614868, "loss_mask": 2.19815993309021,
        "loss_objectness": 0.6078946590423584, "loss_cls_global": 1.8408721685409546,
        "loss_dice_global": 1.6045345067977905, "loss_mask_global": 2.170743227005005,
        "loss_objectness_global": 0.5128059983253479, "loss_dice_qp": 1.6057929992675781,
        "loss_mask_qp": 2.1483819484710693, "loss_pooled_cls": 1.5485261678695679,
        "loss_dense_cls": 1.5501954555511475}),
    # frame pairs, frame t not supervised as an image
    "pairs_without_key_frame": (QP + ("MODEL.MOBILEINST.VIDEO.SUPERVISE_KEY_FRAME", "False"), _pairs, {
        "loss_cls": 1.734617829322815, "loss_dice": 1.5992674827575684, "loss_mask": 2.1586754322052,
        "loss_objectness": 0.657294511795044, "loss_dice_qp": 1.6057929992675781,
        "loss_mask_qp": 2.1483819484710693, "loss_pooled_cls": 1.5485261678695679,
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
