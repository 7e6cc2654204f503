# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""int8 graphs: the calibration images and feeds, and onnxruntime's static int8 (QDQ)
quantization of the ONNX graphs (``{name}_int8.onnx``). The same feeds calibrate
OpenVINO's int8 graphs (:func:`mobileinst.export.openvino.quantize_openvino`)."""
import os

import numpy as np

from .onnx import replace_tmp


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
        written[name] = replace_tmp(tmp, dst)
    return written
