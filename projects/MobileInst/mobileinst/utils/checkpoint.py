# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Loading weights into a model only where they fit.

* :class:`MobileInstCheckpointer`: detectron2's ``DetectionCheckpointer`` reading
  files as data (:mod:`mobileinst.utils.weights_io`), with a ``_load_model`` that
  raises a :class:`CheckpointMismatchError` naming the first mismatched, missing
  or unexpected keys and their shapes, except for the partial loads that are
  meant: a checkpoint with another number of classes (the class head is
  skipped) and backbone-only (ImageNet) weights. Every MobileInst entry point
  (``train_net.py``, ``demo.py``, the predictors, export, benchmark) loads
  ``MODEL.WEIGHTS`` through it.
* :func:`load_backbone_weights` / :func:`check_state_dict`: backbone ImageNet
  weights (``MODEL.TOPFORMER.WEIGHTS``, ``MODEL.SEAFORMER.WEIGHTS``,
  ``MODEL.MOBILENETV2.WEIGHTS``), strictly.

Paths under ``pretrained/`` (here and in ``MODEL.WEIGHTS``) are looked for in
``$MOBILEINST_PRETRAINED`` when it is set (:mod:`mobileinst.utils.pretrained`).
"""
import logging
import os
import zipfile
from typing import Dict, Optional
from urllib.parse import parse_qs, urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from fvcore.common.checkpoint import _strip_prefix_if_present

from .pretrained import resolve_pretrained
from .weights_io import (_CONTAINER_KEYS, _HEAD_PREFIXES, CheckpointMismatchError, _as_tensors, _check_exists,
                         read_pickle_weights, read_state_dict, torch_load_weights)

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointMismatchError",
    "MobileInstCheckpointer",
    "load_weights",
    "check_state_dict",
    "load_backbone_weights",
]

# Parameters whose first dimension is the number of classes: a checkpoint
# trained on another class set (COCO -> YouTube-VIS) skips them.
CLASS_HEAD_PREFIXES = ("instance_decoder.cls_head.", "instance_decoder.pooled_class_head.pooled_cls.")
# How many keys an error message names.
_SHOW = 10


# --------------------------------------------------------------------------- reading


def _shape(t) -> tuple:
    return tuple(t.shape)


def _listing(title: str, items) -> str:
    items = list(items)
    shown = items[:_SHOW] + ([f"... and {len(items) - _SHOW} more"] if len(items) > _SHOW else [])
    return f"  {title} ({len(items)}): " + "; ".join(shown)


def _mismatch_lines(own, sd, missing, unexpected, wrong):
    lines = []
    if wrong:
        lines.append(_listing("wrong shapes", (f"{k}: checkpoint {_shape(sd[k])}, model {_shape(own[k])}"
                                               for k in wrong)))
    if missing:
        lines.append(_listing("missing from the checkpoint", (f"{k} {_shape(own[k])}" for k in missing)))
    if unexpected:
        lines.append(_listing("not in the model", (f"{k} {_shape(sd[k])}" for k in unexpected)))
    return lines


def _is_class_head(key, ckpt_shape, model_shape) -> bool:
    """A class-head parameter whose shapes differ only in the number of classes."""
    return (key.startswith(CLASS_HEAD_PREFIXES) and len(ckpt_shape) == len(model_shape)
            and ckpt_shape[1:] == model_shape[1:])


def _ignorable_missing(key: str) -> bool:
    # BatchNorm counters (absent in older checkpoints); input normalisation comes from the config.
    return key.endswith("num_batches_tracked") or key in ("pixel_mean", "pixel_std")


def _group(keys) -> str:
    counts = {}
    for k in keys:
        top = k.split(".")[0]
        counts[top] = counts.get(top, 0) + 1
    return ", ".join(f"{top}: {n}" for top, n in sorted(counts.items()))


def _backbone_only(own, sd) -> Optional[Dict[str, torch.Tensor]]:
    """``sd`` as backbone weights keyed like the model, or None when it is not
    a backbone-only (ImageNet) checkpoint. Classification-head keys are dropped."""
    if any(k in own and not k.startswith("backbone.") for k in sd):
        return None  # holds heads of a detector: a full checkpoint
    body = {k: v for k, v in sd.items() if not k.startswith(_HEAD_PREFIXES)
            and not k[len("backbone."):].startswith(_HEAD_PREFIXES)}
    if not body:
        return None
    if all(k.startswith("backbone.") for k in body):
        return body
    prefixed = {"backbone." + k: v for k, v in body.items()}
    if any(k in own for k in prefixed) and not any(k.startswith("backbone.") for k in body):
        return prefixed  # a bare backbone state dict ("tpm.stem...", "features.0...")
    return None


def check_state_dict(module: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str):
    """Raise a ``ValueError`` listing missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    wrong = sorted(k for k in own if k in state_dict and _shape(state_dict[k]) != _shape(own[k]))
    if missing or unexpected or wrong:
        variant = getattr(module, "variant", None)
        what = type(module).__name__ + (f" (variant {variant!r}; weights of another variant?)" if variant else "")
        lines = [f"{source} does not match {what}:"]
        lines += _mismatch_lines(own, state_dict, missing, unexpected, wrong)
        raise ValueError("\n".join(lines))


