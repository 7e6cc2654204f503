"""Tests for the semantic-enhanced mask decoder and the dual instance decoder."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from torch import nn

from mobileinst import add_mobileinst_config
from mobileinst.instance_decoder import DualInstanceDecoder, PooledClassDualInstanceDecoder, PooledClassHead
from mobileinst.instance_decoder.dual import MultiHeadAttention, sine_position_embedding
from mobileinst.mask_decoder import HighResMaskDecoder, SemanticEnhancedMaskDecoder, semantic_enhance
from mobileinst.mask_decoder.blocks import CoordConv2d, coordinate_features

# --------------------------------------------------------------------------- mask decoder


def test_semantic_enhance_same_size():
    x_l = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]]]])
    x_g = torch.tensor([[[[0.5, -2.0], [0.0, 4.0]]]])
    expected = torch.tensor([[[[1.0, -6.0], [0.0, 0.0]]]])  # x_l * x_g + x_g
    torch.testing.assert_close(semantic_enhance(x_l, x_g), expected)


def test_semantic_enhance_resized_global():
    # 1x1 global map -> constant
    x_l = torch.arange(6.0).view(1, 1, 2, 3)
    x_g = torch.tensor([[[[2.0]]]])
    torch.testing.assert_close(semantic_enhance(x_l, x_g), x_l * 2.0 + 2.0)
    # 1x2 -> 1x4 bilinear (align_corners=False): [a, .75a+.25b, .25a+.75b, b]
    a, b = 1.0, 5.0
    x_g = torch.tensor([[[[a, b]]]])
    x_l = torch.tensor([[[[1.0, 2.0, 0.0, -1.0]]]])
    g = torch.tensor([a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b])
    expected = (x_l[0, 0, 0] * g + g).view(1, 1, 1, 4)
    torch.testing.assert_close(semantic_enhance(x_l, x_g), expected)


def test_coordinate_features_corners():
    x = torch.zeros(2, 5, 4, 7)
    c = coordinate_features(x)
    assert tuple(c.shape) == (2, 2, 4, 7)
    # channel 0 = x (columns), channel 1 = y (rows)
    assert c[0, 0, 0, 0] == -1 and c[0, 0, 0, -1] == 1 and c[0, 0, -1, 0] == -1
    assert c[0, 1, 0, 0] == -1 and c[0, 1, -1, 0] == 1 and c[0, 1, 0, -1] == -1
    assert c[1, 0, -1, -1] == 1 and c[1, 1, -1, -1] == 1
    torch.testing.assert_close(c[0, 0, 2], torch.linspace(-1, 1, 7))
    torch.testing.assert_close(c[0, 1, :, 3], torch.linspace(-1, 1, 4))


def _cfg(*opts):
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture(scope="module")
def tiny_features():
    """TopFormer-tiny features of a 128x192 image (B=2)."""
    from mobileinst.backbone import TopFormer

    torch.manual_seed(0)
    backbone = TopFormer("tiny").eval()
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 128, 192))
    return backbone.output_shape(), feats


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("coords", [True, False])
def test_mask_decoder_output_shape(tiny_features, depthwise, coords):
    shapes, feats = tiny_features
    cfg = _cfg("MODEL.MOBILEINST.MASK_DECODER.CHANNELS", "32", "MODEL.MOBILEINST.MASK_DECODER.KERNEL_DIM", "24",
               "MODEL.MOBILEINST.MASK_DECODER.DEPTHWISE", str(depthwise),
               "MODEL.MOBILEINST.MASK_DECODER.COORD_FEATURES", str(coords))
    torch.manual_seed(0)
    dec = SemanticEnhancedMaskDecoder(cfg, shapes)
    assert dec.output.in_channels == 32 + (2 if coords else 0)
    n_dw = sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in dec.modules())
    assert n_dw == (6 if depthwise else 0)
    out = dec(feats)
    assert tuple(out.shape) == (2, 24, 128 // 8, 192 // 8)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert dec.lateral[0].weight.grad is not None
    assert dec.global_proj.weight.grad.abs().sum() > 0  # X6 reaches X_mask


def test_mask_decoder_requires_four_features(tiny_features):
    shapes, _ = tiny_features
    with pytest.raises(ValueError, match="IN_FEATURES"):
        SemanticEnhancedMaskDecoder(input_shape=shapes, in_features=["x3", "x4", "x5"], channels=8, kernel_dim=8,
                                    norm="BN")


def test_mask_decoder_output_stride_4(tiny_features):
    """HighResMaskDecoder: one more top-down level on X2; X_mask at 1/4, and X2 reaches it."""
    shapes, feats = tiny_features
    cfg = _cfg("MODEL.MOBILEINST.MASK_DECODER.CHANNELS", "32", "MODEL.MOBILEINST.MASK_DECODER.KERNEL_DIM", "24",
               "MODEL.MOBILEINST.MASK_DECODER.NAME", "HighResMaskDecoder")
    torch.manual_seed(0)
    dec = HighResMaskDecoder(cfg, shapes)
    assert dec.output_stride == 4 and dec.high_res_feature == "x2"  # the backbone's stride-4 feature
    feats = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    out = dec(feats)
    assert tuple(out.shape) == (2, 24, 128 // 4, 192 // 4)
    out.square().sum().backward()
    assert feats["x2"].grad.abs().sum() > 0 and feats["x6"].grad.abs().sum() > 0
    # the stride-8 decoder never reads X2
    dec8 = SemanticEnhancedMaskDecoder(_cfg("MODEL.MOBILEINST.MASK_DECODER.CHANNELS", "32"), shapes)
    assert dec8.output_stride == 8 and not hasattr(dec8, "lateral_high_res")
    feats8 = {k: v.detach() for k, v in feats.items() if k != "x2"}
    assert tuple(dec8(feats8).shape[-2:]) == (128 // 8, 192 // 8)


def test_mask_decoder_output_stride_errors(tiny_features):
    shapes, _ = tiny_features
    no_x2 = {k: v for k, v in shapes.items() if k != "x2"}
    with pytest.raises(ValueError, match="HighResMaskDecoder needs exactly one stride-4 backbone feature"):
        HighResMaskDecoder(_cfg(), no_x2)
    with pytest.raises(ValueError, match="LOCAL_POOL_STRIDE=6"):
        _decoder(local_pool_stride=6, mask_stride=4)


def test_pool_local_at_mask_stride_4():
    """LOCAL_POOL_STRIDE 16 on a stride-4 X_mask is a 4x4 max-pool."""
    x = torch.randn(1, 3, 16, 24)
    dec = _decoder(local_pool_stride=16, mask_stride=4)
    torch.testing.assert_close(dec.pool_local(x, (1, 2)), F.max_pool2d(x, 4, 4))
    dec8 = _decoder(local_pool_stride=16, mask_stride=8)
    torch.testing.assert_close(dec8.pool_local(x, (1, 2)), F.max_pool2d(x, 2, 2))


def test_pooled_class_head_on_stride_4_pools_to_stride_8():
    """On a stride-4 X_mask the pooled class head runs on X_mask and the mask
    weights average-pooled 2x2: the same logits as a stride-8 head on those."""
    torch.manual_seed(0)
    x = torch.randn(2, KD, 16, 24)
    w = torch.rand(2, 3, 16, 24)
    head4 = _decoder(PooledClassDualInstanceDecoder, mask_stride=4).pooled_class_head
    head8 = _decoder(PooledClassDualInstanceDecoder, mask_stride=8).pooled_class_head
    head8.load_state_dict(head4.state_dict())
    assert head4.feature_pool == 2 and head8.feature_pool == 1
    with torch.no_grad():
        torch.testing.assert_close(head4.masked_logits(x, w),
                                   head8.masked_logits(F.avg_pool2d(x, 2), F.avg_pool2d(w, 2)))


def test_pooled_class_head_from_config_and_in_the_decoder():
    """PooledClassDualInstanceDecoder: the dual instance decoder with a pooled class
    head whose logits are added to those of the class head; the paper's has none."""
    cfg = _cfg("MODEL.MOBILEINST.NUM_CLASSES", "3", "MODEL.MOBILEINST.MASK_DECODER.KERNEL_DIM", "12",
               "MODEL.MOBILEINST.INSTANCE_DECODER.HIDDEN_DIM", "16", "MODEL.MOBILEINST.INSTANCE_DECODER.NUM_HEADS", "2",
               "MODEL.MOBILEINST.INSTANCE_DECODER.NAME", "PooledClassDualInstanceDecoder")
    head = PooledClassDualInstanceDecoder(cfg, {"x6": ShapeSpec(channels=40, stride=64)},
                                          ShapeSpec(channels=12, stride=4)).pooled_class_head
    assert head.class_features[0].in_channels == 12 and head.pooled_cls[0].out_features == 16
    assert head.pooled_cls[-1].out_features == 3 and head.feature_pool == 2
    plain = _decoder()
    assert not hasattr(plain, "pooled_class_head") and not any("pooled" in k for k in plain.state_dict())
    dec = _decoder(PooledClassDualInstanceDecoder, mask_stride=4)
    assert isinstance(dec.pooled_class_head, PooledClassHead)
    x6, x_mask = torch.randn(2, GC, 2, 3), torch.randn(2, KD, 16, 24)
    with torch.no_grad():
        out = dec(x6, x_mask)
        without = DualInstanceDecoder.forward_local(dec, dec.forward_global(x6), x_mask, x6.shape[-2:])
        pooled = dec.pooled_class_head(without["pred_kernels"], x_mask)
    assert pooled.abs().max() > 1e-3
    torch.testing.assert_close(out["pred_kernels"], without["pred_kernels"])
    torch.testing.assert_close(out["pred_logits"], without["pred_logits"] + pooled)


