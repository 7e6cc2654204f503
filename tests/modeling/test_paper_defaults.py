"""The COCO configs are the paper's form: every option beyond the paper is off
and the values the paper gives are kept (README, docs/defaults.md). Adding an
option beyond the paper means adding its key here with its paper value."""
import glob
import os

import pytest
from conftest import ROOT
from detectron2.config import get_cfg

from mobileinst import add_mobileinst_config
from mobileinst.config import load_mobileinst_config

# key -> the paper's value (MOBILEINST.md): options beyond the paper off,
# and the values the paper states
PAPER_FORM = {
    "MODEL.META_ARCHITECTURE": "MobileInst",
    # the paper's heads: the semantic-enhanced mask decoder (X_mask at 1/8, from
    # O3 alone, plain 3x3 fusion convs) and the dual instance decoder
    "MODEL.MOBILEINST.MASK_DECODER.NAME": "SemanticEnhancedMaskDecoder",
    "MODEL.MOBILEINST.MASK_DECODER.DEPTHWISE": False,
    "MODEL.MOBILEINST.MASK_DECODER.COORD_FEATURES": False,
    "MODEL.MOBILEINST.INSTANCE_DECODER.NAME": "DualInstanceDecoder",
    # X_L max-pooled to the size of X6
    "MODEL.MOBILEINST.INSTANCE_DECODER.LOCAL_POOL_STRIDE": 64,
    # L = 2 L_cls + 2 L_mask (dice + BCE) + 1 L_obj, nothing else
    "MODEL.MOBILEINST.LOSS.CLASS_WEIGHT": 2.0,
    "MODEL.MOBILEINST.LOSS.MASK_DICE_WEIGHT": 2.0,
    "MODEL.MOBILEINST.LOSS.MASK_PIXEL_WEIGHT": 2.0,
    "MODEL.MOBILEINST.LOSS.OBJECTNESS_WEIGHT": 1.0,
    "MODEL.MOBILEINST.LOSS.DENSE_CLASS_WEIGHT": 0.0,
    # NMS-free, one class per query
    "MODEL.MOBILEINST.INFERENCE.NMS_SIGMA": 0.0,
    "MODEL.MOBILEINST.INFERENCE.MULTI_CLASS": False,
    # video: kernel reuse every T = 3 frames on full-size frames, cosine kernel association
    "MODEL.MOBILEINST.VIDEO.REUSE_INTERVAL": 3,
    "MODEL.MOBILEINST.VIDEO.ASSOCIATION": True,
    "MODEL.MOBILEINST.VIDEO.ASSOCIATION_MASK_WEIGHT": 0.0,
    "MODEL.MOBILEINST.VIDEO.NONKEY_SCALE": 1.0,
    # training
    "INPUT.COPY_PASTE.ENABLED": False,
    "SOLVER.EMA.ENABLED": False,
}

COCO_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "coco", "*.yaml")))


def _value(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _defaults():
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    return cfg


@pytest.mark.parametrize("config", ["config.py"] + COCO_CONFIGS, ids=os.path.basename)
def test_coco_configs_have_the_papers_form(config):
    cfg = _defaults() if config == "config.py" else load_mobileinst_config(config)
    form = {k: v for k, v in PAPER_FORM.items() if config != "config.py" or k != "MODEL.META_ARCHITECTURE"}
    differ = {k: _value(cfg, k) for k, v in form.items() if _value(cfg, k) != v}
    assert not differ, f"{config}: beyond the paper's form: {differ}"


def test_coco_configs_exist():
    names = {os.path.basename(p) for p in COCO_CONFIGS}
    assert {"MobileInst_TopFormer_base_640.yaml", "MobileInst_R50_640.yaml"} <= names


def test_every_paper_form_key_is_in_the_defaults_table():
    with open(os.path.join(ROOT, "docs", "defaults.md")) as f:
        text = f.read()
    missing = [k for k in PAPER_FORM if k != "MODEL.META_ARCHITECTURE"
               and f"`{k.replace('MODEL.MOBILEINST.', '')}`" not in text]
    assert not missing, f"docs/defaults.md does not list {missing}"
