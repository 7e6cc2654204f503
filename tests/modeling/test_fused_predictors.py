"""The predictors a user runs (image and video) fold BatchNorm into the convolutions,
as the export does, and give the unfused model's outputs up to float rounding."""
import os

import numpy as np
import pytest
import torch
from conftest import ROOT
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from torch import nn

BN_CONFIG = os.path.join(ROOT, "configs", "coco", "MobileInst_TopFormer_tiny_640.yaml")  # BN throughout


def _bn_cfg(weights, *opts):
    from mobileinst.config import load_mobileinst_config

    return load_mobileinst_config(BN_CONFIG, [
        "MODEL.WEIGHTS", weights, "MODEL.TOPFORMER.WEIGHTS", "", "MODEL.DEVICE", "cpu",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160", *opts], device="cpu")


@pytest.fixture(scope="module")
def bn_weights(tmp_path_factory):
    """A fixed-seed checkpoint whose BatchNorm layers have non-trivial statistics and
    affine parameters (fresh ones are the identity up to eps, and folding them would
    change nothing); returns (path, the unfused model loaded from it)."""
    out = str(tmp_path_factory.mktemp("bn_weights"))
    torch.manual_seed(0)
    model = build_model(_bn_cfg("")).eval()
    g = torch.Generator().manual_seed(1)
    n = 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(1 + 0.2 * torch.randn(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))
            n += 1
    assert n > 20  # the config has BN in backbone, mask decoder and heads
    DetectionCheckpointer(model, out).save("bn")
    return os.path.join(out, "bn.pth"), model


def _frame(seed, h=120, w=150):
    import cv2

    rng = np.random.RandomState(seed)
    img = cv2.GaussianBlur(rng.randint(0, 255, (h, w, 3)).astype(np.uint8), (0, 0), 5)
    cv2.circle(img, (40 + 5 * seed, 60), 25, (30, 200, 90), -1)
    return img


def _batchnorms(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _assert_same(a, b, what):
    """Instances of the fused and the unfused model: same classes, scores within float
    tolerance, masks differing in at most 0.1% of the pixels (a logit at the threshold)."""
    assert len(a) == len(b) and len(a) > 0, what
    sa, sb = a.scores.numpy(), b.scores.numpy()
    np.testing.assert_allclose(sa, sb, rtol=1e-3, atol=1e-4, err_msg=what)
    assert np.array_equal(a.pred_classes.numpy(), b.pred_classes.numpy()), what
    ma, mb = a.pred_masks.numpy(), b.pred_masks.numpy()
    assert ma.shape == mb.shape and (ma != mb).mean() < 1e-3, what


def test_image_predictor_folds_batchnorm(bn_weights):
    from mobileinst.predictor import MobileInstPredictor

    path, unfused = bn_weights
    pred = MobileInstPredictor(_bn_cfg(path, "MODEL.MOBILEINST.INFERENCE.CLS_THRESHOLD", "0.0"))
    assert _batchnorms(pred.model) == []
    assert len(_batchnorms(unfused)) > 20
    ref = MobileInstPredictor(_bn_cfg(path, "MODEL.MOBILEINST.INFERENCE.CLS_THRESHOLD", "0.0"))
    ref.model = unfused  # the same pre- and post-processing around the unfused model
    for seed in (0, 1):
        img = _frame(seed)
        _assert_same(pred(img)["instances"], ref(img)["instances"], f"image {seed}")
    # the folding is not the identity: the convs' weights changed
    w_fused = pred.model.backbone.state_dict()
    w_ref = unfused.backbone.state_dict()
    changed = [k for k in w_fused if k in w_ref and w_fused[k].shape == w_ref[k].shape
               and not torch.equal(w_fused[k], w_ref[k])]
    assert changed


def test_streaming_predictor_folds_batchnorm(bn_weights):
    from mobileinst.video import StreamingPredictor

    path, unfused = bn_weights
    cfg = _bn_cfg(path, "MODEL.MOBILEINST.VIDEO.REUSE_INTERVAL", "2", "MODEL.MOBILEINST.VIDEO.TRACK_SCORE_THRESHOLD",
                  "0.0")
    pred = StreamingPredictor(cfg)
    assert _batchnorms(pred.model) == []
    ref = StreamingPredictor(cfg, model=unfused)  # a given model is used as it is
    assert len(_batchnorms(ref.model)) > 20
    for i in range(4):  # keyframes 0 and 2, kernel reuse on 1 and 3
        img = _frame(i)
        a, b = pred(img), ref(img)
        _assert_same(a, b, f"frame {i}")
        assert np.array_equal(a.track_ids.numpy(), b.track_ids.numpy())
