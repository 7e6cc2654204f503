#!/usr/bin/env python
"""Install MobileInst: packages ``mobileinst``, ``mobileinst_core`` and ``mobileinst_runtime``
from projects/MobileInst."""
import sys

from setuptools import find_packages, setup


def _has_official_detectron2() -> bool:
    """True where a detectron2 other than the PyPI wheel is already installed."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover
        return False
    try:
        metadata.distribution("detectron2")
        return True
    except metadata.PackageNotFoundError:
        return False


install_requires = [
    "torch>=2.0",
    "torchvision",
    "fvcore",
    "iopath",
    "numpy<2",
    "pycocotools>=2.0.2",
    "scipy",
    "lvis",
    "motmetrics==1.4.0",  # tracking metrics (mobileinst.evaluation.mot_metrics)
    "pandas<3",  # motmetrics' dependency; tested with 2.3.3
    "tqdm",
    "setuptools<81",
]
# detectron2 publishes no package. On CPython 3.10 the PyPI wheel
# `sal-detectron2` (detectron2 main, April 2024) installs; where detectron2
# is already installed from source, that one is used.
if not _has_official_detectron2():
    install_requires.append('sal-detectron2==0.7.2; python_version == "3.10"')

setup(
    name="mobileinst",
    version="0.1.0",
    description="MobileInst: video instance segmentation on the mobile (Detectron2 extension)",
    license="Apache-2.0",
    python_requires=">=3.8",
    package_dir={"": "projects/MobileInst"},
    # mobileinst (PyTorch, detectron2) and mobileinst_runtime (a backend library) both import
    # mobileinst_core, the numpy core they share
    packages=find_packages(where="projects/MobileInst", include=["mobileinst", "mobileinst.*", "mobileinst_core",
                                                                   "mobileinst_core.*", "mobileinst_runtime",
                                                                   "mobileinst_runtime.*"]),
    install_requires=install_requires,
    # the runtime's backends (python -m mobileinst_runtime --backend ...), one extra each;
    # the export writes the ONNX graphs (onnxruntime checks them), with --quantize NNCF's int8
    # graphs for OpenVINO, and with --ncnn pnnx's
    extras_require={
        "export": ["onnx", "onnxruntime", "onnxscript", "pnnx", "nncf"],
        "onnxruntime": ["onnxruntime"],
        "openvino": ["openvino"],
        "ncnn": ["ncnn"],
        "dev": ["pytest"],
    },
)
