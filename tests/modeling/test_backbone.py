"""Tests for the mobile backbones (TopFormer, MobileNetV2), weight loading and BN fusion."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from conftest import FIXTURES
from torch import nn

from mobileinst import add_mobileinst_config
from mobileinst.backbone import MobileNetV2Backbone, TopFormer
from mobileinst.backbone.token_transformer import (
    Attention,
    InvertedResidual,
    SemanticInjection,
    h_sigmoid,
    pyramid_pool,
)
from mobileinst.utils.fuse import fuse_conv_bn

# A copy of shared/reference/topformer_state_dict_shapes.json: the keys and
# shapes of the official TopFormer ImageNet checkpoints.
SHAPES_JSON = os.path.join(FIXTURES, "topformer_state_dict_shapes.json")
VARIANTS = ["tiny", "small", "base"]
PARAMS_M = {"tiny": 1.37, "small": 2.97, "base": 4.96}


@pytest.fixture(scope="module")
def reference():
    with open(SHAPES_JSON) as f:
        return json.load(f)


def _json_state_dict(ref, variant, seed=0):
    """A state dict with the json's keys and shapes, filled with random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in ref[variant]["state_dict"]:
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.randint(0, 1000, tuple(shape), generator=g, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(tuple(shape), generator=g) + 0.5
        else:
            sd[key] = torch.randn(tuple(shape), generator=g)
    return sd


def _cfg(backbone="build_topformer_backbone", *opts):
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.merge_from_list(list(opts))
    return cfg


def _randomize_bn(module, seed=0):
    """Random affine parameters and running statistics in every BatchNorm2d."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return module


def _bn(x, bn):
    """BatchNorm in eval mode, written out."""
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def _conv2d_bn(x, m):
    """Conv2dBN (keys c/bn) or ConvBN (keys conv/bn), written out."""
    conv = m.c if hasattr(m, "c") else m.conv
    y = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return _bn(y, m.bn)


# --------------------------------------------------------------------------- state dict


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_matches_official_keys_and_shapes(reference, variant):
    model = TopFormer(variant)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref = {k: tuple(s) for k, s in reference[variant]["state_dict"]}
    assert sorted(own) == sorted(ref)
    mismatched = {k: (own[k], ref[k]) for k in ref if own[k] != ref[k]}
    assert mismatched == {}


@pytest.mark.parametrize("variant", VARIANTS)
def test_json_state_dict_loads_strictly(reference, variant):
    model = TopFormer(variant)
    sd = _json_state_dict(reference, variant)
    result = model.load_state_dict(sd, strict=True)
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    own = model.state_dict()
    for k in ("tpm.stem.0.c.weight", "trans.transformer_blocks.3.mlp.fc2.bn.running_var",
              "SIM.3.global_act.conv.weight"):
        assert torch.equal(own[k], sd[k])


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_matches_reference(reference, variant):
    from mobileinst.backbone import TOPFORMER_VARIANTS

    ref_cfg = reference[variant]["config"]
    spec = TOPFORMER_VARIANTS[variant]
    for key in ("cfgs", "channels", "out_channels", "embed_out_indice", "num_heads"):
        assert spec[key] == ref_cfg[key], key


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count(variant):
    n = sum(p.numel() for p in TopFormer(variant).parameters()) / 1e6
    assert abs(n - PARAMS_M[variant]) / PARAMS_M[variant] < 0.01, n


# --------------------------------------------------------------------------- build / outputs


@pytest.mark.parametrize("variant", VARIANTS)
def test_build_through_detectron2(reference, variant):
    torch.manual_seed(0)
    cfg = _cfg("build_topformer_backbone", "MODEL.TOPFORMER.VARIANT", variant)
    backbone = build_backbone(cfg).eval()
    assert isinstance(backbone, TopFormer) and backbone.variant == variant
    assert backbone.size_divisibility == 64
    shapes = backbone.output_shape()
    assert sorted(shapes) == ["x2", "x3", "x4", "x5", "x6"]
    assert {k: s.stride for k, s in shapes.items()} == {"x2": 4, "x3": 8, "x4": 16, "x5": 32, "x6": 64}
    ref_cfg = reference[variant]["config"]
    assert shapes["x2"].channels == ref_cfg["channels"][0]
    assert shapes["x6"].channels == sum(ref_cfg["channels"])
    for i, name in enumerate(["x3", "x4", "x5"], start=1):
        assert shapes[name].channels == ref_cfg["out_channels"][i]
    h, w = 128, 192
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, h, w))
    assert sorted(out) == ["x2", "x3", "x4", "x5", "x6"]
    for name, t in out.items():
        s = shapes[name]
        assert tuple(t.shape) == (1, s.channels, h // s.stride, w // s.stride), name
        assert torch.isfinite(t).all()


def test_topformer_odd_input_size():
    """Non-multiple-of-64 inputs: token grid ((H32 - 1)//2 + 1)."""
    model = TopFormer("tiny").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 160, 96))  # stride-32 level 5x3 -> tokens 3x2
    assert tuple(out["x5"].shape[-2:]) == (5, 3)
    assert tuple(out["x6"].shape[-2:]) == (3, 2)
    assert tuple(out["x3"].shape[-2:]) == (20, 12)


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="VARIANT"):
        TopFormer("huge")


