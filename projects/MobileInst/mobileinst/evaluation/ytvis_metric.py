"""The YouTube-VIS video AP (video instance segmentation): the protocol's computation.

The protocol is COCO's, with a video playing the role of an image and a track the role of an
annotation. The IoU of two tracks is::

    sum_t |D_t & G_t| / sum_t |D_t | G_t|

where a frame in which one side is None (absent) adds only the other side's area to the union.
Accumulation is COCO's: AP over IoU .50:.05:.95, 101 recall points, maxDets [1, 10, 100];
area ranges (small / medium / large) use the track's mean area over its non-empty frames.

This is implemented by :class:`YTVISeval`, a subclass of ``pycocotools.cocoeval.COCOeval``
that only replaces ``_prepare`` (no per-frame ``annToRLE``) and ``computeIoU``;
:func:`evaluate_ytvis` runs it on a ground-truth json and a list of results. The
Detectron2 evaluator that gathers a model's results is
:class:`mobileinst.evaluation.ytvis_evaluation.YTVISEvaluator`.
"""

import contextlib
import io
import itertools
import json
import logging
import os
from collections import defaultdict
from typing import Dict, List, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.utils.file_io import PathManager
from mobileinst_core.ytvis_json import to_rle

logger = logging.getLogger(__name__)

__all__ = [
    "YTVIS_METRICS",
    "to_rle",
    "compute_track_ious",
    "track_iou",
    "YTVISeval",
    "build_ytvis_coco",
    "load_ytvis_gt",
    "evaluate_ytvis",
]

YTVIS_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10"]


# ----------------------------------------------------------------------------- RLE helpers
def _mean_area(rles: Sequence) -> float:
    """Mean area over frames that are not None and not empty (YouTube-VIS convention)."""
    present = [r for r in rles if r is not None]
    if not present:
        return 0.0
    areas = mask_util.area(present).astype(np.float64)
    areas = areas[areas > 0]
    return float(areas.mean()) if areas.size else 0.0


def _track_bbox(rles: Sequence) -> List[float]:
    """Union (xywh) of the per-frame boxes; only informative, not used by the protocol."""
    present = [r for r in rles if r is not None]
    if not present:
        return [0.0, 0.0, 0.0, 0.0]
    boxes = mask_util.toBbox(present)
    boxes = boxes[(boxes[:, 2] > 0) & (boxes[:, 3] > 0)]
    if boxes.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


# ----------------------------------------------------------------------------- track IoU
def compute_track_ious(dt_tracks: Sequence[Sequence], gt_tracks: Sequence[Sequence]) -> np.ndarray:
    """
    Video-level IoU between every predicted and ground-truth track.

    Args:
        dt_tracks, gt_tracks: lists of tracks; a track is a per-frame list of compressed RLE
            dicts (counts bytes or str) or None. All tracks must have the same number of frames.

    Returns:
        float64 array of shape (len(dt_tracks), len(gt_tracks)); 0 where the union is empty.
    """
    D, G = len(dt_tracks), len(gt_tracks)
    inter = np.zeros((D, G), dtype=np.float64)
    union = np.zeros((D, G), dtype=np.float64)
    if D == 0 or G == 0:
        return inter
    T = len(gt_tracks[0])
    for trk in itertools.chain(dt_tracks, gt_tracks):
        if len(trk) != T:
            raise ValueError(f"tracks have different numbers of frames ({len(trk)} vs {T})")
    for t in range(T):
        d_idx = [i for i in range(D) if dt_tracks[i][t] is not None]
        g_idx = [j for j in range(G) if gt_tracks[j][t] is not None]
        d_area = np.zeros(D)
        g_area = np.zeros(G)
        if d_idx:
            d_area[d_idx] = mask_util.area([dt_tracks[i][t] for i in d_idx])
        if g_idx:
            g_area[g_idx] = mask_util.area([gt_tracks[j][t] for j in g_idx])
        # Present on one side only (or both): the union gets both areas; the intersection is
        # subtracted below for pairs present on both sides.
        union += d_area[:, None] + g_area[None, :]
        if d_idx and g_idx:
            frame_iou = np.asarray(
                mask_util.iou(
                    [dt_tracks[i][t] for i in d_idx],
                    [gt_tracks[j][t] for j in g_idx],
                    [0] * len(g_idx),
                ),
                dtype=np.float64,
            ).reshape(len(d_idx), len(g_idx))
            # iou = I / (A + B - I)  =>  I = iou * (A + B) / (1 + iou); exact after rounding
            # because pycocotools computes iou from integer pixel counts.
            s = d_area[d_idx][:, None] + g_area[g_idx][None, :]
            frame_inter = np.rint(frame_iou * s / (1.0 + frame_iou))
            inter[np.ix_(d_idx, g_idx)] += frame_inter
            union[np.ix_(d_idx, g_idx)] -= frame_inter
    ious = np.zeros((D, G), dtype=np.float64)
    np.divide(inter, union, out=ious, where=union > 0)
    return ious


