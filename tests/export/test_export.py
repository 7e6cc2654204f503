"""Export to ONNX / TorchScript, parity with PyTorch, and the detectron2-free runtime."""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from conftest import EXPORT_H, EXPORT_W, IMPORT_BLOCKER, ROOT, small_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

H, W = EXPORT_H, EXPORT_W  # the session fixture ``exported`` (tests/conftest.py)


def test_graphs_written_and_match_pytorch(exported):
    cfg, out, report = exported
    for name in ("image", "keyframe", "mask_head", "nonkeyframe"):
        assert (out / f"{name}.onnx").exists() and (out / f"{name}.ts").exists()
        assert (out / f"{name}_int8.onnx").exists()
    p = report["parity"]
    # classes are compared per instance below (near-equal scores may swap order)
    assert p["image"]["scores"] < 1e-3 and p["image"]["mask_probs"] < 1e-3
    assert p["keyframe"]["kernels"] < 1e-3 and p["keyframe"]["class_scores"] < 1e-3
    assert p["nonkeyframe"]["mask_probs"] < 1e-3 and p["mask_head"]["mask_probs"] < 1e-3
    meta = json.load(open(out / "export_meta.json"))
    assert meta["input_size"] == [H, W] and len(meta["class_names"]) == 5
    assert meta["padded_size"] == [128, 192]  # size divisibility 64
    assert not any(n.endswith(".tmp") for n in os.listdir(out))


