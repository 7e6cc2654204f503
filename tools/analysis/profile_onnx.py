#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Where an exported graph spends its time on onnxruntime: per-node profiling
(``SessionOptions.enable_profiling``) aggregated by op type and by part of the model::

    python tools/analysis/profile_onnx.py output/export/image.onnx --threads 1 --runs 10
    python tools/analysis/profile_onnx.py before/image.onnx after/image.onnx yolo.onnx --runs 10

With several graphs it first times them without profiling, called in turn round by
round (so that the machine's load falls on all alike): median ms and the ratio to
the first graph, then profiles each.

The graph runs with every graph optimisation (as ``mobileinst_runtime`` runs it) on
random inputs of its fixed shapes (``k`` = 10 kernels for a dynamic axis); the first
``--warmup`` runs are left out. A node's part comes from the module path the exporter
put in its name: ``backbone``, ``mask decoder``, ``instance decoder``, ``mask head``
(the kernels applied to X_mask: ``mask_logits``) and ``ranking`` (the export wrapper's own
nodes: what follows, sigmoid, scores, Matrix NMS, top K, and the input's few
normalisation nodes); nodes onnxruntime inserted itself (layout reorders) and those of
another model's graph (``/model.0/...``, YOLO's) are ``other``. Prints ms per run and share: the top op types, every part and the top
(part, op type) pairs;
``--json`` also writes them.
"""
import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))
sys.path.insert(0, os.path.join(ROOT, "tools"))  # machine.py

# (substring of a node name, part): the first that matches names the part
PARTS = (
    ("/backbone/", "backbone"),
    ("/mask_decoder/", "mask decoder"),
    ("/instance_decoder/", "instance decoder"),
    ("Einsum", "mask head"),
    ("/model/", "mask head"),
)
_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(int64)": np.int64}


def node_part(name: str) -> str:
    """The part of the model a node belongs to, from its name."""
    for key, part in PARTS:
        if key in name:
            return part
    # the export wrapper's own nodes (``/Sigmoid``, ``/TopK``, ...): the ranking
    return "ranking" if name.startswith("/") and not name.startswith("/model") else "other"


def random_feeds(session, k=10, seed=0):
    rng = np.random.RandomState(seed)
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else k for d in i.shape]
        dtype = _DTYPES.get(i.type, np.float32)
        feeds[i.name] = (rng.randint(0, 255, shape) if dtype == np.uint8 else rng.randn(*shape)).astype(dtype)
    return feeds


def _session(path, threads, profile_prefix=None):
    """The session as ``mobileinst_runtime`` opens it (every graph optimisation)."""
    from mobileinst_runtime.backends import get_backend

    return get_backend("onnxruntime").session(path, threads, profile_prefix)


def time_alternated(paths, threads=1, runs=10, warmup=2):
    """Median ms per call of each graph, the graphs called in turn round by round."""
    sessions = [_session(p, threads) for p in paths]
    feeds = [random_feeds(s) for s in sessions]
    times = [[] for _ in paths]
    for r in range(warmup + runs):
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            t = time.perf_counter()
            s.run(None, f)
            if r >= warmup:
                times[i].append((time.perf_counter() - t) * 1000)
    return [statistics.median(t) for t in times]


def profile(path, threads=1, runs=10, warmup=2):
    """{"op_types": {op: ms per run}, "parts": {part: ms per run}, "part_ops": {"part / op": ms per run},
    "total_ms", "runs"}."""
    with tempfile.TemporaryDirectory(prefix="ort_profile_") as tmp:
        sess = _session(path, threads, os.path.join(tmp, "profile"))
        feeds = random_feeds(sess)
        for _ in range(warmup + runs):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    # one "model_run" event per run; node events carry op_name, and a "_kernel_time" suffix
    run_starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first_timed = run_starts[warmup] if len(run_starts) > warmup else 0
    by_op, by_part, by_part_op = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < first_timed:
            continue
        ms = e["dur"] / 1000 / runs
        by_op[e["args"]["op_name"]] += ms
        part = node_part(e["name"][: -len("_kernel_time")])
        by_part[part] += ms
        by_part_op[f"{part} / {e['args']['op_name']}"] += ms
    total = sum(by_op.values())
    return {"op_types": dict(by_op.most_common()), "parts": dict(by_part.most_common()),
            "part_ops": dict(by_part_op.most_common()), "total_ms": total, "runs": runs}


def print_profile(res, top=12):
    total = res["total_ms"]
    print(f"# nodes' kernel time per run: {total:.1f} ms (median-free mean of {res['runs']} runs)")
    print(f"{'op type':<28}{'ms':>8}{'share':>8}")
    for op, ms in list(res["op_types"].items())[:top]:
        print(f"{op:<28}{ms:>8.1f}{ms / total:>8.1%}")
    print(f"\n{'part':<28}{'ms':>8}{'share':>8}")
    for part, ms in res["parts"].items():
        print(f"{part:<28}{ms:>8.1f}{ms / total:>8.1%}")
    print(f"\n{'part / op type':<40}{'ms':>8}{'share':>8}")
    for key, ms in list(res["part_ops"].items())[:top]:
        print(f"{key:<40}{ms:>8.1f}{ms / total:>8.1%}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", nargs="+", help="exported graphs (tools/export.py), e.g. output/export/image.onnx")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--top", type=int, default=12, help="op types to print")
    p.add_argument("--no-profile", action="store_true", help="with several graphs: time them only")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    for path in args.onnx:
        if not os.path.exists(path):
            p.error(f"'{path}' does not exist; export it with tools/export.py")
    from machine import sgemm_gflops

    res = {"sgemm_gflops": round(sgemm_gflops(args.threads), 1), "threads": args.threads}
    print(f"# {args.threads} thread(s); sgemm {res['sgemm_gflops']} GFLOP/s")
    if len(args.onnx) > 1:
        ms = time_alternated(args.onnx, args.threads, args.runs, args.warmup)
        res["timing"] = [{"graph": g, "ms": round(m, 2), "x_first": round(m / ms[0], 3)} for g, m in zip(args.onnx, ms)]
        print(f"# medians of {args.runs} rounds, the graphs called in turn")
        print(f"{'graph':<60}{'ms':>9}{'x first':>9}")
        for r in res["timing"]:
            print(f"{r['graph']:<60}{r['ms']:>9.1f}{r['x_first']:>9.2f}")
    if not (args.no_profile and len(args.onnx) > 1):
        res["profiles"] = {}
        for path in args.onnx:
            print(f"\n## {path}")
            res["profiles"][path] = profile(path, args.threads, args.runs, args.warmup)
            print_profile(res["profiles"][path], args.top)
    if args.json:
        from mobileinst_core.files import atomic_write_json

        atomic_write_json(args.json, res, indent=2)
    return res


if __name__ == "__main__":
    main()
