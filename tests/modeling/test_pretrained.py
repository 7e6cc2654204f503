"""ImageNet weights by default: which file each config expects, where it is
looked for, that training stops at once without it, and that evaluation with
full model weights does not need it (mobileinst.utils.pretrained)."""
import os

import pytest
import torch
from conftest import ROOT
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from mobileinst.config import load_mobileinst_config
from mobileinst.utils.checkpoint import load_weights
from mobileinst.utils.pretrained import (
    PRETRAINED_ENV,
    backbone_weights_key,
    check_start_weights,
    resolve_pretrained,
    start_weights,
)

TINY = os.path.join(ROOT, "configs", "coco", "MobileInst_TopFormer_tiny_640.yaml")
R50 = os.path.join(ROOT, "configs", "coco", "MobileInst_R50_640.yaml")

# config -> (key, file) that training starts from
EXPECTED = {
    "coco/MobileInst_TopFormer_tiny_640.yaml": ("MODEL.TOPFORMER.WEIGHTS", "pretrained/topformer-T-224-66.2.pth"),
    "coco/MobileInst_TopFormer_small_640.yaml": ("MODEL.TOPFORMER.WEIGHTS", "pretrained/topformer-S-224-72.3.pth"),
    "coco/MobileInst_TopFormer_base_640.yaml": ("MODEL.TOPFORMER.WEIGHTS", "pretrained/topformer-B-224-75.3.pth"),
    "coco/MobileInst_TopFormer_base_512.yaml": ("MODEL.TOPFORMER.WEIGHTS", "pretrained/topformer-B-224-75.3.pth"),
    "coco/MobileInst_MobileNetV2_640.yaml": ("MODEL.MOBILENETV2.WEIGHTS", "pretrained/mobilenet_v2-b0353104.pth"),
    "coco/MobileInst_SeaFormer_tiny_640.yaml": ("MODEL.SEAFORMER.WEIGHTS", "pretrained/SeaFormer_T.pth"),
    "coco/MobileInst_SeaFormer_small_640.yaml": ("MODEL.SEAFORMER.WEIGHTS", "pretrained/SeaFormer_S.pth"),
    "coco/MobileInst_SeaFormer_base_640.yaml": ("MODEL.SEAFORMER.WEIGHTS", "pretrained/SeaFormer_B.pth"),
    "coco/MobileInst_SeaFormer_large_640.yaml": ("MODEL.SEAFORMER.WEIGHTS", "pretrained/SeaFormer_L.pth"),
    "coco/MobileInst_R50_640.yaml": ("MODEL.WEIGHTS", "pretrained/R-50.pkl"),
    "lvis/MobileInst_TopFormer_base_640.yaml": ("MODEL.TOPFORMER.WEIGHTS", "pretrained/topformer-B-224-75.3.pth"),
    # the video models start from the COCO model
    "youtubevis/MobileInst_TopFormer_base_ytvis2019.yaml":
        ("MODEL.WEIGHTS", "output/coco/MobileInst_TopFormer_base_640/model_final.pth"),
    "youtubevis/MobileInst_TopFormer_base_ytvis2021.yaml":
        ("MODEL.WEIGHTS", "output/coco/MobileInst_TopFormer_base_640/model_final.pth"),
    "youtubevis/MobileInst_TopFormer_base_ytvis2019_coco.yaml":
        ("MODEL.WEIGHTS", "output/coco/MobileInst_TopFormer_base_640/model_final.pth"),
    "youtubevis/MobileInst_TopFormer_base_ytvis2021_coco.yaml":
        ("MODEL.WEIGHTS", "output/coco/MobileInst_TopFormer_base_640/model_final.pth"),
    "youtubevis/MobileInst_TopFormer_base_ytvis2022.yaml":
        ("MODEL.WEIGHTS", "output/coco/MobileInst_TopFormer_base_640/model_final.pth"),
    "ovis/MobileInst_TopFormer_base_ovis.yaml":
        ("MODEL.WEIGHTS", "output/coco/MobileInst_TopFormer_base_640/model_final.pth"),
}


@pytest.fixture
def empty_pretrained(tmp_path, monkeypatch):
    """$MOBILEINST_PRETRAINED set to an empty folder."""
    folder = tmp_path / "pretrained_here"
    folder.mkdir()
    monkeypatch.setenv(PRETRAINED_ENV, str(folder))
    return folder


def _cfg(path, *opts):
    return load_mobileinst_config(path, ["MODEL.DEVICE", "cpu", *opts], freeze=False)


def test_every_config_names_the_weights_it_starts_from():
    found = {}
    for sub in sorted(os.listdir(os.path.join(ROOT, "configs"))):
        if sub == "synthetic" or not os.path.isdir(os.path.join(ROOT, "configs", sub)):
            continue
        for name in sorted(os.listdir(os.path.join(ROOT, "configs", sub))):
            found[f"{sub}/{name}"] = start_weights(_cfg(os.path.join(ROOT, "configs", sub, name)))
    assert found == EXPECTED


