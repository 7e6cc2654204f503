# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The Detectron2 evaluator of YouTube-VIS-format sets (YouTube-VIS, OVIS): gathers
the model's tracks, writes the results json (:func:`mobileinst_core.ytvis_json.ytvis_entries`)
and scores it with the video AP of :mod:`mobileinst.evaluation.ytvis_metric`, or, for a
set without ground truth, writes the zip an evaluation server takes."""
import itertools
import json
import logging
import os
import zipfile
from collections import OrderedDict
from typing import Optional

from tabulate import tabulate

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table
from mobileinst_core.categories import category_ids_of, dataset_category_ids
from mobileinst_core.files import atomic_path, atomic_write_json
from mobileinst_core.ytvis_json import ytvis_entries

from .ytvis_metric import YTVIS_METRICS, evaluate_ytvis, load_ytvis_gt

__all__ = ["YTVISEvaluator", "write_submission_zip"]

SUBMISSION_ZIP = "submission.zip"


def write_submission_zip(path: str, predictions: list) -> str:
    """The zip the YouTube-VIS and OVIS evaluation servers (CodaLab) take: the results
    json as ``results.json`` at the zip's root. Written whole or not at all
    (:func:`mobileinst_core.files.atomic_path`). Returns ``path``."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("results.json", json.dumps(predictions))
    return path


class YTVISEvaluator(DatasetEvaluator):
    """
    Evaluate video instance segmentation on a dataset registered with
    ``register_ytvis_instances`` (its metadata must have "json_file").

    ``process(inputs, outputs)``:
      * inputs: list of video dicts (as from ``load_ytvis_json``; only "video_id" is used);
      * outputs: list of the same length of
        ``{"video_id": int, "tracks": [{"score": float, "category_id": contiguous int,
        "segmentations": [RLE dict (counts bytes or str) | HxW binary np.ndarray | None]
        * num_frames}]}``. If "video_id" is missing, the input's is used.

    ``evaluate()`` writes ``output_dir/results.json`` (official submission format: list of
    {video_id, category_id (dataset id), score, [track_id], segmentations: [{"size", "counts": str}
    | None]}, :func:`mobileinst_core.ytvis_json.ytvis_entries`)
    and returns ``{"ytvis": {"AP", "AP50", ...}}`` when the json has annotations; else it
    also writes ``output_dir/submission.zip`` (:func:`write_submission_zip`), logs where it
    is and returns ``{}``.
    """

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True
    ):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._logger = logging.getLogger(__name__)
        self._metadata = MetadataCatalog.get(dataset_name)
        self._json_file = getattr(self._metadata, "json_file", None)
        self._gt = None  # loaded lazily on the main process
        # contiguous class index -> dataset category id; None until known
        self._category_ids = dataset_category_ids(getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None))
        self.reset()

    def reset(self):
        self._predictions = []

    def _load_gt(self) -> Optional[dict]:
        if self._gt is None and self._json_file is not None:
            self._gt = load_ytvis_gt(self._json_file)
        return self._gt

    def _dataset_category_ids(self):
        """From the metadata, else from the ground-truth json's categories; None (ids taken
        as 1-based) without either."""
        if self._category_ids is None:
            gt = self._load_gt()
            if gt is not None:
                self._category_ids = category_ids_of(gt.get("categories", []))
        return self._category_ids

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            video_id = int(out.get("video_id", inp.get("video_id")))
            self._predictions += ytvis_entries(out, video_id, self._dataset_category_ids())

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = comm.gather(self._predictions, dst=0)
            predictions = list(itertools.chain(*predictions))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions

        if len(predictions) == 0:
            self._logger.warning("[YTVISEvaluator] Did not receive valid predictions.")

        if self._output_dir:
            path = os.path.join(self._output_dir, "results.json")  # its folder is made by atomic_write_json
            self._logger.info(f"Saving YouTube-VIS results to {path}")
            atomic_write_json(path, predictions)

        gt = self._load_gt()
        if gt is None or "annotations" not in gt:
            server = getattr(self._metadata, "evaluation_server", None)
            where = "no output directory was given, nothing written"
            if self._output_dir:
                where = "upload " + write_submission_zip(os.path.join(self._output_dir, SUBMISSION_ZIP), predictions)
            self._logger.info(
                f"{self._dataset_name} has no ground-truth annotations (valid/test split), so no AP here: "
                f"{where} (results.json at its root) to the data set's evaluation server"
                + (f" ({server})" if server else "") + "."
            )
            return {}

        res = evaluate_ytvis(gt, predictions)
        metrics = {k: res[k] for k in YTVIS_METRICS}
        self._logger.info(
            "Evaluation results for YouTube-VIS segm: \n" + create_small_table(metrics)
        )
        per_cat = [(k[len("AP-") :], v) for k, v in res.items() if k.startswith("AP-")]
        if per_cat:
            n_cols = min(6, len(per_cat) * 2)
            flat = list(itertools.chain(*per_cat))
            rows = itertools.zip_longest(*[flat[i::n_cols] for i in range(n_cols)])
            table = tabulate(
                rows,
                tablefmt="pipe",
                floatfmt=".3f",
                headers=["category", "AP"] * (n_cols // 2),
                numalign="left",
            )
            self._logger.info("Per-category segm AP: \n" + table)
        return OrderedDict({"ytvis": res})
