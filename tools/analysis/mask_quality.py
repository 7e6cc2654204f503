#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""How clean a model's masks are, beyond AP: stray pixels and duplicates
(:mod:`mobileinst.evaluation.mask_quality`), from the COCO results that
detectron2's COCOEvaluator writes (any model's)::

    python tools/analysis/mask_quality.py \\
        output/quickstart/image/inference/synthetic_coco_val/coco_instances_results.json \\
        --gt datasets/synthetic_coco/annotations/instances_val.json

prints the share of masks (score >= --score) whose box is more than twice
their largest part's, the mean share of stray pixels and the duplicate pairs;
``--output`` writes them as json.
"""
import argparse
import json
import os
import sys

try:
    import mobileinst  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))
from mobileinst.evaluation.mask_quality import mask_quality  # noqa: E402
from mobileinst_core.files import atomic_write_json  # noqa: E402


def _load(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot read the {what} ({e})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="coco_instances_results.json (RLE segmentations)")
    parser.add_argument("--gt", help="the COCO ground truth json, for duplicates per object")
    parser.add_argument("--score", type=float, default=0.3, help="least score of the masks counted")
    parser.add_argument("--output", help="write the figures here as json")
    args = parser.parse_args(argv)
    results = _load(args.results, "COCO results")
    if not isinstance(results, list) or any("segmentation" not in r or "score" not in r for r in results):
        raise SystemExit(f"{args.results}: expected a list of COCO results with 'score' and 'segmentation'")
    objects = None
    if args.gt:
        objects = len(_load(args.gt, "ground truth").get("annotations", []))
    out = mask_quality(results, score_threshold=args.score, num_objects=objects)
    for k, v in out.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    if args.output:
        atomic_write_json(args.output, out, indent=2)
    return out


if __name__ == "__main__":
    main()
