# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The export of a config's model for a fixed input size into one folder (``tools/export.py``):
the graphs of :mod:`mobileinst.export.graphs` as ONNX (checked against PyTorch) and
TorchScript, optionally their int8 graphs (onnxruntime; OpenVINO through NNCF where it
is installed) and ncnn graphs (through pnnx), and export_meta.json.

An export is one unit: it is written into a temporary sibling folder
(``.NAME.tmp-XXXX`` beside ``output``); only when every graph is written, export_meta.json
lists each file with its sha256 and size, and each file has been read back against
it, is the folder renamed onto ``output``. An existing export is refused unless
``overwrite``, and with it replaced as a whole (:func:`mobileinst_core.files.replace_dir`),
so graphs of two exports never mix. A failure or an interrupt at any point leaves
the earlier export as it was and no temporary folder."""
import logging
import os
import shutil
import tempfile

import torch
from detectron2.modeling import build_model

from mobileinst_core.export_meta import META_FILE, record_files, verify_file, write_export_meta
from mobileinst_core.files import prepare_output_dir, remove_if_empty, replace_dir

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


def check_output(output: str, overwrite: bool) -> bool:
    """Whether ``output`` may take the export, before any work: a file is refused, an
    existing export without ``overwrite`` (``FileExistsError``), and a folder holding
    files that is not an export even with it (it would be deleted). Returns whether an
    existing folder is to be replaced (an export, or an empty folder)."""
    if not os.path.lexists(output):
        return False
    if not os.path.isdir(output):
        raise NotADirectoryError(f"Output folder '{output}' is a file")
    if not os.listdir(output):
        return True
    if not os.path.exists(os.path.join(output, META_FILE)):
        raise FileExistsError(f"Output folder '{output}' holds files but no {META_FILE}: it is not an export, and "
                              "an export replaces its folder as a whole; choose another --output")
    if not overwrite:
        raise FileExistsError(f"Output folder '{output}' holds an export; pass --overwrite to replace it as a whole "
                              "(or choose another --output)")
    return True


def _mkdtemp_beside(output: str) -> str:
    """An empty temporary folder beside ``output`` (same file system), with the
    permissions a new folder gets (mkdtemp's are 0700)."""
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.tmp-", dir=os.path.dirname(output))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def _relocate(report, tmp: str, output: str):
    """The report's paths in ``tmp`` as paths in ``output``."""
    if isinstance(report, dict):
        return {k: _relocate(v, tmp, output) for k, v in report.items()}
    if isinstance(report, (list, tuple)):
        return type(report)(_relocate(v, tmp, output) for v in report)
    if isinstance(report, str) and (report == tmp or report.startswith(tmp + os.sep)):
        return output + report[len(tmp):]
    return report


def export(cfg, output, height, width, graphs=GRAPHS, torchscript=True, do_quantize=False, calib_dir=None,
           ncnn=False, overwrite=False):
    """Export ``graphs``; returns a dict report (paths, parity; with ``ncnn`` "ncnn":
    :func:`mobileinst.export.ncnn.export_ncnn`'s report).

    The config (NUM_CLASSES against DATASETS.TEST[0]), the weights, the calibration
    images, (``ncnn``) pnnx and ``output`` (:func:`check_output`) are checked before
    anything is written. The export is written beside ``output`` and renamed onto it
    when complete (the module's docstring)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"--size {height} {width}: expected a positive height and width")
    output = os.path.abspath(os.fspath(output))
    replace = check_output(output, overwrite)
    if cfg.DATASETS.TEST:
        check_num_classes(cfg, [cfg.DATASETS.TEST[0]], load=False)  # class_names of export_meta.json
    if do_quantize:
        calibration_files(calib_dir)
    if ncnn:
        pnnx_executable()  # ImportError naming the package to install
    model = load_model(cfg)
    created = prepare_output_dir(os.path.dirname(output))
    tmp = _mkdtemp_beside(output)
    try:
        report = _export(cfg, model, tmp, height, width, graphs, torchscript, do_quantize, calib_dir, ncnn)
        meta = record_files(tmp)
        for name in meta.files:  # read back: every file as listed
            verify_file(tmp, meta, name)
        replace_dir(tmp, output, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_if_empty(os.path.dirname(output), created)
        raise
    logger.info(f"export: {output} ({len(meta.files)} graph files)")
    return _relocate(report, tmp, output)


def _export(cfg, model, output, height, width, graphs, torchscript, do_quantize, calib_dir, ncnn):
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
