#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Latency per runtime backend (onnxruntime, OpenVINO, ncnn), fp32 and int8: the image
graph at a COCO size and the YouTube-VIS test size, and video per frame end to end,
with YOLO11n-seg as the peer row.

    python tools/benchmark_backends.py --config-file configs/coco/MobileInst_TopFormer_base_640.yaml \
        --sizes 640x864 360x480 --video-sizes 360x480 --threads 1

Random weights (timing only). For every size the image graph is exported as
tools/export.py exports it (``mobileinst.export``: fp32, int8 QDQ and, where nncf is installed, OpenVINO's int8 IR through
NNCF, calibrated on synthetic frames; YOLO11n-seg's int8 graphs alike) and with
mobileinst.export.ncnn (fp32; ncnn runs the network and numpy the ranking); each
backend runs it through ``mobileinst_runtime.backends`` on ``--threads`` threads.
The calls of all rows are alternated round by round, so that the machine's load
falls on all of them alike; the table gives medians and the ratio to onnxruntime
fp32 at the same size, which compare across machines where raw milliseconds do not.

Video (``--video-sizes``): ``mobileinst_runtime.VideoSegmenter`` on a synthetic clip
of moving shapes at that frame size, end to end (letterbox, graphs, tracker, masks
pasted into the frame), at T = 1 (the keyframe graph and the mask head on every frame)
and T = 3 (kernel reuse: the keyframe graph on every third frame, the non-keyframe
graph on the others); the track-score threshold keeps ``--tracked-slots`` tracks
(random weights pass any threshold with every query). One call of a video row is
``--clip-frames`` consecutive frames of one stream (a multiple of every T, so that
each call holds the same mix of keyframes); its figure is per frame. The peer rows
are YOLO11n-seg's network at square ``--yolo-imgsz`` inputs, one call per frame.

Peer: YOLO11n-seg built from ``yolo11n-seg.yaml`` with Ultralytics (random weights, no
download: YOLO_OFFLINE=1, YOLO_AUTOINSTALL=0), exported to ONNX (and TorchScript for
ncnn) at 640x640 and at the second size rounded up to its stride 32; its row is the
network alone (no NMS, no mask assembly), MobileInst's the image graph (ranking and
mask probabilities included). Ultralytics is AGPL-3.0: a benchmark-only
dependency, not in requirements.txt and never a runtime one; install it apart,
without its dependencies (torch and the rest are this repository's)::

    pip install --no-deps ultralytics==8.4.190

Where it is not installed its rows are left out (and said so); so are the
backends whose package is missing (``pip install -e .[openvino]``, ``.[ncnn]``).
Results: docs/results.md ("Speed per backend, against YOLO11n-seg"); the runs of
2026-12-01: docs/history.md ("runtime backends against YOLO11n-seg", "OpenVINO int8 through NNCF").
"""
import os
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (os.path.join(ROOT, "projects", "MobileInst"), os.path.join(ROOT, "tools")):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402

from mobileinst_runtime.backends import BACKENDS, get_backend, open_graph  # noqa: E402


def parse_size(s):
    h, w = s.lower().split("x")
    return int(h), int(w)


def synthetic_images(n, h, w, seed=0):
    import cv2

    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        img = cv2.GaussianBlur(rng.randint(0, 255, (h, w, 3)).astype(np.uint8), (0, 0), 9)
        for _ in range(4):
            c = (int(rng.randint(w)), int(rng.randint(h)))
            color = tuple(int(x) for x in rng.randint(0, 255, 3))
            cv2.circle(img, c, int(rng.randint(8, max(9, min(h, w) // 4))), color, -1)
        out.append(img)
    return out


def synthetic_clip(n, h, w, seed=0):
    """A clip of ``n`` BGR frames: four discs moving over a blurred background."""
    import cv2

    rng = np.random.RandomState(seed)
    pos = rng.rand(4, 2) * [w, h]
    vel = (rng.rand(4, 2) - 0.5) * 0.04 * [w, h]
    cols = rng.randint(0, 255, (4, 3))
    bg = cv2.GaussianBlur(rng.randint(0, 255, (h, w, 3)).astype(np.uint8), (0, 0), 15)
    frames = []
    for _ in range(n):
        img = bg.copy()
        for p, c in zip(pos, cols):
            cv2.circle(img, (int(p[0]), int(p[1])), int(0.12 * min(h, w)), tuple(int(x) for x in c), -1)
        pos = (pos + vel) % [w, h]
        frames.append(img)
    return frames


class VideoRow:
    """One video row: a :class:`~mobileinst_runtime.VideoSegmenter` streaming a clip; each
    call runs the next ``per_call`` frames of the stream (the clip repeated)."""

    def __init__(self, model_dir, backend, suffix, threads, reuse_interval, frames, per_call, tracked_slots):
        from mobileinst_runtime.segmenter import VideoSegmenter

        self.seg = VideoSegmenter(model_dir, threads, reuse_interval=reuse_interval, keep_results=False,
                                  suffix=suffix, backend=backend)
        self.int8_emulated = getattr(self.seg.keyframe, "int8_emulated", False)
        # keep the top ``tracked_slots`` queries of the first keyframe, as a trained model would
        x, _ = self.seg.key_input.letterbox(frames[0])
        scores = self.seg.keyframe.run(None, {"image": x.astype(self.seg.dtype)})[1]
        self.seg.track_score_threshold = float(np.sort(scores)[::-1][min(tracked_slots, len(scores)) - 1]) - 1e-6
        self.frames, self.per_call, self.next = frames, per_call, 0

    def __call__(self):
        for _ in range(self.per_call):
            self.seg.step(self.frames[self.next % len(self.frames)])
            self.next += 1


def export_mobileinst(cfg, model, out, sizes, calib_dir, int8, ncnn, video_sizes=()):
    """size -> export folder with image(.onnx, _int8.onnx, .ncnn.*); the ``video_sizes``
    also with the video graphs (keyframe, nonkeyframe, mask_head)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    from mobileinst.export import export

    DetectionCheckpointer(model, out).save("bench_weights")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = os.path.join(out, "bench_weights.pth")
    dirs = {}
    for h, w in list(dict.fromkeys(list(sizes) + list(video_sizes))):
        d = os.path.join(out, f"mobileinst_{h}x{w}")
        # keyframe.onnx in any case: the export calibrates the int8 graphs with its outputs
        graphs = (("image",) if (h, w) in sizes else ()) + ("keyframe",)
        if (h, w) in video_sizes:
            graphs += ("nonkeyframe", "mask_head")
        export(cfg, d, h, w, graphs=graphs, torchscript=False, do_quantize=int8, calib_dir=calib_dir)
        if ncnn:
            from mobileinst.export import export_ncnn
            from mobileinst.utils.fuse import fuse_conv_bn

            with torch.no_grad():
                export_ncnn(d, fuse_conv_bn(model), graphs=[g for g in graphs if g != "keyframe" or
                                                             (h, w) in video_sizes], try_whole=False)
        dirs[(h, w)] = d
    return dirs


def export_yolo(out, sizes, calib_images, int8, ncnn):
    """(h, w) -> (folder with yolo.onnx (+ yolo_int8.onnx, yolo.ncnn.*), its input size: (h, w)
    rounded up to the stride 32); None without ultralytics."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(out, "ultralytics_cfg"))
    try:
        from ultralytics import YOLO
    except ImportError:
        return None
    dirs = {}
    for h, w in sizes:
        hh, ww = (h + 31) // 32 * 32, (w + 31) // 32 * 32
        d = os.path.join(out, f"yolo_{hh}x{ww}")
        os.makedirs(d, exist_ok=True)
        cwd = os.getcwd()
        os.chdir(d)
        try:
            model = YOLO("yolo11n-seg.yaml")
            onnx_path = model.export(format="onnx", imgsz=[hh, ww], simplify=False, dynamic=False, verbose=False)
            os.replace(os.path.join(d, onnx_path), os.path.join(d, "yolo.onnx"))
            if ncnn:
                ts_path = os.path.join(d, YOLO("yolo11n-seg.yaml").export(format="torchscript", imgsz=[hh, ww],
                                                                          verbose=False))
        finally:
            os.chdir(cwd)
        if int8:
            _quantize_yolo(d, calib_images, hh, ww)
        if ncnn:
            from mobileinst.export import convert_graph

            convert_graph(ts_path, d, "yolo", ["images"], ["output0", "output1"], [[1, 3, hh, ww]], ["float32"])
        dirs[(h, w)] = (d, (hh, ww))
    return dirs


def _quantize_yolo(d, images, h, w):
    """yolo_int8.onnx (onnxruntime's QDQ) and, where nncf is installed, yolo_int8.xml (NNCF's
    IR for OpenVINO), calibrated on ``images`` as tools/export.py calibrates MobileInst's."""
    import cv2

    from mobileinst.export import nncf_available, quantize, quantize_openvino

    feeds = {"yolo": [{"images": (cv2.resize(i, (w, h))[:, :, ::-1].transpose(2, 0, 1)[None] / 255.0)
                       .astype(np.float32)} for i in images]}
    quantize(d, feeds)
    if nncf_available():
        quantize_openvino(d, feeds)


def main(argv=None):
    from mobileinst.utils.cli import config_argument_parser, parse_with_overrides

    parser = config_argument_parser(description=__doc__)
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs", "coco",
                                                              "MobileInst_TopFormer_base_640.yaml"))
    parser.add_argument("--sizes", nargs="+", default=["640x864", "360x480"], help="HxW input sizes (image graph)")
    parser.add_argument("--video-sizes", nargs="*", default=["360x480"],
                        help="HxW frame sizes of the video rows (none: no video rows)")
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 3], help="kernel reuse intervals T")
    parser.add_argument("--clip-frames", type=int, default=6,
                        help="frames per call of a video row (a multiple of every T)")
    parser.add_argument("--tracked-slots", type=int, default=10, help="tracks kept by the video rows")
    parser.add_argument("--yolo-imgsz", type=int, nargs="*", default=[384, 640],
                        help="square input sizes of YOLO11n-seg's peer rows of the video table")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-yolo", action="store_true")
    parser.add_argument("--runs", type=int, default=15, help="timed rounds (every row once per round)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parse_with_overrides(parser, argv)
    bad = [t for t in args.intervals if t < 1 or args.clip_frames % t]
    if bad or args.clip_frames < 1:
        parser.error(f"--clip-frames {args.clip_frames} must be a positive multiple of every T in --intervals")
    warnings.filterwarnings("ignore")

    import torch
    from detectron2.modeling import build_model

    from machine import machine_info  # tools/machine.py

    from mobileinst.config import load_mobileinst_config

    torch.set_num_threads(max(1, args.threads))
    backends = [b for b in args.backends if get_backend(b).available()]
    skipped = sorted(set(args.backends) - set(backends))
    sizes = [parse_size(s) for s in args.sizes]
    video_sizes = [parse_size(s) for s in args.video_sizes]
    yolo_video = [(s, s) for s in args.yolo_imgsz] if video_sizes else []
    from mobileinst.utils.pretrained import backbone_weights_key

    # random weights: neither trained weights nor the backbone's ImageNet file (as tools/benchmark.py)
    cfg = load_mobileinst_config(args.config_file, ["MODEL.WEIGHTS", ""] + list(args.opts), device="cpu",
                                 freeze=False)
    cfg.merge_from_list([backbone_weights_key(cfg), ""])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # rows: {"table": "image" | "video", "model", "backend", "precision", "column", "call", "frames"}
    rows = []
    no_video_rows = []  # (backend, precision) whose video rows are left out, and why
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        import cv2

        calib = os.path.join(tmp, "calib")
        os.makedirs(calib)
        images = synthetic_images(8, *sizes[0])
        for i, img in enumerate(images):
            cv2.imwrite(os.path.join(calib, f"{i:03d}.png"), img)
        t0 = time.time()
        dirs = export_mobileinst(cfg, model, tmp, sizes, calib, not args.no_int8, "ncnn" in backends, video_sizes)
        yolo = None if args.no_yolo else export_yolo(tmp, list(dict.fromkeys(sizes + yolo_video)), images,
                                                     not args.no_int8, "ncnn" in backends)
        print(f"exports: {time.time() - t0:.0f} s", file=sys.stderr)
        clips = {size: synthetic_clip(4 * args.clip_frames, *size) for size in video_sizes}

        def graph_call(g, x):
            return lambda: g(x)

        def yolo_row(d, input_size, be, suffix):
            """YOLO11n-seg's network (its export in ``d``) on a random input of ``input_size``."""
            g = open_graph(d, "yolo" + suffix, be, args.threads)
            x = {"images": np.random.RandomState(0).rand(1, 3, *input_size).astype(np.float32)}
            return {"model": "YOLO11n-seg", "call": graph_call(g, x), "emulated": getattr(g, "int8_emulated", False)}

        for be in backends:
            for prec in ("fp32", "int8"):
                if prec == "int8" and (args.no_int8 or not get_backend(be).int8):
                    continue
                suffix = "_int8" if prec == "int8" else ""
                common = {"backend": be, "precision": prec, "frames": 1}
                for size in sizes:
                    g = open_graph(dirs[size], "image" + suffix, be, args.threads)
                    x = {"image": np.random.RandomState(0).randint(0, 255, (1, 3) + size).astype(np.uint8)}
                    rows.append(dict(common, table="image", model="MobileInst", column=size, call=graph_call(g, x),
                                     emulated=getattr(g, "int8_emulated", False)))
                    if yolo:
                        rows.append(dict(common, table="image", column=size, **yolo_row(*yolo[size], be, suffix)))
                video = []
                for size in video_sizes:
                    for t in args.intervals:
                        r = VideoRow(dirs[size], be, suffix, args.threads, t, clips[size], args.clip_frames,
                                     args.tracked_slots)
                        video.append(dict(common, table="video", model="MobileInst", column=(size, t), call=r,
                                          frames=args.clip_frames, emulated=r.int8_emulated))
                if any(r["emulated"] for r in video):  # fp32 speed with int8 results: not an int8 figure
                    no_video_rows.append((be, prec, "OpenVINO cannot compile its QDQ graphs as int8"))
                    video = []
                rows += video
                if video and yolo:
                    for size in yolo_video:
                        rows.append(dict(common, table="video", column=(size, None),
                                         **yolo_row(*yolo[size], be, suffix)))
        for _ in range(args.warmup):
            for r in rows:
                r["call"]()
        times = [[] for _ in rows]
        for _ in range(args.runs):  # rows alternated: a busy moment falls on all of them
            for i, r in enumerate(rows):
                t = time.perf_counter()
                r["call"]()
                times[i].append((time.perf_counter() - t) * 1000 / r["frames"])
    machine = machine_info(args.threads)
    for r, t in zip(rows, times):
        r["ms"] = statistics.median(t)
    print(f"# {machine['cpu']}, {args.threads} thread(s); sgemm {machine['sgemm_gflops_1_thread']} GFLOP/s "
          f"(1 thread); medians of {args.runs} alternated rounds (image and video rows alike)")
    if skipped:
        print(f"# backends not installed: {skipped}")
    if yolo is None and not args.no_yolo:
        print("# YOLO11n-seg rows left out: ultralytics is not installed (pip install --no-deps ultralytics==8.4.190)")
    result = {"machine": machine, "threads": args.threads, "runs": args.runs,
              "rows": image_table(rows, sizes), "video": video_table(rows, args, video_sizes, yolo_video)}
    for be, prec, why in no_video_rows:
        print(f"# video rows of {be} {prec} left out: {why}")
    if any(r["emulated"] for r in rows):
        print("# * OpenVINO could not compile this QDQ graph as int8 (its low-precision transformations throw); "
              "it ran with fake quantization in fp32")
    if args.json:
        from mobileinst_core.files import atomic_write_json

        atomic_write_json(args.json, result, indent=2)
    return result


def _keys(rows):
    keys = []
    for r in rows:
        key = (r["model"], r["backend"], r["precision"])
        if key not in keys:
            keys.append(key)
    return keys


def image_table(rows, sizes):
    """Print the image table: ms per size, its ratio to MobileInst's and to the model's own
    onnxruntime fp32 row; returns its json rows."""
    rows = [r for r in rows if r["table"] == "image"]
    ms = {(r["model"], r["backend"], r["precision"], r["column"]): r for r in rows}
    hdr = "".join(f"{f'{h}x{w} ms':>14}{'x MI-ort':>10}{'x own-ort':>10}" for h, w in sizes)
    print(f"{'model':<13}{'backend':<13}{'prec':<6}{hdr}")
    out = []
    for key in _keys(rows):
        line = f"{key[0]:<13}{key[1]:<13}{key[2]:<6}"
        entry = {"model": key[0], "backend": key[1], "precision": key[2]}
        for size in sizes:
            r = ms[key + (size,)]
            ref = ms[("MobileInst", "onnxruntime", "fp32", size)]["ms"]
            own = ms[(key[0], "onnxruntime", "fp32", size)]["ms"]
            line += f"{r['ms']:>13.1f}{'*' if r['emulated'] else ' '}{r['ms'] / ref:>10.2f}{r['ms'] / own:>10.2f}"
            entry[f"{size[0]}x{size[1]}"] = {"ms": round(r["ms"], 2), "vs_mobileinst_ort_fp32": round(r["ms"] / ref, 3),
                                             "vs_own_ort_fp32": round(r["ms"] / own, 3),
                                             "int8_emulated": r["emulated"]}
        out.append(entry)
        print(line)
    return out


def video_table(rows, args, video_sizes, yolo_video):
    """Print the video table: per frame ms and frames/s of each (frame size, T) row, and its
    frames/s as a multiple of YOLO11n-seg's network at the first ``--yolo-imgsz`` on the same
    backend and precision; returns its json rows."""
    rows = [r for r in rows if r["table"] == "video"]
    if not rows:
        return []
    peer = {(r["backend"], r["precision"]): r["ms"] for r in rows
            if r["model"] == "YOLO11n-seg" and yolo_video and r["column"][0] == yolo_video[0]}
    peer_name = f"YOLO {yolo_video[0][0]}" if yolo_video else "YOLO"
    print(f"\n# video, per frame end to end (VideoSegmenter: letterbox, graphs, tracker, {args.tracked_slots} "
          f"tracks pasted); YOLO11n-seg: its network alone at a square input")
    print(f"{'model':<13}{'backend':<13}{'prec':<6}{'input':<12}{'T':>3}{'ms/frame':>10}{'fps':>8}"
          f"{'x fps ' + peer_name:>16}")
    out = []
    for r in rows:
        (h, w), t = r["column"]
        p = peer.get((r["backend"], r["precision"]))
        x = p / r["ms"] if p else float("nan")
        print(f"{r['model']:<13}{r['backend']:<13}{r['precision']:<6}{f'{h}x{w}':<12}{t or '-':>3}"
              f"{r['ms']:>10.1f}{1000 / r['ms']:>8.1f}{x:>16.2f}")
        out.append({"model": r["model"], "backend": r["backend"], "precision": r["precision"],
                    "input": f"{h}x{w}", "T": t, "ms_per_frame": round(r["ms"], 2),
                    "fps": round(1000 / r["ms"], 2), "fps_vs_yolo": None if p is None else round(x, 3)})
    return out


if __name__ == "__main__":
    main()
