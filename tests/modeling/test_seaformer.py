"""SeaFormer backbone: official parameter names and shapes, the squeeze-enhanced axial
attention, ImageNet weight loading, BN folding, channels-last, and the COCO configs."""
import json
import os

import pytest
import torch
from conftest import FIXTURES, ROOT
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_model
from test_backbone import _conv2d_bn, _count_bn, _json_state_dict, _randomize_bn
from torch import nn

from mobileinst import add_mobileinst_config
from mobileinst.backbone import SEAFORMER_VARIANTS, SeaFormer
from mobileinst.backbone.sea_attention import SeaAttention, SqueezeAxialPositionalEmbedding
from mobileinst.config import load_mobileinst_config
from mobileinst.utils.fuse import fuse_conv_bn

# A copy of shared/reference/seaformer_state_dict_shapes.json: the keys and
# shapes of the official SeaFormer ImageNet checkpoints.
SHAPES_JSON = os.path.join(FIXTURES, "seaformer_state_dict_shapes.json")
VARIANTS = ["tiny", "small", "base", "large"]
CONFIGS = {v: os.path.join(ROOT, "configs", "coco", f"MobileInst_SeaFormer_{v}_640.yaml") for v in VARIANTS}


@pytest.fixture(scope="module")
def reference():
    with open(SHAPES_JSON) as f:
        return json.load(f)


def _cfg(*opts):
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_seaformer_backbone"
    cfg.merge_from_list(list(opts))
    return cfg


def _official_checkpoint(ref, variant, seed):
    """A state dict like an official ImageNet one: backbone keys + the classifier."""
    sd = _json_state_dict(ref, variant, seed)
    for key, shape in ref[variant]["classifier_state_dict"]:
        sd[key] = torch.randn(tuple(shape))
    return sd


# --------------------------------------------------------------------------- state dict


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_matches_official_keys_and_shapes(reference, variant):
    own = {k: tuple(v.shape) for k, v in SeaFormer(variant).state_dict().items()}
    ref = {k: tuple(s) for k, s in reference[variant]["state_dict"]
           if not k.startswith("linear.") and (k in own or not k.endswith("num_batches_tracked"))}
    assert sorted(own) == sorted(ref)
    assert {k: (own[k], ref[k]) for k in ref if own[k] != ref[k]} == {}


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_and_parameter_count_match_reference(reference, variant):
    ref = reference[variant]
    spec = SEAFORMER_VARIANTS[variant]
    for key in ("cfgs", "channels", "emb_dims", "key_dims", "depths", "num_heads", "mlp_ratios"):
        assert spec[key] == ref["config"][key], key
    assert sum(p.numel() for p in SeaFormer(variant).parameters()) == ref["num_params_backbone"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_build_through_detectron2(reference, variant):
    torch.manual_seed(0)
    backbone = build_backbone(_cfg("MODEL.SEAFORMER.VARIANT", variant)).eval()
    assert isinstance(backbone, SeaFormer) and backbone.variant == variant
    assert backbone.size_divisibility == 64
    shapes = backbone.output_shape()
    assert {k: s.stride for k, s in shapes.items()} == {"x2": 4, "x3": 8, "x4": 16, "x5": 32, "x6": 64}
    for name, feat in reference[variant]["features"].items():
        if name.startswith("x"):
            assert (shapes[name].channels, shapes[name].stride) == (feat["channels"], feat["stride"]), name
    h, w = 128, 192
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, h, w))
    for name, s in shapes.items():
        assert tuple(out[name].shape) == (1, s.channels, h // s.stride, w // s.stride), name
        assert torch.isfinite(out[name]).all()


def test_taps_follow_the_official_forward():
    """X3 = smb2 out, X4 = smb3 out (after trans1 for large), X5/X6 after their layers."""
    torch.manual_seed(0)
    img = torch.randn(1, 3, 64, 128)
    for variant, trans_after in (("tiny", {3: "trans1", 4: "trans2"}),
                                 ("large", {2: "trans1", 3: "trans2", 4: "trans3"})):
        model = SeaFormer(variant).eval()
        x, expected = img, {}
        with torch.no_grad():
            for i in range(5):
                x = getattr(model, f"smb{i + 1}")(x)
                if i in trans_after:
                    x = getattr(model, trans_after[i])(x)
                expected[f"x{i + 2}"] = x
            out = model(img)
        assert sorted(out) == sorted(expected)
        for k in expected:
            torch.testing.assert_close(out[k], expected[k])


def test_odd_input_size_halves_with_ceil():
    model = SeaFormer("tiny").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 100, 70))  # 50x35 -> 25x18 -> 13x9 -> 7x5 -> 4x3 -> 2x2
    assert [tuple(out[k].shape[-2:]) for k in ("x2", "x3", "x4", "x5", "x6")] == \
        [(25, 18), (13, 9), (7, 5), (4, 3), (2, 2)]


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="MODEL.SEAFORMER.VARIANT"):
        SeaFormer("huge")