def track_iou(dt_track: Sequence, gt_track: Sequence) -> float:
    """Video-level IoU of two tracks (per-frame lists of RLE dicts or None)."""
    return float(compute_track_ious([dt_track], [gt_track])[0, 0])


# ----------------------------------------------------------------------------- COCOeval subclass
class YTVISeval(COCOeval):
    """
    COCOeval where images are videos and annotations are tracks. The COCO objects must be built
    with :func:`build_ytvis_coco` (annotations carry "segmentations": per-frame compressed RLE
    or None, and "area": mean area over non-empty frames).
    """

    def __init__(self, cocoGt: COCO, cocoDt: COCO):
        super().__init__(cocoGt, cocoDt, iouType="segm")

    def _prepare(self):
        # Same as COCOeval._prepare without the per-image annToRLE conversion.
        p = self.params
        if p.useCats:
            gts = self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
            dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
        else:
            gts = self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=p.imgIds))
            dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds))
        for gt in gts:
            gt["ignore"] = int(bool(gt.get("iscrowd", 0)))
        self._gts = defaultdict(list)
        self._dts = defaultdict(list)
        for gt in gts:
            self._gts[gt["image_id"], gt["category_id"]].append(gt)
        for dt in dts:
            self._dts[dt["image_id"], dt["category_id"]].append(dt)
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId, catId):
        p = self.params
        if p.useCats:
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
        else:
            gt = [g for cId in p.catIds for g in self._gts[imgId, cId]]
            dt = [d for cId in p.catIds for d in self._dts[imgId, cId]]
        if len(gt) == 0 or len(dt) == 0:
            return []
        inds = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in inds][: p.maxDets[-1]]
        return compute_track_ious(
            [d["segmentations"] for d in dt], [g["segmentations"] for g in gt]
        )