def test_mask_decoder_uses_coordinates():
    """X_mask = conv1x1([O3, x, y]): the coordinate channels add W_xy . (x, y)."""
    torch.manual_seed(0)
    shapes = {k: ShapeSpec(channels=4, stride=s) for k, s in zip(["x3", "x4", "x5", "x6"], [8, 16, 32, 64])}
    feats = {"x3": torch.randn(1, 4, 8, 12), "x4": torch.randn(1, 4, 4, 6), "x5": torch.randn(1, 4, 2, 3),
             "x6": torch.randn(1, 4, 1, 2)}
    dec = SemanticEnhancedMaskDecoder(input_shape=shapes, in_features=list(shapes), channels=8, kernel_dim=4,
                                      norm="BN", output=CoordConv2d).eval()
    with torch.no_grad():
        w_xy = torch.randn(4, 2)
        dec.output.weight[:, 8:, 0, 0] = w_xy
        with_coords = dec(feats)
        dec.output.weight[:, 8:] = 0
        without = dec(feats)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 12), indexing="ij")
    expected = w_xy[:, 0, None, None] * xs + w_xy[:, 1, None, None] * ys
    torch.testing.assert_close(with_coords - without, expected[None], atol=1e-5, rtol=1e-5)


def test_mask_decoder_projection_equals_the_conv_on_the_concatenation():
    """CoordConv2d adds the coordinates' share of the 1x1 conv once per batch:
    the same X_mask as the conv on [out, coords] for every image of a batch."""
    torch.manual_seed(0)
    conv = CoordConv2d(8, 4)
    assert tuple(conv.weight.shape) == (4, 10, 1, 1)
    out = torch.randn(3, 8, 5, 7)
    expected = F.conv2d(torch.cat([out, coordinate_features(out)], dim=1), conv.weight, conv.bias)
    torch.testing.assert_close(conv(out), expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- instance decoder

N, C, D, KD, HID, HEADS, GC = 7, 5, 32, 16, 32, 4, 24


def _decoder(cls=DualInstanceDecoder, **kw):
    torch.manual_seed(0)
    args = dict(global_channels=GC, mask_channels=KD, mask_stride=8, num_classes=C, num_queries=N, hidden_dim=HID,
                num_heads=HEADS, dim_feedforward=48, kernel_dim=KD, local_pool_stride=64)
    args.update(kw)
    dec = cls(**args).eval()
    with torch.no_grad():  # heads are initialised near zero: make the outputs informative
        for head in (dec.cls_head, dec.objectness_head, dec.kernel_head):
            nn.init.normal_(head.weight, std=0.5)
    return dec


def test_instance_decoder_from_config():
    cfg = _cfg("MODEL.MOBILEINST.NUM_CLASSES", "3", "MODEL.MOBILEINST.INSTANCE_DECODER.NUM_QUERIES", "6",
               "MODEL.MOBILEINST.INSTANCE_DECODER.HIDDEN_DIM", "16", "MODEL.MOBILEINST.INSTANCE_DECODER.NUM_HEADS", "2",
               "MODEL.MOBILEINST.MASK_DECODER.KERNEL_DIM", "12")
    shapes = {"x6": ShapeSpec(channels=40, stride=64)}
    dec = DualInstanceDecoder(cfg, shapes, ShapeSpec(channels=12, stride=8))
    assert dec.query_feat.weight.shape == (6, 16)
    assert dec.global_proj.in_features == 40 and dec.local_proj.in_features == 12
    assert dec.cls_head.out_features == 3 and dec.kernel_head.out_features == 12
    # focal-loss prior: sigmoid(bias) = 0.01
    torch.testing.assert_close(dec.cls_head.bias.sigmoid(), torch.full((3,), 0.01))
    out = dec(torch.randn(2, 40, 2, 3), torch.randn(2, 12, 16, 24))
    assert tuple(out["pred_logits"].shape) == (2, 6, 3)


def test_instance_decoder_shapes():
    dec = _decoder()
    x6 = torch.randn(2, GC, 2, 3)
    x_mask = torch.randn(2, KD, 16, 24)
    out = dec(x6, x_mask)
    assert tuple(out["pred_logits"].shape) == (2, N, C)
    assert tuple(out["pred_objectness"].shape) == (2, N)
    assert tuple(out["pred_kernels"].shape) == (2, N, KD)
    for v in out.values():
        assert torch.isfinite(v).all()
    # batch elements are independent
    single = dec(x6[1:], x_mask[1:])
    torch.testing.assert_close(single["pred_kernels"][0], out["pred_kernels"][1], atol=1e-5, rtol=1e-5)


def test_pool_local():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 15, 22)
    dec = _decoder()
    torch.testing.assert_close(dec.pool_local(x, (2, 3)), F.adaptive_max_pool2d(x, (2, 3)))
    x = torch.randn(2, 3, 16, 24)
    pooled = dec.pool_local(x, torch.Size([2, 3]))
    torch.testing.assert_close(pooled, F.max_pool2d(x, (8, 8), (8, 8)))
    torch.testing.assert_close(pooled[0, 1, 1, 2], x[0, 1, 8:16, 16:24].max())


