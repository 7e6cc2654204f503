#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Export a trained MobileInst to ONNX and TorchScript for a fixed input size.

    python tools/export.py --config-file configs/synthetic/MobileInst_TopFormer_tiny_synthetic.yaml \
        --size 256 256 --output output/export MODEL.WEIGHTS output/quickstart/video/model_final.pth
    python tools/export.py ... --quantize --calib-dir datasets/synthetic_coco/val --ncnn

Writes (``mobileinst.export.graphs`` describes the graphs):
  image.onnx            image -> scores, classes, mask_probs
  keyframe.onnx         image -> kernels, scores, classes, class_scores, mask_features
  mask_head.onnx        mask_features, kernels -> mask_probs
  nonkeyframe.onnx      image, kernels -> mask_probs   (kernel reuse: no instance decoder)
  *.ts                  the same graphs as TorchScript (torch.jit.trace)
  *_int8.onnx           with --quantize: static int8 (QDQ) quantization by onnxruntime
  *_int8.xml/.bin       with --quantize, where nncf is installed: the same calibration through NNCF,
                        as OpenVINO IR that OpenVINO runs as int8 (mobileinst.export.openvino)
  *.ncnn.param/.bin/.json  with --ncnn: the graphs for ncnn, through pnnx (mobileinst.export.ncnn)
  export_meta.json      input size/format, normalisation, classes, thresholds, ranking, video settings
and checks every ONNX graph against PyTorch with onnxruntime. The runtime
(python -m mobileinst_runtime --backend onnxruntime|openvino|ncnn) reads this folder.

The export is one unit: written beside --output and renamed onto it when every graph
is written and checked (export_meta.json lists each file with its sha256 and size,
which the runtime checks). An existing export is refused without --overwrite and
replaced as a whole with it; a failed or interrupted export (Ctrl-C, SIGTERM) leaves
the earlier one as it was.
"""
import json
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import mobileinst  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))

from mobileinst.config import load_mobileinst_config  # noqa: E402
from mobileinst.export import GRAPHS, export  # noqa: E402
from mobileinst.utils.cli import config_argument_parser, parse_with_overrides  # noqa: E402
from mobileinst_core.cli import sigterm_exits  # noqa: E402


def main(argv=None):
    parser = config_argument_parser(description=__doc__)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="fixed input size (default: INPUT.MIN_SIZE_TEST square)")
    parser.add_argument("--output", default="output/export")
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=list(GRAPHS))
    parser.add_argument("--no-torchscript", action="store_true")
    parser.add_argument("--quantize", action="store_true",
                        help="also write int8 graphs (QDQ ONNX; OpenVINO IR where nncf is installed)")
    parser.add_argument("--calib-dir", default=None, help="images for int8 calibration")
    parser.add_argument("--ncnn", action="store_true",
                        help="also write the ncnn graphs (*.ncnn.*, through pnnx) for --backend ncnn")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing export in --output as a whole (else it is refused)")
    args = parse_with_overrides(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_mobileinst_config(args.config_file, args.opts, device="cpu")
    h, w = args.size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    with sigterm_exits():
        report = export(cfg, args.output, h, w, args.graphs, not args.no_torchscript, args.quantize, args.calib_dir,
                        args.ncnn, overwrite=args.overwrite)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
