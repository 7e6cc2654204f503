"""Runtime backends (onnxruntime, OpenVINO, ncnn) on the exported graphs, against
onnxruntime and PyTorch; the ncnn export through pnnx. Each backend's tests skip
where its package is not installed."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import ROOT
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from test_export import H, W, exported  # noqa: F401: the module's export fixture (random weights, int8 too)

GRAPH_NAMES = ("image", "keyframe", "mask_head", "nonkeyframe")


def _fused_model(cfg):
    from mobileinst.utils.fuse import fuse_conv_bn

    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return fuse_conv_bn(model)


@pytest.fixture(scope="module")
def ncnn_exported(exported):  # noqa: F811
    pytest.importorskip("ncnn")
    pytest.importorskip("pnnx")
    from mobileinst.export_ncnn import export_ncnn

    cfg, out, _ = exported
    report = export_ncnn(str(out), _fused_model(cfg))
    return cfg, out, report


def _backend_dir(backend, request):
    """The export folder, with the ncnn graphs for the ncnn backend."""
    pytest.importorskip(backend)
    if backend == "ncnn":
        return request.getfixturevalue("ncnn_exported")[1]
    return request.getfixturevalue("exported")[1]


def _iou(a, b):
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


def _distinct(scores, eps=1e-5):
    """Rows whose score is apart from its neighbours by more than float noise (ties may swap)."""
    gaps = np.minimum(np.abs(np.diff(scores, prepend=np.inf)), np.abs(np.diff(scores, append=-np.inf)))
    return gaps > eps


def test_ncnn_export_splits_what_ncnn_cannot_run(ncnn_exported, tmp_path):
    """image / keyframe / nonkeyframe do not convert whole (the ranking, Matrix NMS, the
    uint8 cast, the batch index); mask_head does, and runs, but is rebuilt with a MatMul
    when the model is given."""
    import shutil

    from mobileinst.export_ncnn import export_ncnn
    from mobileinst_runtime.backends import open_graph

    _, out, report = ncnn_exported
    assert not any(r["converted_whole"] for r in report.values())
    assert report["mask_head"]["blocked_by"] == []
    assert {"torch.topk", "aten::sort"} <= set(report["image"]["blocked_by"])
    assert {"aten::sort", "aten::scatter"} <= set(report["keyframe"]["blocked_by"])
    assert {"Tensor.to", "torch.unbind"} <= set(report["nonkeyframe"]["blocked_by"])
    for name in GRAPH_NAMES:
        for ext in ("param", "bin", "json"):
            assert (out / f"{name}.ncnn.{ext}").exists()
    assert not any(".tmp" in n for n in os.listdir(out))
    # without the model: mask_head whole from its .ts; the others need the model
    for f in ("export_meta.json", "mask_head.ts", "mask_head.onnx", "image.ts", "image.onnx"):
        shutil.copy(out / f, tmp_path / f)
    whole = export_ncnn(str(tmp_path), None, ("mask_head",))
    assert whole["mask_head"]["converted_whole"]
    rng = np.random.RandomState(0)
    feeds = {"mask_features": rng.randn(1, 64, H // 4, 192 // 4).astype(np.float32)}
    for k in (1, 7):
        feeds["kernels"] = rng.randn(k, 64).astype(np.float32)
        (a,), (b,), (c,) = (open_graph(d, "mask_head", be, 1).run(None, feeds)
                            for d, be in ((str(out), "onnxruntime"), (str(tmp_path), "ncnn"), (str(out), "ncnn")))
        np.testing.assert_allclose(b, a, atol=1e-5)
        np.testing.assert_allclose(c, a, atol=1e-5)
    with pytest.raises(ValueError, match="torch.topk"):
        export_ncnn(str(tmp_path), None, ("image",))
    assert not (tmp_path / "image.ncnn.param").exists()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "ncnn"])
def test_backend_graphs_match_onnxruntime(backend, request):
    """Every graph, fp32: float outputs within 1e-3 of onnxruntime, same classes,
    masks (probabilities > MASK_THRESHOLD on the mask grid) IoU >= 0.99; the mask
    graphs for any number of kernels."""
    from mobileinst_runtime.backends import open_graph

    out = str(_backend_dir(backend, request))
    ref = {n: open_graph(out, n, "onnxruntime", 1) for n in GRAPH_NAMES}
    got = {n: open_graph(out, n, backend, 1) for n in GRAPH_NAMES}
    assert [i.name for i in got["nonkeyframe"].inputs] == ["image", "kernels"]
    assert got["image"].input_dtype("image") == np.uint8 and got["image"].output_names == ref["image"].output_names
    img = np.random.RandomState(1).randint(0, 255, (1, 3, H, W)).astype(np.uint8)
    a, b = ref["keyframe"]({"image": img}), got["keyframe"]({"image": img})
    assert list(b) == ["kernels", "scores", "classes", "class_scores", "mask_features"]
    for k in ("kernels", "scores", "class_scores", "mask_features"):
        assert b[k].shape == a[k].shape and b[k].dtype == np.float32
        np.testing.assert_allclose(b[k], a[k], atol=1e-3)
    np.testing.assert_array_equal(b["classes"], a["classes"])
    for k in (1, 7, 20):
        feeds = {"mask_features": a["mask_features"], "kernels": a["kernels"][:k], "image": img}
        for name in ("mask_head", "nonkeyframe"):
            (m_ref,), (m,) = ref[name].run(None, feeds), got[name].run(None, feeds)
            assert m.shape == m_ref.shape == (k, H // 4, 192 // 4)
            np.testing.assert_allclose(m, m_ref, atol=1e-3)
    a, b = ref["image"]({"image": img}), got["image"]({"image": img})
    np.testing.assert_allclose(b["scores"], a["scores"], atol=1e-3)
    distinct = _distinct(a["scores"])
    assert distinct.sum() >= 3
    np.testing.assert_array_equal(b["classes"][distinct], a["classes"][distinct])
    assert b["classes"].dtype == np.int64
    thr = 0.45
    for m, r in zip(b["mask_probs"][distinct] > thr, a["mask_probs"][distinct] > thr):
        assert _iou(m, r) >= 0.99


@pytest.mark.parametrize("backend", ["openvino", "ncnn"])
def test_backend_image_graph_matches_pytorch_instances(backend, request):
    """Per instance against the PyTorch image model: score within 1e-3, same class,
    mask IoU >= 0.99 (rows with a distinct score)."""
    from mobileinst.export import ImageModel
    from mobileinst_runtime.backends import open_graph

    out = _backend_dir(backend, request)
    cfg = request.getfixturevalue("exported")[0]
    model = _fused_model(cfg)
    img = torch.randint(0, 255, (1, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref_scores, ref_classes, ref_probs = (t.numpy() for t in ImageModel(model, H, W)(img))
    got = open_graph(str(out), "image", backend, 1)({"image": img.numpy()})
    np.testing.assert_allclose(got["scores"], ref_scores, atol=1e-3)
    distinct = _distinct(ref_scores)
    np.testing.assert_array_equal(got["classes"][distinct], ref_classes[distinct])
    thr = cfg.MODEL.MOBILEINST.INFERENCE.MASK_THRESHOLD
    for m, r in zip(got["mask_probs"][distinct] > thr, ref_probs[distinct] > thr):
        assert _iou(m, r) >= 0.99


@pytest.mark.parametrize("backend", ["openvino", "ncnn"])
def test_video_segmenter_on_a_backend_tracks_as_onnxruntime(backend, request, synthetic_root):
    """The runtime's tracker with its graphs swapped for the backend's (same call form
    as onnxruntime's sessions): same slots and classes, masks IoU >= 0.99 per frame."""
    import cv2

    from mobileinst_runtime.backends import open_graph
    from mobileinst_runtime.ort_model import OrtVideoSegmenter

    out = str(_backend_dir(backend, request))
    segs = []
    for be in ("onnxruntime", backend):
        seg = OrtVideoSegmenter(out, threads=1, reuse_interval=3, keep_results=False)
        for name in ("keyframe", "nonkeyframe", "mask_head"):
            setattr(seg, name, open_graph(out, name, be, 1))
        seg.track_score_threshold = 0.0
        segs.append(seg)
    video = os.path.join(synthetic_root, "synthetic_ytvis", "val", "JPEGImages")
    video = os.path.join(video, sorted(os.listdir(video))[0])
    for name in sorted(os.listdir(video)):
        frame = cv2.resize(cv2.imread(os.path.join(video, name)), (W, H), interpolation=cv2.INTER_LINEAR)
        a, b = (s.step(frame) for s in segs)
        np.testing.assert_array_equal(b["track_ids"], a["track_ids"])
        np.testing.assert_array_equal(b["classes"], a["classes"])
        for m1, m2 in zip(a["masks"], b["masks"]):
            assert _iou(m1, m2) >= 0.99


def test_openvino_runs_the_int8_graphs(exported):  # noqa: F811
    """The *_int8.onnx (QDQ) graphs run on OpenVINO: a smoke check, not a parity one."""
    pytest.importorskip("openvino")
    from mobileinst_runtime.backends import open_graph

    _, out, _ = exported
    img = np.random.RandomState(2).randint(0, 255, (1, 3, H, W)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the LPT fallback's warning (see backends.OpenVinoBackend.open)
        ov_key = open_graph(str(out), "keyframe_int8", "openvino", 1)
    a = open_graph(str(out), "keyframe_int8", "onnxruntime", 1)({"image": img})
    b = ov_key({"image": img})
    assert b["kernels"].shape == a["kernels"].shape
    # two int8 implementations (OpenVINO may fall back to fake quantization) round apart,
    # and Matrix NMS's decay amplifies that on duplicates: close on average, not per element
    assert np.abs(b["scores"] - a["scores"]).mean() < 0.03
    feeds = {"mask_features": a["mask_features"], "kernels": a["kernels"][:5]}
    (m_ref,), (m,) = (open_graph(str(out), "mask_head_int8", be, 1).run(None, feeds)
                      for be in ("onnxruntime", "openvino"))
    assert m.shape == m_ref.shape and np.abs(m - m_ref).max() < 0.05


def test_ranking_matches_pytorch_postprocess():
    """mobileinst_runtime.ranking (numpy) against mobileinst.postprocess / the export wrappers."""
    from mobileinst.postprocess import class_scores, decay_duplicates, rescore_by_masks, score_queries
    from mobileinst_runtime import ranking

    g = torch.Generator().manual_seed(0)
    logits, obj = torch.randn(20, 5, generator=g), torch.randn(20, generator=g)
    mask_logits = torch.randn(20, 16, 24, generator=g) * 3
    mask_logits[5] = mask_logits[3] + 0.01  # a duplicate for Matrix NMS
    thr, sigma = 0.45, 2.0
    probs = mask_logits.sigmoid()
    # multi-class ranking with Matrix NMS, as ImageModel
    pair = rescore_by_masks(class_scores(logits, obj).t(), probs, thr).t()
    scores, flat = pair.flatten().topk(30)
    idx, classes = flat // 5, flat % 5
    scores, order = decay_duplicates(scores, classes, probs[idx], thr, sigma)
    s, c, p = ranking.rank_image(logits[None].numpy(), obj[None].numpy(), mask_logits[None].numpy(), thr, 30, True,
                                 sigma)
    np.testing.assert_allclose(s, scores.numpy(), atol=1e-5)
    d = _distinct(scores.numpy())
    np.testing.assert_array_equal(c[d], classes[order].numpy()[d])
    np.testing.assert_allclose(p[d], probs[idx][order].numpy()[d], atol=1e-6)
    # single-class ranking
    sc, cl = score_queries(logits, obj)
    sc = rescore_by_masks(sc, probs, thr)
    top, i = sc.topk(10)
    s, c, _ = ranking.rank_image(logits.numpy(), obj.numpy(), mask_logits.numpy(), thr, 10, False, 0.0)
    np.testing.assert_allclose(s, top.numpy(), atol=1e-5)
    np.testing.assert_array_equal(c, cl[i].numpy())
    # keyframe scores with the Matrix NMS decay, as MobileInst.keyframe_scores

    class _M:
        nms_sigma, mask_threshold = sigma, thr

        @staticmethod
        def mask_logits(k, x):
            return mask_logits[None]

    from mobileinst.mobileinst import MobileInst

    out = {"pred_logits": logits[None], "pred_objectness": obj[None], "pred_kernels": torch.zeros(1, 20, 4)}
    ref = MobileInst.keyframe_scores(_M(), out, torch.zeros(1, 4, 16, 24))
    got = ranking.keyframe_scores(logits.numpy(), obj.numpy(), mask_logits.numpy(), thr, sigma)
    for r, x in zip(ref, got):
        np.testing.assert_allclose(x, r.numpy(), atol=1e-5)


def test_missing_backend_package_names_the_extra(monkeypatch):
    from mobileinst_runtime.backends import get_backend

    for name, package in (("ncnn", "ncnn"), ("openvino", "openvino")):
        monkeypatch.setitem(sys.modules, package, None)  # import fails
        with pytest.raises(ImportError, match=f"pip install {package}"):
            get_backend(name).load()
        assert not get_backend(name).available()
    with pytest.raises(ValueError, match="Unknown backend"):
        get_backend("tflite")


def test_ncnn_has_no_int8_graphs(tmp_path):
    pytest.importorskip("ncnn")
    from mobileinst_runtime.backends import open_graph

    with pytest.raises(ValueError, match="no int8"):
        open_graph(str(tmp_path), "image_int8", "ncnn")
    with pytest.raises(FileNotFoundError, match="export_ncnn"):
        open_graph(str(tmp_path), "image", "ncnn")


def test_backends_import_no_torch():
    code = ("import sys; import mobileinst_runtime.backends, mobileinst_runtime.ranking; "
            "assert 'torch' not in sys.modules and 'detectron2' not in sys.modules, sorted(sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "projects", "MobileInst"),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
