# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""python -m mobileinst_runtime --model-dir DIR --input VIDEO|FOLDER|CAMERA --output OUT
[--backend onnxruntime|openvino|ncnn]"""
import argparse

from mobileinst_core.frames import check_source, iter_frames, video_fps
from mobileinst_core.writer import write_tracks

from .backends import BACKENDS
from .segmenter import VideoSegmenter


def run(model_dir, source, output_dir, threads=0, reuse_interval=None, association=None, int8=False,
        score_threshold=0.3, video_id=1, fps=None, progress=True, backend="onnxruntime"):
    """Annotated video (tracks.mp4) + YouTube-VIS json (results.json) with ``backend``."""
    check_source(source)
    seg = VideoSegmenter(model_dir, threads, reuse_interval, association, keep_results=True,
                         suffix="_int8" if int8 else "", backend=backend)
    frames = iter_frames(source)
    if progress:
        try:
            from tqdm import tqdm

            frames = tqdm(frames, desc="frames", unit="frame")
        except ImportError:
            pass

    def step(frame):
        out = seg.step(frame)
        return out["masks"], out["track_ids"], out["classes"], out["scores"]

    return write_tracks(frames, step, seg.ytvis_result, output_dir, fps or video_fps(source), seg.class_names,
                        score_threshold, video_id, seg.meta.category_ids)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-dir", required=True, help="tools/export.py output folder")
    p.add_argument("--input", required=True, help="video file, folder of frames, or camera index")
    p.add_argument("--output", default="output/runtime")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--reuse-interval", type=int, default=None, help="T (default: from the export)")
    p.add_argument("--no-association", action="store_true")
    p.add_argument("--backend", default="onnxruntime", choices=list(BACKENDS),
                   help="onnxruntime and openvino run the *.onnx graphs, ncnn the *.ncnn.* ones "
                        "(tools/export.py --ncnn)")
    p.add_argument("--int8", action="store_true",
                   help="the int8 graphs (onnxruntime: *_int8.onnx; openvino: NNCF's *_int8.xml, else *_int8.onnx)")
    p.add_argument("--score-threshold", type=float, default=0.3)
    a = p.parse_args(argv)
    video, js, n = run(a.model_dir, a.input, a.output, a.threads, a.reuse_interval,
                       False if a.no_association else None, a.int8, a.score_threshold, backend=a.backend)
    print(f"{n} frames -> {video}, {js}")


if __name__ == "__main__":
    main()
