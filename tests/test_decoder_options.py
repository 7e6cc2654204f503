"""Options beyond the paper: deep supervision, masked attention, mask-pooled classification, X6 reuse."""
import torch
from conftest import small_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

from mobileinst.instance_decoder import DualInstanceDecoder


def _batch():
    img = torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inst = Instances((96, 96))
    m = torch.zeros(1, 96, 96, dtype=torch.bool)
    m[0, 20:60, 30:70] = True
    inst.gt_masks = BitMasks(m)
    inst.gt_classes = torch.tensor([2])
    return [{"image": img, "instances": inst}]


def test_mask_pool_by_hand():
    kernels = torch.tensor([[[1.0], [-1.0]]])  # 2 queries, D = 1
    x_mask = torch.tensor([[[[1.0, -1.0], [2.0, -3.0]]]])  # (1, 1, 2, 2)
    values = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, C=1, 2, 2)
    pooled = DualInstanceDecoder.mask_pool(kernels, x_mask, values)
    # query 0 covers the positive entries (1 and 3), query 1 the negative ones (2 and 4)
    torch.testing.assert_close(pooled, torch.tensor([[[2.0], [3.0]]]), rtol=1e-3, atol=1e-3)


def test_masked_attention_mask():
    torch.manual_seed(0)
    model = build_model(small_cfg("MODEL.MOBILEINST.DECODER.MASKED_ATTENTION", "True")).eval()
    dec = model.instance_decoder
    x6, x_mask = model.encode(model.preprocess([_batch()[0]["image"]]).tensor)
    q = dec.forward_global(x6)
    x_local = dec.pool_local(x_mask, x6.shape[-2:])
    mask = dec.local_attention_mask(q, x_local)
    logits = torch.einsum("bnd,bdhw->bnhw", dec.predict_heads(q)["pred_kernels"], x_local).flatten(2)
    inside = logits > 0
    empty = ~inside.any(-1)
    # attend exactly inside the predicted mask; a query with an empty mask attends everywhere
    assert torch.equal(mask[~empty], ~inside[~empty])
    assert not mask[empty].any()


def test_deep_supervision_and_semantic_losses():
    torch.manual_seed(0)
    model = build_model(small_cfg("MODEL.MOBILEINST.DECODER.DEEP_SUPERVISION", "True",
                                  "MODEL.MOBILEINST.DECODER.MASK_POOLED_CLASSIFICATION", "True",
                                  "MODEL.MOBILEINST.LOSS.SEMANTIC_WEIGHT", "2.0"))
    model.train()
    losses = model(_batch())
    assert {"loss_cls_global", "loss_dice_global", "loss_semantic"} <= set(losses)
    sum(losses.values()).backward()
    assert model.instance_decoder.semantic_head.weight.grad.abs().sum() > 0


def test_semantic_loss_small_for_a_perfect_map():
    from mobileinst.criterion import SetCriterion

    crit = SetCriterion(small_cfg("MODEL.MOBILEINST.LOSS.SEMANTIC_WEIGHT", "1.0"))
    masks = torch.zeros(1, 8, 8)
    masks[0, 2:6, 2:6] = 1
    targets = [{"labels": torch.tensor([1]), "masks": masks}]
    perfect = torch.full((1, 5, 8, 8), -20.0)
    perfect[0, 1][masks[0] > 0] = 20.0
    wrong = perfect.clone()
    wrong[0, 1], wrong[0, 3] = perfect[0, 3], perfect[0, 1]
    assert crit.semantic_loss(perfect, targets) < 1e-6
    assert crit.semantic_loss(wrong, targets) > 1.0


def test_pooled_class_head_pools_by_hand():
    from torch import nn

    dec = build_model(small_cfg("MODEL.MOBILEINST.DECODER.POOLED_CLASS_HEAD", "True")).instance_decoder
    dec.class_features, dec.pooled_cls = nn.Identity(), nn.Identity()
    x_mask = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, D=1, 2, 2)
    weights = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])  # 2 masks
    out = dec.masked_class_logits(x_mask, weights)
    # sum(w * x) / (sum(w) + 1): (1 + 3) / 3; an empty mask pools to 0
    torch.testing.assert_close(out, torch.tensor([[[4.0 / 3.0], [0.0]]]))


def test_pooled_class_head_losses_and_gradients():
    torch.manual_seed(0)
    model = build_model(small_cfg("MODEL.MOBILEINST.DECODER.POOLED_CLASS_HEAD", "True"))
    model.train()
    losses = model(_batch())
    assert "loss_pooled_cls" in losses and losses["loss_pooled_cls"] > 0
    sum(losses.values()).backward()
    dec = model.instance_decoder
    assert dec.class_features[0].weight.grad.abs().sum() > 0 and dec.pooled_cls[-1].weight.grad.abs().sum() > 0
    # the query's soft mask only weights the pooling: no gradient reaches the kernels through it
    model.zero_grad()
    x6, x_mask = model.encode(model.preprocess([_batch()[0]["image"]]).tensor)
    kernels = torch.randn(1, 3, x_mask.shape[1], requires_grad=True)
    dec.pooled_class_logits(kernels, x_mask).sum().backward()
    assert kernels.grad is None or kernels.grad.abs().sum() == 0
