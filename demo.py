#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Video demo: segment and track every instance of a video, a folder of frames
or a camera, online, and write an annotated video plus a YouTube-VIS json.

    python demo.py --config-file configs/synthetic/MobileInst_TopFormer_tiny_synthetic.yaml \
        --input clip.mp4 --output output/demo MODEL.WEIGHTS model_final.pth

Each track keeps one colour and its id for the whole video.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
try:
    import mobileinst  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.utils.colormap import colormap  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mobileinst import add_mobileinst_config  # noqa: E402
from mobileinst.video import StreamingPredictor, iter_frames  # noqa: E402
from mobileinst.video.predictor import video_fps  # noqa: E402

_PALETTE = colormap(rgb=False, maximum=255).astype(np.uint8)


def track_color(track_id: int) -> tuple:
    return tuple(int(c) for c in _PALETTE[(track_id * 7) % len(_PALETTE)])


def draw_tracks(frame: np.ndarray, instances, class_names=None, score_threshold=0.3, alpha=0.5) -> np.ndarray:
    """Overlay masks, contours and 'id class score' labels (BGR in, BGR out)."""
    out = frame.copy()
    keep = instances.scores >= score_threshold
    masks = instances.pred_masks[keep].numpy()
    ids = instances.track_ids[keep].tolist()
    classes = instances.pred_classes[keep].tolist()
    scores = instances.scores[keep].tolist()
    boxes = instances.pred_boxes.tensor[keep].numpy()
    for m, tid in zip(masks, ids):
        color = np.array(track_color(tid), dtype=np.float32)
        out[m] = (out[m] * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, track_color(tid), 1)
    for tid, c, s, b in zip(ids, classes, scores, boxes):
        name = class_names[c] if class_names and c < len(class_names) else str(c)
        cv2.putText(out, f"{tid}:{name} {s:.2f}", (int(b[0]), max(int(b[1]) - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, track_color(tid), 1, cv2.LINE_AA)
    return out


def ytvis_json(result, video_id=1):
    """Convert a tracker result to the YouTube-VIS results format (counts as str)."""
    out = []
    for t in result["tracks"]:
        segs = []
        for r in t["segmentations"]:
            if r is None:
                segs.append(None)
            else:
                counts = r["counts"].decode("ascii") if isinstance(r["counts"], bytes) else r["counts"]
                segs.append({"size": list(r["size"]), "counts": counts})
        out.append({"video_id": video_id, "category_id": int(t["category_id"]), "score": float(t["score"]),
                    "track_id": int(t["track_id"]), "segmentations": segs})
    return out


def run(cfg, source, output_dir, score_threshold=0.3, video_id=1, class_names=None, fps=None):
    """Run the demo; returns (video path, json path, number of frames)."""
    os.makedirs(output_dir, exist_ok=True)
    predictor = StreamingPredictor(cfg, keep_results=True)
    if class_names is None and hasattr(predictor, "metadata"):
        class_names = predictor.metadata.get("thing_classes", None)
    video_path = os.path.join(output_dir, "tracks.mp4")
    json_path = os.path.join(output_dir, "results.json")
    tmp_video = os.path.join(output_dir, ".tracks.tmp.mp4")
    writer = None
    n = 0
    try:
        for n, frame in tqdm(iter_frames(source), desc="frames", unit="frame"):
            inst = predictor(frame)
            vis = draw_tracks(frame, inst, class_names, score_threshold)
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(tmp_video, cv2.VideoWriter_fourcc(*"mp4v"),
                                         fps or video_fps(source), (w, h))
                if not writer.isOpened():
                    raise OSError(f"Cannot open a video writer for '{tmp_video}'")
            writer.write(vis)
    except BaseException:
        if writer is not None:
            writer.release()
        if os.path.exists(tmp_video):
            os.remove(tmp_video)
        raise
    writer.release()
    os.replace(tmp_video, video_path)
    with open(json_path + ".tmp", "w") as f:
        json.dump(ytvis_json(predictor.ytvis_result(video_id), video_id), f)
    os.replace(json_path + ".tmp", json_path)
    return video_path, json_path, n + 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", required=True, help="video file, folder of frames, or camera index")
    parser.add_argument("--output", default="output/demo")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    video, js, n = run(cfg, args.input, args.output, args.score_threshold)
    print(f"{n} frames -> {video}, {js}")


if __name__ == "__main__":
    main()
