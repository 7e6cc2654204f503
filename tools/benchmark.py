#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Speed of MobileInst next to Detectron2's Mask R-CNN R50-FPN, on this CPU.

Prints a table and writes JSON: parameters, GFLOPs (fvcore, via detectron2's
``flop_count_operators``), per-module times and the median end-to-end latency
per image (pre-processing, model, post-processing to full-size masks) at a
given short side and thread count. Random weights are fine for timing.

    python tools/benchmark.py --config-file configs/coco/MobileInst_TopFormer_base_640.yaml --threads 1
    python tools/benchmark.py ... --video --frames 30        # per-frame latency for T = 1, 3, 5
    python tools/benchmark.py --train --config-file configs/synthetic/MobileInst_TopFormer_tiny_synthetic.yaml \
        --threads 2 [--variant "KEY VALUE ..."]            # training throughput (variants interleaved)

Every run records the machine: its CPU and its measured sgemm GFLOP/s on 1
thread and on --threads (``tools/machine.py``); compare figures of
different runs only as ratios to it.
"""
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import mobileinst  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.analysis import flop_count_operators  # noqa: E402

from mobileinst.config import build_tracker_settings, load_mobileinst_config  # noqa: E402
from mobileinst.postprocess import score_queries  # noqa: E402
from mobileinst.utils.checkpoint import load_weights  # noqa: E402
from mobileinst.utils.cli import config_argument_parser, parse_with_overrides  # noqa: E402
from mobileinst.utils.fuse import fuse_conv_bn  # noqa: E402
from mobileinst.utils.pretrained import backbone_weights_key  # noqa: E402
from mobileinst.video.tracker import VideoTracker  # noqa: E402
from mobileinst_core.files import atomic_write_json  # noqa: E402
from machine import machine_info  # noqa: E402  (tools/machine.py)


MACHINE = {}  # machine_info() of this run


def image_size_for(short_side: int, aspect: float = 4 / 3, max_size: int = 0):
    long_side = int(round(short_side * aspect))
    if max_size:
        long_side = min(long_side, max_size)
    return short_side, long_side


def median_ms(fn, runs: int, warmup: int):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), times


def count_params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def gflops(model, inputs) -> float:
    with torch.no_grad():
        return float(sum(flop_count_operators(model, inputs).values()))


def mobileinst_cfg(args, opts=()):
    """The config with random weights: timing needs neither trained weights
    (``--weights`` loads them) nor the backbone's ImageNet file."""
    cfg = load_mobileinst_config(args.config_file, ["MODEL.WEIGHTS", ""] + list(args.opts) + list(opts),
                                 device="cpu", freeze=False)
    cfg.merge_from_list([backbone_weights_key(cfg), ""])
    return cfg


