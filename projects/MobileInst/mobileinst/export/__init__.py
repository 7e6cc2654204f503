# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The export toolchain of ``tools/export.py``: a trained MobileInst as graphs for runtimes.

* :mod:`.graphs`: the plain-tensor graph modules (image, keyframe, mask_head,
  nonkeyframe) for a fixed input size, and export_meta.json from the config;
* :mod:`.onnx`: writing them as ONNX and TorchScript, the parity check with onnxruntime;
* :mod:`.int8`: calibration and onnxruntime's static int8 (QDQ) quantization;
* :mod:`.openvino`: int8 IR for OpenVINO through NNCF;
* :mod:`.ncnn`: ncnn graphs through pnnx;
* :mod:`.exporter`: :func:`export`, all of it into one folder.

onnx, onnxruntime, nncf, openvino, ncnn and pnnx are imported only by the functions
that need them.
"""
from .exporter import export, load_model
from .graphs import (GRAPHS, ImageModel, KeyframeModel, MaskHead, NonKeyframeModel, build_export_meta,
                     build_graph_modules, example_inputs, padded_size)
from .int8 import calibration_feeds, calibration_files, calibration_images, quantize
from .ncnn import convert_graph, export_ncnn, pnnx_executable
from .onnx import check_parity, export_onnx, export_torchscript
from .openvino import nncf_available, quantize_openvino

__all__ = [
    "export", "load_model",
    "GRAPHS", "ImageModel", "KeyframeModel", "MaskHead", "NonKeyframeModel", "build_export_meta",
    "build_graph_modules", "example_inputs", "padded_size",
    "calibration_feeds", "calibration_files", "calibration_images", "quantize",
    "convert_graph", "export_ncnn", "pnnx_executable",
    "check_parity", "export_onnx", "export_torchscript",
    "nncf_available", "quantize_openvino",
]
