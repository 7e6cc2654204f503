# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Image dataset mapper: detectron2's DatasetMapper with instance masks.

Masks are kept as bitmasks (``INPUT.MASK_FORMAT = "bitmask"``); an image
that cannot be read raises an error naming the file.
"""
import copy

from detectron2.data import DatasetMapper

__all__ = ["MobileInstDatasetMapper"]


class MobileInstDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that always loads instance masks and names bad files."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["use_instance_mask"] = True
        ret["instance_mask_format"] = cfg.INPUT.MASK_FORMAT
        ret["recompute_boxes"] = False
        return ret

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
            return super().__call__(copy.deepcopy(dataset_dict))
        except (OSError, SyntaxError) as e:  # PIL: unreadable / truncated image files
            raise OSError(f"Failed to load image '{dataset_dict.get('file_name')}': {e}") from e
        except ValueError as e:  # e.g. a size mismatch with the annotation
            raise ValueError(f"Image '{dataset_dict.get('file_name')}': {e}") from e
