"""The MobileInst meta-architecture end to end (training step, inference, predictor)."""
import numpy as np
import pytest
import torch
from conftest import small_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances


def _instances(h, w, boxes, classes):
    inst = Instances((h, w))
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    inst.gt_masks = BitMasks(masks)
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    return inst


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(small_cfg())


def test_registered_and_built(model):
    from mobileinst import MobileInst

    assert isinstance(model, MobileInst)
    assert model.size_divisibility == 64
    assert model.instance_decoder.num_queries == 20
    assert model.instance_decoder.cls_head.out_features == 5


def test_training_step_gives_finite_losses_and_gradients(model):
    model.train()
    img = torch.randint(0, 255, (3, 100, 150), dtype=torch.uint8)
    batch = [
        {"image": img, "instances": _instances(100, 150, [(10, 10, 60, 50), (80, 40, 140, 90)], [1, 3])},
        # an image without objects trains too
        {"image": img, "instances": _instances(100, 150, [], [])},
    ]
    losses = model(batch)
    # the synthetic config adds the pooled class head's ground-truth losses (pooled and dense)
    assert set(losses) == {"loss_cls", "loss_mask_dice", "loss_mask_bce", "loss_obj", "loss_pooled_cls",
                           "loss_dense_cls"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_query_passing_losses_on_frame_pairs():
    torch.manual_seed(0)
    m = build_model(small_cfg("MODEL.META_ARCHITECTURE", "MobileInstVideo"))
    m.train()
    img = torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8)
    a = _instances(96, 96, [(10, 10, 40, 40)], [2])
    b = _instances(96, 96, [(14, 12, 44, 42)], [2])
    losses = m([{"image": [img, img], "instances": [a, b]}])
    # the passed branch: the mask losses only (the paper's form)
    assert "loss_cls" in losses and {k for k in losses if k.endswith("_qp")} == {"loss_mask_dice_qp", "loss_mask_bce_qp"}
    sum(losses.values()).backward()
    # the passed queries come from the global stage of frame t: it gets gradients
    assert m.instance_decoder.global_stage.cross_attn.q_proj.weight.grad.abs().sum() > 0


def test_mask_stride_4_targets_losses_and_inference():
    """HighResMaskDecoder (X_mask at 1/4): targets are area-pooled to the 1/4 grid of the
    mask logits, training gives finite losses, inference pastes to the input size."""
    torch.manual_seed(0)
    m = build_model(small_cfg("MODEL.MOBILEINST.MASK_DECODER.NAME", "HighResMaskDecoder"))
    inst = _instances(64, 64, [(8, 8, 24, 22)], [1])
    (t,) = m.prepare_targets([inst], (64, 64))
    assert tuple(t["masks"].shape) == (1, 16, 16)
    expected = torch.zeros(16, 16)
    expected[2:5, 2:6] = 1.0
    expected[5, 2:6] = 0.5  # rows 20..21 of 20..23
    torch.testing.assert_close(t["masks"][0], expected)
    m.train()
    img = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    losses = m([{"image": img, "instances": _instances(96, 128, [(10, 10, 60, 50)], [2])}])
    assert all(torch.isfinite(v) for v in losses.values())
    m.eval()
    with torch.no_grad():
        out = m.predict(m.preprocess([img]).tensor)
        (res,) = m([{"image": img, "height": 48, "width": 64}])
    assert tuple(out["mask_features"].shape[-2:]) == (128 // 4, 128 // 4)
    assert tuple(out["pred_masks"].shape[-2:]) == (128 // 4, 128 // 4)
    assert tuple(res["instances"].pred_masks.shape[-2:]) == (48, 64)


def test_mask_logits_are_at_stride_4_and_inputs_padded_to_64():
    """Derived, not keys: the mask logits are X_mask upsampled to 1/4 (2x of the paper's
    1/8, 1x of a 1/4 X_mask), and inputs are padded to a multiple of X6's stride 64."""
    paper = build_model(small_cfg("MODEL.MOBILEINST.MASK_DECODER.NAME", "SemanticEnhancedMaskDecoder"))
    fine = build_model(small_cfg())
    assert (paper.mask_stride, paper.mask_upsample) == (8, 2)
    assert (fine.mask_stride, fine.mask_upsample) == (4, 1)
    assert paper.size_divisibility == fine.size_divisibility == 64
    img = torch.randint(0, 255, (3, 70, 100), dtype=torch.uint8)
    for m in (paper, fine):
        batch = m.preprocess([img]).tensor
        assert tuple(batch.shape[-2:]) == (128, 128)
        with torch.no_grad():
            assert tuple(m.eval().predict(batch)["pred_masks"].shape[-2:]) == (32, 32)


def test_inference_returns_instances_at_original_size(model):
    model.eval()
    img = torch.randint(0, 255, (3, 96, 144), dtype=torch.uint8)
    with torch.no_grad():
        out = model([{"image": img, "height": 192, "width": 288}, {"image": img}])
    inst = out[0]["instances"]
    assert inst.image_size == (192, 288)
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape[1:] == (192, 288)
    assert len(inst) <= model.max_detections and inst.scores.shape == (len(inst),)
    assert inst.pred_classes.max() < 5
    # boxes are tight around the masks
    for m, b in zip(inst.pred_masks[:5], inst.pred_boxes.tensor[:5]):
        if m.any():
            ys, xs = torch.where(m)
            assert b.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert out[1]["instances"].image_size == (96, 144)


def test_default_predictor_loads_weights(tmp_path, model):
    DetectionCheckpointer(model, str(tmp_path)).save("model")
    cfg = small_cfg("MODEL.WEIGHTS", str(tmp_path / "model.pth"), "INPUT.MIN_SIZE_TEST", "0")
    predictor = DefaultPredictor(cfg)
    img = np.random.RandomState(0).randint(0, 255, (90, 120, 3)).astype(np.uint8)
    inst = predictor(img)["instances"]
    assert inst.image_size == (90, 120)
    # same weights -> same outputs as the in-memory model
    model.eval()
    with torch.no_grad():
        ref = model([{"image": torch.as_tensor(img[:, :, ::-1].copy()).permute(2, 0, 1).float(),
                      "height": 90, "width": 120}])[0]["instances"]
    torch.testing.assert_close(inst.scores, ref.scores, rtol=1e-4, atol=1e-5)
    assert torch.equal(inst.pred_classes, ref.pred_classes)


def test_channels_last_computes_the_same_function():
    """The model keeps its weights and input batch in NHWC memory (torch.channels_last):
    the same function as NCHW."""
    import copy

    from conftest import small_cfg
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    nhwc = build_model(small_cfg()).eval()
    nchw = copy.deepcopy(nhwc).to(memory_format=torch.contiguous_format)
    conv = nhwc.backbone.tpm.stem[0].c.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    img = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    batch = nhwc.preprocess([img]).tensor
    assert batch.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a = nhwc.predict(batch)
        b = nchw.predict(batch.contiguous())
    for k in ("pred_logits", "pred_objectness", "pred_masks"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-3)
