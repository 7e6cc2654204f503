"""An export is one unit (tools/export.py), and the runtime opens only the files of its
export_meta.json with their hashes; its outputs of a truncated video. Uses the shared
export (tests/conftest.py ``exported``); the re-exports write the small mask_head graph only."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from conftest import EXPORT_H, EXPORT_W

GRAPHS = ("keyframe", "nonkeyframe", "mask_head")


def _copy_export(src, dst, names=None):
    """A model folder with the fp32 ONNX graphs of the shared export (or ``names``) and its
    export_meta.json listing them."""
    dst.mkdir()
    meta = json.load(open(src / "export_meta.json"))
    names = names or [f"{g}.onnx" for g in GRAPHS]
    for n in names:
        shutil.copy(src / n, dst / n)
    meta["files"] = {n: meta["files"][n] for n in names}
    (dst / "export_meta.json").write_text(json.dumps(meta))
    return meta


def _edit_meta(d, **changes):
    meta = json.load(open(d / "export_meta.json"))
    meta.update(changes)
    (d / "export_meta.json").write_text(json.dumps(meta))


def test_export_meta_lists_every_graph_file_with_its_hash(exported):
    from mobileinst_core.export_meta import file_record, read_export_meta

    _, out, report = exported
    meta = read_export_meta(str(out))
    on_disk = sorted(n for n in os.listdir(out) if n != "export_meta.json")
    assert sorted(meta.files) == on_disk and "keyframe.ncnn.bin" in on_disk
    assert meta.files["keyframe.onnx"] == file_record(str(out / "keyframe.onnx"))
    assert meta.files["keyframe_int8.onnx"]["precision"] == "int8" and meta.files["image.ts"]["precision"] == "fp32"
    assert report["onnx"]["image"] == str(out / "image.onnx")  # paths of the final folder, not the temporary one
    assert not [n for n in os.listdir(out.parent) if n.startswith(".graphs.tmp")]


def test_reexport_is_refused_without_overwrite_and_replaces_the_whole_export_with_it(exported, tmp_path,
                                                                                     monkeypatch):
    """An existing export: refused without --overwrite (before any work); an export that
    fails or is interrupted leaves it as it was and no temporary folder; with --overwrite
    the new export replaces it as a whole (no stale ncnn graph of the old one is left)."""
    import mobileinst.export.exporter as exporter
    from mobileinst.export import export

    cfg, out, _ = exported
    old = tmp_path / "old"
    _copy_export(out, old, ["mask_head.onnx", "mask_head.ncnn.param", "mask_head.ncnn.bin", "mask_head.ncnn.json"])
    before = {n: (old / n).read_bytes() for n in os.listdir(old)}
    with pytest.raises(FileExistsError, match="--overwrite"):
        export(cfg, str(old), 64, 64, graphs=("mask_head",), torchscript=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an export"):
        export(cfg, str(tmp_path / "notes"), 64, 64, graphs=("mask_head",), torchscript=False, overwrite=True)

    def interrupted(model_dir):  # Ctrl-C once the graphs are written, before they are listed
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(exporter, "record_files", interrupted)
        with pytest.raises(KeyboardInterrupt):
            export(cfg, str(old), 64, 64, graphs=("mask_head",), torchscript=False, overwrite=True)
    assert {n: (old / n).read_bytes() for n in os.listdir(old)} == before
    assert sorted(os.listdir(tmp_path)) == ["notes", "old"], "a temporary folder was left behind"

    export(cfg, str(old), 64, 64, graphs=("mask_head",), torchscript=False, overwrite=True)
    assert sorted(os.listdir(old)) == ["export_meta.json", "mask_head.onnx"]
    assert json.load(open(old / "export_meta.json"))["input_size"] == [64, 64]
    assert sorted(os.listdir(tmp_path)) == ["notes", "old"]


@pytest.mark.parametrize("case,error,match", [
    ("another export's graph", ValueError, r"nonkeyframe\.onnx' has \d+ bytes but .*'files\.nonkeyframe\.onnx\.bytes'"),
    ("same size, other bytes", ValueError, r"mask_head\.onnx' has sha256 .*'files\.mask_head\.onnx\.sha256'"),
    ("unlisted graph", ValueError, r"keyframe\.onnx' is not one of the files of this export"),
    ("listed file missing", FileNotFoundError, r"nonkeyframe\.onnx' does not exist"),
    ("padded_size", ValueError, r"field 'padded_size' is \[160, 160\] but graph 'mask_head'"),
    ("input_size", ValueError, r"field 'input_size' is \[96, 96\] but graph 'keyframe'"),
    ("num_classes", ValueError, r"field 'num_classes' is 3 but graph 'keyframe' .* scores 5 classes"),
    ("class_names", ValueError, r"field 'class_names' has 5 entries but 'num_classes' is 3"),
])
def test_runtime_refuses_a_model_folder_whose_files_or_meta_disagree(exported, tmp_path, case, error, match):
    from mobileinst_runtime.segmenter import VideoSegmenter

    _, out, _ = exported
    d = tmp_path / "m"
    _copy_export(out, d)
    if case == "another export's graph":
        shutil.copy(out / "keyframe.onnx", d / "nonkeyframe.onnx")
    elif case == "same size, other bytes":
        data = bytearray((d / "mask_head.onnx").read_bytes())
        data[-1] ^= 1
        (d / "mask_head.onnx").write_bytes(bytes(data))
    elif case == "unlisted graph":
        meta = json.load(open(d / "export_meta.json"))
        del meta["files"]["keyframe.onnx"]
        (d / "export_meta.json").write_text(json.dumps(meta))
    elif case == "listed file missing":
        os.remove(d / "nonkeyframe.onnx")
    elif case == "padded_size":
        _edit_meta(d, padded_size=[160, 160])
    elif case == "input_size":
        _edit_meta(d, input_size=[96, 96])
    elif case == "num_classes":
        _edit_meta(d, num_classes=3, class_names=None, category_ids=None)
    elif case == "class_names":
        _edit_meta(d, num_classes=3)
    with pytest.raises(error, match=match) as e:
        VideoSegmenter(str(d))
    assert str(d) in str(e.value)


def test_a_truncated_video_gets_the_output_of_the_frames_read_and_exit_status_1(exported, tmp_path, capsys):
    """A file whose frames stop decoding partway: the output of the frames read, whole,
    and a message with the frames read against the container's count."""
    from mobileinst_runtime.__main__ import main

    _, out, _ = exported
    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (EXPORT_W, EXPORT_H))
    rng = np.random.RandomState(0)
    for _ in range(30):
        w.write(rng.randint(0, 255, (EXPORT_H, EXPORT_W, 3)).astype(np.uint8))
    w.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: os.path.getsize(clip) // 2])
    with pytest.raises(SystemExit) as e:
        main(["--model-dir", str(out), "--input", str(cut), "--output", str(tmp_path / "rt")])
    assert e.value.code == 1
    msg = capsys.readouterr().err
    read = int(cv2.VideoCapture(str(tmp_path / "rt" / "tracks.mp4")).get(cv2.CAP_PROP_FRAME_COUNT))
    assert 0 < read < 30 and f"read {read} of the 30 frames its container announces" in msg and "cut.avi" in msg
    res = json.load(open(tmp_path / "rt" / "results.json"))
    assert all(len(t["segmentations"]) == read for t in res)
    assert sorted(os.listdir(tmp_path / "rt")) == ["results.json", "tracks.mp4"]


@pytest.mark.parametrize("flag,value,match", [("--reuse-interval", "0", "--reuse-interval: 0 is less than 1"),
                                              ("--threads", "-3", "--threads: -3 is less than 0")])
def test_runtime_flags_are_checked_where_they_are_read(tmp_path, capsys, flag, value, match):
    from mobileinst_runtime.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["--model-dir", str(tmp_path), "--input", str(tmp_path), flag, value])
    assert e.value.code == 2 and match in capsys.readouterr().err
