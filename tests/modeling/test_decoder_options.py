"""Options beyond the paper: the pooled class head (PooledClassDualInstanceDecoder) and its losses."""
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


def test_pooled_class_head_pools_by_hand():
    from torch import nn

    # on the paper's 1/8 X_mask (a 1/4 one is first pooled to 1/8: test_heads.py)
    head = build_model(small_cfg(
                                 "MODEL.MOBILEINST.MASK_DECODER.NAME", "SemanticEnhancedMaskDecoder")).instance_decoder.pooled_class_head
    head.class_features, head.pooled_cls = nn.Identity(), nn.Identity()
    x_mask = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, D=1, 2, 2)
    weights = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])  # 2 masks
    out = head.masked_logits(x_mask, weights)
    # sum(w * x) / (sum(w) + 1): (1 + 3) / 3; an empty mask pools to 0
    torch.testing.assert_close(out, torch.tensor([[[4.0 / 3.0], [0.0]]]))


def test_pooled_class_head_losses_and_gradients():
    torch.manual_seed(0)
    model = build_model(small_cfg()  # the synthetic config: PooledClassDualInstanceDecoder
)
    model.train()
    losses = model(_batch())
    assert "loss_pooled_cls" in losses and losses["loss_pooled_cls"] > 0
    sum(losses.values()).backward()
    head = model.instance_decoder.pooled_class_head
    assert head.class_features[0].weight.grad.abs().sum() > 0 and head.pooled_cls[-1].weight.grad.abs().sum() > 0
    # the query's soft mask only weights the pooling: no gradient reaches the kernels through it
    model.zero_grad()
    x6, x_mask = model.encode(model.preprocess([_batch()[0]["image"]]).tensor)
    kernels = torch.randn(1, 3, x_mask.shape[1], requires_grad=True)
    head(kernels, x_mask).sum().backward()
    assert kernels.grad is None or kernels.grad.abs().sum() == 0


def test_dense_class_loss_by_hand():
    """LOSS.DENSE_CLASS_WEIGHT: a position takes the label of the mask covering
    more than half of it (the one covering most), others are ignored."""
    import torch.nn.functional as F

    model = build_model(small_cfg("MODEL.MOBILEINST.LOSS.DENSE_CLASS_WEIGHT", "1.0"))
    head, criterion = model.instance_decoder.pooled_class_head, model.criterion
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 2, 2)
    head.dense_logits = lambda feats: logits
    # targets on a 4x4 grid pooled to the 2x2 class grid
    a = torch.zeros(4, 4)
    a[:2, :2] = 1.0  # covers cell (0, 0) fully
    a[2:, 2:] = 0.5  # covers cell (1, 1) by 0.5: not more than half
    b = torch.zeros(4, 4)
    b[:2, 2:] = 1.0
    b[0, 0:2] = 1.0  # also covers half of cell (0, 0), less than a
    b[2:, 2:] = 0.25
    b[3, 2:] = 1.0  # cell (1, 1): a 0.5, b (0.25 * 2 + 1 * 2) / 4 = 0.625 -> b
    targets = [{"labels": torch.tensor([3, 1]), "masks": torch.stack([a, b])}]
    loss = criterion.dense_class_loss(head, torch.zeros(1, 64, 4, 4), targets)
    labels = torch.tensor([[[3, 1], [-100, 1]]])
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, ignore_index=-100))
    # no covered position: a zero loss that keeps the graph
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 4, 4)}]
    assert criterion.dense_class_loss(head, torch.zeros(1, 64, 4, 4), empty) == 0


def test_dense_class_loss_trains_the_pooled_head():
    torch.manual_seed(0)
    model = build_model(small_cfg("MODEL.MOBILEINST.LOSS.DENSE_CLASS_WEIGHT", "1.0"))
    model.train()
    losses = model(_batch())
    assert losses["loss_dense_cls"] > 0
    losses["loss_dense_cls"].backward()
    head = model.instance_decoder.pooled_class_head
    assert head.class_features[0].weight.grad.abs().sum() > 0 and head.pooled_cls[0].weight.grad.abs().sum() > 0
    # a batch without objects keeps both class losses, at zero
    empty = _batch()
    empty[0]["instances"] = empty[0]["instances"][[]]
    losses = model(empty)
    assert losses["loss_dense_cls"] == 0 and losses["loss_pooled_cls"] == 0
    # the dense logits are the pooled head's MLP at each position of its feature map
    with torch.no_grad():
        x_mask = torch.randn(1, 64, 8, 8)
        dense = head.dense_logits(head.feature_map(x_mask))
        k = head.feature_pool  # X_mask cells per class-grid cell
        one = torch.zeros(1, 1, 8, 8)
        one[..., k:2 * k, 2 * k:3 * k] = 1.0  # exactly class-grid cell (1, 2)
        pooled_at = head.masked_logits(x_mask, one * 1e6)[0, 0]
        torch.testing.assert_close(pooled_at, dense[0, :, 1, 2], atol=1e-4, rtol=1e-4)
