# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Reading weights files as data, never as code.

* :func:`torch_load_weights`: ``torch.load(weights_only=True)`` (tensors,
  numbers, strings and containers; anything else is refused).
* :func:`read_pickle_weights`: Detectron2 model-zoo and converted ``.pkl``
  checkpoints through a restricted unpickler that admits numpy arrays, dtypes
  and plain containers only.
* :func:`read_state_dict`: a backbone's ImageNet state dict (``MODEL.TOPFORMER.WEIGHTS``,
  ``MODEL.SEAFORMER.WEIGHTS``, ``MODEL.MOBILENETV2.WEIGHTS``), its wrappers and
  classification head taken off.

Loading what was read into a model, only where it fits, is
:mod:`mobileinst.utils.checkpoint`'s.
"""
import importlib
import pickle
import re
from typing import Dict

import numpy as np
import torch
from detectron2.utils.file_io import PathManager

from .pretrained import resolve_pretrained

# Wrappers used by common training frameworks around the state dict, in the
# order the official TopFormer / SeaFormer loaders take them: timm-trained
# ImageNet checkpoints hold both the EMA weights and the raw ones.
_CONTAINER_KEYS = ("state_dict_ema", "state_dict", "model")
# Prefixes added by wrappers (DDP, mmseg/mmcls "backbone.").
_PREFIXES = ("module.", "backbone.")
# ImageNet classification heads that a dense-prediction backbone drops
# (SeaFormer's is ``linear.``; "fc1000." is the classifier of detectron2's Caffe2
# ImageNet ResNets, R-50.pkl).
_HEAD_PREFIXES = ("head.", "classifier.", "fc.", "fc1000.", "norm_head.", "linear.")


class UnsafeCheckpointError(RuntimeError):
    """A weights file that asks to run code or build objects other than weights."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not fit the model."""


def _check_exists(path: str, field: str):
    if not PathManager.exists(path):
        raise FileNotFoundError(f"{field}: checkpoint '{path}' does not exist")
    if PathManager.isdir(path):
        raise IsADirectoryError(f"{field}: checkpoint '{path}' is a folder, not a weights file")


def torch_load_weights(path: str, field: str = "MODEL.WEIGHTS"):
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name
    ``field`` and ``path``. A file that would need full unpickling (code,
    arbitrary objects) raises :class:`UnsafeCheckpointError`; nothing in it runs."""
    _check_exists(path, field)
    with PathManager.open(path, "rb") as f:
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            what = re.search(r"GLOBAL ([\w.]+)", str(e))
            if what is None:
                lines = [x.strip() for x in str(e).splitlines() if x.strip()]
                detail = next((x for x in lines if x.startswith(("Unsupported", "WeightsUnpickler"))), lines[-1])
                raise RuntimeError(
                    f"{field}: could not read '{path}' as a PyTorch weights file ({detail}). A Detectron2 "
                    "model-zoo pickle must be named .pkl.") from None
            raise UnsafeCheckpointError(
                f"{field}: refused to load '{path}': it is not plain weights (it asks for {what.group(1)}). "
                "Checkpoints are read as data only (torch.load(weights_only=True): tensors, numbers, strings, "
                "lists and dicts); nothing in the file was run. Re-save the weights with "
                "torch.save({'model': model.state_dict()}, path)."
            ) from None
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise RuntimeError(f"{field}: could not read '{path}' as a PyTorch checkpoint: {e!r}") from e


# (module, name) pairs a weights .pkl may refer to: numpy arrays, dtypes and
# scalars, and plain containers. Nothing else is ever imported or called.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
}
_SAFE_PICKLE_GLOBALS = frozenset(
    _NUMPY_GLOBALS
    | {(m.replace("numpy.core", "numpy._core"), n) for m, n in _NUMPY_GLOBALS if m.startswith("numpy.core")}
    | {
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles
    }
)


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; refuses every other global."""

    def find_class(self, module, name):
        import _compat_pickle

        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)  # Python 2 names (__builtin__)
        if (module, name) not in _SAFE_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}")
        try:
            mod = importlib.import_module(module)
        except ImportError:  # numpy 2 pickles (numpy._core) read by numpy 1
            mod = importlib.import_module(module.replace("numpy._core", "numpy.core"))
        return getattr(mod, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds persistent ids (a torch.save file? name it .pth)")


def read_pickle_weights(path: str, field: str = "MODEL.WEIGHTS"):
    """Read a Detectron2 model-zoo / converted ``.pkl`` checkpoint as data.

    Only numpy arrays (of numbers), dtypes, numbers, strings and containers
    are admitted; a file that asks for anything else raises
    :class:`UnsafeCheckpointError` before any of it runs."""
    _check_exists(path, field)
    with PathManager.open(path, "rb") as f:
        try:
            data = _WeightsUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(
                f"{field}: refused to load '{path}': it is not a pickle of weights ({e}). .pkl checkpoints are "
                "read as data only (numpy arrays, numbers, strings, lists and dicts); nothing in the file was run."
            ) from None
        except Exception as e:  # noqa: BLE001 - truncated or not a pickle at all
            raise RuntimeError(f"{field}: could not read '{path}' as a .pkl checkpoint: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointMismatchError(f"{field}: '{path}' holds a {type(data).__name__}, not a dict of weights")
    return data


def _as_tensors(state_dict: dict, where: str) -> Dict[str, torch.Tensor]:
    """numpy arrays -> tensors; anything that is not an array of numbers is refused."""
    out = {}
    for k, v in state_dict.items():
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject or v.dtype.kind not in "biufc":
                raise CheckpointMismatchError(f"{where}: '{k}' is an array of {v.dtype}, not of numbers")
            v = torch.from_numpy(np.array(v, order="C"))  # a copy; keeps 0-d arrays 0-d
        elif not isinstance(v, torch.Tensor):
            raise CheckpointMismatchError(f"{where}: '{k}' is a {type(v).__name__}, not a tensor")
        out[k] = v
    return out


# --------------------------------------------------------------------------- checking


def read_state_dict(path: str, field: str = "weights") -> Dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True)``.

    Accepts a plain state dict or one wrapped in ``{"state_dict_ema": ...}``,
    ``{"state_dict": ...}`` or ``{"model": ...}`` (taken in that order, as the
    official TopFormer / SeaFormer loaders do); strips ``module.`` and
    ``backbone.`` prefixes. A path under ``pretrained/`` is looked for in
    ``$MOBILEINST_PRETRAINED`` when set
    (:func:`mobileinst.utils.pretrained.resolve_pretrained`).
    """
    path = resolve_pretrained(path)
    try:
        obj = torch_load_weights(path, field)
    except RuntimeError as e:
        if isinstance(e, UnsafeCheckpointError):
            raise
        raise RuntimeError(
            f"{field}: could not read '{path}' as a weights-only PyTorch checkpoint (tensors in a dict): "
            f"{e.__cause__ or e}"
        ) from e
    for key in _CONTAINER_KEYS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RuntimeError(f"{field}: '{path}' does not hold a state dict of tensors")
    out = {}
    for k, v in obj.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out
