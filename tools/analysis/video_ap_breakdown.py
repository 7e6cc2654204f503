#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Where a YouTube-VIS result loses its video AP: classes, masks or frames.

Reads a ground-truth json (with annotations) and a results json in the
YouTube-VIS submission format (``results.json`` of the YTVIS evaluator, or the
demo's json) and prints:

* ``as submitted``: AP / AP50 / AP75 / AR10 of the results (the evaluator's figure);
* ``class-agnostic``: one category for all; each predicted track counted once
  (a track listed under several classes, same masks, keeps its best score);
* ``oracle class``: each predicted track takes the category of the
  ground-truth track it overlaps most (spatio-temporal IoU) in its video;
  the distance to "as submitted" is what classification costs;
* ``track IoU``: per ground-truth track, the best spatio-temporal IoU of any
  predicted track (mean, and the shares >= 0.5 and >= 0.75): what the masks
  and their linking allow, whatever the scores and classes;
* ``frames``: over those best pairs, frames with a ground-truth mask but no
  predicted one, a predicted mask but no ground-truth one, both (and the mean
  per-frame mask IoU there)::

    python tools/analysis/video_ap_breakdown.py --gt datasets/synthetic_ytvis/annotations/val.json \\
        --results output/quickstart/video/inference/results.json

Needs no model: run ``train_net.py --eval-only`` on a ytvis dataset first.
"""
import argparse
import json
import os
import sys
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
try:
    import mobileinst  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))

from mobileinst.evaluation.ytvis_metric import compute_track_ious, evaluate_ytvis, to_rle  # noqa: E402
from mobileinst_core.files import atomic_write_json  # noqa: E402

METRICS = ("AP", "AP50", "AP75", "AR10")


def _load(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} '{path}' is not valid json: {e}") from None


def _check_results(results, videos: Dict[int, dict]) -> None:
    if not isinstance(results, list):
        raise ValueError("results: expected a list of tracks (the YouTube-VIS submission format)")
    for i, r in enumerate(results):
        for key in ("video_id", "category_id", "score", "segmentations"):
            if key not in r:
                raise ValueError(f"results[{i}] has no '{key}' (expected video_id, category_id, score, segmentations)")
        v = videos.get(r["video_id"])
        if v is None:
            raise ValueError(f"results[{i}]: video_id {r['video_id']} is not in the ground truth")
        if len(r["segmentations"]) != v["length"]:
            raise ValueError(f"results[{i}].segmentations has {len(r['segmentations'])} frames; "
                             f"video {r['video_id']} has {v['length']}")


def _rles(segs, video) -> List:
    return [to_rle(s, video["height"], video["width"]) for s in segs]


def _track_key(r) -> tuple:
    """The same masks under several classes are one track."""
    return (r["video_id"],) + tuple(None if s is None else str(s.get("counts")) for s in r["segmentations"])


def _ap(gt: dict, results: List[dict]) -> Dict[str, float]:
    out = evaluate_ytvis(gt, results, return_per_category=False)
    return {k: float(out[k]) for k in METRICS}


def breakdown(gt: dict, results: List[dict]) -> dict:
    """The figures of the module docstring, as a dict."""
    if "annotations" not in gt or "videos" not in gt:
        raise ValueError("ground truth: expected 'videos' and 'annotations' (a train/val split json)")
    videos = {v["id"]: v for v in gt["videos"]}
    _check_results(results, videos)
    out = {"as_submitted": _ap(gt, results)}

    tracks: Dict[tuple, dict] = {}
    for r in results:
        key = _track_key(r)
        if key not in tracks or r["score"] > tracks[key]["score"]:
            tracks[key] = r
    tracks = list(tracks.values())
    one_class = dict(gt, categories=[{"id": 1, "name": "object"}],
                     annotations=[dict(a, category_id=1) for a in gt["annotations"]])
    out["class_agnostic"] = _ap(one_class, [dict(r, category_id=1) for r in tracks])

    gt_by_video: Dict[int, List[dict]] = {}
    for a in gt["annotations"]:
        gt_by_video.setdefault(a["video_id"], []).append(a)
    dt_by_video: Dict[int, List[dict]] = {}
    for r in tracks:
        dt_by_video.setdefault(r["video_id"], []).append(r)

    oracle, best_ious = [], []
    frames = {"gt_only": 0, "prediction_only": 0, "both": 0}
    frame_ious = []
    for vid, video in videos.items():
        gts, dts = gt_by_video.get(vid, []), dt_by_video.get(vid, [])
        if not gts:
            oracle += dts
            continue
        if not dts:
            best_ious += [0.0] * len(gts)
            continue
        G = [_rles(a["segmentations"], video) for a in gts]
        D = [_rles(r["segmentations"], video) for r in dts]
        ious = compute_track_ious(D, G)  # (D, G)
        for d, r in enumerate(dts):
            g = int(ious[d].argmax())
            oracle.append(dict(r, category_id=gts[g]["category_id"]) if ious[d, g] > 0 else r)
        for g in range(len(gts)):
            d = int(ious[:, g].argmax())
            best_ious.append(float(ious[d, g]))
            if ious[d, g] == 0:
                continue
            for gs, ds in zip(G[g], D[d]):
                ga = 0 if gs is None else int(mask_util.area(gs))
                da = 0 if ds is None else int(mask_util.area(ds))
                if ga and da:
                    frames["both"] += 1
                    frame_ious.append(float(mask_util.iou([ds], [gs], [0])[0][0]))
                elif ga:
                    frames["gt_only"] += 1
                elif da:
                    frames["prediction_only"] += 1
    out["oracle_class"] = _ap(gt, oracle)
    b = np.asarray(best_ious, dtype=np.float64)
    out["track_iou"] = {"gt_tracks": int(b.size), "mean": float(b.mean()) if b.size else 0.0,
                        "share_ge_0.5": float((b >= 0.5).mean()) if b.size else 0.0,
                        "share_ge_0.75": float((b >= 0.75).mean()) if b.size else 0.0}
    frames["mean_iou_on_both"] = float(np.mean(frame_ious)) if frame_ious else 0.0
    out["frames"] = frames
    out["predicted_tracks"] = len(tracks)
    return out


def format_breakdown(b: dict) -> str:
    lines = []
    for name, key in (("as submitted", "as_submitted"), ("class-agnostic", "class_agnostic"),
                      ("oracle class", "oracle_class")):
        m = b[key]
        lines.append(f"{name:<15} " + "  ".join(f"{k} {m[k]:.1f}" for k in METRICS))
    t, f = b["track_iou"], b["frames"]
    lines.append(f"track IoU       best per GT track ({t['gt_tracks']} tracks): mean {t['mean']:.3f}, "
                 f">= 0.5 {100 * t['share_ge_0.5']:.0f}%, >= 0.75 {100 * t['share_ge_0.75']:.0f}%")
    lines.append(f"frames          GT only {f['gt_only']}, prediction only {f['prediction_only']}, "
                 f"both {f['both']} (mean mask IoU {f['mean_iou_on_both']:.3f})")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="YouTube-VIS json with annotations")
    p.add_argument("--results", required=True, help="results json (YouTube-VIS submission format)")
    p.add_argument("--output", default="", help="also write the figures to this json")
    args = p.parse_args(argv)
    try:
        gt = _load(args.gt, "ground-truth json")
        results = _load(args.results, "results json")
        b = breakdown(gt, results)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(format_breakdown(b))
    if args.output:
        atomic_write_json(args.output, dict(b, gt=args.gt, results=args.results), indent=1)
    return b


if __name__ == "__main__":
    main()