# --------------------------------------------------------------------------- checkpointer


class MobileInstCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads weights as data and loads only checkpoints that fit.

    Reading: ``.pkl`` through :func:`read_pickle_weights` (Detectron2 model-zoo
    format, with its Caffe2 / matching-heuristics conversions), everything else
    (``.pth``, ``.pyth``, a torch zip named ``.pkl``) through
    :func:`torch_load_weights`. Resuming (``--resume``) reads detectron2's own
    checkpoints: the model, the optimizer, the scheduler and the iteration are
    tensors, numbers and dicts, which ``weights_only`` admits.

    Loading (``strict=True``, what every MobileInst entry point uses): a
    checkpoint must fit the model, key for key and shape for shape, or a
    :class:`CheckpointMismatchError` names the first keys that do not. Two
    partial loads are meant and are logged with what they skipped:

    * the class head (``instance_decoder.cls_head``, the last layer of
      ``instance_decoder.pooled_class_head.pooled_cls``) of a model trained with another number
      of classes, e.g. a COCO model as the start of a YouTube-VIS model;
    * backbone-only weights (an ImageNet TopFormer / SeaFormer / MobileNetV2 state dict,
      bare or under ``backbone.``, its classification head dropped): the
      decoders start from their initialisation.

    ``strict=False`` (for a Python caller) is detectron2's behaviour: whatever
    fits is loaded, the rest is logged.
    """

    def __init__(self, model, save_dir="", *, strict: bool = True, field: str = "MODEL.WEIGHTS", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.strict = strict
        self.field = field
        self._path = None

    # ---- reading -------------------------------------------------------------
    def load(self, path, *args, **kwargs):
        if path:
            path = resolve_pretrained(path)  # pretrained/... -> $MOBILEINST_PRETRAINED/...
            local = urlparse(path)._replace(query="").geturl()
            if "://" not in local:  # a local file: say which field names it
                _check_exists(local, self.field)
        self._path = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._path = None
            self._parsed_url_during_load = None  # detectron2 leaves it set when loading fails

    def resume_or_load(self, path, *, resume=True):
        if resume and self.has_checkpoint():
            field = self.field
            self.field = f"--resume (last checkpoint named in {os.path.join(self.save_dir, 'last_checkpoint')})"
            try:
                return self.load(self.get_checkpoint_file())
            finally:
                self.field = field
        return self.load(path, checkpointables=[])

    def _torch_load(self, f):
        return torch_load_weights(f, self.field)

    def _load_file(self, filename):
        if filename.endswith(".pkl") and not zipfile.is_zipfile(filename):
            data = read_pickle_weights(filename, self.field)
            if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
                self.logger.info("Reading a file from '{}'".format(data["__author__"]))
                return data
            # Caffe2 / Detectron1 model zoo
            if "blobs" in data:
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        loaded = self._torch_load(filename)
        if not isinstance(loaded, dict):
            raise CheckpointMismatchError(
                f"{self.field}: '{filename}' holds a {type(loaded).__name__}, not a dict of weights")
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in loaded:
                raise CheckpointMismatchError(f"{self.field}: '{filename}': pycls checkpoints hold 'model_state'")
            model_state = {k: v for k, v in loaded["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}
        if "model" not in loaded:
            # mmcls / timm-style wrappers ({"state_dict": ..., "meta": ...}), else a bare state dict
            inner = next((loaded[k] for k in _CONTAINER_KEYS if isinstance(loaded.get(k), dict)), None)
            loaded = {"model": inner if inner is not None else loaded}
        queries = parse_qs(self._parsed_url_during_load.query) if self._parsed_url_during_load else {}
        if queries.pop("matching_heuristics", "False") == ["True"]:
            loaded["matching_heuristics"] = True
        if queries:
            raise ValueError(f"{self.field}: unsupported query {queries} in '{self._parsed_url_during_load.geturl()}'")
        return loaded

    # ---- loading -------------------------------------------------------------
    def _load_model(self, checkpoint):
        where = f"{self.field}='{self._path}'"
        sd = checkpoint.get("model")
        if not isinstance(sd, dict):
            raise CheckpointMismatchError(f"{where} holds no state dict ('model' is a {type(sd).__name__})")
        sd = _as_tensors(sd, where)
        if checkpoint.pop("matching_heuristics", False):
            sd = align_and_update_state_dicts(self.model.state_dict(), sd,
                                              c2_conversion=checkpoint.get("__author__", None) == "Caffe2")
        _strip_prefix_if_present(sd, "module.")
        if not self.strict:
            checkpoint["model"] = sd
            return super()._load_model(checkpoint)
        checkpoint["model"] = self._fit(sd, where)
        super()._load_model(checkpoint)
        return None  # _fit has reported what was skipped

    def _fit(self, sd, where):
        """The part of ``sd`` to load, or a CheckpointMismatchError."""
        own = self.model.state_dict()
        model_name = type(self.model).__name__
        hint = ("Use the config the checkpoint was trained with (MODEL.TOPFORMER.VARIANT or "
                "MODEL.SEAFORMER.VARIANT, MODEL.MOBILEINST.* "
                "sizes and options) or the checkpoint of this config. Partial loads that are meant: another "
                "number of classes (the class head is skipped) and backbone-only (ImageNet) weights.")
        body = _backbone_only(own, sd)
        if body is not None:
            unexpected = sorted(k for k in body if k not in own)
            wrong = sorted(k for k in body if k in own and _shape(body[k]) != _shape(own[k]))
            if unexpected or wrong:
                lines = [f"{where} holds backbone weights that do not fit the backbone of {model_name}:"]
                lines += _mismatch_lines(own, body, [], unexpected, wrong)
                lines.append("ImageNet weights of another backbone or variant? MODEL.TOPFORMER.WEIGHTS / "
                             "MODEL.SEAFORMER.WEIGHTS / MODEL.MOBILENETV2.WEIGHTS take the official ImageNet "
                             "checkpoints. " + hint)
                raise CheckpointMismatchError("\n".join(lines))
            dropped = len(sd) - len(body)
            fresh = [k for k in own if k not in body and not _ignorable_missing(k)]
            logger.warning(
                f"{where}: backbone-only weights: loaded {len(body)} backbone tensors"
                + (f", dropped {dropped} classification-head tensors" if dropped else "")
                + f"; {len(fresh)} tensors keep their initialisation ({_group(fresh)})")
            return body
        missing = [k for k in own if k not in sd and not _ignorable_missing(k)]
        unexpected = [k for k in sd if k not in own]
        wrong = [k for k in own if k in sd and _shape(sd[k]) != _shape(own[k])]
        heads = [k for k in wrong if _is_class_head(k, _shape(sd[k]), _shape(own[k]))]
        wrong = [k for k in wrong if k not in heads]
        if missing or unexpected or wrong:
            n = len(missing) + len(unexpected) + len(wrong)
            lines = [f"{where} does not fit this {model_name} ({len(own)} tensors): {n} keys differ "
                     "(a checkpoint of another architecture or config?):"]
            lines += _mismatch_lines(own, sd, missing, unexpected, wrong)
            lines.append(hint)
            raise CheckpointMismatchError("\n".join(lines))
        if heads:
            shapes = ", ".join(f"{k} {_shape(sd[k])} -> {_shape(own[k])}" for k in heads)
            logger.warning(f"{where}: the checkpoint has another number of classes; its class head is skipped "
                           f"and starts from its initialisation: {shapes}")
            sd = {k: v for k, v in sd.items() if k not in heads}
        return sd


def load_weights(model: torch.nn.Module, path: str, field: str = "MODEL.WEIGHTS"):
    """Load ``path`` into ``model`` safely and strictly (:class:`MobileInstCheckpointer`);
    an empty ``path`` loads nothing; errors name ``field``. Returns ``model``."""
    MobileInstCheckpointer(model, field=field).load(path)
    return model


# --------------------------------------------------------------------------- backbone weights


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
