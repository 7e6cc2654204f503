# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Loading backbone weights safely (tensors only, never a full pickle)."""
import logging
from typing import Dict

import torch
from detectron2.utils.file_io import PathManager

logger = logging.getLogger(__name__)

# Wrappers used by common training frameworks around the state dict.
_CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema")
# Prefixes added by wrappers (DDP, mmseg/mmcls "backbone.").
_PREFIXES = ("module.", "backbone.")
# ImageNet classification heads that a dense-prediction backbone drops.
_HEAD_PREFIXES = ("head.", "classifier.", "fc.", "norm_head.")


def read_state_dict(path: str, field: str = "weights") -> Dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True)``.

    Accepts a plain state dict or one wrapped in ``{"state_dict": ...}`` /
    ``{"model": ...}``; strips ``module.`` and ``backbone.`` prefixes.
    """
    if not PathManager.exists(path):
        raise FileNotFoundError(f"{field}: checkpoint '{path}' does not exist")
    with PathManager.open(path, "rb") as f:
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise RuntimeError(
                f"{field}: could not read '{path}' as a weights-only PyTorch checkpoint "
                f"(tensors in a dict): {e}"
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


def check_state_dict(module: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str):
    """Raise a ``ValueError`` listing missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    wrong = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or wrong:
        lines = [f"{source} does not match {type(module).__name__}:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("wrong shapes", wrong)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
        raise ValueError("\n".join(lines))


def load_backbone_weights(module: torch.nn.Module, path: str, field: str):
    """Load ``path`` into ``module`` strictly, dropping a classification head."""
    sd = read_state_dict(path, field)
    dropped = [k for k in sd if k.startswith(_HEAD_PREFIXES)]
    for k in dropped:
        del sd[k]
    if dropped:
        logger.info(f"{field}: ignored {len(dropped)} classification-head keys from {path}")
    check_state_dict(module, sd, f"{field}='{path}'")
    module.load_state_dict(sd, strict=True)
    logger.info(f"Loaded {len(sd)} tensors into {type(module).__name__} from {path}")
