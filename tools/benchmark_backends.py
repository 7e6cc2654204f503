#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Image-graph latency per runtime backend (onnxruntime, OpenVINO, ncnn), fp32 and int8,
at a COCO size and the YouTube-VIS test size, with YOLO11n-seg as the peer row.

    python tools/benchmark_backends.py --config-file configs/coco/MobileInst_TopFormer_base_640.yaml \
        --sizes 640x864 360x480 --threads 1

Random weights (timing only). For every size the image graph is exported with
tools/export.py (fp32 and int8 QDQ, calibrated on synthetic frames) and with
mobileinst.export_ncnn (fp32; ncnn runs the network and numpy the ranking); each
backend runs it through ``mobileinst_runtime.backends`` on ``--threads`` threads.
The calls of all rows are alternated round by round, so that the machine's load
falls on all of them alike; the table gives medians and the ratio to onnxruntime
fp32 at the same size, which compare across machines where raw milliseconds do not.

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
Results of 2026-12-01: docs/results.md ("Runtime backends").
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


def export_mobileinst(cfg, model, out, sizes, calib_dir, int8, ncnn):
    """size -> export folder with image(.onnx, _int8.onnx, .ncnn.*)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from export import export  # tools/export.py

    DetectionCheckpointer(model, out).save("bench_weights")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = os.path.join(out, "bench_weights.pth")
    dirs = {}
    for h, w in sizes:
        d = os.path.join(out, f"mobileinst_{h}x{w}")
        # keyframe.onnx too: tools/export.py calibrates the int8 graphs with its outputs
        export(cfg, d, h, w, graphs=("image", "keyframe"), torchscript=False, do_quantize=int8, calib_dir=calib_dir)
        if ncnn:
            from mobileinst.export_ncnn import export_ncnn
            from mobileinst.utils.fuse import fuse_conv_bn

            with torch.no_grad():
                export_ncnn(d, fuse_conv_bn(model), graphs=("image",), try_whole=False)
        dirs[(h, w)] = d
    return dirs


def export_yolo(out, sizes, calib_images, int8, ncnn):
    """(h, w) -> folder with yolo.onnx (+ yolo_int8.onnx, yolo.ncnn.*); None without ultralytics."""
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
            from mobileinst.export_ncnn import convert_graph

            convert_graph(ts_path, d, "yolo", ["images"], ["output0", "output1"], [[1, 3, hh, ww]], ["float32"])
        dirs[(h, w)] = (d, (hh, ww))
    return dirs


def _quantize_yolo(d, images, h, w):
    import cv2
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    feeds = [{"images": (cv2.resize(i, (w, h))[:, :, ::-1].transpose(2, 0, 1)[None] / 255.0).astype(np.float32)}
             for i in images]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(os.path.join(d, "yolo.onnx"), os.path.join(d, "yolo_int8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)


def main(argv=None):
    from mobileinst.utils.cli import config_argument_parser, parse_with_overrides

    parser = config_argument_parser(description=__doc__)
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs", "coco",
                                                              "MobileInst_TopFormer_base_640.yaml"))
    parser.add_argument("--sizes", nargs="+", default=["640x864", "360x480"], help="HxW input sizes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-yolo", action="store_true")
    parser.add_argument("--runs", type=int, default=15, help="timed rounds (every row once per round)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parse_with_overrides(parser, argv)
    warnings.filterwarnings("ignore")

    import torch
    from detectron2.modeling import build_model

    from mobileinst.config import load_mobileinst_config
    from mobileinst.utils.machine import machine_info

    torch.set_num_threads(max(1, args.threads))
    backends = [b for b in args.backends if get_backend(b).available()]
    skipped = sorted(set(args.backends) - set(backends))
    sizes = [parse_size(s) for s in args.sizes]
    from mobileinst.utils.pretrained import backbone_weights_key

    # random weights: neither trained weights nor the backbone's ImageNet file (as tools/benchmark.py)
    cfg = load_mobileinst_config(args.config_file, ["MODEL.WEIGHTS", ""] + list(args.opts), device="cpu",
                                 freeze=False)
    cfg.merge_from_list([backbone_weights_key(cfg), ""])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    rows = []  # (model, backend, precision, size, graph)
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        import cv2

        calib = os.path.join(tmp, "calib")
        os.makedirs(calib)
        images = synthetic_images(8, *sizes[0])
        for i, img in enumerate(images):
            cv2.imwrite(os.path.join(calib, f"{i:03d}.png"), img)
        t0 = time.time()
        dirs = export_mobileinst(cfg, model, tmp, sizes, calib, not args.no_int8, "ncnn" in backends)
        yolo = None if args.no_yolo else export_yolo(tmp, sizes, images, not args.no_int8, "ncnn" in backends)
        print(f"exports: {time.time() - t0:.0f} s", file=sys.stderr)
        for be in backends:
            for prec in ("fp32", "int8"):
                if prec == "int8" and (args.no_int8 or not get_backend(be).int8):
                    continue
                suffix = "_int8" if prec == "int8" else ""
                for size in sizes:
                    g = open_graph(dirs[size], "image" + suffix, be, args.threads)
                    x = {"image": np.random.RandomState(0).randint(0, 255, (1, 3) + size).astype(np.uint8)}
                    rows.append(("MobileInst", be, prec, size, g, x))
                    if yolo:
                        d, (hh, ww) = yolo[size]
                        g = open_graph(d, "yolo" + suffix, be, args.threads)
                        x = {"images": np.random.RandomState(0).rand(1, 3, hh, ww).astype(np.float32)}
                        rows.append(("YOLO11n-seg", be, prec, size, g, x))
        for _ in range(args.warmup):
            for r in rows:
                r[4](r[5])
        times = [[] for _ in rows]
        for _ in range(args.runs):  # rows alternated: a busy moment falls on all of them
            for i, r in enumerate(rows):
                t = time.perf_counter()
                r[4](r[5])
                times[i].append((time.perf_counter() - t) * 1000)
        emulated = {i for i, r in enumerate(rows) if getattr(r[4], "int8_emulated", False)}
    machine = machine_info(args.threads)
    med = [statistics.median(t) for t in times]
    base = {(r[0], r[3]): med[i] for i, r in enumerate(rows) if r[1] == "onnxruntime" and r[2] == "fp32"}
    ref = {size: t for (name, size), t in base.items() if name == "MobileInst"}
    print(f"# {machine['cpu']}, {args.threads} thread(s); sgemm {machine['sgemm_gflops_1_thread']} GFLOP/s "
          f"(1 thread); medians of {args.runs} alternated rounds")
    if skipped:
        print(f"# backends not installed: {skipped}")
    if yolo is None and not args.no_yolo:
        print("# YOLO11n-seg rows left out: ultralytics is not installed (pip install --no-deps ultralytics==8.4.190)")
    hdr = "".join(f"{f'{h}x{w} ms':>14}{'x MI-ort':>10}{'x own-ort':>10}" for h, w in sizes)
    print(f"{'model':<13}{'backend':<13}{'prec':<6}{hdr}")
    result = {"machine": machine, "threads": args.threads, "runs": args.runs, "rows": []}
    keys = []
    for i, r in enumerate(rows):
        key = (r[0], r[1], r[2])
        if key not in keys:
            keys.append(key)
    for key in keys:
        line = f"{key[0]:<13}{key[1]:<13}{key[2]:<6}"
        entry = {"model": key[0], "backend": key[1], "precision": key[2]}
        for size in sizes:
            i = next(j for j, r in enumerate(rows) if (r[0], r[1], r[2], r[3]) == key + (size,))
            ms = med[i]
            flag = "*" if i in emulated else " "
            line += f"{ms:>13.1f}{flag}{ms / ref[size]:>10.2f}{ms / base[(key[0], size)]:>10.2f}"
            entry[f"{size[0]}x{size[1]}"] = {"ms": round(ms, 2), "vs_mobileinst_ort_fp32": round(ms / ref[size], 3),
                                             "vs_own_ort_fp32": round(ms / base[(key[0], size)], 3),
                                             "int8_emulated": i in emulated}
        result["rows"].append(entry)
        print(line)
    if emulated:
        print("# * OpenVINO could not compile this QDQ graph as int8 (its low-precision transformations throw); "
              "it ran with fake quantization in fp32")
    if args.json:
        from mobileinst_core.files import atomic_write_json

        atomic_write_json(args.json, result, indent=2)
    return result


if __name__ == "__main__":
    main()
