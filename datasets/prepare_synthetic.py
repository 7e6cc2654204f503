#!/usr/bin/env python
"""Generate the synthetic shape datasets used for smoke-training MobileInst.

Writes (under --root, default ``$DETECTRON2_DATASETS`` or ``./datasets``)::

    synthetic_coco/{train,val}/NNNNNN.jpg
    synthetic_coco/annotations/instances_{train,val}.json
    synthetic_ytvis/{train,val}/JPEGImages/<video>/NNNNN.jpg
    synthetic_ytvis/annotations/{train,val}.json

Parts whose json already exists are skipped unless --overwrite is given.
See ``mobileinst/data/synthetic.py`` for the formats.
"""
import argparse
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_PROJECT = os.path.join(os.path.dirname(_HERE), "projects", "MobileInst")
if os.path.isdir(_PROJECT) and _PROJECT not in sys.path:
    sys.path.insert(0, _PROJECT)

from mobileinst.data.synthetic import generate_all  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "./datasets"),
                   help="output root (default: $DETECTRON2_DATASETS or ./datasets)")
    p.add_argument("--seed", type=int, default=0, help="train seed; val uses seed+1000")
    p.add_argument("--num-train-images", type=int, default=600)
    p.add_argument("--num-val-images", type=int, default=100)
    p.add_argument("--num-train-videos", type=int, default=60)
    p.add_argument("--num-val-videos", type=int, default=48)
    p.add_argument("--num-frames", type=int, default=12)
    p.add_argument("--image-size", type=int, nargs="+", default=[256, 256], metavar="N",
                   help="H W (or a single N for a square image)")
    p.add_argument("--overwrite", action="store_true", help="regenerate parts that already exist")
    args = p.parse_args(argv)
    size = args.image_size
    if len(size) == 1:
        size = [size[0], size[0]]
    if len(size) != 2:
        p.error("--image-size takes one or two integers")
    t0 = time.time()
    paths = generate_all(
        args.root, seed=args.seed,
        num_train_images=args.num_train_images, num_val_images=args.num_val_images,
        num_train_videos=args.num_train_videos, num_val_videos=args.num_val_videos,
        image_size=tuple(size), num_frames=args.num_frames, overwrite=args.overwrite,
        log=print,
    )
    print(f"synthetic datasets in {os.path.abspath(args.root)} ({time.time() - t0:.1f}s):")
    for name, path in paths.items():
        print(f"  {name:12s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