def test_forward_is_global_then_local():
    dec = _decoder()
    torch.manual_seed(1)
    x6, x_mask = torch.randn(2, GC, 2, 3), torch.randn(2, KD, 16, 24)
    with torch.no_grad():
        full = dec(x6, x_mask)
        q_g = dec.forward_global(x6)
        split = dec.forward_local(q_g, x_mask, x6.shape[-2:])
    assert tuple(q_g.shape) == (2, N, HID)
    for k in full:
        torch.testing.assert_close(split[k], full[k])


def test_query_passing():
    """Q_G of frame A with X_mask of frame B: same shapes, but the queries matter."""
    dec = _decoder()
    torch.manual_seed(2)
    x6_a, x6_b = torch.randn(1, GC, 2, 3), torch.randn(1, GC, 2, 3)
    xm_a, xm_b = torch.randn(1, KD, 16, 24), torch.randn(1, KD, 16, 24)
    with torch.no_grad():
        passed = dec.forward_local(dec.forward_global(x6_a), xm_b, x6_b.shape[-2:])
        only_b = dec(x6_b, xm_b)
        only_a = dec(x6_a, xm_a)
    for k in passed:
        assert passed[k].shape == only_b[k].shape
        assert (passed[k] - only_b[k]).abs().max() > 1e-4, k  # queries from A change the result
        assert (passed[k] - only_a[k]).abs().max() > 1e-4, k  # X_mask of B changes the result