def build_ytvis_coco(
    videos: Sequence[dict], categories: Sequence[dict], tracks: Sequence[dict], is_gt: bool
) -> COCO:
    """
    Build a pycocotools COCO object where each video is an "image" and each track an
    "annotation" (with "segmentations" as per-frame compressed RLE / None, "area" = mean area
    over non-empty frames, "bbox" = union of the frame boxes).

    Args:
        videos: YouTube-VIS "videos" entries (need "id", "height", "width", and "length" or
            "file_names").
        categories: YouTube-VIS "categories".
        tracks: GT "annotations" (is_gt=True) or results {video_id, category_id, score,
            segmentations} (is_gt=False; ids are assigned 1..N).
    """
    images, video_by_id = [], {}
    for v in videos:
        length = v.get("length", len(v.get("file_names", [])))
        images.append({"id": v["id"], "height": v["height"], "width": v["width"], "length": length})
        video_by_id[v["id"]] = images[-1]
    anns = []
    for k, trk in enumerate(tracks):
        video = video_by_id.get(trk["video_id"])
        what = "annotation id={}".format(trk.get("id")) if is_gt else f"result #{k}"
        if video is None:
            raise ValueError(f"YouTube-VIS {what} refers to unknown video_id={trk['video_id']}")
        segms = trk["segmentations"]
        if len(segms) != video["length"]:
            raise ValueError(
                f"YouTube-VIS {what} (video id={video['id']}): 'segmentations' has {len(segms)} "
                f"entries but the video has {video['length']} frames"
            )
        rles = [to_rle(s, video["height"], video["width"]) for s in segms]
        ann = {
            "id": trk["id"] if is_gt else k + 1,
            "image_id": trk["video_id"],
            "category_id": trk["category_id"],
            "iscrowd": int(trk.get("iscrowd", 0)) if is_gt else 0,
            "segmentations": rles,
            "bbox": _track_bbox(rles),
        }
        if is_gt and trk.get("areas") is not None:
            areas = [a for a in trk["areas"] if a]
            ann["area"] = float(np.mean(areas)) if areas else 0.0
        else:
            ann["area"] = _mean_area(rles)
        if not is_gt:
            ann["score"] = float(trk["score"])
        anns.append(ann)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": list(categories)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_ytvis_gt(gt_json_or_dict: Union[str, os.PathLike, dict]) -> dict:
    """A YouTube-VIS json (path, or its loaded dict, returned as is)."""
    if isinstance(gt_json_or_dict, dict):
        return gt_json_or_dict
    path = os.fspath(gt_json_or_dict)
    if not PathManager.exists(path):
        raise FileNotFoundError(f"YouTube-VIS ground-truth json not found: {path}")
    with PathManager.open(path, "r") as f:
        return json.load(f)


def evaluate_ytvis(
    gt_json_or_dict: Union[str, os.PathLike, dict],
    results: List[dict],
    return_per_category: bool = True,
) -> Dict[str, float]:
    """
    Evaluate YouTube-VIS results with the official protocol.

    Args:
        gt_json_or_dict: YouTube-VIS json path or its loaded dict; must have "annotations".
        results: list of {"video_id", "category_id" (dataset id), "score",
            "segmentations": [RLE dict (counts bytes/str/list) or None per frame]}.
        return_per_category: also return "AP-<class name>" for each category.

    Returns:
        {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10"} in percent (0..100), plus
        "AP-<name>" entries. A metric for which no ground truth exists (e.g. "APl" when there is
        no large track) is NaN, like in detectron2's COCOEvaluator. Empty results give 0.0 for
        every metric.
    """
    gt = load_ytvis_gt(gt_json_or_dict)
    if "annotations" not in gt:
        raise ValueError(
            "the YouTube-VIS ground truth has no 'annotations' (test/valid split?); "
            "submit the results to the evaluation server instead"
        )
    categories = sorted(gt.get("categories", []), key=lambda c: c["id"])
    if len(results) == 0:
        logger.warning("No YouTube-VIS predictions: all metrics are 0.")
        out = {k: 0.0 for k in YTVIS_METRICS}
        if return_per_category:
            out.update({f"AP-{c['name']}": 0.0 for c in categories})
        return out

    coco_gt = build_ytvis_coco(gt["videos"], categories, gt["annotations"], is_gt=True)
    coco_dt = build_ytvis_coco(gt["videos"], categories, results, is_gt=False)
    ytvis_eval = YTVISeval(coco_gt, coco_dt)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ytvis_eval.evaluate()
        ytvis_eval.accumulate()
        ytvis_eval.summarize()
    logger.info("YouTube-VIS evaluation:\n" + buf.getvalue())

    out = {
        metric: float(ytvis_eval.stats[idx] * 100 if ytvis_eval.stats[idx] >= 0 else "nan")
        for idx, metric in enumerate(YTVIS_METRICS)
    }
    if return_per_category:
        # precision: (iou, recall, cls, area range, max dets)
        precisions = ytvis_eval.eval["precision"]
        cat_ids = ytvis_eval.params.catIds
        name_by_id = {c["id"]: c["name"] for c in categories}
        for k, cat_id in enumerate(cat_ids):
            precision = precisions[:, :, k, 0, -1]
            precision = precision[precision > -1]
            ap = float(np.mean(precision)) * 100 if precision.size else float("nan")
            out[f"AP-{name_by_id[cat_id]}"] = ap
    return out
