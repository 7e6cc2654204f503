"""mobileinst_core: the numpy core shared by the PyTorch pipeline and the deploy runtime.

Dependencies run one way (mobileinst -> mobileinst_core <- mobileinst_runtime), the
online tracker's loop driven by two plain callables, and export_meta.json written
by one function and read by one that refuses missing or invalid fields."""
import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import IMPORT_BLOCKER, ROOT, small_cfg

PKG = os.path.join(ROOT, "projects", "MobileInst")

# the backend libraries too: importing the runtime loads none of them (each is an optional extra)
_BLOCKER = IMPORT_BLOCKER.replace("'torchvision')", "'torchvision', 'onnxruntime', 'openvino', 'ncnn')")


def _modules(package):
    root = os.path.join(PKG, package)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


def _imported(path):
    """Top-level package names a module imports (absolute imports only)."""
    tree = ast.parse(open(path).read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_and_runtime_import_without_torch_or_detectron2(tmp_path):
    """Every module of mobileinst_core and mobileinst_runtime (the backends and the numpy
    ranking included) imports in a process where torch, detectron2, mobileinst and the
    backend libraries (onnxruntime, openvino, ncnn) cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text(_BLOCKER)
    mods = []
    for package in ("mobileinst_core", "mobileinst_runtime"):
        for path in _modules(package):
            rel = os.path.relpath(path, PKG)[: -len(".py")].replace(os.sep, ".")
            mods.append(rel[: -len(".__init__")] if rel.endswith(".__init__") else rel)
    assert "mobileinst_core.online_tracker" in mods and "mobileinst_runtime.segmenter" in mods
    code = "import importlib\nfor m in %r:\n    importlib.import_module(m)\nprint('ok')" % sorted(mods)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}:{PKG}")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_dependencies_run_one_way():
    """mobileinst never imports mobileinst_runtime; mobileinst_core imports neither of them
    (nor a backend library); mobileinst_runtime never imports mobileinst (nor pnnx, the
    export's)."""
    backends = {"onnxruntime", "openvino", "ncnn"}
    for path in _modules("mobileinst"):
        assert "mobileinst_runtime" not in _imported(path), path
    for path in _modules("mobileinst_core"):
        assert not _imported(path) & ({"mobileinst", "mobileinst_runtime", "torch", "detectron2", "pnnx"} | backends), \
            path
    for path in _modules("mobileinst_runtime"):
        assert not _imported(path) & {"mobileinst", "torch", "detectron2", "pnnx"}, path


# --------------------------------------------------------------------------- the online tracker
def _settings(**changes):
    from mobileinst_core.online_tracker import TrackerSettings

    base = dict(reuse_interval=2, association=True, max_tracks=3, track_score_threshold=0.5,
                association_mask_weight=0.0, association_score_threshold=0.2, association_min_iou=0.1,
                mask_threshold=0.45, nonkey_scale=1.0)
    base.update(changes)
    return TrackerSettings(**base)


class _Backend:
    """Keyframes whose 3 queries come out in a given order each time; masks record who asked."""

    def __init__(self, orders):
        self.kernels = np.eye(3, 4, dtype=np.float32)  # query q of the first keyframe: e_q
        self.orders = list(orders)
        self.calls = []

    def run_keyframe(self, frame):
        from mobileinst_core.online_tracker import Keyframe

        order = self.orders.pop(0)
        scores = np.array([0.9, 0.8, 0.1], np.float32)[order]
        classes = np.array([[0.9, 0.1], [0.2, 0.7], [0.5, 0.5]])[order]
        self.calls.append(("key", frame))
        return Keyframe(self.kernels[order], scores, classes, np.zeros((4, 2, 2), np.float32), context=frame)

    def frame_masks(self, frame, kernels, context):
        self.calls.append(("masks", frame, context, kernels.argmax(1).tolist()))
        return np.zeros((len(kernels), 2, 3), bool), None


def test_online_tracker_reuses_kernels_and_associates_permuted_queries():
    from mobileinst_core.online_tracker import OnlineTracker

    backend = _Backend([[0, 1, 2], [2, 0, 1]])  # the second keyframe's queries come out permuted
    tracker = OnlineTracker(_settings(), backend.run_keyframe, backend.frame_masks)
    outs = [tracker.track(i, (2, 3)) for i in range(4)]
    assert [c[0] for c in backend.calls] == ["key", "masks", "masks", "key", "masks", "masks"]
    # keyframes hand their own context to frame_masks, the frames after them None (kernel reuse)
    assert [c[2] for c in backend.calls if c[0] == "masks"] == [0, None, 2, None]
    # association puts the permuted queries back into their slots: slot i keeps kernel e_i
    assert [c[3] for c in backend.calls if c[0] == "masks"] == [[0, 1]] * 4
    for out in outs:
        assert out.slots.tolist() == [0, 1] and out.classes.tolist() == [0, 1]
        np.testing.assert_allclose(out.scores, [0.9, 0.8])
    res = tracker.ytvis_result(video_id=3)
    assert res["video_id"] == 3 and len(res["tracks"]) == 2  # slot 2 is never above the threshold
    assert [(t["track_id"], t["category_id"]) for t in res["tracks"]] == [(0, 0), (1, 1)]
    assert all(len(t["segmentations"]) == 4 for t in res["tracks"])
    with pytest.raises(ValueError, match="Frame 4 has size 4x2"):
        tracker.track(4, (2, 4))
    tracker.reset()
    assert tracker.frame_index == 0 and tracker.results == []

    backend = _Backend([[0, 1, 2], [2, 0, 1]])
    plain = OnlineTracker(_settings(association=False), backend.run_keyframe, backend.frame_masks)
    outs = [plain.track(i, (2, 3)) for i in range(3)]
    # without association slot i is query i: after the permutation the two confident
    # queries (e_0, e_1) sit in slots 1 and 2
    assert outs[1].slots.tolist() == [0, 1] and outs[2].slots.tolist() == [1, 2]
    assert backend.calls[-1][3] == [0, 1]


@pytest.mark.parametrize("field,value,match", [("reuse_interval", 0, "REUSE_INTERVAL"),
                                               ("nonkey_scale", 0.0, "NONKEY_SCALE"),
                                               ("nonkey_scale", 1.5, "NONKEY_SCALE")])
def test_tracker_settings_refuse_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        _settings(**{field: value})


def test_tracker_settings_come_from_the_config():
    from mobileinst.config import build_tracker_settings

    cfg = small_cfg("MODEL.MOBILEINST.VIDEO.REUSE_INTERVAL", "5", "MODEL.MOBILEINST.INFERENCE.MASK_THRESHOLD", "0.4")
    s = build_tracker_settings(cfg)
    assert s.reuse_interval == 5 and s.mask_threshold == 0.4
    assert s.max_tracks == cfg.MODEL.MOBILEINST.VIDEO.MAX_TRACKS
    assert s.association_mask_weight == cfg.MODEL.MOBILEINST.VIDEO.ASSOCIATION_MASK_WEIGHT


# --------------------------------------------------------------------------- export_meta.json
def _meta():
    from mobileinst_core.export_meta import ExportMeta

    return ExportMeta(input_size=(64, 96), padded_size=(64, 128), input_format="RGB", pixel_mean=(1.0, 2.0, 3.0),
                      pixel_std=(4.0, 5.0, 6.0), num_classes=2, num_queries=10, class_names=["a", "b"],
                      category_ids=[3, 7], cls_threshold=0.005, max_detections=50, multi_class=True,
                      nms_sigma=2.0, tracker=_settings(), nonkey_input_size=(32, 48),
                      nonkey_padded_size=(64, 64), weights="w.pth")


def test_export_meta_round_trip(tmp_path):
    from mobileinst_core.export_meta import read_export_meta, write_export_meta

    meta = _meta()
    path = write_export_meta(str(tmp_path), meta)
    assert os.path.basename(path) == "export_meta.json"
    data = json.load(open(path))
    assert data["mask_threshold"] == 0.45 and data["video"]["reuse_interval"] == 2
    assert (data["max_detections"], data["multi_class"], data["nms_sigma"]) == (50, True, 2.0)
    assert data["video"]["nonkey_input_size"] == [32, 48] and "mask_threshold" not in data["video"]
    assert read_export_meta(str(tmp_path)) == meta


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.pop("padded_size"), "field 'padded_size' is missing"),
    (lambda d: d["video"].pop("association_min_iou"), "field 'video.association_min_iou' is missing"),
    (lambda d: d.update(input_format="YUV"), "field 'input_format' is 'YUV'"),
    (lambda d: d["video"].update(reuse_interval=0), "field 'video.reuse_interval' is 0"),
    (lambda d: d["video"].update(association="yes"), "field 'video.association' is 'yes'"),
    (lambda d: d.update(category_ids=["3"]), "field 'category_ids'"),
    (lambda d: d.pop("nms_sigma"), "field 'nms_sigma' is missing"),
    (lambda d: d.pop("multi_class"), "field 'multi_class' is missing"),
    (lambda d: d.update(max_detections=0), "field 'max_detections' is 0"),
    (lambda d: d.pop("files"), "field 'files' is missing"),  # an export from before the hashes
    (lambda d: d.update(files={"a.onnx": {"sha256": "x", "bytes": 1, "precision": "fp32"}}), "field 'files'"),
    (lambda d: d.update(class_names=["a"]), "field 'class_names' has 1 entries but 'num_classes' is 2"),
])
def test_export_meta_reader_names_the_file_and_the_field(tmp_path, edit, match):
    from mobileinst_core.export_meta import read_export_meta, write_export_meta

    path = write_export_meta(str(tmp_path), _meta())
    data = json.load(open(path))
    edit(data)
    json.dump(data, open(path, "w"))
    with pytest.raises(ValueError, match=match) as e:
        read_export_meta(str(tmp_path))
    assert path in str(e.value)


