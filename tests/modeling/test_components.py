"""Issue 25: heads a Detectron2 user swaps by name, the video model apart from the
image model, and one source for every setting."""
import ast
import glob
import inspect
import os

import pytest
import torch
import yaml
from conftest import ROOT, small_cfg
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from torch import nn

from mobileinst import INSTANCE_DECODER_REGISTRY, MASK_DECODER_REGISTRY, add_mobileinst_config
from mobileinst.config import build_tracker_settings
from mobileinst.criterion import SetCriterion
from mobileinst.features import global_feature_key
from mobileinst.instance_decoder import DualInstanceDecoder, PooledClassDualInstanceDecoder
from mobileinst.mask_decoder import HighResMaskDecoder, SemanticEnhancedMaskDecoder
from mobileinst_core.export_meta import parse_export_meta

PKG = os.path.join(ROOT, "projects", "MobileInst", "mobileinst")


def _leaves(node, prefix=""):
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _defaults():
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    return cfg


# ------------------------------------------------------------------ a user's heads
class _UserMaskDecoder(nn.Module):
    """A mask decoder of a user's: X_mask = a 1x1 conv of X3 (stride 8)."""

    output_stride = 8

    def __init__(self, cfg, input_shape):
        super().__init__()
        self.kernel_dim = cfg.MODEL.MOBILEINST.MASK_DECODER.KERNEL_DIM
        self.x3 = cfg.MODEL.MOBILEINST.IN_FEATURES[0]
        self.proj = nn.Conv2d(input_shape[self.x3].channels, self.kernel_dim, 1)

    def forward(self, features):
        return self.proj(features[self.x3])


class _UserInstanceDecoder(nn.Module):
    """An instance decoder of a user's: queries = learnt embeddings plus pooled X6."""

    def __init__(self, cfg, input_shape, mask_shape):
        super().__init__()
        c = cfg.MODEL.MOBILEINST
        self.num_queries = c.INSTANCE_DECODER.NUM_QUERIES
        self.queries = nn.Embedding(self.num_queries, mask_shape.channels)
        self.x6 = nn.Linear(input_shape[global_feature_key(cfg)].channels, mask_shape.channels)
        self.cls = nn.Linear(mask_shape.channels, c.NUM_CLASSES)
        self.obj = nn.Linear(mask_shape.channels, 1)

    def forward(self, x6, x_mask):
        q = self.queries.weight[None] + self.x6(x6.mean((2, 3)))[:, None]
        return {"pred_logits": self.cls(q), "pred_objectness": self.obj(q)[..., 0], "pred_kernels": q}


@pytest.fixture(scope="module")
def user_heads():
    MASK_DECODER_REGISTRY.register(_UserMaskDecoder)
    INSTANCE_DECODER_REGISTRY.register(_UserInstanceDecoder)
    yield
    MASK_DECODER_REGISTRY._obj_map.pop("_UserMaskDecoder")
    INSTANCE_DECODER_REGISTRY._obj_map.pop("_UserInstanceDecoder")


def test_heads_registered_outside_the_package_are_chosen_by_config_and_train(user_heads, synthetic_root):
    from train_net import Trainer

    cfg = small_cfg("MODEL.MOBILEINST.MASK_DECODER.NAME", "_UserMaskDecoder",
                    "MODEL.MOBILEINST.INSTANCE_DECODER.NAME", "_UserInstanceDecoder",
                    "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "1")
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.mask_decoder, _UserMaskDecoder)
    assert isinstance(model.instance_decoder, _UserInstanceDecoder)
    assert model.mask_upsample == 2  # a stride-8 X_mask: mask logits at 1/4
    data = iter(Trainer.build_train_loader(cfg))
    batch = next(data)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(40):  # fits one batch: the losses reach every parameter of the user's heads
        loss = sum(model(batch).values())
        history.append(float(loss.detach()))
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert sum(history[-3:]) < 0.8 * sum(history[:3]), history
    model.eval()
    with torch.no_grad():
        inst = model([{"image": batch[0]["image"]}])[0]["instances"]
    assert len(inst) > 0 and inst.pred_masks.shape[-2:] == batch[0]["image"].shape[-2:]


def test_the_papers_heads_are_registered_under_the_papers_names():
    assert MASK_DECODER_REGISTRY.get("SemanticEnhancedMaskDecoder") is SemanticEnhancedMaskDecoder
    assert MASK_DECODER_REGISTRY.get("HighResMaskDecoder") is HighResMaskDecoder
    assert INSTANCE_DECODER_REGISTRY.get("DualInstanceDecoder") is DualInstanceDecoder
    assert INSTANCE_DECODER_REGISTRY.get("PooledClassDualInstanceDecoder") is PooledClassDualInstanceDecoder
    cfg = _defaults()
    assert cfg.MODEL.MOBILEINST.MASK_DECODER.NAME == "SemanticEnhancedMaskDecoder"
    assert cfg.MODEL.MOBILEINST.INSTANCE_DECODER.NAME == "DualInstanceDecoder"


def test_an_unknown_head_name_is_refused_naming_it():
    with pytest.raises(KeyError, match="NoSuchDecoder"):
        build_model(small_cfg("MODEL.MOBILEINST.MASK_DECODER.NAME", "NoSuchDecoder"))