# --------------------------------------------------------------------------- weights


def test_weights_plain_state_dict(reference, tmp_path):
    sd = _json_state_dict(reference, "tiny", seed=1)
    path = tmp_path / "topformer_tiny.pth"
    torch.save(sd, path)
    cfg = _cfg("build_topformer_backbone", "MODEL.TOPFORMER.VARIANT", "tiny",
               "MODEL.TOPFORMER.WEIGHTS", str(path))
    own = build_backbone(cfg).state_dict()
    assert sorted(own) == sorted(sd)
    for k, v in sd.items():
        assert torch.equal(own[k], v), k


def test_weights_wrapped_state_dict_with_prefix_and_head(reference, tmp_path):
    sd = _json_state_dict(reference, "tiny", seed=2)
    wrapped = {"backbone." + k: v for k, v in sd.items()}
    # an ImageNet classification head is dropped
    wrapped["head.weight"] = torch.randn(1000, 96)
    wrapped["head.bias"] = torch.randn(1000)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": wrapped, "meta": {"epoch": 3}}, path)
    cfg = _cfg("build_topformer_backbone", "MODEL.TOPFORMER.VARIANT", "tiny",
               "MODEL.TOPFORMER.WEIGHTS", str(path))
    own = build_backbone(cfg).state_dict()
    for k, v in sd.items():
        assert torch.equal(own[k], v), k


def test_weights_mismatch_names_keys(reference, tmp_path):
    sd = _json_state_dict(reference, "tiny", seed=3)
    wrong, missing = "trans.transformer_blocks.0.attn.to_q.c.weight", "SIM.2.local_embedding.bn.running_mean"
    sd[wrong] = torch.randn(3, 3, 1, 1)
    del sd[missing]
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    cfg = _cfg("build_topformer_backbone", "MODEL.TOPFORMER.VARIANT", "tiny",
               "MODEL.TOPFORMER.WEIGHTS", str(path))
    with pytest.raises(ValueError) as info:
        build_backbone(cfg)
    msg = str(info.value)
    assert wrong in msg and missing in msg
    assert "missing" in msg and "shape" in msg


def test_weights_for_other_variant_rejected(reference, tmp_path):
    path = tmp_path / "base.pth"
    torch.save(_json_state_dict(reference, "base"), path)
    cfg = _cfg("build_topformer_backbone", "MODEL.TOPFORMER.VARIANT", "tiny",
               "MODEL.TOPFORMER.WEIGHTS", str(path))
    with pytest.raises(ValueError) as info:
        build_backbone(cfg)
    msg = str(info.value)
    assert f"MODEL.TOPFORMER.WEIGHTS='{path}'" in msg and "variant 'tiny'" in msg
    assert "wrong shapes" in msg and "SIM.1.global_act.conv.weight: checkpoint (256, 64, 1, 1), model (128, 32, 1, 1)" in msg


