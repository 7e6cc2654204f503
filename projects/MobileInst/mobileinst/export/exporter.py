# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The export of a config's model for a fixed input size into one folder (``tools/export.py``):
the graphs of :mod:`mobileinst.export.graphs` as ONNX (checked against PyTorch) and
TorchScript, optionally their int8 graphs (onnxruntime; OpenVINO through NNCF where it
is installed) and ncnn graphs (through pnnx), and export_meta.json."""
import logging
import os

import torch
from detectron2.modeling import build_model

from mobileinst_core.export_meta import write_export_meta
from mobileinst_core.files import prepare_output_dir, remove_if_empty

from ..data import check_num_classes
from ..utils.checkpoint import load_weights
from ..utils.fuse import fuse_conv_bn
from .graphs import GRAPHS, build_export_meta, build_graph_modules
from .int8 import calibration_feeds, calibration_files, calibration_images, quantize
from .ncnn import export_ncnn, pnnx_executable
from .onnx import check_parity, export_onnx, export_torchscript
from .openvino import nncf_available, quantize_openvino

logger = logging.getLogger("mobileinst.export")


def load_model(cfg, fuse=True):
    """The model of ``cfg`` with ``MODEL.WEIGHTS`` (read as data; it must fit the model)."""
    model = build_model(cfg).eval()
    load_weights(model, cfg.MODEL.WEIGHTS)
    return fuse_conv_bn(model) if fuse else model


def export(cfg, output, height, width, graphs=GRAPHS, torchscript=True, do_quantize=False, calib_dir=None,
           ncnn=False):
    """Export ``graphs``; returns a dict report (paths, parity; with ``ncnn`` "ncnn":
    :func:`mobileinst.export.ncnn.export_ncnn`'s report).

    The config (NUM_CLASSES against DATASETS.TEST[0]), the weights, the
    calibration images and (``ncnn``) pnnx are checked before ``output`` is created."""
    if height <= 0 or width <= 0:
        raise ValueError(f"--size {height} {width}: expected a positive height and width")
    if cfg.DATASETS.TEST:
        check_num_classes(cfg, [cfg.DATASETS.TEST[0]], load=False)  # class_names of export_meta.json
    if do_quantize:
        calibration_files(calib_dir)
    if ncnn:
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
        # every graph from the model: the network in ncnn, the ranking in the runtime (numpy);
        # export_ncnn(output, model) (try_whole) reports what blocks converting the graphs whole
        with torch.no_grad():
            report["ncnn"] = export_ncnn(output, model, graphs, try_whole=False)
    return report
