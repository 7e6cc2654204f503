# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Video dataset mappers.

* :class:`YTVISPairMapper` (training): samples frames (t, t+d) of one video,
  d in [1, INPUT.SAMPLING_FRAME_RANGE], applies the *same* augmentation to
  both and keeps instance identities (``gt_ids`` = track ids). For
  ``MobileInstVideo`` a COCO-style image dict becomes a pseudo video of two
  independently augmented views of the image (``gt_ids`` = annotation index).
  Output: {"image": [C,H,W tensor] * 2, "instances": [Instances] * 2, ...},
  the input of temporal query passing.
* :class:`YTVISTestMapper` (inference): a whole video as a lazy sequence of
  resized frames (read on access, so memory does not grow with length).
"""
import copy
import logging
from collections.abc import Sequence
from typing import List

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

__all__ = ["YTVISPairMapper", "YTVISTestMapper", "LazyFrames", "build_pair_mapper"]

logger = logging.getLogger(__name__)


def _read(file_name, fmt):
    try:
        return utils.read_image(file_name, format=fmt)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise OSError(f"Failed to read frame '{file_name}': {e}") from e


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class YTVISPairMapper:
    """Frame pairs (t, t+d) with shared augmentation, for query-passing training."""

    def __init__(self, augmentations: List[T.Augmentation], image_format: str, mask_format: str,
                 sampling_frame_range: int, seed: int = None):
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.mask_format = mask_format
        self.frame_range = max(1, int(sampling_frame_range))
        # (t, d) draws; without ``seed`` seeded from numpy's global generator, which
        # detectron2 seeds with cfg.SEED: runs with the same SEED see the same pairs
        self.rng = np.random.default_rng(seed if seed is not None else np.random.randint(2 ** 31))
        logger.info(f"[YTVISPairMapper] augmentations {augmentations}, d in [1, {self.frame_range}]")

    @classmethod
    def from_config(cls, cfg):
        return {
            "augmentations": utils.build_augmentation(cfg, is_train=True),
            "image_format": cfg.INPUT.FORMAT,
            "mask_format": cfg.INPUT.MASK_FORMAT,
            "sampling_frame_range": cfg.INPUT.SAMPLING_FRAME_RANGE,
        }

    def sample_pair(self, length: int):
        """(t, t+d) with 1 <= d <= range; (0, 0) for a single-frame video."""
        if length <= 1:
            return 0, 0
        t = int(self.rng.integers(0, length - 1))
        d = int(self.rng.integers(1, min(self.frame_range, length - 1 - t) + 1))
        return t, t + d

    def _instances(self, annos, transforms, image_shape, ids):
        annos = [
            utils.transform_instance_annotations(copy.deepcopy(a), transforms, image_shape)
            for a in annos if a.get("iscrowd", 0) == 0
        ]
        inst = utils.annotations_to_instances(annos, image_shape, mask_format=self.mask_format)
        inst.gt_ids = torch.tensor(ids[: len(annos)] if ids is not None else [a["id"] for a in annos],
                                   dtype=torch.int64)
        return utils.filter_empty_instances(inst)

    def __call__(self, dataset_dict):
        d = dataset_dict
        if "file_names" in d:  # a video
            t0, t1 = self.sample_pair(len(d["file_names"]))
            images = [_read(d["file_names"][t], self.image_format) for t in (t0, t1)]
            for img, t in zip(images, (t0, t1)):
                utils.check_image_size({"file_name": d["file_names"][t], "height": d["height"],
                                        "width": d["width"]}, img)
            aug_input = T.AugInput(images[0])
            transforms = self.augmentations(aug_input)
            images = [aug_input.image, transforms.apply_image(images[1])]
            frames = [d["annotations"][t] for t in (t0, t1)] if "annotations" in d else [[], []]
            shape = images[0].shape[:2]
            instances = [self._instances(f, transforms, shape, None) for f in frames]
            files = [d["file_names"][t0], d["file_names"][t1]]
        else:  # an image -> pseudo video of two augmented views
            image = _read(d["file_name"], self.image_format)
            utils.check_image_size(d, image)
            annos = [a for a in d.get("annotations", []) if a.get("iscrowd", 0) == 0]
            ids = list(range(len(annos)))
            images, instances = [], []
            for _ in range(2):
                aug_input = T.AugInput(image)
                transforms = self.augmentations(aug_input)
                images.append(aug_input.image)
                instances.append(self._instances(annos, transforms, aug_input.image.shape[:2], ids))
            t0, t1 = 0, 0
            files = [d["file_name"]] * 2
        return {
            "image": [_to_tensor(img) for img in images],
            "instances": instances,
            "file_names": files,
            "frame_indices": [t0, t1],
            "video_id": d.get("video_id", d.get("image_id")),
            "height": images[0].shape[0],
            "width": images[0].shape[1],
        }


def build_pair_mapper(cfg):
    return YTVISPairMapper(**YTVISPairMapper.from_config(cfg))


class LazyFrames(Sequence):
    """Frames of a video read, resized and converted on access."""

    def __init__(self, file_names, augmentation: T.Augmentation, image_format: str, size=None):
        self.file_names = list(file_names)
        self.augmentation = augmentation
        self.image_format = image_format
        self.size = size  # (height, width) every frame must have

    def __len__(self):
        return len(self.file_names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        image = _read(self.file_names[i], self.image_format)
        if self.size is not None and tuple(image.shape[:2]) != tuple(self.size):
            raise ValueError(
                f"Frame {i} '{self.file_names[i]}' is {image.shape[1]}x{image.shape[0]} (WxH), "
                f"but the video is {self.size[1]}x{self.size[0]}"
            )
        image = self.augmentation.get_transform(image).apply_image(image)
        return _to_tensor(image)


class YTVISTestMapper:
    """A whole video for online inference: {"image": LazyFrames, "video_id", "height", "width", "length"}."""

    def __init__(self, cfg):
        self.augmentation = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.image_format = cfg.INPUT.FORMAT

    def __call__(self, dataset_dict):
        d = dataset_dict
        return {
            "video_id": d["video_id"],
            "height": d["height"],
            "width": d["width"],
            "length": len(d["file_names"]),
            "file_names": d["file_names"],
            "image": LazyFrames(d["file_names"], self.augmentation, self.image_format,
                                (d["height"], d["width"])),
        }
