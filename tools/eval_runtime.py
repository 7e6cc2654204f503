#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Video AP of the runtime (per backend; fp32, and int8 where the backend has it) next to
the PyTorch path, on one dataset.

    python tools/eval_runtime.py --config-file configs/synthetic/MobileInst_TopFormer_tiny_synthetic_ytvis.yaml \
        --model-dir output/export --dataset synthetic_ytvis_val MODEL.WEIGHTS output/quickstart/video/model_final.pth \
        --backends onnxruntime openvino ncnn

Prints and writes (``--output``) {"pytorch": {...}, "onnx_fp32": {...}, "onnx_int8": {...},
"openvino_fp32": {...}, ..., "ncnn_fp32": {...}} with the YouTube-VIS metrics of each, all with the
same reuse interval and association (onnxruntime's rows keep their names "onnx_*").
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import mobileinst  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))

import torch  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402

from mobileinst.config import load_mobileinst_config  # noqa: E402
from mobileinst.utils.cli import config_argument_parser, parse_with_overrides  # noqa: E402
from mobileinst.evaluation.ytvis_metric import evaluate_ytvis  # noqa: E402
from mobileinst_core.categories import dataset_category_ids  # noqa: E402
from mobileinst_core.files import atomic_write_json  # noqa: E402
from mobileinst_core.ytvis_json import ytvis_entries  # noqa: E402
from mobileinst_runtime.backends import BACKENDS, get_backend  # noqa: E402
from mobileinst_runtime.segmenter import VideoSegmenter  # noqa: E402


def _category_ids(dataset):
    return dataset_category_ids(MetadataCatalog.get(dataset).thing_dataset_id_to_contiguous_id)


def runtime_results(model_dir, dataset, int8=False, threads=0, backend="onnxruntime"):
    """YouTube-VIS results of the runtime on ``backend`` over every video of ``dataset``."""
    seg = VideoSegmenter(model_dir, threads, suffix="_int8" if int8 else "", backend=backend)
    results = []
    for video in DatasetCatalog.get(dataset):
        seg.reset()
        for f in video["file_names"]:
            seg.step(read_image(f, format="BGR"))
        results += ytvis_entries(seg.ytvis_result(video["video_id"]), video["video_id"], _category_ids(dataset))
    return results


def pytorch_results(cfg, dataset):
    """YouTube-VIS results of the PyTorch video path (the model on each video of ``dataset``)."""
    from detectron2.modeling import build_model

    from mobileinst.data import check_num_classes
    from mobileinst.data.ytvis_mapper import YTVISTestMapper
    from mobileinst.utils.checkpoint import load_weights
    from mobileinst.utils.fuse import fuse_conv_bn

    check_num_classes(cfg, [dataset])
    model = build_model(cfg).eval()
    load_weights(model, cfg.MODEL.WEIGHTS)
    model = fuse_conv_bn(model, inplace=True)  # BN folded, as in the predictors and the export
    mapper = YTVISTestMapper(cfg)
    results = []
    with torch.no_grad():
        for video in DatasetCatalog.get(dataset):
            out = model([mapper(video)])[0]
            results += ytvis_entries(out, video["video_id"], _category_ids(dataset))
    return results


def main(argv=None):
    p = config_argument_parser(description=__doc__)
    p.add_argument("--config-file", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--dataset", default="synthetic_ytvis_val")
    p.add_argument("--output", default="")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--backends", nargs="+", default=["onnxruntime"], choices=list(BACKENDS),
                   help="runtime backends to evaluate (ncnn: the graphs of tools/export.py --ncnn)")
    args = parse_with_overrides(p, argv)
    cfg = load_mobileinst_config(args.config_file, args.opts, device="cpu")
    gt = MetadataCatalog.get(args.dataset).json_file
    keys = ("AP", "AP50", "AP75", "AR1", "AR10")
    report = {"pytorch": evaluate_ytvis(gt, pytorch_results(cfg, args.dataset), return_per_category=False)}
    for backend in args.backends:
        row = "onnx" if backend == "onnxruntime" else backend
        for int8 in (False, True) if not args.no_int8 and get_backend(backend).int8 else (False,):
            results = runtime_results(args.model_dir, args.dataset, int8=int8, backend=backend)
            report[f"{row}_{'int8' if int8 else 'fp32'}"] = evaluate_ytvis(gt, results, return_per_category=False)
    report = {k: {m: round(float(v[m]), 2) for m in keys} for k, v in report.items()}
    for k, v in report.items():
        print(f"{k:<14} " + "  ".join(f"{m} {v[m]:.2f}" for m in keys))
    if args.output:
        atomic_write_json(args.output, report, indent=2)
    return report


if __name__ == "__main__":
    main()
