# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""int8 graphs for OpenVINO: NNCF's post-training quantization of the exported ONNX graphs.

OpenVINO compiles onnxruntime's QDQ graphs (``*_int8.onnx``) only partly: its
low-precision transformations throw on the quantized bias of the kernel head, and
the graph then runs as fp32 fake quantization (int8 numerics at fp32 speed, see
``mobileinst_runtime.backends.OpenVinoBackend``). NNCF (the OpenVINO toolkit's
quantizer, PyPI ``nncf``) quantizes the fp32 graph as OpenVINO runs it and writes
an IR (``{name}_int8.xml`` / ``.bin``) whose convolutions and matrix products run
as int8. The runtime's OpenVINO backend takes the ``.xml`` where there is one; it
needs ``openvino`` only, not NNCF.

The calibration feeds are those of onnxruntime's quantization
(:func:`mobileinst.export.int8.calibration_feeds`), so both int8 graphs see the same images.
"""
import logging
import os
from typing import Dict, List

import numpy as np

logger = logging.getLogger("mobileinst.export")

__all__ = ["nncf_available", "quantize_openvino"]


def nncf_available() -> bool:
    """Whether ``nncf`` and ``openvino`` can be imported (the export extra)."""
    import importlib.util

    return all(importlib.util.find_spec(p) is not None for p in ("nncf", "openvino"))


def _save_ir(ov, model, xml_path: str) -> str:
    """``model`` to ``xml_path`` (+ ``.bin``) with fp32 weights, written under temporary
    names and renamed .bin first: an .xml on disk always has its .bin."""
    stem = xml_path[: -len(".xml")]
    tmp = stem + ".tmp"
    ov.save_model(model, tmp + ".xml", compress_to_fp16=False)
    os.replace(tmp + ".bin", stem + ".bin")
    os.replace(tmp + ".xml", xml_path)
    return xml_path


def quantize_openvino(output: str, feeds: Dict[str, List[Dict[str, np.ndarray]]]) -> Dict[str, str]:
    """Write ``{name}_int8.xml`` / ``.bin`` in ``output`` for every ``{name}.onnx`` in
    ``feeds`` (graph name -> calibration feeds, {input name: array} each), quantized by
    ``nncf.quantize`` with the MIXED preset: symmetric int8 weights per channel,
    asymmetric activations per tensor (the backbone's activations are not centred on
    zero), fast bias correction. Returns {name: .xml path}.

    On ``make demo``'s video model (docs/history.md, "OpenVINO int8 through NNCF") the
    MIXED preset lost 0.1 video AP where the default (symmetric) one lost 1.6, at 1.8x
    the fp32 graphs' speed against 2.0x; ``ModelType.TRANSFORMER`` kept fp32's speed."""
    import nncf
    import openvino as ov

    core = ov.Core()
    written = {}
    for name, items in feeds.items():
        model = core.read_model(os.path.join(output, f"{name}.onnx"))
        quantized = nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.MIXED,
                                  subset_size=len(items))
        written[name] = _save_ir(ov, quantized, os.path.join(output, f"{name}_int8.xml"))
        logger.info(f"{name}: {written[name]} (NNCF int8 for OpenVINO)")
    return written