def test_weights_prefer_the_ema_state_dict(reference, tmp_path):
    """Like the official loader: 'state_dict_ema' before 'state_dict' and 'model'."""
    ema, raw = _json_state_dict(reference, "tiny", seed=4), _json_state_dict(reference, "tiny", seed=5)
    path = tmp_path / "last.pth.tar"
    torch.save({"model": raw, "state_dict": raw, "state_dict_ema": ema}, path)
    cfg = _cfg("build_topformer_backbone", "MODEL.TOPFORMER.VARIANT", "tiny",
               "MODEL.TOPFORMER.WEIGHTS", str(path))
    own = build_backbone(cfg).state_dict()
    for k, v in ema.items():
        assert torch.equal(own[k], v), k


class _NotATensorDict:  # pickled by torch.save; refused by weights_only loading
    def __init__(self):
        self.w = torch.zeros(2)


@pytest.mark.parametrize("kind", ["object", "text"])
def test_weights_not_weights_only_raises(tmp_path, kind):
    path = tmp_path / f"evil_{kind}.pth"
    if kind == "object":
        torch.save(_NotATensorDict(), path)
    else:
        path.write_text("this is not a checkpoint\n")
    cfg = _cfg("build_topformer_backbone", "MODEL.TOPFORMER.VARIANT", "tiny",
               "MODEL.TOPFORMER.WEIGHTS", str(path))
    with pytest.raises(Exception) as info:
        build_backbone(cfg)
    assert str(path) in str(info.value)
    assert isinstance(info.value, (RuntimeError, ValueError, OSError))


def test_weights_missing_file_raises(tmp_path):
    path = tmp_path / "nope.pth"
    cfg = _cfg("build_topformer_backbone", "MODEL.TOPFORMER.VARIANT", "tiny",
               "MODEL.TOPFORMER.WEIGHTS", str(path))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_backbone(cfg)


# --------------------------------------------------------------------------- computation


def test_attention_matches_explicit_computation():
    torch.manual_seed(0)
    dim, key_dim, heads, ratio = 24, 8, 3, 2
    attn = _randomize_bn(Attention(dim, key_dim, heads, ratio), seed=1).eval()
    x = torch.randn(2, dim, 3, 4)
    with torch.no_grad():
        out = attn(x)
        q = _conv2d_bn(x, attn.to_q).flatten(2)  # B, heads*kd, N
        k = _conv2d_bn(x, attn.to_k).flatten(2)
        v = _conv2d_bn(x, attn.to_v).flatten(2)  # B, heads*d, N
        d = ratio * key_dim

        def manual(scale):
            outs = []
            for b in range(x.shape[0]):
                per_head = []
                for h in range(heads):
                    qh = q[b, h * key_dim:(h + 1) * key_dim]  # kd, N
                    kh = k[b, h * key_dim:(h + 1) * key_dim]
                    vh = v[b, h * d:(h + 1) * d]  # d, N
                    logits = qh.t() @ kh * scale  # N (queries), N (keys)
                    a = torch.softmax(logits, dim=1)
                    per_head.append(vh @ a.t())  # d, N
                outs.append(torch.cat(per_head, 0))
            y = torch.stack(outs).reshape(x.shape[0], heads * d, *x.shape[-2:])
            return _conv2d_bn(F.relu6(y), attn.proj[1])

        expected = manual(1.0)
        scaled = manual(key_dim ** -0.5)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # the 1/sqrt(d) scaling would give a visibly different result
    assert (out - scaled).abs().max() > 1e-3


