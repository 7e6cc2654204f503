#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""How much mask AP the grid of X_mask leaves on the table, for a data set.

Every ground-truth mask of a COCO-format json is area-pooled to the mask grid
(stride 8 = the paper's X_mask, 4 = MASK_DECODER.NAME HighResMaskDecoder), resized
back bilinearly and thresholded at 0.5, as a model whose soft masks were
perfect on that grid would predict it. Scored as predictions with the right
class and score 1 by pycocotools, this is an upper bound on the mask AP of
that grid (at the given test scale). It helps choose the mask decoder::

    python tools/analysis/mask_grid_bound.py datasets/synthetic_coco/annotations/instances_val.json --strides 8 4

prints, per stride, mean mask IoU and AP / AP50 / AP75, and with ``--output``
writes them as json.
"""
import argparse
import contextlib
import io
import os
import sys

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

try:
    import mobileinst_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))
from mobileinst_core.files import atomic_write_json  # noqa: E402


def grid_mask(mask: np.ndarray, stride: int, divisibility: int = 64) -> np.ndarray:
    """(H, W) 0/1 mask -> the same mask after area-pooling to 1/stride (of the
    input padded to ``divisibility``), bilinear resizing back and threshold 0.5."""
    h, w = mask.shape
    ph, pw = -(-h // divisibility) * divisibility, -(-w // divisibility) * divisibility
    padded = torch.zeros(1, 1, ph, pw)
    padded[0, 0, :h, :w] = torch.from_numpy(mask.astype(np.float32))
    low = F.avg_pool2d(padded, stride, stride)
    up = F.interpolate(low, size=(ph, pw), mode="bilinear", align_corners=False)[0, 0, :h, :w]
    return (up > 0.5).numpy().astype(np.uint8)


def bound(coco: COCO, stride: int) -> dict:
    results, ious = [], []
    for ann in coco.loadAnns(coco.getAnnIds(iscrowd=False)):
        gt = coco.annToMask(ann)
        pred = grid_mask(gt, stride)
        union = np.logical_or(pred, gt).sum()
        ious.append(np.logical_and(pred, gt).sum() / union if union else 1.0)
        rle = mask_util.encode(np.asfortranarray(pred))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                        "segmentation": rle, "score": 1.0})
    if not results:
        raise ValueError("the json has no (non-crowd) annotations to bound")
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"stride": stride, "instances": len(results), "mean_iou": float(np.mean(ious)),
            "AP": 100 * ev.stats[0], "AP50": 100 * ev.stats[1], "AP75": 100 * ev.stats[2]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", help="COCO-format instances json (masks as RLE or polygons)")
    p.add_argument("--strides", type=int, nargs="+", default=[8, 4], help="mask grid strides to bound")
    p.add_argument("--output", default="", help="also write the figures to this json")
    args = p.parse_args(argv)
    if not os.path.isfile(args.json):
        sys.exit(f"{args.json}: no such file (expected a COCO-format instances json)")
    for s in args.strides:
        if s < 1:
            sys.exit(f"--strides: expected positive integers, got {s}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(args.json)
    rows = [bound(coco, s) for s in args.strides]
    for r in rows:
        print(f"stride {r['stride']}: {r['instances']} masks, mean IoU {r['mean_iou']:.3f}, "
              f"mask AP {r['AP']:.1f} (AP50 {r['AP50']:.1f}, AP75 {r['AP75']:.1f})")
    if args.output:
        atomic_write_json(args.output, {"json": args.json, "bounds": rows}, indent=1)
    return rows


if __name__ == "__main__":
    main()