# --------------------------------------------------------------------------- computation


def _linear_resample(table, n):
    """1-D linear interpolation of (1, C, L) to length n, align_corners=False, written out."""
    length = table.shape[-1]
    out = []
    for i in range(n):
        src = max((i + 0.5) * length / n - 0.5, 0.0)
        i0 = min(int(src), length - 1)
        i1 = min(i0 + 1, length - 1)
        lam = src - i0
        out.append(table[..., i0] * (1 - lam) + table[..., i1] * lam)
    return torch.stack(out, -1)


@pytest.mark.parametrize("n", [3, 16, 21])
def test_positional_table_is_resampled_linearly(n):
    torch.manual_seed(0)
    pe = SqueezeAxialPositionalEmbedding(6)
    x = torch.randn(2, 6, n)
    with torch.no_grad():
        torch.testing.assert_close(pe(x), x + _linear_resample(pe.pos_embed, n))


def _sea_attention_by_hand(attn, x, scale):
    """SEAFORMER.md's "Attention" steps 1-5, one head and one sample at a time."""
    heads, kd, d = attn.num_heads, attn.key_dim, attn.d
    q, k, v = _conv2d_bn(x, attn.to_q), _conv2d_bn(x, attn.to_k), _conv2d_bn(x, attn.to_v)
    # 2. detail branch
    detail = _conv2d_bn(torch.clamp(_conv2d_bn(torch.cat([q, k, v], 1), attn.dwconv), 0, 6), attn.pwconv)

    def axis(qs, ks, vs, tq, tk, proj):  # qs, ks: (B, h*kd, N); vs: (B, dh, N)
        n = qs.shape[-1]
        qs, ks = qs + _linear_resample(tq, n), ks + _linear_resample(tk, n)
        out = torch.zeros_like(vs)
        for b in range(x.shape[0]):
            for h in range(heads):
                qh, kh = qs[b, h * kd:(h + 1) * kd], ks[b, h * kd:(h + 1) * kd]  # kd, N
                vh = vs[b, h * d:(h + 1) * d]  # d, N
                a = torch.softmax(qh.t() @ kh * scale, dim=1)  # queries, keys
                out[b, h * d:(h + 1) * d] = vh @ a.t()
        return proj(torch.clamp(out, 0, 6))

    row = axis(q.mean(3), k.mean(3), v.mean(3), attn.pos_emb_rowq.pos_embed, attn.pos_emb_rowk.pos_embed,
               lambda t: _conv2d_bn(t[..., None], attn.proj_encode_row[1]))  # B dh H 1
    col = axis(q.mean(2), k.mean(2), v.mean(2), attn.pos_emb_columnq.pos_embed, attn.pos_emb_columnk.pos_embed,
               lambda t: _conv2d_bn(t[:, :, None], attn.proj_encode_column[1]))  # B dh 1 W
    z = _conv2d_bn(torch.clamp(v + row + col, 0, 6), attn.proj[1])
    return torch.clamp(z + 3, 0, 6) / 6 * detail


def test_sea_attention_matches_explicit_computation():
    torch.manual_seed(0)
    dim, key_dim, heads = 24, 8, 3
    attn = _randomize_bn(SeaAttention(dim, key_dim, heads, 2), seed=1).eval()
    x = torch.randn(2, dim, 5, 7)
    with torch.no_grad():
        out = attn(x)
        expected = _sea_attention_by_hand(attn, x, key_dim ** -0.5)
        unscaled = _sea_attention_by_hand(attn, x, 1.0)  # TopFormer's (unscaled) logits
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert (out - unscaled).abs().max() > 1e-3


