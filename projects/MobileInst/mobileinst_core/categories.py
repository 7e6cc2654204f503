# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Category ids: the model's contiguous class index <-> the dataset's category id."""
from typing import List, Mapping, Optional, Sequence


def dataset_category_ids(dataset_id_to_contiguous_id: Optional[Mapping[int, int]]) -> Optional[List[int]]:
    """detectron2's ``thing_dataset_id_to_contiguous_id`` -> the list of dataset
    category ids indexed by contiguous class index; None for None or an empty map."""
    if not dataset_id_to_contiguous_id:
        return None
    return [int(k) for k, _ in sorted(dataset_id_to_contiguous_id.items(), key=lambda kv: kv[1])]


def category_ids_of(categories: Sequence[dict]) -> List[int]:
    """A YouTube-VIS / COCO json's "categories" -> their ids in contiguous order
    (sorted by id, the order in which the datasets are registered)."""
    return [int(c["id"]) for c in sorted(categories, key=lambda c: c["id"])]


def to_dataset_id(contiguous_id: int, category_ids: Optional[Sequence[int]]) -> int:
    """The dataset category id of a contiguous class index; without a mapping the
    ids are taken to be 1-based (index + 1)."""
    c = int(contiguous_id)
    return int(category_ids[c]) if category_ids else c + 1