def test_pyramid_pool_size_and_adaptive_average():
    torch.manual_seed(0)
    feats = [torch.randn(1, 2, 40, 28), torch.randn(1, 3, 20, 14), torch.randn(1, 4, 10, 7),
             torch.randn(1, 5, 5, 4)]
    out = pyramid_pool(feats, stride=2)
    th, tw = (5 - 1) // 2 + 1, (4 - 1) // 2 + 1
    assert (th, tw) == (3, 2)
    assert tuple(out.shape) == (1, 2 + 3 + 4 + 5, th, tw)
    # explicit adaptive average pooling: bin i covers [floor(i*H/h), ceil((i+1)*H/h))
    c0 = 0
    for f in feats:
        H, W = f.shape[-2:]
        for i in range(th):
            for j in range(tw):
                y0, y1 = (i * H) // th, math.ceil((i + 1) * H / th)
                x0, x1 = (j * W) // tw, math.ceil((j + 1) * W / tw)
                expected = f[0, :, y0:y1, x0:x1].mean((-2, -1))
                torch.testing.assert_close(out[0, c0:c0 + f.shape[1], i, j], expected)
        c0 += f.shape[1]
    # even-sized last level
    feats2 = [torch.randn(1, 1, 16, 24), torch.randn(1, 1, 4, 6)]
    assert tuple(pyramid_pool(feats2).shape[-2:]) == (2, 3)


def test_h_sigmoid():
    x = torch.tensor([-10.0, -3.0, 0.0, 1.5, 3.0, 10.0])
    torch.testing.assert_close(h_sigmoid(x), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))


def test_semantic_injection_matches_explicit_computation():
    torch.manual_seed(0)
    sim = _randomize_bn(SemanticInjection(6, 10), seed=2).eval()
    x_local = torch.randn(2, 6, 7, 9)
    x_global = torch.randn(2, 6, 2, 3)
    with torch.no_grad():
        out = sim(x_local, x_global)
        local = _conv2d_bn(x_local, sim.local_embedding)
        gate = _conv2d_bn(x_global, sim.global_act)
        gate = torch.clamp(gate + 3.0, 0.0, 6.0) / 6.0
        gate = F.interpolate(gate, size=(7, 9), mode="bilinear", align_corners=False)
        emb = F.interpolate(_conv2d_bn(x_global, sim.global_embedding), size=(7, 9), mode="bilinear",
                            align_corners=False)
        expected = local * gate + emb
        wrong = local * F.interpolate(torch.sigmoid(_conv2d_bn(x_global, sim.global_act)), size=(7, 9),
                                      mode="bilinear", align_corners=False) + emb
    assert tuple(out.shape) == (2, 10, 7, 9)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert (out - wrong).abs().max() > 1e-3


@pytest.mark.parametrize("in_ch,out_ch,stride,t,residual", [
    (16, 16, 1, 3, True),
    (16, 16, 2, 3, False),
    (16, 24, 1, 3, False),
    (16, 16, 1, 1, True),
])
def test_inverted_residual(in_ch, out_ch, stride, t, residual):
    torch.manual_seed(0)
    block = _randomize_bn(InvertedResidual(in_ch, out_ch, 3, stride, t), seed=3).eval()
    assert block.use_res_connect == residual
    # expand conv only when t != 1; activations are ReLU (not ReLU6)
    assert len(block.conv) == (5 if t != 1 else 3)
    assert all(type(m) is not nn.ReLU6 for m in block.modules())
    assert block.conv[-1].bn.num_features == out_ch
    x = torch.randn(2, in_ch, 8, 8)
    with torch.no_grad():
        out = block(x)
        body = block.conv(x.clone())
    assert tuple(out.shape) == (2, out_ch, 8 // stride, 8 // stride)
    if residual:
        torch.testing.assert_close(out, x + body)
    else:
        torch.testing.assert_close(out, body)


# --------------------------------------------------------------------------- MobileNetV2


@pytest.fixture(scope="module")
def mnv2_cfg():
    return _cfg("build_mobilenetv2_backbone")


def test_mobilenetv2_outputs(mnv2_cfg):
    torch.manual_seed(0)
    backbone = build_backbone(mnv2_cfg).eval()
    assert isinstance(backbone, MobileNetV2Backbone)
    assert backbone.channels == [24, 32, 96, 320]
    shapes = backbone.output_shape()
    assert {k: s.stride for k, s in shapes.items()} == {"x2": 4, "x3": 8, "x4": 16, "x5": 32, "x6": 64}
    assert shapes["x2"].channels == 24
    assert shapes["x6"].channels == 24 + 32 + 96 + 320
    assert shapes["x3"].channels == shapes["x4"].channels == shapes["x5"].channels == 256
    h, w = 128, 192
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, h, w))
    for name, s in shapes.items():
        assert tuple(out[name].shape) == (1, s.channels, h // s.stride, w // s.stride), name


def test_mobilenetv2_construction_leaves_bn_statistics_untouched():
    model = MobileNetV2Backbone(width_mult=0.5, out_channels=16, num_heads=2, depth=1)
    assert model.channels == [16, 16, 48, 160]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert int(m.num_batches_tracked) == 0
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))