def test_block_layout_is_the_official_one():
    block = SeaFormer("tiny").trans1.transformer_blocks[1]
    assert isinstance(block.attn, SeaAttention) and block.attn.scale == 16 ** -0.5
    assert type(block.attn.act) is nn.ReLU6 and type(block.mlp.act) is nn.ReLU6
    assert block.mlp.dwconv.bias is not None and block.mlp.fc1.c.bias is None
    assert block.mlp.fc1.c.out_channels == 2 * 128
    assert SeaFormer("tiny").trans2.transformer_blocks[0].mlp.fc1.c.out_channels == 4 * 160
    # the BN after proj / proj_encode_* starts at weight 0 (training init)
    for m in (block.attn.proj[1], block.attn.proj_encode_row[1], block.attn.proj_encode_column[1]):
        assert torch.equal(m.bn.weight, torch.zeros_like(m.bn.weight))
    # drop path linear from 0 over each layer's blocks; identity in eval
    assert [b.drop_path.p for b in SeaFormer("base").trans2.transformer_blocks] == \
        pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])
    # stage convs use ReLU, not ReLU6
    assert not any(type(m) is nn.ReLU6 for m in SeaFormer("tiny").smb3.modules())


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("wrap", ["state_dict_ema", "state_dict", "model", "plain"])
def test_official_checkpoint_loads_strictly(reference, tmp_path, wrap):
    """An official-format checkpoint (classifier linear.* included) loads exactly."""
    sd = _official_checkpoint(reference, "tiny", seed=1)
    path = tmp_path / f"SeaFormer_T_{wrap}.pth"
    torch.save(sd if wrap == "plain" else {wrap: sd, "epoch": 299}, path)
    own = build_backbone(_cfg("MODEL.SEAFORMER.VARIANT", "tiny", "MODEL.SEAFORMER.WEIGHTS", str(path))).state_dict()
    assert sorted(own) == sorted(k for k in sd if not k.startswith("linear."))
    for k, v in own.items():
        assert torch.equal(v, sd[k]), k


def test_ema_weights_are_preferred_like_the_official_loader(reference, tmp_path):
    ema, raw = _official_checkpoint(reference, "tiny", seed=2), _official_checkpoint(reference, "tiny", seed=3)
    path = tmp_path / "last.pth.tar"
    torch.save({"state_dict": raw, "state_dict_ema": ema, "optimizer": {"lr": 0.1}}, path)
    own = build_backbone(_cfg("MODEL.SEAFORMER.VARIANT", "tiny", "MODEL.SEAFORMER.WEIGHTS", str(path))).state_dict()
    key = "trans2.transformer_blocks.1.attn.pos_emb_columnk.pos_embed"
    assert torch.equal(own[key], ema[key]) and not torch.equal(own[key], raw[key])