# ------------------------------------------------------------------ video apart
def test_the_image_model_holds_no_video_code():
    with open(os.path.join(PKG, "mobileinst.py")) as f:
        tree = ast.parse(f.read())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("video" in m or "tracker" in m or "association" in m for m in imported), imported
    names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not any(w in n for n in names for w in ("video", "track", "keyframe", "passing")), names


def test_the_video_meta_architecture_is_built_on_the_image_one():
    from mobileinst import MobileInst, MobileInstVideo
    from mobileinst.config import load_mobileinst_config

    assert META_ARCH_REGISTRY.get("MobileInstVideo") is MobileInstVideo and issubclass(MobileInstVideo, MobileInst)
    for path in glob.glob(os.path.join(ROOT, "configs", "**", "*ytvis*.yaml"), recursive=True):
        assert load_mobileinst_config(path).MODEL.META_ARCHITECTURE == "MobileInstVideo", path
    image = build_model(small_cfg())
    assert not hasattr(image, "tracker_settings")
    with pytest.raises(ValueError, match="MobileInstVideo"):
        image([{"image": [torch.zeros(3, 64, 64, dtype=torch.uint8)] * 2}])


# ------------------------------------------------------------------ one source per setting
def test_at_most_60_config_keys():
    added = set(_leaves(_defaults())) - set(_leaves(get_cfg()))
    assert len(added) <= 60, sorted(added)


def _config_backed_defaults(cls, kwargs):
    sig = inspect.signature(cls.__init__)
    return {name: (p.default, kwargs[name]) for name, p in sig.parameters.items()
            if name in kwargs and p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("cfg_opts", [(), ("MODEL.MOBILEINST.MASK_DECODER.NAME", "HighResMaskDecoder")],
                         ids=["defaults", "high_res"])
def test_no_constructor_default_contradicts_the_config(cfg_opts):
    """Every default in a configurable module's signature equals what from_config
    gives from the default config (a default that is not a config value is fine)."""
    cfg = _defaults()
    cfg.merge_from_list(list(cfg_opts))
    shapes = {"x2": ShapeSpec(channels=16, stride=4), "x3": ShapeSpec(channels=32, stride=8),
              "x4": ShapeSpec(channels=64, stride=16), "x5": ShapeSpec(channels=96, stride=32),
              "x6": ShapeSpec(channels=208, stride=64)}
    mask_shape = ShapeSpec(channels=cfg.MODEL.MOBILEINST.MASK_DECODER.KERNEL_DIM, stride=8)
    cases = [(SemanticEnhancedMaskDecoder, SemanticEnhancedMaskDecoder.from_config(cfg, shapes)),
             (DualInstanceDecoder, DualInstanceDecoder.from_config(cfg, shapes, mask_shape)),
             (SetCriterion, SetCriterion.from_config(cfg))]
    checked = 0
    for cls, kwargs in cases:
        for name, (default, value) in _config_backed_defaults(cls, kwargs).items():
            assert default == value, f"{cls.__name__}({name}={default!r}) but the config gives {value!r}"
            checked += 1
    assert checked >= 2  # the mask decoder's conv and output pieces have defaults: they are compared


def test_tracker_settings_are_one_source():
    """The config's VIDEO keys are TrackerSettings' fields, and export_meta.json's
    "video" object is checked field by field from the same definition."""
    import dataclasses

    from mobileinst_core.online_tracker import TrackerSettings

    cfg = _defaults()
    settings = build_tracker_settings(cfg)
    assert settings == TrackerSettings()  # the defaults are the config's
    fields = {f.name: f.metadata["config_key"] for f in dataclasses.fields(TrackerSettings)}
    assert set(cfg.MODEL.MOBILEINST.VIDEO) == {k.split(".")[1] for k in fields.values() if k.startswith("VIDEO.")}
    cfg.MODEL.MOBILEINST.VIDEO.REUSE_INTERVAL = 5
    assert build_tracker_settings(cfg).reuse_interval == 5
    meta = {"input_size": [64, 64], "padded_size": [64, 64], "input_format": "RGB", "pixel_mean": [0, 0, 0],
            "pixel_std": [1, 1, 1], "num_classes": 2, "num_queries": 4, "class_names": None, "category_ids": None,
            "mask_threshold": 0.45, "cls_threshold": 0.1, "max_detections": 4, "multi_class": False,
            "nms_sigma": 0.0, "weights": "", "files": {},
            "video": {**{k: v for k, v in dataclasses.asdict(settings).items() if k != "mask_threshold"},
                      "nonkey_input_size": [64, 64], "nonkey_padded_size": [64, 64]}}
    assert parse_export_meta(meta).tracker == settings
    for name in fields:
        if name == "mask_threshold":
            continue
        bad = dict(meta, video={k: v for k, v in meta["video"].items() if k != name})
        with pytest.raises(ValueError, match=f"video.{name}"):
            parse_export_meta(bad)


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(ROOT, "configs")))
def test_yamls_state_only_what_differs_from_their_base(path):
    from mobileinst.config import load_mobileinst_config

    with open(path) as f:
        own = yaml.safe_load(f)
    base = own.pop("_BASE_", None)
    cfg = _defaults() if base is None else load_mobileinst_config(os.path.join(os.path.dirname(path), base),
                                                                    freeze=False)
    inherited = _leaves(cfg)
    restated = {k: v for k, v in _leaves(own).items()
                if k in inherited and k != "VERSION" and (inherited[k] == v or (isinstance(v, list) and list(inherited[k]) == v))}
    assert not restated, f"{os.path.relpath(path, ROOT)} restates what it inherits: {restated}"