def test_mobilenetv2_torchvision_weights(mnv2_cfg, tmp_path):
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    tv = mobilenet_v2(weights=None)
    _randomize_bn(tv, seed=4)
    sd = tv.state_dict()
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(sd, path)
    cfg = mnv2_cfg.clone()
    cfg.MODEL.MOBILENETV2.WEIGHTS = str(path)
    backbone = build_backbone(cfg)
    own = backbone.features.state_dict()
    expected = {k[len("features."):]: v for k, v in sd.items()
                if k.startswith("features.") and int(k.split(".")[1]) < 18}
    assert sorted(own) == sorted(expected)
    for k, v in expected.items():
        assert torch.equal(own[k], v), k


# --------------------------------------------------------------------------- fusion


def _count_bn(m):
    return sum(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())


@pytest.mark.parametrize("which", ["topformer", "mobilenetv2"])
def test_fuse_conv_bn(which):
    torch.manual_seed(0)
    if which == "topformer":
        model = TopFormer("tiny")
    else:
        model = MobileNetV2Backbone(out_channels=32, num_heads=2, depth=1)
    model = _randomize_bn(model, seed=5).eval()
    assert _count_bn(model) > 0
    fused = fuse_conv_bn(model)
    assert _count_bn(fused) == 0
    assert _count_bn(model) > 0  # not in place by default
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], atol=1e-4, rtol=1e-4)


def test_fuse_conv_bn_mask_decoder():
    """detectron2 Conv2d with a norm (the mask decoder's convs) is fused too."""
    from detectron2.layers import ShapeSpec

    from mobileinst.mask_decoder import SemanticEnhancedMaskDecoder
    from mobileinst.mask_decoder.blocks import depthwise_separable_conv

    torch.manual_seed(0)
    shapes = {"x3": ShapeSpec(channels=8, stride=8), "x4": ShapeSpec(channels=8, stride=16),
              "x5": ShapeSpec(channels=8, stride=32), "x6": ShapeSpec(channels=12, stride=64)}
    dec = SemanticEnhancedMaskDecoder(input_shape=shapes, in_features=["x3", "x4", "x5", "x6"], channels=16,
                                      kernel_dim=8, norm="BN", conv=depthwise_separable_conv)
    dec = _randomize_bn(dec, seed=6).eval()
    feats = {"x3": torch.randn(1, 8, 16, 16), "x4": torch.randn(1, 8, 8, 8), "x5": torch.randn(1, 8, 4, 4),
             "x6": torch.randn(1, 12, 2, 2)}
    fused = fuse_conv_bn(dec)
    assert _count_bn(fused) == 0
    with torch.no_grad():
        torch.testing.assert_close(fused(feats), dec(feats), atol=1e-4, rtol=1e-4)