def test_backbone_weights_key_follows_the_builder_name():
    cfg = _cfg(TINY)
    assert backbone_weights_key(cfg) == "MODEL.TOPFORMER.WEIGHTS"
    cfg.MODEL.BACKBONE.NAME = "build_mobilenetv2_backbone"
    assert backbone_weights_key(cfg) == "MODEL.MOBILENETV2.WEIGHTS"
    cfg.MODEL.BACKBONE.NAME = "build_seaformer_backbone"
    cfg.MODEL.SEAFORMER.WEIGHTS = "pretrained/SeaFormer_B.pth"
    assert backbone_weights_key(cfg) == "MODEL.SEAFORMER.WEIGHTS"
    assert start_weights(cfg) == ("MODEL.SEAFORMER.WEIGHTS", "pretrained/SeaFormer_B.pth")
    # a builder without a node of its own starts from MODEL.WEIGHTS
    cfg.MODEL.BACKBONE.NAME = "build_custom_backbone"
    assert backbone_weights_key(cfg) == "MODEL.WEIGHTS"
    # detectron2's backbones start from MODEL.WEIGHTS
    assert backbone_weights_key(_cfg(R50)) == "MODEL.WEIGHTS"


def test_pretrained_folder_from_the_environment(monkeypatch):
    monkeypatch.delenv(PRETRAINED_ENV, raising=False)
    assert resolve_pretrained("pretrained/R-50.pkl") == "pretrained/R-50.pkl"
    monkeypatch.setenv(PRETRAINED_ENV, "/models/imagenet")
    assert resolve_pretrained("pretrained/R-50.pkl") == "/models/imagenet/R-50.pkl"
    assert resolve_pretrained("output/model_final.pth") == "output/model_final.pth"
    assert resolve_pretrained("/abs/pretrained/x.pth") == "/abs/pretrained/x.pth"


def test_missing_imagenet_file_stops_the_model_build(empty_pretrained):
    with pytest.raises(FileNotFoundError) as info:
        build_model(_cfg(TINY))
    msg = str(info.value)
    assert "MODEL.TOPFORMER.WEIGHTS='pretrained/topformer-T-224-66.2.pth'" in msg
    assert str(empty_pretrained / "topformer-T-224-66.2.pth") in msg
    assert "README.md" in msg and 'MODEL.TOPFORMER.WEIGHTS "" to train from scratch' in msg
    # from scratch is an explicit choice
    build_model(_cfg(TINY, "MODEL.TOPFORMER.WEIGHTS", ""))


@pytest.mark.parametrize("config,key,name", [(TINY, "MODEL.TOPFORMER.WEIGHTS", "topformer-T-224-66.2.pth"),
                                             (R50, "MODEL.WEIGHTS", "R-50.pkl")])
def test_training_stops_before_the_model_and_the_data(empty_pretrained, tmp_path, monkeypatch, config, key, name):
    import train_net

    def built(*args):
        raise AssertionError("built before the weights were checked")

    monkeypatch.setattr(train_net.Trainer, "build_model", classmethod(built))
    monkeypatch.setattr(train_net.Trainer, "build_train_loader", classmethod(built))
    cfg = _cfg(config, "OUTPUT_DIR", str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=rf"{key}='pretrained/{name}'.*{key} \"\" to train from scratch"):
        train_net.Trainer(cfg)


def test_imagenet_file_is_found_in_the_pretrained_folder_and_loaded(empty_pretrained):
    from mobileinst.backbone import TopFormer

    torch.manual_seed(3)
    imagenet = TopFormer("tiny").state_dict()
    imagenet = {k: v + torch.rand_like(v) if v.is_floating_point() else v for k, v in imagenet.items()}
    torch.save({"state_dict": imagenet}, empty_pretrained / "topformer-T-224-66.2.pth")
    cfg = _cfg(TINY)
    check_start_weights(cfg)
    model = build_model(cfg)
    for k, v in imagenet.items():
        assert torch.equal(model.backbone.state_dict()[k], v), k


def test_evaluation_with_model_weights_does_not_read_the_imagenet_file(empty_pretrained, tmp_path):
    """MODEL.WEIGHTS (a full MobileInst checkpoint) replaces the backbone's
    ImageNet weights: neither the build nor the load needs that file."""
    torch.manual_seed(0)
    trained = build_model(_cfg(TINY, "MODEL.TOPFORMER.WEIGHTS", ""))
    DetectionCheckpointer(trained, str(tmp_path)).save("trained")
    cfg = _cfg(TINY, "MODEL.WEIGHTS", str(tmp_path / "trained.pth"))
    assert cfg.MODEL.TOPFORMER.WEIGHTS == "pretrained/topformer-T-224-66.2.pth"
    check_start_weights(cfg)  # training from MODEL.WEIGHTS (fine-tuning) passes too
    model = load_weights(build_model(cfg), cfg.MODEL.WEIGHTS)
    for k, v in trained.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
