# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""python -m mobileinst_runtime --model-dir DIR --input VIDEO|FOLDER|CAMERA --output OUT
[--backend onnxruntime|openvino|ncnn]

Writes OUT/tracks.mp4 and OUT/results.json together, whole or not at all (an earlier
pair stays as it was if the run fails or is interrupted). A video whose frames stop
decoding partway gets the output of the frames read and exit status 1 with a message
saying how many frames were read of how many its container announces."""
import argparse
import sys

from mobileinst_core.cli import int_at_least, sigterm_exits
from mobileinst_core.frames import IncompleteInputError, check_source, iter_frames, video_fps
from mobileinst_core.writer import write_tracks

from .backends import BACKENDS
from .segmenter import VideoSegmenter


def run(model_dir, source, output_dir, threads=0, reuse_interval=None, association=None, int8=False,
        score_threshold=0.3, video_id=1, fps=None, progress=True, backend="onnxruntime"):
    """Annotated video (tracks.mp4) + YouTube-VIS json (results.json) with ``backend``.
    Raises :class:`~mobileinst_core.frames.IncompleteInputError` after writing the
    output of the frames read when a video file ends before the frames it announces."""
    check_source(source)
    seg = VideoSegmenter(model_dir, threads, reuse_interval, association, keep_results=False,
                         suffix="_int8" if int8 else "", backend=backend)
    source_frames = iter_frames(source)
    frames = source_frames
    if progress:
        try:
            from tqdm import tqdm

            frames = tqdm(frames, desc="frames", unit="frame")
        except ImportError:
            pass

    def step(frame):
        out = seg.step(frame)
        return out["masks"], out["track_ids"], out["classes"], out["scores"]

    out = write_tracks(frames, step, seg.top_tracks, output_dir, fps or video_fps(source), seg.class_names,
                       score_threshold, video_id, seg.meta.category_ids, input_name=source_frames.name)
    source_frames.check_complete(out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="tools/export.py output folder")
    p.add_argument("--input", required=True, help="video file, folder of frames, or camera index")
    p.add_argument("--output", default="output/runtime")
    p.add_argument("--threads", type=int_at_least(0, " (0: the backend's default)"), default=0,
                   help="threads per graph (0: the backend's default)")
    p.add_argument("--reuse-interval", type=int_at_least(1), default=None, help="T (default: from the export)")
    p.add_argument("--no-association", action="store_true")
    p.add_argument("--backend", default="onnxruntime", choices=list(BACKENDS),
                   help="onnxruntime and openvino run the *.onnx graphs, ncnn the *.ncnn.* ones "
                        "(tools/export.py --ncnn)")
    p.add_argument("--int8", action="store_true",
                   help="the int8 graphs (onnxruntime: *_int8.onnx; openvino: NNCF's *_int8.xml, else *_int8.onnx)")
    p.add_argument("--score-threshold", type=float, default=0.3)
    a = p.parse_args(argv)
    with sigterm_exits():
        try:
            video, js, n = run(a.model_dir, a.input, a.output, a.threads, a.reuse_interval,
                               False if a.no_association else None, a.int8, a.score_threshold, backend=a.backend)
        except IncompleteInputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
    print(f"{n} frames -> {video}, {js}")


if __name__ == "__main__":
    main()