def test_sine_position_embedding_by_hand():
    x = torch.zeros(2, 3, 4, 5)
    nf = 8
    pos = sine_position_embedding(x, nf)
    assert tuple(pos.shape) == (2, 4 * 5, 2 * nf)
    i, j = 2, 3  # row, column
    y = (i + 1) / (4 + 1e-6) * 2 * math.pi
    xx = (j + 1) / (5 + 1e-6) * 2 * math.pi
    expected = []
    for v in (y, xx):  # y channels first, then x
        for c in range(nf):
            t = 10000.0 ** (2 * (c // 2) / nf)
            expected.append(math.sin(v / t) if c % 2 == 0 else math.cos(v / t))
    token = i * 5 + j
    torch.testing.assert_close(pos[1, token], torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert abs(pos[0, 0, 0].item() - math.sin(1 / (4 + 1e-6) * 2 * math.pi)) < 1e-5


@pytest.mark.parametrize("same_kv", [True, False])
def test_multi_head_attention_matches_torch(same_kv):
    torch.manual_seed(0)
    dim, heads = 32, 4
    mine = MultiHeadAttention(dim, heads)
    ref = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mine.q_proj.weight, mine.k_proj.weight, mine.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([mine.q_proj.bias, mine.k_proj.bias, mine.v_proj.bias]))
        ref.out_proj.weight.copy_(mine.out_proj.weight)
        ref.out_proj.bias.copy_(mine.out_proj.bias)
    q = torch.randn(2, 5, dim)
    k = torch.randn(2, 9, dim)
    v = k if same_kv else torch.randn(2, 9, dim)
    with torch.no_grad():
        out = mine(q, k, v)
        expected, _ = ref(q, k, v, need_weights=False)
        fn, _ = F.multi_head_attention_forward(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), dim, heads,
            ref.in_proj_weight, ref.in_proj_bias, None, None, False, 0.0,
            ref.out_proj.weight, ref.out_proj.bias, training=False, need_weights=False)
    assert tuple(out.shape) == (2, 5, dim)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, fn.transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_multi_head_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="NUM_HEADS"):
        MultiHeadAttention(30, 4)