def bench_mobileinst(args, image):
    cfg = mobileinst_cfg(args)
    model = build_model(cfg).eval()
    if args.weights:  # read as data; must fit the model
        load_weights(model, args.weights, field="--weights")
    params = count_params(model)
    raw_model = model
    if not args.no_fuse:
        model = fuse_conv_bn(model)
    inputs = [{"image": image}]
    res = {"config": os.path.relpath(args.config_file, ROOT), "params_M": round(params, 3),
           "backbone_params_M": round(count_params(raw_model.backbone), 3),
           "input_hw": list(image.shape[-2:]), "bn_fused": not args.no_fuse}
    res["gflops"] = round(gflops(model, inputs), 3)
    with torch.no_grad():
        res["latency_ms"], times = median_ms(lambda: model(inputs), args.runs, args.warmup)
        # per-module profile on the padded, normalised batch
        batch = model.preprocess([image]).tensor
        feats = model.backbone(batch)
        x_mask = model.mask_decoder(feats)
        out = model.instance_decoder(feats["x6"], x_mask)
        masks = model.mask_logits(out["pred_kernels"], x_mask)
        prof = {
            "preprocess": lambda: model.preprocess([image]),
            "backbone": lambda: model.backbone(batch),
            "mask_decoder": lambda: model.mask_decoder(feats),
            "instance_decoder": lambda: model.instance_decoder(feats["x6"], x_mask),
            "mask_kernels": lambda: model.mask_logits(out["pred_kernels"], x_mask),
        }
        from mobileinst.postprocess import postprocess_instances

        size = batch.shape[-2:]
        prof["postprocess"] = lambda: postprocess_instances(
            out["pred_logits"][0], out["pred_objectness"][0], masks[0], size, image.shape[-2:], image.shape[-2:],
            model.cls_threshold, model.mask_threshold, model.max_detections)
        res["modules_ms"] = {k: round(median_ms(f, max(3, args.runs // 2), 1)[0], 2) for k, f in prof.items()}
    res["latency_ms"] = round(res["latency_ms"], 2)
    res["gflops_per_s"] = round(res["gflops"] / (res["latency_ms"] / 1000), 2)
    return res, model, raw_model


def bench_maskrcnn(args):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    h, w = image_size_for(args.maskrcnn_short_side, max_size=1333)
    image = torch.as_tensor(np.random.RandomState(1).randint(0, 255, (3, h, w), dtype=np.uint8))
    inputs = [{"image": image}]
    res = {"config": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml (random weights)",
           "params_M": round(count_params(model), 3), "input_hw": [h, w]}
    res["gflops"] = round(gflops(model, inputs), 3)
    with torch.no_grad():
        res["latency_ms"] = round(median_ms(lambda: model(inputs), max(3, args.runs // 3), 1)[0], 2)
    res["gflops_per_s"] = round(res["gflops"] / (res["latency_ms"] / 1000), 2)
    return res


def tracked_slots_threshold(model, frame, k):
    """A track-score threshold that keeps the top ``k`` queries of ``frame``: with random
    weights every query passes the configured threshold, which no trained model does."""
    with torch.no_grad():
        out = model.predict(model.preprocess([frame]).tensor)
        scores, _ = score_queries(out["pred_logits"][0], out["pred_objectness"][0])
    return float(scores.sort(descending=True).values[min(k, scores.numel()) - 1]) - 1e-6


def time_stream(step, reset, frames, warmup):
    """Mean per-frame latency of ``step`` over ``frames`` after ``warmup`` frames and a reset."""
    for f in frames[:warmup]:
        step(f)
    reset()
    times = []
    for f in frames:
        s = time.perf_counter()
        step(f)
        times.append((time.perf_counter() - s) * 1000)
    ms = statistics.mean(times)
    return {"ms_per_frame": round(ms, 2), "fps": round(1000 / ms, 2)}


def bench_video(args, model, frames):
    """Per-frame latency of online inference for each T (and each non-keyframe
    scale of ``--nonkey-scales``) on the same frames."""
    out = {"tracked_slots": args.tracked_slots}
    thr = tracked_slots_threshold(model, frames[0], args.tracked_slots)
    base_settings = build_tracker_settings(mobileinst_cfg(args))
    for scale in args.nonkey_scales:
        for t in args.intervals:
            if t == 1 and scale != args.nonkey_scales[0]:
                continue  # every frame is a keyframe: the scale plays no part
            settings = base_settings.replace(reuse_interval=t, track_score_threshold=thr, nonkey_scale=scale)
            tracker = VideoTracker(model, settings=settings, keep_results=False)
            with torch.no_grad():
                out[video_key(t, scale)] = time_stream(tracker.step, tracker.reset, frames, args.warmup)
    base = out[video_key(args.intervals[0], args.nonkey_scales[0])]["fps"]
    for k, v in out.items():
        if k.startswith("T="):
            v["speedup_vs_first"] = round(v["fps"] / base, 3)
    return out


def video_key(t, scale):
    return f"T={t}" if scale == 1.0 else f"T={t} nonkey x{scale:g}"


def bench_onnx(args, cfg, model, frames, h, w, threads_list, track_threshold):
    """ONNX Runtime fp32 / int8: image latency and per-frame video latency for T in --intervals."""
    import tempfile

    from mobileinst.export import export
    from mobileinst_runtime.segmenter import ImageSegmenter, VideoSegmenter

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        from detectron2.checkpoint import DetectionCheckpointer

        DetectionCheckpointer(model, tmp).save("bench_weights")  # the benchmarked (unfused) weights
        cfg = cfg.clone()
        cfg.MODEL.WEIGHTS = os.path.join(tmp, "bench_weights.pth")
        calib = os.path.join(tmp, "calib")
        os.makedirs(calib)
        import cv2

        for i, f in enumerate(frames[:8]):
            cv2.imwrite(os.path.join(calib, f"{i:03d}.png"), f.permute(1, 2, 0).numpy()[:, :, ::-1])
        graphs = os.path.join(tmp, "graphs")  # an export is a folder of its own (replaced as a whole)
        export(cfg, graphs, h, w, torchscript=False, do_quantize=True, calib_dir=calib)
        bgr = [f.permute(1, 2, 0).numpy()[:, :, ::-1].copy() for f in frames]
        for threads in threads_list:
            for kind, suffix in (("fp32", ""), ("int8", "_int8")):
                key = f"ort_{kind}_threads{threads}"
                seg = ImageSegmenter(graphs, threads, graph=f"image{suffix}.onnx")
                ms, _ = median_ms(lambda: seg(bgr[0]), args.runs, args.warmup)
                res = {"image_latency_ms": round(ms, 2)}
                for t in args.intervals:
                    vs = VideoSegmenter(graphs, threads, reuse_interval=t, keep_results=False, suffix=suffix)
                    vs.track_score_threshold = track_threshold
                    res[f"T={t}"] = time_stream(vs.step, vs.reset, bgr, args.warmup)
                out[key] = res
    return out


def synthetic_frames(n, h, w, seed=0):
    """A moving-shapes clip at the benchmark size (real content, not noise)."""
    import cv2

    rng = np.random.RandomState(seed)
    frames = []
    pos = rng.rand(4, 2) * [w, h]
    vel = (rng.rand(4, 2) - 0.5) * 0.04 * [w, h]
    cols = rng.randint(0, 255, (4, 3))
    bg = cv2.GaussianBlur(rng.randint(0, 255, (h, w, 3)).astype(np.uint8), (0, 0), 15)
    for _ in range(n):
        img = bg.copy()
        for p, c in zip(pos, cols):
            cv2.circle(img, (int(p[0]), int(p[1])), int(0.12 * min(h, w)), tuple(int(x) for x in c), -1)
        pos = (pos + vel) % [w, h]
        frames.append(torch.as_tensor(img.transpose(2, 0, 1).copy()))
    return frames


def bench_training(args):
    """Training throughput of the config (and of each --variant, interleaved step
    by step so that the machine's load affects all alike): median seconds per
    iteration and per phase, images per second, GFLOP per iteration (forward
    and backward: 3x the forward pass's multiply-adds x 2 FLOPs, on a batch at
    the mean training size; fvcore counts a multiply-add as one "flop") and
    the achieved GFLOP/s as a share of the machine's sgemm on all the threads
    the processes use. With ``--processes N`` the steps run in N processes
    (DistributedDataParallel over gloo, IMS_PER_BATCH / N images and the cores
    / N threads each, as ``train_net.py --num-gpus N`` and ``make demo`` train
    on a CPU); the main process's step times are reported."""
    if args.processes <= 1:
        return _bench_training_steps(args)
    from mobileinst.engine import launch

    path = args.output + ".training.json"
    launch(_bench_training_process, args.processes, dist_url="auto", args=(args, dict(MACHINE), path))
    with open(path) as f:
        report = json.load(f)
    os.remove(path)
    return report


def _bench_training_process(args, machine, path):
    from mobileinst.engine import split_cpu_threads

    MACHINE.update(machine)
    set_threads(split_cpu_threads("cpu"))
    report = _bench_training_steps(args)
    if comm.is_main_process():
        atomic_write_json(path, report)


def _bench_training_steps(args):
    from detectron2.engine.defaults import create_ddp_model
    from detectron2.utils.events import EventStorage

    sys.path.insert(0, ROOT)
    from step_profile import PHASES, StepProfiler  # tools/step_profile.py
    from train_net import Trainer

    runs = []
    for variant in [""] + list(args.variant):
        cfg = mobileinst_cfg(args, variant.split())
        torch.manual_seed(0)
        model = Trainer.build_model(cfg)
        optimizer = Trainer.build_optimizer(cfg, model)
        loader = iter(Trainer.build_train_loader(cfg))
        # FLOPs of real batches: the model pads a batch to its largest image (and to
        # the backbone's size divisibility), so a multi-scale batch costs what its
        # largest image does, not what the mean scale would. The loader gives this
        # process's share of SOLVER.IMS_PER_BATCH; the step is all processes'.
        model.eval()
        fwd = comm.get_world_size() * statistics.mean(
            gflops(model, [{"image": x["image"]} for x in next(loader)]) for _ in range(4))
        ddp = create_ddp_model(model, broadcast_buffers=False, device_ids=None, gradient_as_bucket_view=True)  # the model itself in 1 process
        runs.append({"variant": variant or "(config)", "cfg": cfg, "batch": cfg.SOLVER.IMS_PER_BATCH,
                     "gflop_per_iter": 2 * 3 * fwd, "profiler": StepProfiler(ddp, optimizer, loader), "steps": []})
    with EventStorage():
        for i in range(args.warmup + args.runs):
            for r in runs:
                t = r["profiler"].step()
                if i >= args.warmup:
                    r["steps"].append(t)
    threads = torch.get_num_threads() * comm.get_world_size()
    peak = MACHINE[f"sgemm_gflops_{threads}_threads" if threads > 1 else "sgemm_gflops_1_thread"]
    out = []
    for r in runs:
        med = {k: statistics.median(s[k] for s in r["steps"]) for k in PHASES + ("total",)}
        res = {"variant": r["variant"], "ims_per_batch": r["batch"], "s_per_iter": round(med["total"], 4),
               "images_per_s": round(r["batch"] / med["total"], 2),
               "gflop_per_iter": round(r["gflop_per_iter"], 2),
               "gflops_per_s": round(r["gflop_per_iter"] / med["total"], 2),
               "phases_ms": {k: round(med[k] * 1000, 1) for k in PHASES},
               "last_loss": round(r["steps"][-1]["loss_value"], 4)}
        res["share_of_sgemm_peak"] = round(res["gflops_per_s"] / peak, 4)
        out.append(res)
    return {"config": os.path.relpath(args.config_file, ROOT), "processes": comm.get_world_size(),
            "threads": threads, "sgemm_peak_gflops": peak, "runs": out, "steps_timed": args.runs}


def print_training(report):
    print(f"training step, {report['processes']} process(es), {report['threads']} threads in all, "
          f"machine sgemm peak {report['sgemm_peak_gflops']} GFLOP/s")
    print(f"{'variant':<48}{'s/iter':>8}{'img/s':>7}{'GFLOP':>7}{'GFLOP/s':>9}{'peak':>7}  phases (ms)")
    for r in report["runs"]:
        phases = " ".join(f"{k} {v:.0f}" for k, v in r["phases_ms"].items())
        print(f"{r['variant'][:48]:<48}{r['s_per_iter']:>8.3f}{r['images_per_s']:>7.1f}{r['gflop_per_iter']:>7.1f}"
              f"{r['gflops_per_s']:>9.1f}{r['share_of_sgemm_peak'] * 100:>6.1f}%  {phases}")


def set_threads(n: int):
    """Threads for torch and for OpenCV (mask resizing), so that a 1-thread
    figure uses one core end to end."""
    import cv2

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def argument_parser():
    parser = config_argument_parser(description=__doc__)
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs/coco/MobileInst_TopFormer_base_640.yaml"))
    parser.add_argument("--weights", default="", help="optional MobileInst weights (timing needs none)")
    parser.add_argument("--short-side", type=int, default=640)
    parser.add_argument("--max-size", type=int, default=864)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: all cores)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-maskrcnn", action="store_true", help="skip the Mask R-CNN reference")
    parser.add_argument("--maskrcnn-short-side", type=int, default=800)
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm unfused")
    parser.add_argument("--video", action="store_true", help="also time online video inference for T in --intervals")
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--nonkey-scales", type=float, nargs="+", default=[1.0, 0.75],
                        help="video: VIDEO.NONKEY_SCALE values to time (1.0: the paper's full-size non-keyframes)")
    parser.add_argument("--tracked-slots", type=int, default=10,
                        help="video: queries tracked per frame (random weights would track all)")
    parser.add_argument("--onnx", action="store_true",
                        help="also export and time ONNX Runtime fp32 and int8 (image, and video for --intervals)")
    parser.add_argument("--all-threads", action="store_true",
                        help="time PyTorch and ONNX Runtime at --threads and at all cores")
    parser.add_argument("--train", action="store_true",
                        help="time training steps of --config-file instead of inference (see bench_training)")
    parser.add_argument("--variant", action="append", default=[], metavar='"KEY VALUE ..."',
                        help="--train: a variant of the config, timed interleaved with it; repeatable")
    parser.add_argument("--processes", type=int, default=1,
                        help="--train: training processes sharing the --threads (DistributedDataParallel)")
    parser.add_argument("--output", default="output/benchmark/benchmark.json")
    return parser


def main(argv=None):
    args = parse_with_overrides(argument_parser(), argv)

    set_threads(args.threads or os.cpu_count())
    MACHINE.update(machine_info())
    if args.train:
        report = {"machine": dict(MACHINE), "training": bench_training(args)}
        print_training(report["training"])
        atomic_write_json(args.output, report, indent=2)
        print(f"wrote {args.output}")
        return report
    h, w = image_size_for(args.short_side, max_size=args.max_size)
    image = torch.as_tensor(np.random.RandomState(0).randint(0, 255, (3, h, w), dtype=np.uint8))
    report = {"machine": dict(MACHINE)}
    report["mobileinst"], model, raw_model = bench_mobileinst(args, image)
    frames = synthetic_frames(args.frames, h, w) if (args.video or args.onnx) else None
    if args.video:
        report["video"] = bench_video(args, model, frames)
    threads_list = [torch.get_num_threads()]
    if args.all_threads and os.cpu_count() not in threads_list:
        threads_list.append(os.cpu_count())
        set_threads(os.cpu_count())
        report["mobileinst_all_threads"], model_all, _ = bench_mobileinst(args, image)
        if args.video:
            report["video_all_threads"] = bench_video(args, model_all, frames)
        set_threads(threads_list[0])
    if args.onnx:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        thr = tracked_slots_threshold(model, frames[0], args.tracked_slots)
        report["onnxruntime"] = bench_onnx(args, mobileinst_cfg(args), raw_model, frames, h, w, threads_list, thr)
        for v in report["onnxruntime"].values():
            v["gflops_per_s"] = round(report["mobileinst"]["gflops"] / (v["image_latency_ms"] / 1000), 2)
    if not args.no_maskrcnn:
        report["mask_rcnn_r50_fpn"] = bench_maskrcnn(args)
        report["speedup_vs_mask_rcnn"] = round(
            report["mask_rcnn_r50_fpn"]["latency_ms"] / report["mobileinst"]["latency_ms"], 2)

    mi = report["mobileinst"]
    m = report["machine"]
    print(f"{m['cpu']}, threads {m['threads']}, sgemm " + ", ".join(
        f"{k[len('sgemm_gflops_'):]} {v}" for k, v in m.items() if k.startswith("sgemm_gflops_")) + " GFLOP/s")
    print(f"{'model':<34}{'input':>12}{'params M':>10}{'GFLOPs':>9}{'ms':>10}{'GFLOP/s':>9}")
    rows = [("MobileInst " + os.path.basename(args.config_file), mi)]
    if "mask_rcnn_r50_fpn" in report:
        rows.append(("Mask R-CNN R50-FPN", report["mask_rcnn_r50_fpn"]))
    for name, r in rows:
        print(f"{name[:34]:<34}{'x'.join(map(str, r['input_hw'])):>12}{r['params_M']:>10.2f}{r['gflops']:>9.2f}"
              f"{r['latency_ms']:>10.1f}{r['gflops_per_s']:>9.1f}")
    print(f"MobileInst backbone: {mi['backbone_params_M']:.2f} M parameters")
    print("MobileInst modules (ms): " + ", ".join(f"{k} {v}" for k, v in mi["modules_ms"].items()))
    if "speedup_vs_mask_rcnn" in report:
        print(f"MobileInst is {report['speedup_vs_mask_rcnn']}x faster than Mask R-CNN R50-FPN")
    if "mobileinst_all_threads" in report:
        r = report["mobileinst_all_threads"]
        print(f"MobileInst, {os.cpu_count()} threads: {r['latency_ms']} ms ({r['gflops_per_s']} GFLOP/s)")
    for key in ("video", "video_all_threads"):
        for k, v in report.get(key, {}).items():
            if not k.startswith("T="):
                continue
            print(f"{key} PyTorch {k}: {v['ms_per_frame']} ms/frame, {v['fps']} fps ({v['speedup_vs_first']}x)")
    for name, r in report.get("onnxruntime", {}).items():
        video = ", ".join(f"{k} {v['fps']} fps" for k, v in r.items() if k.startswith("T="))
        print(f"{name}: image {r['image_latency_ms']} ms ({r['gflops_per_s']} GFLOP/s); video {video}")
    atomic_write_json(args.output, report, indent=2)
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
