# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The ImageNet weights training starts from: which key names them, where the
file is looked for, when it is needed, and the check that it is there.

* Key. A backbone built by ``build_<name>_backbone`` whose config node
  ``MODEL.<NAME>`` has a ``WEIGHTS`` key reads its ImageNet checkpoint from
  there (``MODEL.TOPFORMER.WEIGHTS``, ``MODEL.MOBILENETV2.WEIGHTS``,
  ``MODEL.SEAFORMER.WEIGHTS``); every other backbone (detectron2's
  ``build_resnet_backbone``, ...) starts from ``MODEL.WEIGHTS``, as in
  detectron2, which loads it through ``MobileInstCheckpointer``.
* Folder. A path that starts with ``pretrained/`` names a file in the folder
  ``$MOBILEINST_PRETRAINED`` when that variable is set, else in
  ``pretrained/`` under the working directory (the repository root for
  ``train_net.py``), as ``$DETECTRON2_DATASETS`` does for data. Other paths
  are used as they are.
* When. A backbone's ImageNet file is read only when ``MODEL.WEIGHTS`` is
  empty: a full MobileInst checkpoint in ``MODEL.WEIGHTS`` replaces every
  backbone tensor, so evaluation, export, the demo and fine-tuning from a COCO
  model do not need it. Training from scratch is an explicit ``WEIGHTS ""``.
* Check. :func:`check_start_weights` (the trainer, before it builds anything)
  and :func:`backbone_build_cfg` (every model build) stop with a message that
  names the key, the file and the two ways out.
"""
import os
import re
from typing import Tuple

from detectron2.config import CfgNode

PRETRAINED_DIR = "pretrained"
PRETRAINED_ENV = "MOBILEINST_PRETRAINED"


def resolve_pretrained(path: str) -> str:
    """``path`` with a leading ``pretrained/`` replaced by ``$MOBILEINST_PRETRAINED`` when set."""
    head = PRETRAINED_DIR + "/"
    folder = os.environ.get(PRETRAINED_ENV, "")
    if folder and path.startswith(head):
        return os.path.join(folder, path[len(head):])
    return path


def backbone_weights_key(cfg) -> str:
    """The full key naming the ImageNet checkpoint of ``cfg``'s backbone."""
    match = re.fullmatch(r"build_(\w+)_backbone", cfg.MODEL.BACKBONE.NAME)
    node = match.group(1).upper() if match else ""
    if node and isinstance(cfg.MODEL.get(node), CfgNode) and "WEIGHTS" in cfg.MODEL[node]:
        return f"MODEL.{node}.WEIGHTS"
    return "MODEL.WEIGHTS"


def _get(cfg, key: str) -> str:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def start_weights(cfg) -> Tuple[str, str]:
    """(key, path) of the weights a model of ``cfg`` starts from: MODEL.WEIGHTS when
    set, else the backbone's ImageNet key. An empty path: from scratch."""
    if cfg.MODEL.WEIGHTS:
        return "MODEL.WEIGHTS", cfg.MODEL.WEIGHTS
    key = backbone_weights_key(cfg)
    return key, _get(cfg, key)


def _check_file(key: str, path: str):
    if not path or "://" in path:  # from scratch, or a URL (its handler reports what it cannot fetch)
        return
    found = resolve_pretrained(path)
    if os.path.isfile(found):
        return
    where = f" (looked for '{os.path.abspath(found)}')"
    fetch = ""
    if path.startswith(PRETRAINED_DIR + "/"):
        fetch = (f"put the official ImageNet checkpoint there (README.md, \"ImageNet weights\"; the folder is "
                 f"${PRETRAINED_ENV} when set, else ./{PRETRAINED_DIR}), ")
    raise FileNotFoundError(
        f"{key}='{path}': no such file{where}. Training starts from it: {fetch}or set {key} \"\" to train "
        f"from scratch." + ("" if key == "MODEL.WEIGHTS" else
                            " With a full MobileInst checkpoint in MODEL.WEIGHTS this file is not read."))


def check_start_weights(cfg):
    """Raise FileNotFoundError, naming the key and the file, when the weights a
    training of ``cfg`` starts from (:func:`start_weights`) are missing."""
    _check_file(*start_weights(cfg))


def backbone_build_cfg(cfg):
    """``cfg`` for ``build_backbone``: with MODEL.WEIGHTS set, a copy whose
    backbone ImageNet key is "" (the full checkpoint replaces those weights, so
    the file is neither needed nor read); otherwise ``cfg``, once its backbone
    ImageNet file is found (:func:`check_start_weights`)."""
    key = backbone_weights_key(cfg)
    if key == "MODEL.WEIGHTS":
        return cfg
    if cfg.MODEL.WEIGHTS:
        if not _get(cfg, key):
            return cfg
        cfg = cfg.clone()
        cfg.defrost()
        cfg.merge_from_list([key, ""])
        return cfg
    _check_file(key, _get(cfg, key))
    return cfg