def test_export_meta_reader_needs_an_export_folder(tmp_path):
    from mobileinst_core.export_meta import read_export_meta

    with pytest.raises(FileNotFoundError, match="export_meta.json"):
        read_export_meta(str(tmp_path))
    (tmp_path / "export_meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid json"):
        read_export_meta(str(tmp_path))


# --------------------------------------------------------------------------- category ids, json
def test_category_ids_and_ytvis_entries():
    from mobileinst_core.categories import category_ids_of, dataset_category_ids, to_dataset_id
    from mobileinst_core.ytvis_json import ytvis_entries

    ids = dataset_category_ids({7: 1, 3: 0})
    assert ids == [3, 7] and category_ids_of([{"id": 7}, {"id": 3}]) == [3, 7]
    assert dataset_category_ids(None) is None and dataset_category_ids({}) is None
    assert to_dataset_id(1, ids) == 7 and to_dataset_id(1, None) == 2
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    result = {"video_id": 9, "tracks": [
        {"score": 0.5, "category_id": 1, "track_id": 4, "segmentations": [None, mask]},
        {"score": 0.25, "category_id": 0, "segmentations": [None, None]},
    ]}
    out = ytvis_entries(result, category_ids=ids)
    assert [e["category_id"] for e in out] == [7, 3] and [e["video_id"] for e in out] == [9, 9]
    assert out[0]["track_id"] == 4 and "track_id" not in out[1]
    seg = out[0]["segmentations"][1]
    assert seg["size"] == [4, 5] and isinstance(seg["counts"], str) and out[0]["segmentations"][0] is None
    json.dumps(out)  # json-serialisable as is
    plain = ytvis_entries(result, video_id=2)[0]
    assert plain["category_id"] == 2 and plain["video_id"] == 2  # no mapping: 1-based ids


