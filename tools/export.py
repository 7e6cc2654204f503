#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Export a trained MobileInst to ONNX and TorchScript for a fixed input size.

    python tools/export.py --config-file configs/synthetic/MobileInst_TopFormer_tiny_synthetic.yaml \
        --size 256 256 --output output/export MODEL.WEIGHTS output/quickstart/video/model_final.pth
    python tools/export.py ... --quantize --calib-dir datasets/synthetic_coco/val --ncnn

Writes (``mobileinst.export`` describes the graphs):
  image.onnx            image -> scores, classes, mask_probs
  keyframe.onnx         image -> kernels, scores, classes, class_scores, mask_features
  mask_head.onnx        mask_features, kernels -> mask_probs
  nonkeyframe.onnx      image, kernels -> mask_probs   (kernel reuse: no instance decoder)
  *.ts                  the same graphs as TorchScript (torch.jit.trace)
  *_int8.onnx           with --quantize: static int8 (QDQ) quantization by onnxruntime
  *_int8.xml/.bin       with --quantize, where nncf is installed: the same calibration through NNCF,
                        as OpenVINO IR that OpenVINO runs as int8 (mobileinst.export_openvino)
  *.ncnn.param/.bin/.json  with --ncnn: the graphs for ncnn, through pnnx (mobileinst.export_ncnn)
  export_meta.json      input size/format, normalisation, classes, thresholds, ranking, video settings
