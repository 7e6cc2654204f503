"""Options beyond the paper: deep supervision, masked attention, the pooled class head."""
import torch
from conftest import small_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances


def _batch():
    img = torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inst = Instances((96, 96))
    m = torch.zeros(1, 96, 96, dtype=torch.bool)
    m[0, 20:60, 30:70] = True
    inst.gt_masks = BitMasks(m)
    inst.gt_classes = torch.tensor([2])
    return [{"image": img, "instances": inst}]


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


def test_deep_supervision_losses():
    torch.manual_seed(0)
    model = build_model(small_cfg("MODEL.MOBILEINST.DECODER.DEEP_SUPERVISION", "True"))
    model.train()
    losses = model(_batch())
    assert {"loss_cls_global", "loss_dice_global", "loss_mask_global", "loss_objectness_global"} <= set(losses)
    sum(losses.values()).backward()
    assert model.instance_decoder.global_stage.cross_attn.q_proj.weight.grad.abs().sum() > 0


def test_pooled_class_head_pools_by_hand():
    from torch import nn

    # on the paper's 1/8 X_mask (a 1/4 one is first pooled to 1/8: test_heads.py)
    dec = build_model(small_cfg("MODEL.MOBILEINST.DECODER.POOLED_CLASS_HEAD", "True",
                                "MODEL.MOBILEINST.MASK_DECODER.OUTPUT_STRIDE", "8",
                                "MODEL.MOBILEINST.DECODER.MASK_UPSAMPLE", "2")).instance_decoder
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
