# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""COCO images as pseudo videos with YouTube-VIS labels.

A pseudo-video set is an image set (e.g. ``coco_2017_train``) relabelled by a
category map (:mod:`.coco_to_ytvis`) into the classes of a video set:
annotations of unmapped categories are dropped and so are the images left
without a (non-crowd) annotation. Its dicts are image dicts; the frame-pair
mapper (``YTVISPairMapper``) turns each into a
pseudo video of two independently augmented views, so that it trains temporal
query passing next to the real videos of ``DATASETS.TRAIN``.
"""
import logging
from typing import List, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from .ytvis import _get_ytvis_metadata

logger = logging.getLogger(__name__)

__all__ = ["load_pseudo_video_dicts", "register_pseudo_video_instances"]


def load_pseudo_video_dicts(source: str, category_map: Sequence[Tuple[int, str, int, str]],
                            target_categories: Sequence[dict], name: str = "") -> List[dict]:
    """
    Args:
        source: a registered image set; its dicts are loaded from DatasetCatalog
            and its metadata must hold ``thing_dataset_id_to_contiguous_id``.
        category_map: rows (source category id, source name, target category id,
            target name), ids as in the source and target jsons.
        target_categories: the target set's [{"id", "name"}].
        name: the pseudo-video set's name, for the log.

    Returns:
        the source's image dicts (copied) whose annotations have the target's
        contiguous ``category_id``; unmapped annotations and images left without
        a non-crowd annotation are dropped.
    """
    dicts = DatasetCatalog.get(source)  # first: a COCO-format set sets its id map when loaded
    source_ids = MetadataCatalog.get(source).get("thing_dataset_id_to_contiguous_id", None)
    if source_ids is None:
        raise ValueError(f"Pseudo videos '{name}': the source '{source}' has no thing_dataset_id_to_contiguous_id")
    target_ids = _get_ytvis_metadata(target_categories)["thing_dataset_id_to_contiguous_id"]
    missing = [row for row in category_map if row[0] not in source_ids or row[2] not in target_ids]
    if missing:
        raise ValueError(f"Pseudo videos '{name}': category map rows {missing} name ids that '{source}' "
                         "or the target categories do not have")
    to_target = {source_ids[src]: target_ids[tgt] for src, _, tgt, _ in category_map}
    out, kept, dropped = [], 0, 0
    for d in dicts:
        annos = [dict(a, category_id=to_target[a["category_id"]])
                 for a in d.get("annotations", []) if a["category_id"] in to_target]
        dropped += len(d.get("annotations", [])) - len(annos)
        if any(a.get("iscrowd", 0) == 0 for a in annos):
            out.append(dict(d, annotations=annos))
            kept += len(annos)
    logger.info(f"Pseudo videos '{name}' from '{source}': {len(out)} of {len(dicts)} images and {kept} "
                f"annotations kept ({dropped} of unmapped categories dropped)")
    return out


def register_pseudo_video_instances(name: str, source: str, category_map, target_categories) -> None:
    """Register ``name``: the images of ``source`` as pseudo videos with the
    classes of ``target_categories`` (:func:`load_pseudo_video_dicts`). Nothing
    is read until the set is requested from DatasetCatalog."""
    DatasetCatalog.register(name, lambda: load_pseudo_video_dicts(source, category_map, target_categories, name))
    MetadataCatalog.get(name).set(
        source_dataset=source, category_map=tuple(category_map), pseudo_video=True,
        **_get_ytvis_metadata(target_categories),
    )