and checks every ONNX graph against PyTorch with onnxruntime. The runtime
(python -m mobileinst_runtime --backend onnxruntime|openvino|ncnn) reads this folder.
"""
import json
import logging
import os
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import mobileinst  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from mobileinst.config import load_mobileinst_config  # noqa: E402
from mobileinst.utils.cli import config_argument_parser, parse_with_overrides  # noqa: E402
from mobileinst.data import check_num_classes  # noqa: E402
from mobileinst.export import GRAPHS, build_export_meta, build_graph_modules  # noqa: E402
from mobileinst.export_openvino import nncf_available, quantize_openvino  # noqa: E402
from mobileinst.utils.checkpoint import load_weights  # noqa: E402
from mobileinst.utils.fuse import fuse_conv_bn  # noqa: E402
from mobileinst_core.export_meta import write_export_meta  # noqa: E402
from mobileinst_core.files import prepare_output_dir, remove_if_empty  # noqa: E402

logger = logging.getLogger("mobileinst.export")


def _replace(tmp, final):
    os.replace(tmp, final)
    return final


def export_onnx(module, inputs, input_names, output_names, dynamic_axes, path, opset=17):
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, tmp, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
    return _replace(tmp, path)


def export_torchscript(module, inputs, path):
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, inputs, check_trace=False)
    traced.save(tmp)
    return _replace(tmp, path)


def check_parity(module, inputs, input_names, path):
    """Max |onnxruntime - PyTorch| per float output; for integer outputs (classes)
    the fraction of differing elements. Outputs ranked by "scores" are
    compared row by row against the reference rows of (nearly) equal score,
    since float noise may swap queries whose scores tie: equal within 1e-5 or
    twice the largest score difference, whichever is larger (a mask pixel
    crossing the threshold moves a mask-rescored score by more than 1e-5)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {n: x.numpy() for n, x in zip(input_names, inputs)})
    with torch.no_grad():
        ref = module(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    names = [o.name for o in sess.get_outputs()]
    ref = [r.numpy() for r in ref]
    ties = None
    if "scores" in names and names.index("scores") == 0:
        s_ort, s_ref = outs[0].astype(np.float64), ref[0].astype(np.float64)
        tol = max(1e-5, 2 * float(np.abs(s_ort - s_ref).max(initial=0.0)))
        ties = np.abs(s_ort[:, None] - s_ref[None, :]) <= tol  # (K, K): rows that may swap
    report = {}
    for i, (name, o, r) in enumerate(zip(names, outs, ref)):
        if np.issubdtype(o.dtype, np.integer):
            report[name] = float((o != r).mean())
        elif ties is not None and i > 0 and o.shape[:1] == ties.shape[:1] and o.ndim > 1:
            diff = np.abs(o.reshape(len(o), 1, -1).astype(np.float64) - r.reshape(1, len(r), -1)).max(-1)
            report[name] = float(np.where(ties, diff, np.inf).min(1).max())
        else:
            report[name] = float(np.abs(o.astype(np.float64) - r.astype(np.float64)).max())
    return report


def calibration_files(calib_dir):
    """The images under ``calib_dir``; raises FileNotFoundError if there are none."""
    if not calib_dir:
        raise ValueError("--quantize needs --calib-dir (a folder of representative images)")
    if not os.path.isdir(calib_dir):
        raise FileNotFoundError(f"--calib-dir '{calib_dir}' is not a folder")
    files = []
    for dirpath, _, names in os.walk(calib_dir):
        files += [os.path.join(dirpath, n) for n in sorted(names) if n.lower().endswith((".jpg", ".jpeg", ".png"))]
    if not files:
        raise FileNotFoundError(f"--calib-dir '{calib_dir}' holds no images (.jpg, .jpeg, .png)")
    return files


def calibration_images(calib_dir, height, width, fmt, num=16):
    import cv2

    from mobileinst_core.frames import Letterbox

    files = calibration_files(calib_dir)
    box = Letterbox((height, width), fmt, (0, 0, 0))
    step = max(1, len(files) // num)
    out = []
    for f in files[::step][:num]:
        img = cv2.imread(f, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"Cannot decode calibration image '{f}'")
        out.append(box(img)[0].astype(np.uint8))
    return out


def calibration_feeds(output, graphs, images, nonkey_images):
    """{graph name: [{input name: array}]} for int8 calibration: the images, and for the
    graphs that take kernels, the fp32 keyframe graph's kernels of those images."""
    import onnxruntime as ort

    key = ort.InferenceSession(os.path.join(output, "keyframe.onnx"), providers=["CPUExecutionProvider"])
    key_outs = [key.run(None, {"image": img}) for img in images]
    feeds = {
        "image": [{"image": img} for img in images],
        "keyframe": [{"image": img} for img in images],
        "mask_head": [{"mask_features": o[4], "kernels": o[0][:4]} for o in key_outs],
        "nonkeyframe": [{"image": img, "kernels": o[0][:4]} for img, o in zip(nonkey_images, key_outs)],
    }
    return {name: feeds[name] for name in graphs}


def quantize(output, feeds):
    """Static int8 QDQ quantization of the ONNX graphs (onnxruntime.quantization);
    ``feeds``: :func:`calibration_feeds`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, items):
            self.it = iter(items)

        def get_next(self):
            return next(self.it, None)

    written = {}
    for name, items in feeds.items():
        src = os.path.join(output, f"{name}.onnx")
        dst = os.path.join(output, f"{name}_int8.onnx")
        tmp = dst + ".tmp"
        quantize_static(src, tmp, Reader(items), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        written[name] = _replace(tmp, dst)
    return written


def load_model(cfg, fuse=True):
    """The model of ``cfg`` with ``MODEL.WEIGHTS`` (read as data; it must fit the model)."""
    model = build_model(cfg).eval()
    load_weights(model, cfg.MODEL.WEIGHTS, cfg)
    return fuse_conv_bn(model) if fuse else model


def export(cfg, output, height, width, graphs=GRAPHS, torchscript=True, do_quantize=False, calib_dir=None,
           ncnn=False):
    """Export ``graphs``; returns a dict report (paths, parity; with ``ncnn`` "ncnn":
    :func:`mobileinst.export_ncnn.export_ncnn`'s report).

    The config (NUM_CLASSES against DATASETS.TEST[0]), the weights, the
    calibration images and (``ncnn``) pnnx are checked before ``output`` is created."""
    if height <= 0 or width <= 0:
        raise ValueError(f"--size {height} {width}: expected a positive height and width")
    if cfg.DATASETS.TEST:
        check_num_classes(cfg, [cfg.DATASETS.TEST[0]], load=False)  # class_names of export_meta.json
    if do_quantize:
        calibration_files(calib_dir)
    if ncnn:
        from mobileinst.export_ncnn import pnnx_executable

        pnnx_executable()  # ImportError naming the package to install
    model = load_model(cfg)
    created = prepare_output_dir(output)
    try:
        return _export(cfg, model, output, height, width, graphs, torchscript, do_quantize, calib_dir, ncnn)
    except BaseException:
        remove_if_empty(output, created)
        raise


def _remove_stale_int8(output, graphs):
    """Remove int8 graphs of an earlier export of ``graphs`` in ``output``: they would not
    match the new fp32 graphs, and the OpenVINO backend prefers an IR to the ONNX graph."""
    for name in graphs:
        for ext in (".onnx", ".xml", ".bin"):
            path = os.path.join(output, f"{name}_int8{ext}")
            if os.path.exists(path):
                os.remove(path)
                logger.info(f"removed {path} (an earlier export's int8 graph)")


def _export(cfg, model, output, height, width, graphs, torchscript, do_quantize, calib_dir, ncnn):
    _remove_stale_int8(output, graphs)
    meta = build_export_meta(cfg, model, height, width)
    modules = build_graph_modules(model, height, width, meta.tracker.nonkey_scale)
    report = {"onnx": {}, "torchscript": {}, "parity": {}}
    for name in graphs:
        module, inputs, in_names, out_names, dyn = modules[name]
        path = export_onnx(module, inputs, in_names, out_names, dyn, os.path.join(output, f"{name}.onnx"))
        report["onnx"][name] = path
        report["parity"][name] = check_parity(module, inputs, in_names, path)
        if torchscript:
            report["torchscript"][name] = export_torchscript(module, inputs, os.path.join(output, f"{name}.ts"))
        logger.info(f"{name}: {path} parity {report['parity'][name]}")
    if do_quantize:
        images = calibration_images(calib_dir, height, width, cfg.INPUT.FORMAT)
        nh, nw = meta.nonkey_input_size
        nonkey_images = images if (nh, nw) == (height, width) else calibration_images(calib_dir, nh, nw,
                                                                                        cfg.INPUT.FORMAT)
        feeds = calibration_feeds(output, graphs, images, nonkey_images)
        report["int8"] = quantize(output, feeds)
        if nncf_available():
            report["int8_openvino"] = quantize_openvino(output, feeds)
        else:
            logger.warning("nncf is not installed: no OpenVINO int8 graphs (*_int8.xml); OpenVINO would run "
                           "the onnxruntime int8 graphs, partly as fp32 fake quantization (pip install nncf)")
    report["meta"] = write_export_meta(output, meta)
    if ncnn:  # after export_meta.json, whose sizes and ranking settings the ncnn graphs use
        from mobileinst.export_ncnn import export_ncnn

        # every graph from the model: the network in ncnn, the ranking in the runtime (numpy);
        # python -m mobileinst.export_ncnn reports what blocks converting the graphs whole
        with torch.no_grad():
            report["ncnn"] = export_ncnn(output, model, graphs, try_whole=False)
    return report


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
    args = parse_with_overrides(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_mobileinst_config(args.config_file, args.opts, device="cpu")
    h, w = args.size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    report = export(cfg, args.output, h, w, args.graphs, not args.no_torchscript, args.quantize, args.calib_dir,
                    args.ncnn)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
