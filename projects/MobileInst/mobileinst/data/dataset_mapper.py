# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Image dataset mapper: detectron2's DatasetMapper with instance masks.

Masks are kept as bitmasks (``INPUT.MASK_FORMAT = "bitmask"``); an image
that cannot be read raises an error naming the file. With
``INPUT.COPY_PASTE.ENABLED`` training images get objects of other training
images pasted on (:mod:`mobileinst.data.copy_paste`).
"""
import copy
from typing import Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .copy_paste import paste_objects

__all__ = ["MobileInstDatasetMapper"]


class MobileInstDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that always loads instance masks and names bad files.

    ``copy_paste_pool``: the training dataset dicts to take pasted objects from
    (None: no copy-paste); each training image gets them with probability
    ``copy_paste_prob``, at most ``copy_paste_max_objects`` of one other image.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, copy_paste_pool: Optional[Sequence[dict]] = None,
                 copy_paste_prob: float = 0.0, copy_paste_max_objects: int = 0, seed: int = 0, **kwargs):
        super().__init__(is_train, **kwargs)
        self.copy_paste_pool = copy_paste_pool if is_train and copy_paste_prob > 0 else None
        self.copy_paste_prob = float(copy_paste_prob)
        self.copy_paste_max_objects = int(copy_paste_max_objects)
        self._seed = seed
        self._rng = None

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_dicts: Optional[Sequence[dict]] = None):
        ret = super().from_config(cfg, is_train)
        ret["use_instance_mask"] = True
        ret["instance_mask_format"] = cfg.INPUT.MASK_FORMAT
        ret["recompute_boxes"] = False
        cp = cfg.INPUT.COPY_PASTE
        if is_train and cp.ENABLED:
            if dataset_dicts is None:
                raise ValueError("INPUT.COPY_PASTE.ENABLED: the mapper needs the training dataset dicts "
                                 "(MobileInstDatasetMapper(cfg, True, dataset_dicts=...))")
            ret.update(copy_paste_pool=dataset_dicts, copy_paste_prob=cp.PROB,
                       copy_paste_max_objects=cp.MAX_OBJECTS, seed=cfg.SEED)
        return ret

    @property
    def rng(self) -> np.random.Generator:
        """Random numbers of this process: data-loader workers each seed their own."""
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng([max(self._seed, 0), 0 if info is None else info.id + 1,
                                               int(torch.initial_seed()) % (2 ** 31)])
        return self._rng

    def _read(self, dataset_dict):
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        return image

    def _map_with_copy_paste(self, dataset_dict):
        """detectron2's ``DatasetMapper.__call__`` (training, no semantic maps or
        proposals) with objects of another image pasted on before the augmentations."""
        image = self._read(dataset_dict)
        source = self.copy_paste_pool[int(self.rng.integers(len(self.copy_paste_pool)))]
        if source.get("annotations") and source["file_name"] != dataset_dict["file_name"]:
            image, dataset_dict["annotations"] = paste_objects(
                image, dataset_dict.get("annotations", []), self._read(copy.deepcopy(source)),
                source["annotations"], self.rng, self.copy_paste_max_objects)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        return dataset_dict

    def __call__(self, dataset_dict):
        if self.is_train:
            for i, a in enumerate(dataset_dict.get("annotations", ())):
                if not a.get("iscrowd", 0) and not a.get("segmentation"):
                    ident = f"id {a['id']}" if "id" in a else f"#{i}"
                    raise ValueError(
                        f"Image '{dataset_dict.get('file_name')}': annotation {ident} has no segmentation; MobileInst "
                        "trains on masks only. Trainer.build_train_loader drops such annotations "
                        "(mobileinst.data.get_train_dataset_dicts); a custom loader must do the same."
                    )
        try:
            if self.copy_paste_pool is not None and self.rng.random() < self.copy_paste_prob:
                return self._map_with_copy_paste(copy.deepcopy(dataset_dict))
            return super().__call__(copy.deepcopy(dataset_dict))
        except (OSError, SyntaxError) as e:  # PIL: unreadable / truncated image files
            raise OSError(f"Failed to load image '{dataset_dict.get('file_name')}': {e}") from e
        except ValueError as e:  # e.g. a size mismatch with the annotation
            raise ValueError(f"Image '{dataset_dict.get('file_name')}': {e}") from e
