#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Video demo: segment and track every instance of a video, a folder of frames
or a camera, online, and write an annotated video plus a YouTube-VIS json.

    python demo.py --config-file configs/synthetic/MobileInst_TopFormer_tiny_synthetic.yaml \
        --input clip.mp4 --output output/demo MODEL.WEIGHTS model_final.pth

Each track keeps one colour and its id for the whole video. The input, the
config (NUM_CLASSES), the weights and the output folder are all checked before
the first frame is read. The video and the json are written together, whole or not
at all: a failed or interrupted run (Ctrl-C, SIGTERM) leaves an earlier pair as it was
and no output folder that it created. A video whose frames stop decoding partway
gets the output of the frames read and exit status 1 with a message saying how many
frames were read of how many its container announces.
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
try:
    import mobileinst  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mobileinst.config import load_mobileinst_config  # noqa: E402
from mobileinst.utils.cli import config_argument_parser, parse_with_overrides  # noqa: E402
from mobileinst.video import StreamingPredictor, iter_frames  # noqa: E402
from mobileinst.video.streaming import video_fps  # noqa: E402
from mobileinst_core.categories import dataset_category_ids  # noqa: E402
from mobileinst_core.cli import int_at_least, sigterm_exits  # noqa: E402
from mobileinst_core.frames import IncompleteInputError, check_source  # noqa: E402
from mobileinst_core.writer import write_tracks  # noqa: E402


def run(cfg, source, output_dir, score_threshold=0.3, video_id=1, class_names=None, fps=None):
    """Run the demo; returns (video path, json path, number of frames). Raises
    :class:`~mobileinst_core.frames.IncompleteInputError` after writing the output of the
    frames read when a video file ends before the frames it announces."""
    check_source(source)  # before the model and the weights are loaded
    predictor = StreamingPredictor(cfg, keep_results=False)  # the writer streams the masks
    category_ids = None
    if hasattr(predictor, "metadata"):
        if class_names is None:
            class_names = predictor.metadata.get("thing_classes", None)
        category_ids = dataset_category_ids(predictor.metadata.get("thing_dataset_id_to_contiguous_id", None))

    def step(frame):
        inst = predictor(frame)
        return inst.pred_masks.numpy(), inst.track_ids.tolist(), inst.pred_classes.tolist(), inst.scores.tolist()

    source_frames = iter_frames(source)
    frames = tqdm(source_frames, desc="frames", unit="frame")
    out = write_tracks(frames, step, predictor.top_tracks, output_dir, fps or video_fps(source), class_names,
                       score_threshold, video_id, category_ids, input_name=source_frames.name)
    source_frames.check_complete(out)
    return out


def main(argv=None):
    parser = config_argument_parser(description=__doc__)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", required=True, help="video file, folder of frames, or camera index")
    parser.add_argument("--output", default="output/demo")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--threads", type=int_at_least(0, " (0: torch's default)"), default=0,
                        help="torch threads (0: default)")
    args = parse_with_overrides(parser, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_mobileinst_config(args.config_file, args.opts)
    with sigterm_exits():
        try:
            video, js, n = run(cfg, args.input, args.output, args.score_threshold)
        except IncompleteInputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
    print(f"{n} frames -> {video}, {js}")


if __name__ == "__main__":
    main()
