#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The main job on built-in synthetic data (``make demo``).

1. write the synthetic COCO / YouTube-VIS sets under $DETECTRON2_DATASETS;
2. train a small MobileInst (configs/synthetic) with the stock trainer;
3. evaluate it with detectron2's COCOEvaluator on synthetic_coco_val;
4. save visualised predictions under <output>/vis/;
5. write the figures to <output>/metrics.json (atomically).
"""
import argparse
import logging
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # train_net
try:
    import mobileinst  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "projects", "MobileInst"))

import cv2  # noqa: E402
import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from detectron2.utils.visualizer import ColorMode, Visualizer  # noqa: E402

from mobileinst import add_mobileinst_config  # noqa: E402
from mobileinst.data.synthetic import generate_all  # noqa: E402
from mobileinst.predictor import MobileInstPredictor  # noqa: E402
from mobileinst_runtime.files import atomic_write_json  # noqa: E402
from train_net import Trainer  # noqa: E402

logger = logging.getLogger("mobileinst.quickstart")


def _part_config(args, config_file, part, max_iter, step_fractions, opts, weights=None):
    """The config of one part (``part``: "image" or "video"): its file, output
    <output>/<part>, ``weights``, ``max_iter`` with LR steps at ``step_fractions``
    of it, --device and --num-workers, then the ``opts`` overrides."""
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.OUTPUT_DIR = os.path.join(args.output, part)
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    if max_iter:
        cfg.SOLVER.MAX_ITER = max_iter
        cfg.SOLVER.STEPS = _steps(max_iter, step_fractions)
    if args.device:
        cfg.MODEL.DEVICE = args.device
    if args.num_workers is not None:
        cfg.DATALOADER.NUM_WORKERS = args.num_workers
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def image_config(args):
    return _part_config(args, args.config_file, "image", args.max_iter, (0.8, 0.93), args.opts)


def video_config(args, image_weights):
    return _part_config(args, args.video_config_file, "video", args.video_max_iter, (0.85,),
                        [x for pair in args.video_opt for x in pair], weights=image_weights)


def _steps(max_iter, fractions):
    """LR decay steps at these fractions of ``max_iter``: distinct, in (0, max_iter)
    (detectron2's scheduler rejects repeated milestones)."""
    return tuple(sorted({s for s in (int(max_iter * f) for f in fractions) if 0 < s < max_iter}))


def save_visualizations(cfg, out_dir, num=8, score_threshold=0.25):
    """Draw the predictions of the trained model on the first val images."""
    os.makedirs(out_dir, exist_ok=True)
    predictor = MobileInstPredictor(cfg)
    name = cfg.DATASETS.TEST[0]
    meta = MetadataCatalog.get(name)
    for d in DatasetCatalog.get(name)[:num]:
        img = read_image(d["file_name"], format="BGR")
        inst = predictor(img)["instances"].to("cpu")
        inst = inst[inst.scores > score_threshold]
        vis = Visualizer(img[:, :, ::-1], meta, scale=2.0, instance_mode=ColorMode.IMAGE)
        out = vis.draw_instance_predictions(inst).get_image()[:, :, ::-1]
        path = os.path.join(out_dir, os.path.basename(d["file_name"]).rsplit(".", 1)[0] + ".png")
        cv2.imwrite(path + ".tmp.png", out)
        os.replace(path + ".tmp.png", path)
    return out_dir


def run_image_part(args, metrics):
    cfg = image_config(args)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    logger.info(f"[2/4] training {cfg.SOLVER.MAX_ITER} iterations on {cfg.DATASETS.TRAIN} "
                f"(batch {cfg.SOLVER.IMS_PER_BATCH}, {torch.get_num_threads()} threads)")
    start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    train_time = time.perf_counter() - start
    logger.info(f"[3/4] evaluating on {cfg.DATASETS.TEST} with COCOEvaluator")
    start = time.perf_counter()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    results = Trainer.test(cfg, model)
    eval_time = time.perf_counter() - start
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    DetectionCheckpointer(model, cfg.OUTPUT_DIR).save("model_final")
    eval_cfg = cfg.clone()
    eval_cfg.defrost()
    eval_cfg.MODEL.WEIGHTS = final
    eval_cfg.freeze()
    logger.info("[4/4] saving visualised predictions")
    vis_dir = save_visualizations(eval_cfg, os.path.join(args.output, "vis"))
    metrics["coco"] = {k: dict(v) for k, v in results.items()}
    if cfg.MODEL.MOBILEINST.INFERENCE.NMS_SIGMA > 0:  # the paper's NMS-free rule, same model
        model.nms_sigma = 0.0
        metrics["coco_nms_free"] = {k: dict(v) for k, v in Trainer.test(cfg, model).items()}
        model.nms_sigma = cfg.MODEL.MOBILEINST.INFERENCE.NMS_SIGMA
    metrics["image"] = {
        "config": os.path.relpath(args.config_file, ROOT),
        "iterations": cfg.SOLVER.MAX_ITER,
        "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "device": cfg.MODEL.DEVICE,
        "amp": cfg.SOLVER.AMP.ENABLED,
        "train_time_s": round(train_time, 1),
        "eval_time_s": round(eval_time, 1),
        "weights": os.path.relpath(final, ROOT),
        "visualizations": os.path.relpath(vis_dir, ROOT),
    }
    return eval_cfg


def _gt_tracks(video):
    """Per GT track id: a bool mask (H, W) or None per frame."""
    from detectron2.data import detection_utils as utils

    ids = sorted({a["id"] for frame in video["annotations"] for a in frame})
    tracks = {i: [None] * video["length"] for i in ids}
    for t, frame in enumerate(video["annotations"]):
        if frame:
            inst = utils.annotations_to_instances(frame, (video["height"], video["width"]), mask_format="bitmask")
            for a, m in zip(frame, inst.gt_masks.tensor):
                tracks[a["id"]][t] = m.numpy()
    return list(tracks.values())


def count_switches(cfg, model, dataset_name, association, score_threshold=0.2):
    """Identity switches over a video set with/without kernel association."""
    from mobileinst.data.ytvis_mapper import YTVISTestMapper
    from mobileinst.video import VideoTracker, count_id_switches

    mapper = YTVISTestMapper(cfg)
    total = 0
    for video in DatasetCatalog.get(dataset_name):
        inputs = mapper(video)
        tracker = VideoTracker.from_model(model, association=association, keep_results=False,
                                          output_size=(video["height"], video["width"]))
        with torch.no_grad():
            preds = [tracker.step(f) for f in inputs["image"]]
        preds = [p[p.scores >= score_threshold] for p in preds]
        total += count_id_switches(_gt_tracks(video), preds)
    return total


def run_video_part(args, metrics, image_weights):
    import demo

    cfg = video_config(args, image_weights)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    logger.info(f"[video 1/3] query-passing training {cfg.SOLVER.MAX_ITER} iterations on {cfg.DATASETS.TRAIN}")
    start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    train_time = time.perf_counter() - start
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    model.eval()
    DetectionCheckpointer(model, cfg.OUTPUT_DIR).save("model_final")
    logger.info(f"[video 2/3] video AP on {cfg.DATASETS.TEST} (YouTube-VIS protocol), identity switches")
    start = time.perf_counter()
    results = Trainer.test(cfg, model)
    eval_time = time.perf_counter() - start
    name = cfg.DATASETS.TEST[0]
    switches = {f"{k}_association": count_switches(cfg, model, name, a) for k, a in (("with", True), ("without", False))}
    switches["rule"] = "CLEAR-MOT, mask IoU >= 0.5, predictions with score >= 0.2"
    logger.info("[video 3/3] annotated video of the first val video")
    eval_cfg = cfg.clone()
    eval_cfg.defrost()
    eval_cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    eval_cfg.freeze()
    first = DatasetCatalog.get(name)[0]
    video_path, json_path, _ = demo.run(eval_cfg, os.path.dirname(first["file_names"][0]),
                                         os.path.join(args.output, "video_demo"), score_threshold=0.2, fps=5)
    metrics["ytvis"] = dict(results.get("ytvis", {}))
    metrics["ytvis"].update({
        "id_switches": switches,
        "config": os.path.relpath(args.video_config_file, ROOT),
        "iterations": cfg.SOLVER.MAX_ITER,
        "train_time_s": round(train_time, 1),
        "eval_time_s": round(eval_time, 1),
        "reuse_interval": cfg.MODEL.MOBILEINST.VIDEO.REUSE_INTERVAL,
        "annotated_video": os.path.relpath(video_path, ROOT),
        "results_json": os.path.relpath(json_path, ROOT),
    })


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/quickstart")
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs/synthetic/MobileInst_TopFormer_tiny_synthetic.yaml"))
    parser.add_argument("--max-iter", type=int, default=0, help="override SOLVER.MAX_ITER")
    parser.add_argument("--video-config-file",
                        default=os.path.join(ROOT, "configs/synthetic/MobileInst_TopFormer_tiny_synthetic_ytvis.yaml"))
    parser.add_argument("--video-max-iter", type=int, default=0, help="override the video SOLVER.MAX_ITER")
    parser.add_argument("--no-video", action="store_true", help="skip the video part")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--device", default="", help="MODEL.DEVICE of both parts, e.g. cuda (default: the configs', cpu)")
    parser.add_argument("--num-workers", type=int, default=None, help="DATALOADER.NUM_WORKERS of both parts")
    parser.add_argument("--video-opt", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a config override of the video part; repeat it for more (before the image part's opts)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides of the image part, KEY VALUE ...")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    setup_logger(output=os.path.join(args.output, "log.txt"))
    setup_logger(output=os.path.join(args.output, "log.txt"), name="mobileinst")
    t0 = time.perf_counter()

    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    logger.info(f"[1/4] synthetic data under {root}")
    generate_all(root, seed=args.seed, log=logger.info)

    metrics = {"torch_threads": torch.get_num_threads()}
    path = os.path.join(args.output, "metrics.json")
    eval_cfg = run_image_part(args, metrics)
    atomic_write_json(path, metrics, indent=2)
    if not args.no_video:
        run_video_part(args, metrics, eval_cfg.MODEL.WEIGHTS)
    metrics["total_time_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(path, metrics, indent=2)
    segm = metrics["coco"].get("segm", {})
    logger.info(f"synthetic val mask AP {segm.get('AP', float('nan')):.1f} "
                f"(AP50 {segm.get('AP50', float('nan')):.1f}); metrics in {path}")
    if "ytvis" in metrics:
        v = metrics["ytvis"]
        logger.info(f"synthetic val video AP {v.get('AP', float('nan')):.1f}; identity switches "
                    f"{v['id_switches']['with_association']} with association, "
                    f"{v['id_switches']['without_association']} without")
    return metrics


if __name__ == "__main__":
    main()