def test_model_itself_round_trips(tmp_path):
    """The model's own state dict, saved as an official one, loads back exactly."""
    torch.manual_seed(0)
    src = _randomize_bn(SeaFormer("small"), seed=4)
    sd = {"backbone." + k: v for k, v in src.state_dict().items()}
    sd["backbone.linear.weight"], sd["backbone.linear.bias"] = torch.randn(1000, 192), torch.randn(1000)
    torch.save({"state_dict_ema": sd}, tmp_path / "SeaFormer_S.pth")
    dst = build_backbone(_cfg("MODEL.SEAFORMER.VARIANT", "small",
                              "MODEL.SEAFORMER.WEIGHTS", str(tmp_path / "SeaFormer_S.pth"))).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = src.eval()(x), dst(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_of_another_variant_fails_naming_file_key_and_shapes(reference, tmp_path):
    path = tmp_path / "SeaFormer_B.pth"
    torch.save({"state_dict_ema": _official_checkpoint(reference, "base", seed=5)}, path)
    with pytest.raises(ValueError) as info:
        build_backbone(_cfg("MODEL.SEAFORMER.VARIANT", "small", "MODEL.SEAFORMER.WEIGHTS", str(path)))
    msg = str(info.value)
    assert "MODEL.SEAFORMER.WEIGHTS" in msg and str(path) in msg and "'small'" in msg
    assert "wrong shapes" in msg
    assert "smb1.layer2.conv.4.c.weight: checkpoint (32, 64, 1, 1), model (24, 64, 1, 1)" in msg
    # large: another number of stages and layers (missing and unexpected keys)
    with pytest.raises(ValueError, match=r"missing from the checkpoint \(\d+\): .*trans3\.transformer_blocks\.0.*"
                                         r"\n  not in the model"):
        build_backbone(_cfg("MODEL.SEAFORMER.VARIANT", "large", "MODEL.SEAFORMER.WEIGHTS", str(path)))


def test_checkpoint_with_missing_keys_fails(reference, tmp_path):
    sd = _official_checkpoint(reference, "tiny", seed=6)
    del sd["trans1.transformer_blocks.0.attn.pos_emb_rowq.pos_embed"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"partial\.pth.*\n.*missing from the checkpoint \(1\): "
                                         r"trans1.transformer_blocks.0.attn.pos_emb_rowq.pos_embed \(1, 64, 16\)"):
        build_backbone(_cfg("MODEL.SEAFORMER.VARIANT", "tiny", "MODEL.SEAFORMER.WEIGHTS", str(path)))


def test_missing_or_unsafe_weights_name_the_key_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MODEL.SEAFORMER.WEIGHTS.*SeaFormer_T\.pth"):
        build_backbone(_cfg("MODEL.SEAFORMER.VARIANT", "tiny", "MODEL.SEAFORMER.WEIGHTS",
                            str(tmp_path / "SeaFormer_T.pth")))
    torch.save({"state_dict": {"w": torch.zeros(1)}, "cls": nn.Identity()}, tmp_path / "objects.pth")
    with pytest.raises(RuntimeError, match=r"MODEL.SEAFORMER.WEIGHTS.*objects\.pth"):
        build_backbone(_cfg("MODEL.SEAFORMER.WEIGHTS", str(tmp_path / "objects.pth")))


# --------------------------------------------------------------------------- deployment


@pytest.mark.parametrize("variant", ["tiny", "large"])
def test_fuse_conv_bn_and_channels_last(variant):
    torch.manual_seed(0)
    model = _randomize_bn(SeaFormer(variant), seed=7).eval()
    fused = fuse_conv_bn(model)
    assert _count_bn(model) > 0 and _count_bn(fused) == 0
    nhwc = fuse_conv_bn(model).to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        ref, out = model(x), fused(x)
        out_nhwc = nhwc(x.contiguous(memory_format=torch.channels_last))
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out_nhwc[k], ref[k], atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- COCO configs


@pytest.mark.parametrize("variant", VARIANTS)
def test_coco_config_builds_and_runs_inference(variant):
    """The COCO config (ImageNet weights off) at a small input: instances at the input size."""
    cfg = load_mobileinst_config(CONFIGS[variant], ["MODEL.SEAFORMER.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.SEAFORMER.VARIANT == variant
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert isinstance(model.backbone, SeaFormer) and model.backbone.variant == variant
    conv = next(p for p in model.backbone.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()  # NHWC weights
    img = torch.randint(0, 255, (3, 128, 176), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        inst = model([{"image": img}])[0]["instances"]
    assert inst.image_size == (128, 176) and 0 < len(inst) <= cfg.MODEL.MOBILEINST.INFERENCE.MAX_DETECTIONS
    assert inst.pred_masks.shape[-2:] == (128, 176) and torch.isfinite(inst.scores).all()


def test_coco_config_trains_one_step():
    from test_model import _instances

    cfg = load_mobileinst_config(CONFIGS["base"], ["MODEL.SEAFORMER.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    img = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    losses = model([{"image": img, "instances": _instances(96, 128, [(10, 10, 60, 50), (70, 30, 120, 90)], [1, 3])}])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None for g in grads) and model.backbone.smb1.stem_block[0].c.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant,letter", [("tiny", "T"), ("small", "S"), ("base", "B"), ("large", "L")])
def test_coco_config_names_the_official_checkpoint(variant, letter):
    """The configs point at pretrained/SeaFormer_<T|S|B|L>.pth; without the file the
    build stops naming the key and the file."""
    cfg = load_mobileinst_config(CONFIGS[variant], ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.SEAFORMER.WEIGHTS == f"pretrained/SeaFormer_{letter}.pth"
    if not os.path.exists(cfg.MODEL.SEAFORMER.WEIGHTS):
        with pytest.raises(FileNotFoundError, match=rf"MODEL.SEAFORMER.WEIGHTS.*SeaFormer_{letter}\.pth"):
            build_model(cfg)


def test_mask_stride_4_uses_x2():
    cfg = load_mobileinst_config(CONFIGS["tiny"], ["MODEL.SEAFORMER.WEIGHTS", "", "MODEL.DEVICE", "cpu",
                                                   "MODEL.MOBILEINST.MASK_DECODER.NAME", "HighResMaskDecoder"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        x6, x_mask = model.encode(model.preprocess([torch.zeros(3, 64, 128, dtype=torch.uint8)]).tensor)
    assert tuple(x_mask.shape[-2:]) == (16, 32) and tuple(x6.shape) == (1, 160, 1, 2)
