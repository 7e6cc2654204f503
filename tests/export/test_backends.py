"""Runtime backends (onnxruntime, OpenVINO, ncnn) on the exported graphs: each graph
against PyTorch, the runtime's video AP against PyTorch's, the ncnn export
(tools/export.py --ncnn), the numpy ranking of the split ncnn graphs against the
torch one. A backend's tests skip where its package is not installed; the shared
export (``exported``, tests/conftest.py) is the tiny model of test_export.py."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import EXPORT_H, EXPORT_W, IMPORT_BLOCKER, ROOT, small_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

H, W = EXPORT_H, EXPORT_W
GRAPH_NAMES = ("image", "keyframe", "mask_head", "nonkeyframe")
PKG = os.path.join(ROOT, "projects", "MobileInst")


def _fused_model(cfg):
    from mobileinst.utils.fuse import fuse_conv_bn

    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return fuse_conv_bn(model)


@pytest.fixture(scope="module")
def fused_model(exported):
    return _fused_model(exported[0])


@pytest.fixture(scope="module")
def ncnn_exported(exported):
    """The shared export with its ncnn graphs (the fixture runs tools/export.py --ncnn
    where ncnn and pnnx are installed)."""
    pytest.importorskip("ncnn")
    pytest.importorskip("pnnx")
    cfg, out, report = exported
    assert "ncnn" in report, "tools/export.py --ncnn did not run though ncnn and pnnx are installed"
    return cfg, out, report


def _backend_dir(backend, request):
    """The export folder (skips the test where ``backend``'s package is not installed)."""
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


# ------------------------------------------------------------------------------ the ncnn export
def test_export_ncnn_writes_every_graph_after_the_onnx_ones(ncnn_exported, fused_model, tmp_path):
    """tools/export.py --ncnn: the four graphs as ncnn files, split (network in ncnn, the
    image / keyframe ranking in numpy with export_meta.json's settings, none in the
    json); written atomically. Without the model mask_head converts whole, from its .ts
    (``export_ncnn(folder, None)``); the other graphs need the model
    (mobileinst.export.ncnn's docstring lists what ncnn lacks for them)."""
    import shutil

    from mobileinst.export.ncnn import check_ranking_settings, export_ncnn
    from mobileinst_core.export_meta import read_export_meta
    from mobileinst_runtime.backends import open_graph

    cfg, out, report = ncnn_exported
    assert sorted(report["ncnn"]) == sorted(GRAPH_NAMES)
    for name in GRAPH_NAMES:
        for ext in ("param", "bin", "json"):
            assert (out / f"{name}.ncnn.{ext}").exists()
        spec = json.load(open(out / f"{name}.ncnn.json"))
        assert not spec["converted_whole"]
        assert spec["post"] == {"kind": name if name in ("image", "keyframe") else "drop_batch"}
    assert not any(".tmp" in n for n in os.listdir(out))
    meta = read_export_meta(str(out))
    inf = cfg.MODEL.MOBILEINST.INFERENCE
    assert (meta.max_detections, meta.multi_class, meta.nms_sigma) == (inf.MAX_DETECTIONS, inf.MULTI_CLASS,
                                                                       inf.NMS_SIGMA)
    with pytest.raises(ValueError, match="field 'nms_sigma' is 2.0 but the model's is 0.5"):
        fused_model.nms_sigma = 0.5
        try:
            check_ranking_settings(fused_model, meta, "export_meta.json")
        finally:
            fused_model.nms_sigma = inf.NMS_SIGMA
    # without the model: mask_head converts whole from its .ts
    for f in ("export_meta.json", "mask_head.ts", "mask_head.onnx"):
        shutil.copy(out / f, tmp_path / f)
    whole = export_ncnn(str(tmp_path), None, ("mask_head",))
    assert whole["mask_head"]["converted_whole"] and whole["mask_head"]["blocked_by"] == []
    rng = np.random.RandomState(0)
    feeds = {"mask_features": rng.randn(1, 64, 128 // 4, 192 // 4).astype(np.float32),
             "kernels": rng.randn(7, 64).astype(np.float32)}
    (a,), (b,), (c,) = (open_graph(d, "mask_head", be, 1).run(None, feeds)
                        for d, be in ((str(out), "onnxruntime"), (str(tmp_path), "ncnn"), (str(out), "ncnn")))
    np.testing.assert_allclose(b, a, atol=1e-5)
    np.testing.assert_allclose(c, a, atol=1e-5)
    with pytest.raises(ValueError, match="needs the PyTorch model"):
        export_ncnn(str(tmp_path), None, ("image",), try_whole=False)
    assert not (tmp_path / "image.ncnn.param").exists()


# ------------------------------------------------------------------------------ graph parity
@pytest.mark.parametrize("backend", ["openvino", "ncnn"])
def test_backend_graphs_match_pytorch(backend, request, fused_model):
    """Each fp32 graph on the backend against its PyTorch module (mobileinst.export.graphs), as
    tools/export.py checks the ONNX graphs: float outputs within 1e-3, same classes,
    image masks (probabilities > MASK_THRESHOLD) IoU >= 0.99 per instance with scores
    within 1e-3 (rows with a distinct score); the mask graphs for any number of kernels."""
    from mobileinst.export import build_graph_modules
    from mobileinst_runtime.backends import open_graph

    out = str(_backend_dir(backend, request))
    modules = build_graph_modules(fused_model, H, W)
    got = {n: open_graph(out, n, backend, 1) for n in GRAPH_NAMES}
    assert [i.name for i in got["nonkeyframe"].inputs] == ["image", "kernels"]
    assert got["image"].input_dtype("image") == np.uint8
    assert got["image"].output_names == ["scores", "classes", "mask_probs"]
    img = torch.randint(0, 255, (1, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = dict(zip(modules["keyframe"][3], (t.numpy() for t in modules["keyframe"][0](img))))
    b = got["keyframe"]({"image": img.numpy()})
    assert list(b) == ["kernels", "scores", "classes", "class_scores", "mask_features"]
    for k in ("kernels", "scores", "class_scores", "mask_features"):
        assert b[k].shape == ref[k].shape and b[k].dtype == np.float32
        np.testing.assert_allclose(b[k], ref[k], atol=1e-3)
    np.testing.assert_array_equal(b["classes"], ref["classes"])
    x_mask = torch.from_numpy(ref["mask_features"])
    for k in (1, 7, 20):
        kernels = torch.from_numpy(ref["kernels"][:k])
        feeds = {"mask_features": x_mask.numpy(), "kernels": kernels.numpy(), "image": img.numpy()}
        for name, inputs in (("mask_head", (x_mask, kernels)), ("nonkeyframe", (img, kernels))):
            with torch.no_grad():
                m_ref = modules[name][0](*inputs).numpy()
            (m,) = got[name].run(None, feeds)
            assert m.shape == m_ref.shape == (k, H // 4, 192 // 4)
            np.testing.assert_allclose(m, m_ref, atol=1e-3)
    with torch.no_grad():
        ref_scores, ref_classes, ref_probs = (t.numpy() for t in modules["image"][0](img))
    a = got["image"]({"image": img.numpy()})
    assert a["classes"].dtype == np.int64 and a["mask_probs"].shape == ref_probs.shape
    np.testing.assert_allclose(a["scores"], ref_scores, atol=1e-3)
    distinct = _distinct(ref_scores)
    assert distinct.sum() >= 3
    np.testing.assert_array_equal(a["classes"][distinct], ref_classes[distinct])
    thr = fused_model.mask_threshold
    for m, r in zip(a["mask_probs"][distinct] > thr, ref_probs[distinct] > thr):
        assert _iou(m, r) >= 0.99


def test_openvino_runs_nncfs_int8_graphs_as_int8(exported):
    """tools/export.py --quantize writes NNCF's int8 IR for every graph; OpenVINO opens it
    (not onnxruntime's QDQ graph), runs most convolutions and matrix products in int8, and
    its keyframe outputs stay close to the fp32 graph's."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from mobileinst_runtime.backends import open_graph

    _, out, report = exported
    for name in GRAPH_NAMES:
        assert report["int8_openvino"][name] == str(out / f"{name}_int8.xml")
        assert (out / f"{name}_int8.bin").stat().st_size > 0
    assert not list(out.glob("*.tmp*")), "a temporary IR was left behind"
    fp32 = open_graph(str(out), "keyframe", "openvino", 1)
    int8 = open_graph(str(out), "keyframe_int8", "openvino", 1)
    assert fp32.int8_share() == 0.0
    assert not int8.int8_emulated and int8.int8_share() >= 0.5, int8.int8_share()
    img = np.random.RandomState(2).randint(0, 255, (1, 3, H, W)).astype(np.uint8)
    a, b = fp32({"image": img}), int8({"image": img})
    assert b["kernels"].shape == a["kernels"].shape
    assert np.abs(b["scores"] - a["scores"]).mean() < 0.03
    # random weights leave wide activation ranges to int8: X_mask follows fp32's, not to the digit
    corr = np.corrcoef(a["mask_features"].ravel(), b["mask_features"].ravel())[0, 1]
    assert corr > 0.9, corr


def test_openvino_runs_onnxruntimes_int8_graphs_without_an_ir(exported, tmp_path):
    """Without NNCF's IR (nncf not installed at export), OpenVINO runs the *_int8.onnx
    (QDQ) graphs: a smoke check against onnxruntime, not a parity one."""
    pytest.importorskip("openvino")
    import shutil

    from mobileinst_runtime.backends import open_graph

    _, out, _ = exported
    for name in ("keyframe_int8.onnx", "mask_head_int8.onnx"):
        shutil.copy(out / name, tmp_path / name)
    img = np.random.RandomState(2).randint(0, 255, (1, 3, H, W)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the LPT fallback's warning (see backends.OpenVinoBackend.open)
        ov_key = open_graph(str(tmp_path), "keyframe_int8", "openvino", 1)
    a = open_graph(str(out), "keyframe_int8", "onnxruntime", 1)({"image": img})
    b = ov_key({"image": img})
    assert b["kernels"].shape == a["kernels"].shape
    # two int8 implementations (OpenVINO may fall back to fake quantization) round apart,
    # and Matrix NMS's decay amplifies that on duplicates: close on average, not per element
    assert np.abs(b["scores"] - a["scores"]).mean() < 0.03
    feeds = {"mask_features": a["mask_features"], "kernels": a["kernels"][:5]}
    (m_ref,), (m,) = (open_graph(d, "mask_head_int8", be, 1).run(None, feeds)
                      for d, be in ((str(out), "onnxruntime"), (str(tmp_path), "openvino")))
    assert m.shape == m_ref.shape and np.abs(m - m_ref).max() < 0.05


def test_openvino_ir_without_its_weights_is_refused(exported, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from mobileinst_runtime.backends import open_graph

    _, out, _ = exported
    (tmp_path / "image_int8.xml").write_bytes((out / "image_int8.xml").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"image_int8\.bin"):
        open_graph(str(tmp_path), "image_int8", "openvino", 1)


# ------------------------------------------------------------------------------ the tracker and video AP
@pytest.mark.parametrize("backend", ["openvino", "ncnn"])
def test_video_segmenter_on_a_backend_tracks_as_onnxruntime(backend, request, synthetic_root):
    """VideoSegmenter(backend=...): same slots and classes as on onnxruntime, masks IoU
    >= 0.99 per frame (every query tracked)."""
    import cv2

    from mobileinst_runtime.segmenter import VideoSegmenter

    out = str(_backend_dir(backend, request))
    segs = []
    for be in ("onnxruntime", backend):
        seg = VideoSegmenter(out, threads=1, reuse_interval=3, keep_results=False, backend=be)
        seg.track_score_threshold = 0.0
        segs.append(seg)
    assert segs[1].backend == backend and segs[1].keyframe.backend == backend
    video = os.path.join(synthetic_root, "synthetic_ytvis", "val", "JPEGImages")
    video = os.path.join(video, sorted(os.listdir(video))[0])
    for name in sorted(os.listdir(video)):
        frame = cv2.resize(cv2.imread(os.path.join(video, name)), (W, H), interpolation=cv2.INTER_LINEAR)
        a, b = (s.step(frame) for s in segs)
        np.testing.assert_array_equal(b["track_ids"], a["track_ids"])
        np.testing.assert_array_equal(b["classes"], a["classes"])
        for m1, m2 in zip(a["masks"], b["masks"]):
            assert _iou(m1, m2) >= 0.99


@pytest.fixture(scope="module")
def video_ap_setup(exported, tmp_path_factory):
    """Synthetic YouTube-VIS val videos at the export's input size (so that PyTorch and the
    runtime see the same padded input) and the PyTorch video path's results on them,
    with the ground truth and, as a second ground truth, PyTorch's own tracks."""
    from detectron2.data import MetadataCatalog

    from mobileinst.data.datasets.ytvis import _get_ytvis_metadata, register_ytvis_instances
    from mobileinst.data.synthetic import SYNTHETIC_CATEGORIES, generate_ytvis

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import eval_runtime

    cfg, out, _ = exported
    root = tmp_path_factory.mktemp("ytvis_export_size")
    json_file = generate_ytvis(str(root), "val", 3, 8, (H, W), seed=11)
    name = "test_backends_ytvis_val"
    register_ytvis_instances(name, _get_ytvis_metadata(SYNTHETIC_CATEGORIES), json_file,
                             str(root / "val" / "JPEGImages"))
    # the PyTorch path at the export's size: frames stay H x W (no resize), padded as the graphs pad
    cfg = small_cfg("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS, "DATASETS.TEST", f"('{name}',)",
                    "INPUT.MIN_SIZE_TEST", str(H), "INPUT.MAX_SIZE_TEST", str(W),
                    "MODEL.META_ARCHITECTURE", "MobileInstVideo")
    torch_results = eval_runtime.pytorch_results(cfg, name)
    gt = json.load(open(MetadataCatalog.get(name).json_file))
    # PyTorch's tracks as the ground truth: a runtime that tracks alike scores its AP
    own = [dict(t, id=i + 1, iscrowd=0) for i, t in enumerate(torch_results)
           if any(s is not None for s in t["segmentations"])]
    assert own, "the PyTorch path gave no track"
    return name, str(out), torch_results, {"ground truth": gt, "PyTorch's tracks": dict(gt, annotations=own)}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "ncnn"])
def test_runtime_video_ap_is_pytorchs(backend, request, video_ap_setup):
    """The synthetic video AP through the runtime on ``backend`` (tools/eval_runtime.py's
    runtime_results) within 0.5 of the PyTorch video path's: against the ground truth,
    and against PyTorch's own tracks (random weights score near 0 against the ground
    truth; against PyTorch's tracks a runtime that tracks otherwise loses AP)."""
    pytest.importorskip(backend)
    import eval_runtime

    from mobileinst.evaluation.ytvis_metric import evaluate_ytvis

    if backend == "ncnn":
        request.getfixturevalue("ncnn_exported")
    name, model_dir, torch_results, gts = video_ap_setup
    results = eval_runtime.runtime_results(model_dir, name, threads=1, backend=backend)
    assert len(results) == len(torch_results)
    for what, gt in gts.items():
        ref = evaluate_ytvis(gt, torch_results, return_per_category=False)["AP"]
        ap = evaluate_ytvis(gt, results, return_per_category=False)["AP"]
        assert abs(ap - ref) <= 0.5, (what, ap, ref)
        if what == "PyTorch's tracks":
            assert ref >= 90, ref  # the check can fail: PyTorch's tracks score high against themselves


@pytest.mark.parametrize("backend", ["openvino", "ncnn"])
def test_runtime_cli_on_a_backend_needs_no_torch(backend, request, synthetic_root, tmp_path):
    """python -m mobileinst_runtime --backend ... where torch, detectron2 and mobileinst
    cannot be imported."""
    out = _backend_dir(backend, request)
    video = os.path.join(synthetic_root, "synthetic_ytvis", "val", "JPEGImages")
    video = os.path.join(video, sorted(os.listdir(video))[0])
    (tmp_path / "sitecustomize.py").write_text(IMPORT_BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), PKG, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "mobileinst_runtime", "--model-dir", str(out), "--input", video,
                           "--output", str(tmp_path / "rt"), "--backend", backend, "--threads", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(tmp_path / "rt" / "results.json"))
    assert isinstance(res, list) and all(len(t["segmentations"]) == 8 for t in res)


# ------------------------------------------------------------------------------ ranking, errors
@pytest.mark.parametrize("seed", range(4))
def test_numpy_ranking_matches_the_torch_ranking(seed):
    """mobileinst_runtime.ranking (the split ncnn graphs' tails) against
    mobileinst.postprocess.rank_detections and mobileinst.video.keyframe_scores on random
    logits and masks with duplicates, for MULTI_CLASS on and off, with and without
    Matrix NMS: same scores (1e-5), and same queries and classes where the scores are
    apart from their neighbours; kept > a score threshold (the runtime's CLS_THRESHOLD),
    the same as the PyTorch ranking with that threshold."""
    from mobileinst.postprocess import rank_detections
    from mobileinst.video import keyframe_scores
    from mobileinst_runtime import ranking

    g = torch.Generator().manual_seed(seed)
    n, c = 20, 5
    logits, obj = torch.randn(n, c, generator=g) * 2, torch.randn(n, generator=g) * 2
    mask_logits = torch.randn(n, 16, 24, generator=g) * 3
    mask_logits[5] = mask_logits[3] + 0.05 * torch.randn(16, 24, generator=g)  # duplicates for Matrix NMS
    mask_logits[9] = mask_logits[3] + 0.05 * torch.randn(16, 24, generator=g)
    logits[5], logits[9] = logits[3] + 0.1, logits[3] - 0.1
    probs = mask_logits.sigmoid()
    thr = 0.45
    for multi_class in (False, True):
        for sigma in (0.0, 2.0):
            for k in (10, 100):
                ref = [t.numpy() for t in rank_detections(logits, obj, probs, thr, k, multi_class, sigma)]
                got = ranking.rank_detections(logits.numpy(), obj.numpy(), probs.numpy(), thr, k, multi_class,
                                              sigma)
                assert [x.shape for x in got] == [x.shape for x in ref]
                assert got[1].dtype == got[2].dtype == np.int64
                np.testing.assert_allclose(got[0], ref[0], atol=1e-5)
                d = _distinct(ref[0])
                assert d.sum() >= min(5, len(d) // 2)
                np.testing.assert_array_equal(got[1][d], ref[1][d])
                np.testing.assert_array_equal(got[2][d], ref[2][d])
                # the runtime's scores > CLS_THRESHOLD after it: the PyTorch post-processing's
                # rank_detections(..., score_threshold) (a threshold in the widest gap)
                i = int(np.argmax(-np.diff(ref[0])))
                cls_thr = float(ref[0][i] + ref[0][i + 1]) / 2
                cut = [t.numpy() for t in rank_detections(logits, obj, probs, thr, k, multi_class, sigma, cls_thr)]
                keep = got[0] > cls_thr
                assert keep.sum() == len(cut[0]) == i + 1
                np.testing.assert_allclose(got[0][keep], cut[0], atol=1e-5)
                np.testing.assert_array_equal(got[1][keep][d[keep]], cut[1][d[keep]])
                np.testing.assert_array_equal(got[2][keep][d[keep]], cut[2][d[keep]])
            if sigma:  # the duplicates did decay
                assert not np.allclose(ranking.rank_detections(logits.numpy(), obj.numpy(), probs.numpy(), thr,
                                                               100, multi_class, 0.0)[0], got[0])

    class _Model:  # what keyframe_scores reads of the model
        nms_sigma, mask_threshold = 2.0, thr

        @staticmethod
        def mask_logits(kernels, x_mask):
            return mask_logits[None]

    out = {"pred_logits": logits[None], "pred_objectness": obj[None], "pred_kernels": torch.zeros(1, n, 4)}
    ref = keyframe_scores(_Model(), out, torch.zeros(1, 4, 16, 24))
    got = ranking.keyframe_scores(logits.numpy(), obj.numpy(), mask_logits.numpy(), thr, 2.0)
    for r, x in zip(ref, got):
        np.testing.assert_allclose(x, r.numpy(), atol=1e-5)


def test_missing_backend_package_names_the_extra(monkeypatch):
    from mobileinst_runtime.backends import get_backend

    for name in ("ncnn", "openvino", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
        with pytest.raises(ImportError, match=rf"pip install {name} \(the extra mobileinst\[{name}\]\)"):
            get_backend(name).load()
        assert not get_backend(name).available()
    with pytest.raises(ValueError, match="Unknown backend 'tflite'"):
        get_backend("tflite")


def test_ncnn_files_missing_or_bad(tmp_path, exported):
    """No int8 graphs on ncnn; a folder without ncnn graphs names tools/export.py --ncnn;
    a bad {name}.ncnn.json names the file and the field."""
    pytest.importorskip("ncnn")
    from mobileinst_runtime.backends import open_graph, read_ncnn_spec
    from mobileinst_runtime.segmenter import VideoSegmenter

    with pytest.raises(ValueError, match="no int8"):
        open_graph(str(tmp_path), "image_int8", "ncnn")
    with pytest.raises(FileNotFoundError, match=r"tools/export.py --ncnn"):
        open_graph(str(tmp_path), "image", "ncnn")
    onnx_only = tmp_path / "onnx_only"  # an export folder without --ncnn
    onnx_only.mkdir()
    (onnx_only / "export_meta.json").write_text((exported[1] / "export_meta.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"keyframe.ncnn.json.*tools/export.py --ncnn"):
        VideoSegmenter(str(onnx_only), backend="ncnn")
    path = tmp_path / "x.ncnn.json"
    for spec, match in (({"outputs": [{"name": "a", "blob": "out0"}]}, "field 'inputs' is missing"),
                        ({"inputs": [{"name": "image", "blob": "in0"}], "outputs": [{"name": "a", "blob": "out0"}]},
                         r"field 'inputs\[0\].dtype' is missing"),
                        ({"inputs": [{"name": "image", "blob": "in0", "dtype": "uint8"}],
                          "outputs": [{"name": "a", "blob": "out0"}], "post": {"kind": "topk"}},
                         "field 'post.kind' is 'topk'")):
        path.write_text(json.dumps(spec))
        with pytest.raises(ValueError, match=match) as e:
            read_ncnn_spec(str(path))
        assert str(path) in str(e.value)