def test_onnx_image_model_matches_pytorch_instances(exported):
    """Per instance: mask IoU >= 0.99 and score within 1e-3 of the PyTorch model."""
    import onnxruntime as ort

    from mobileinst.export import ImageModel
    from mobileinst.postprocess import binarize_masks
    from mobileinst.utils.fuse import fuse_conv_bn
    from mobileinst_runtime.segmenter import ImageSegmenter

    cfg, out, _ = exported
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    img = torch.randint(0, 255, (1, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    sess = ort.InferenceSession(str(out / "image.onnx"), providers=["CPUExecutionProvider"])
    scores, classes, probs = sess.run(None, {"image": img.numpy()})
    # the top MAX_DETECTIONS (query, class) pairs (MULTI_CLASS), masks on the padded input's 1/4 grid
    assert probs.shape == (100, H // 4, 192 // 4)
    with torch.no_grad():
        ref_scores, ref_classes, ref_probs = ImageModel(fuse_conv_bn(model), H, W)(img)
        # and the unfused PyTorch inference path on the same image
        inst = model([{"image": img[0]}])[0]["instances"]
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-3)
    # same class and mask wherever the ranking is unambiguous (scores apart by more than float noise)
    gaps = np.minimum(np.abs(np.diff(scores, prepend=np.inf)), np.abs(np.diff(scores, append=-np.inf)))
    distinct = gaps > 1e-5
    assert distinct.sum() >= 3
    np.testing.assert_array_equal(classes[distinct], ref_classes.numpy()[distinct])
    np.testing.assert_allclose(probs[distinct], ref_probs.numpy()[distinct], atol=1e-3)
    # the runtime segmenter (RGB input given as a BGR frame) pastes the masks at the frame size
    seg = ImageSegmenter(str(out))
    scores, classes, masks = seg(img[0].permute(1, 2, 0).numpy()[:, :, ::-1].copy(), score_threshold=-1.0)
    assert masks.shape == (100, H, W) and masks.dtype == bool
    ref_masks, _ = binarize_masks(ref_probs, (128, 192), (H, W), (H, W), cfg.MODEL.MOBILEINST.INFERENCE.MASK_THRESHOLD)
    for m, r in zip(masks[distinct], ref_masks.numpy()[distinct]):
        union = (m | r).sum()
        assert union == 0 or (m & r).sum() / union >= 0.99
    top = inst.scores.argsort(descending=True)[:3]
    np.testing.assert_allclose(scores[:3], inst.scores[top].numpy(), atol=1e-3)
    np.testing.assert_array_equal(classes[:3][distinct[:3]], inst.pred_classes[top].numpy()[distinct[:3]])
    for m, r in zip(masks[:3].astype(bool), inst.pred_masks[top].numpy()):
        union = (m | r).sum()
        assert union == 0 or (m & r).sum() / union >= 0.99


def test_mask_graphs_take_any_number_of_kernels(exported):
    import onnxruntime as ort

    cfg, out, _ = exported
    key = ort.InferenceSession(str(out / "keyframe.onnx"), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(out / "mask_head.onnx"), providers=["CPUExecutionProvider"])
    nonkey = ort.InferenceSession(str(out / "nonkeyframe.onnx"), providers=["CPUExecutionProvider"])
    img = np.random.RandomState(0).randint(0, 255, (1, 3, H, W)).astype(np.uint8)
    kernels, scores, classes, class_scores, x_mask = key.run(None, {"image": img})
    s = 4  # the synthetic config's HighResMaskDecoder: X_mask of the input padded to 128x192 at 1/4
    assert kernels.shape == (20, 64) and class_scores.shape == (20, 5) and x_mask.shape == (1, 64, 128 // s, 192 // s)
    for k in (1, 7, 20):
        (m1,) = head.run(None, {"mask_features": x_mask, "kernels": kernels[:k]})
        (m2,) = nonkey.run(None, {"image": img, "kernels": kernels[:k]})
        assert m1.shape == (k, H // 4, 192 // 4) and m1.dtype == np.float32
        np.testing.assert_allclose(m1, m2, atol=1e-6)  # same frame: reuse == recompute


def test_torchscript_graph_runs(exported):
    _, out, _ = exported
    ts = torch.jit.load(str(out / "image.ts"))
    scores, classes, probs = ts(torch.zeros(1, 3, H, W, dtype=torch.uint8))
    assert probs.shape == (100, H // 4, 192 // 4) and scores.shape == (100,)


def test_runtime_needs_no_torch_or_detectron2(exported, synthetic_root, tmp_path):
    """The runtime CLI in a process where torch and detectron2 cannot be imported."""
    _, out, _ = exported
    video = os.path.join(synthetic_root, "synthetic_ytvis", "val", "JPEGImages")
    video = os.path.join(video, sorted(os.listdir(video))[0])
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(IMPORT_BLOCKER)
    env = dict(os.environ, PYTHONPATH=f"{blocker}:{os.path.join(ROOT, 'projects', 'MobileInst')}")
    proc = subprocess.run([sys.executable, "-m", "mobileinst_runtime", "--model-dir", str(out), "--input", video,
                           "--output", str(tmp_path / "rt")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(tmp_path / "rt" / "results.json"))
    assert isinstance(res, list)
    for t in res:
        assert len(t["segmentations"]) == 8 and 1 <= t["category_id"] <= 5
    assert (tmp_path / "rt" / "tracks.mp4").stat().st_size > 0


def test_runtime_tracks_match_the_pytorch_tracker(exported, synthetic_root):
    """Same frames, same weights: same slots, classes and (IoU >= 0.99) masks per
    frame, with the mask-overlap association (every query confident)."""
    from detectron2.data.detection_utils import read_image

    from mobileinst.video import VideoTracker
    from mobileinst.utils.fuse import fuse_conv_bn
    from mobileinst_runtime.segmenter import VideoSegmenter

    cfg, out, _ = exported
    cfg = cfg.clone()
    cfg.MODEL.META_ARCHITECTURE = "MobileInstVideo"  # the same weights: its tracker settings are the export's
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model = fuse_conv_bn(model)
    video = os.path.join(synthetic_root, "synthetic_ytvis", "val", "JPEGImages")
    video = os.path.join(video, sorted(os.listdir(video))[0])
    files = [os.path.join(video, f) for f in sorted(os.listdir(video))]
    frames = [read_image(f, format="BGR") for f in files]
    ort_seg = VideoSegmenter(str(out), reuse_interval=3, keep_results=False)
    ort_seg.track_score_threshold = 0.0
    ort_seg.association_kwargs.update(mask_weight=10.0, score_threshold=0.0, min_iou=0.0)
    tracker = VideoTracker.from_model(model, reuse_interval=3, keep_results=False, track_score_threshold=0.0,
                                      association_mask_weight=10.0, association_score_threshold=0.0,
                                      association_min_iou=0.0)
    for frame in frames:
        import cv2

        resized = cv2.resize(frame, (W, H), interpolation=cv2.INTER_LINEAR)  # the graph's input size
        a = ort_seg.step(resized)
        with torch.no_grad():
            b = tracker.step(torch.as_tensor(resized[:, :, ::-1].copy()).permute(2, 0, 1))
        np.testing.assert_array_equal(a["track_ids"], b.track_ids.numpy())
        np.testing.assert_array_equal(a["classes"], b.pred_classes.numpy())
        for m1, m2 in zip(a["masks"], b.pred_masks.numpy()):
            union = (m1 | m2).sum()
            assert union == 0 or (m1 & m2).sum() / union >= 0.99


def test_runtime_with_smaller_non_keyframes_matches_the_pytorch_tracker(tmp_path, synthetic_root):
    """VIDEO.NONKEY_SCALE 0.75: the non-keyframe graph takes the 96x120 frame; the
    runtime's masks and slots match the PyTorch tracker on every frame."""
    import cv2

    from mobileinst.export import export
    from mobileinst.utils.fuse import fuse_conv_bn
    from mobileinst.video import VideoTracker
    from mobileinst_runtime.segmenter import VideoSegmenter

    torch.manual_seed(0)
    cfg = small_cfg("MODEL.MOBILEINST.VIDEO.NONKEY_SCALE", "0.75", "MODEL.META_ARCHITECTURE", "MobileInstVideo")
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, str(tmp_path)).save("weights")
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(tmp_path / "weights.pth")
    report = export(cfg, str(tmp_path / "g"), H, W, graphs=("keyframe", "mask_head", "nonkeyframe"),
                    torchscript=False)
    assert report["parity"]["nonkeyframe"]["mask_probs"] < 1e-3
    meta = json.load(open(tmp_path / "g" / "export_meta.json"))
    assert meta["video"]["nonkey_input_size"] == [96, 120] and meta["video"]["nonkey_padded_size"] == [128, 128]
    ort_seg = VideoSegmenter(str(tmp_path / "g"), reuse_interval=3, keep_results=False)
    ort_seg.track_score_threshold = 0.0
    tracker = VideoTracker.from_model(fuse_conv_bn(model), reuse_interval=3, keep_results=False,
                                      track_score_threshold=0.0)
    assert tracker.nonkey_scale == 0.75
    video = os.path.join(synthetic_root, "synthetic_ytvis", "val", "JPEGImages")
    video = os.path.join(video, sorted(os.listdir(video))[0])
    for name in sorted(os.listdir(video))[:4]:
        frame = cv2.resize(cv2.imread(os.path.join(video, name)), (W, H), interpolation=cv2.INTER_LINEAR)
        a = ort_seg.step(frame)
        with torch.no_grad():
            b = tracker.step(torch.as_tensor(frame[:, :, ::-1].copy()).permute(2, 0, 1))
        np.testing.assert_array_equal(a["track_ids"], b.track_ids.numpy())
        assert a["masks"].shape[1:] == (H, W)
        for m1, m2 in zip(a["masks"], b.pred_masks.numpy()):
            union = (m1 | m2).sum()
            assert union == 0 or (m1 & m2).sum() / union >= 0.99


def test_export_with_the_papers_grid_and_local_pooling(tmp_path):
    """The COCO configs' X_mask at 1/8 with logits upsampled 2x, and LOCAL_POOL_STRIDE 64
    (X_L at the size of X6, a fixed-window pool), export and match PyTorch."""
    import onnxruntime as ort

    from mobileinst.export import export

    cfg = small_cfg("MODEL.MOBILEINST.INSTANCE_DECODER.LOCAL_POOL_STRIDE", "64", "MODEL.TOPFORMER.NORM", "BN",
                    "MODEL.MOBILEINST.MASK_DECODER.NORM", "BN", "MODEL.MOBILEINST.MASK_DECODER.NAME", "SemanticEnhancedMaskDecoder")
    report = export(cfg, str(tmp_path), 128, 192, graphs=("image", "keyframe"), torchscript=False)
    assert report["parity"]["keyframe"]["kernels"] < 1e-3
    assert report["parity"]["image"]["mask_probs"] < 1e-3
    key = ort.InferenceSession(str(tmp_path / "keyframe.onnx"), providers=["CPUExecutionProvider"])
    image = ort.InferenceSession(str(tmp_path / "image.onnx"), providers=["CPUExecutionProvider"])
    img = np.zeros((1, 3, 128, 192), np.uint8)
    assert key.run(None, {"image": img})[4].shape == (1, 64, 128 // 8, 192 // 8)
    assert image.run(None, {"image": img})[2].shape[1:] == (128 // 4, 192 // 4)


def test_export_with_matrix_nms(tmp_path):
    """INFERENCE.NMS_SIGMA is inside the image graph and matches PyTorch."""
    from mobileinst.export import export

    torch.manual_seed(0)
    cfg = small_cfg("MODEL.MOBILEINST.INFERENCE.NMS_SIGMA", "2.0")
    report = export(cfg, str(tmp_path), 128, 160, graphs=("image", "keyframe"), torchscript=False)
    assert report["parity"]["image"]["scores"] < 1e-3 and report["parity"]["image"]["mask_probs"] < 1e-3
    assert report["parity"]["keyframe"]["scores"] < 1e-3 and report["parity"]["keyframe"]["class_scores"] < 1e-3


def test_export_with_a_seaformer_backbone(tmp_path):
    """The SeaFormer backbone (squeeze-axial attention, position tables resampled to the
    input's rows and columns) exports and matches PyTorch. Its DROP_PATH_RATE 0.1 also
    checks that exporting leaves the model in eval mode (drop path off) for the parity
    check that follows."""
    from mobileinst.export import export

    torch.manual_seed(0)
    cfg = small_cfg("MODEL.BACKBONE.NAME", "build_seaformer_backbone", "MODEL.SEAFORMER.VARIANT", "tiny")
    report = export(cfg, str(tmp_path), 128, 160, graphs=("image", "keyframe"), torchscript=False)
    assert report["parity"]["image"]["scores"] < 1e-3 and report["parity"]["image"]["mask_probs"] < 1e-3
    assert report["parity"]["keyframe"]["kernels"] < 1e-3