def test_labels_do_not_overlap():
    """Two objects side by side: both labels above them would overlap; the second
    label goes to the next free place (below its box). Where no place is free,
    the least overlapping one."""
    from mobileinst_core.visualize import _overlap, place_labels

    boxes = [(10, 30, 40, 60), (20, 32, 50, 62)]
    rects = place_labels(boxes, [(60, 12), (60, 12)], (100, 120))
    assert rects[0] == (10, 18, 70, 30)  # above the first box
    assert rects[1] == (20, 62, 80, 74)  # above the second would overlap: below it
    assert _overlap(*rects) == 0
    # near the frame's top-left corner the labels stay inside the frame
    (r,) = place_labels([(0, 0, 5, 5)], [(30, 10)], (20, 20))
    assert r[0] >= 0 and r[1] >= 0 and r[2] <= 20 + 10 and r[3] <= 20


def test_draw_tracks_colours_and_tags():
    """Each track's mask and tag in its own colour; a track below the threshold not drawn."""
    from mobileinst_core.visualize import draw_tracks, track_color

    frame = np.zeros((80, 120, 3), np.uint8)
    masks = np.zeros((3, 80, 120), bool)
    masks[0, 30:50, 10:40] = True
    masks[1, 30:50, 70:100] = True
    masks[2, 5:10, 5:10] = True
    out = draw_tracks(frame, masks, [4, 9, 2], [0, 1, 1], [0.9, 0.8, 0.1], ["circle", "square"], 0.3)
    for tid, m in ((4, masks[0]), (9, masks[1])):
        blended = (np.array(track_color(tid), np.float32) * 0.5).astype(np.uint8)
        assert (out[m] == blended).all(axis=1).mean() > 0.5  # the inside (contours and tags aside)
        assert (out == np.array(track_color(tid), np.uint8)).all(axis=2).sum() > 100  # contour and tag
    assert (out[5:10, 5:10] == 0).all()  # score 0.1 < 0.3
