#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The main job on built-in synthetic data (``make demo``).

1. write the synthetic COCO / YouTube-VIS sets under $DETECTRON2_DATASETS;
2. train a small MobileInst (configs/synthetic) with the stock trainer;
3. evaluate it with detectron2's COCOEvaluator on synthetic_coco_val;
4. save visualised predictions under <output>/vis/;
5. fine-tune it on synthetic videos with temporal query passing, then video AP,
   identity switches and an annotated video;
6. write the figures to <output>/metrics.json (atomically).

Training has a wall-clock budget (``--budget-min``, 20 minutes for both parts
together; ``--video-share`` of it for the video part): each part measures its
iteration speed after the first iterations and sets its schedule to what fits
(SOLVER.TIME_BUDGET), so a slow machine ends on time and a fast one trains
longer. ``--max-iter`` / ``--video-max-iter`` give fixed schedules instead.
metrics.json records the machine (its measured sgemm GFLOP/s), the budget,
the iterations done and the training throughput.
"""
import json
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
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.engine import hooks  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from detectron2.utils.visualizer import ColorMode, Visualizer  # noqa: E402

from mobileinst import add_mobileinst_config  # noqa: E402
from mobileinst.data.synthetic import generate_all  # noqa: E402
from mobileinst.engine import launch, split_cpu_threads  # noqa: E402
from mobileinst.engine.threads import available_cores  # noqa: E402
from mobileinst.predictor import MobileInstPredictor  # noqa: E402
from mobileinst.utils.checkpoint import MobileInstCheckpointer  # noqa: E402
from mobileinst.utils.cli import config_argument_parser, parse_with_overrides  # noqa: E402
from mobileinst_core.files import atomic_path, atomic_write_json  # noqa: E402
from machine import machine_info  # noqa: E402  (tools/machine.py)
from train_net import Trainer  # noqa: E402

logger = logging.getLogger("mobileinst.quickstart")


def _part_config(args, config_file, part, max_iter, step_fractions, opts, weights=None, budget_s=0.0):
    """The config of one part (``part``: "image" or "video"): its file, output
    <output>/<part>, ``weights``, ``max_iter`` with LR steps at ``step_fractions``
    of it (or else a time budget of ``budget_s`` seconds), --device and
    --num-workers, then the ``opts`` overrides."""
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.OUTPUT_DIR = os.path.join(args.output, part)
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    if max_iter:
        cfg.SOLVER.MAX_ITER = max_iter
        cfg.SOLVER.STEPS = _steps(max_iter, step_fractions)
    else:
        cfg.SOLVER.TIME_BUDGET = float(budget_s)
    cfg.SOLVER.PROGRESS_BAR = True
    if args.device:
        cfg.MODEL.DEVICE = args.device
    if args.num_workers is not None:
        cfg.DATALOADER.NUM_WORKERS = args.num_workers
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def budget_seconds(args, part):
    """Training seconds of ``part`` under --budget-min and --video-share."""
    share = args.video_share if part == "video" else (1.0 if args.no_video else 1.0 - args.video_share)
    return 60.0 * args.budget_min * share


def image_config(args):
    return _part_config(args, args.config_file, "image", args.max_iter, (0.8, 0.93), args.opts,
                        budget_s=budget_seconds(args, "image"))


def video_config(args, image_weights):
    return _part_config(args, args.video_config_file, "video", args.video_max_iter, (0.85,),
                        [x for pair in args.video_opt for x in pair], weights=image_weights,
                        budget_s=budget_seconds(args, "video"))


def _train_here(cfg):
    """Train with the stock trainer in this process (one of several under
    detectron2's ``launch``); returns (the model, what the training record says:
    budget, iterations done, seconds in training steps and per iteration, images
    per second, processes; the results of the evaluation that detectron2's
    EvalHook runs when training ends, which is not counted as training). The
    main process saves <OUTPUT_DIR>/model_final.pth. ``SEED`` >= 0 seeds every random
    generator (process k: SEED + k) as detectron2's default_setup does in train_net.py."""
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    if comm.is_main_process():
        DetectionCheckpointer(model, cfg.OUTPUT_DIR).save("model_final")
    done = trainer.iter - trainer.start_iter
    step_time = next(h for h in trainer._hooks if isinstance(h, hooks.IterationTimer))._total_timer.seconds()
    spi = step_time / max(done, 1)
    record = {
        "budget_s": cfg.SOLVER.TIME_BUDGET or None,
        "iterations": done,
        "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "processes": comm.get_world_size(),
        "threads_per_process": torch.get_num_threads(),
        "train_time_s": round(step_time, 1),
        # what trainer.train() spent outside the steps: mostly the evaluation when training ends
        "eval_time_s": round(wall - step_time, 1),
        "s_per_iter": round(spi, 4),
        "images_per_s": round(cfg.SOLVER.IMS_PER_BATCH / spi, 2),
        "ema": cfg.SOLVER.EMA.ENABLED,
    }
    return model, record, {k: dict(v) for k, v in (getattr(trainer, "_last_eval_results", None) or {}).items()}


RECORD_FILE = "quickstart_record.json"


def _train_process(cfg):
    """One of the processes that ``launch`` starts: train; the main one writes
    the record for the parent process (next to model_final.pth)."""
    split_cpu_threads(cfg.MODEL.DEVICE)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mobileinst")
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank())
    _, record, results = _train_here(cfg)
    if comm.is_main_process():
        atomic_write_json(os.path.join(cfg.OUTPUT_DIR, RECORD_FILE), {"record": record, "results": results})


def train(cfg, processes: int = 1):
    """Train ``cfg`` in ``processes`` processes (DistributedDataParallel over gloo
    on a CPU, each on IMS_PER_BATCH / processes images with its share of the
    cores; 1: in this one) and save <OUTPUT_DIR>/model_final.pth. Returns (the
    trained model in eval mode, the training record, the results of the
    evaluation when training ended, or those of a new one)."""
    if processes <= 1:
        model, record, results = _train_here(cfg)
    else:
        path = os.path.join(cfg.OUTPUT_DIR, RECORD_FILE)
        if os.path.exists(path):
            os.remove(path)
        launch(_train_process, processes, dist_url="auto", args=(cfg,))
        with open(path) as f:
            out = json.load(f)
        record, results = out["record"], out["results"]
        model = Trainer.build_model(cfg)
        MobileInstCheckpointer(model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    model.eval()
    if not results:
        start = time.perf_counter()
        results = {k: dict(v) for k, v in Trainer.test(cfg, model).items()}
        record["eval_time_s"] = round(record["eval_time_s"] + time.perf_counter() - start, 1)
    return model, record, results


def auto_processes(cfgs) -> int:
    """Training processes for --processes 0: on a CPU, the most that the cores
    allow and that divide every part's IMS_PER_BATCH (a batch of 8 on 2 cores:
    2 processes of 4 images with 1 thread each, about a fifth faster than one
    process with 2 threads, docs/history.md); elsewhere 1."""
    if any(not str(c.MODEL.DEVICE).startswith("cpu") for c in cfgs):
        return 1
    n = available_cores()
    while n > 1 and any(c.SOLVER.IMS_PER_BATCH % n for c in cfgs):
        n -= 1
    return n


def _steps(max_iter, fractions):
    """LR decay steps at these fractions of ``max_iter``: distinct, in (0, max_iter)
    (detectron2's scheduler rejects repeated milestones)."""
    return tuple(sorted({s for s in (int(max_iter * f) for f in fractions) if 0 < s < max_iter}))


def save_visualizations(cfg, out_dir, num=8, score_threshold=0.3):
    """Draw the predictions of the trained model (score >= ``score_threshold``)
    on the first val images, each beside its ground truth (left: predictions,
    right: ground truth)."""
    os.makedirs(out_dir, exist_ok=True)
    predictor = MobileInstPredictor(cfg)
    name = cfg.DATASETS.TEST[0]
    meta = MetadataCatalog.get(name)
    for d in DatasetCatalog.get(name)[:num]:
        img = read_image(d["file_name"], format="BGR")
        inst = predictor(img)["instances"].to("cpu")
        inst = inst[inst.scores >= score_threshold]
        pred = Visualizer(img[:, :, ::-1], meta, scale=2.0, instance_mode=ColorMode.IMAGE)
        gt = Visualizer(img[:, :, ::-1], meta, scale=2.0, instance_mode=ColorMode.IMAGE)
        panels = [pred.draw_instance_predictions(inst).get_image(), gt.draw_dataset_dict(d).get_image()]
        gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
        out = np.concatenate([panels[0], gap, panels[1]], 1)[:, :, ::-1]
        path = os.path.join(out_dir, os.path.basename(d["file_name"]).rsplit(".", 1)[0] + ".png")
        with atomic_path(path) as tmp:
            cv2.imwrite(tmp, out)
    return out_dir


CONFIG_FILE = "config.yaml"


def save_config(cfg, weights):
    """<OUTPUT_DIR>/config.yaml: the config the model was trained with (as
    detectron2's default_setup writes it), MODEL.WEIGHTS set to the trained
    ``weights``, so that demo.py, train_net.py --eval-only and tools/export.py
    take it as it is."""
    out = cfg.clone()
    out.defrost()
    out.MODEL.WEIGHTS = weights
    path = os.path.join(cfg.OUTPUT_DIR, CONFIG_FILE)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(out.dump())
    return path


def coco_mask_quality(cfg):
    """:func:`mobileinst.evaluation.mask_quality.mask_quality` of the predictions
    COCOEvaluator last wrote for the first test set (coco_instances_results.json)."""
    from mobileinst.evaluation.mask_quality import mask_quality

    name = cfg.DATASETS.TEST[0]
    with open(os.path.join(cfg.OUTPUT_DIR, "inference", name, "coco_instances_results.json")) as f:
        results = json.load(f)
    objects = sum(len(d["annotations"]) for d in DatasetCatalog.get(name))
    return mask_quality(results, num_objects=objects)


def run_image_part(args, metrics):
    cfg = image_config(args)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    schedule = (f"{cfg.SOLVER.TIME_BUDGET / 60:.1f} minutes" if cfg.SOLVER.TIME_BUDGET
                else f"{cfg.SOLVER.MAX_ITER} iterations")
    logger.info(f"[2/4] training for {schedule} on {cfg.DATASETS.TRAIN} (batch {cfg.SOLVER.IMS_PER_BATCH}, "
                f"{args.processes} process(es), {available_cores()} cores)")
    model, record, results = train(cfg, args.processes)
    logger.info(f"[3/4] evaluated on {cfg.DATASETS.TEST} with COCOEvaluator")
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    save_config(cfg, final)
    eval_cfg = cfg.clone()
    eval_cfg.defrost()
    eval_cfg.MODEL.WEIGHTS = final
    eval_cfg.freeze()
    logger.info("[4/4] saving visualised predictions")
    vis_dir = save_visualizations(eval_cfg, os.path.join(args.output, "vis"))
    metrics["coco"] = {k: dict(v) for k, v in results.items()}
    metrics["mask_quality"] = coco_mask_quality(cfg)
    if cfg.MODEL.MOBILEINST.INFERENCE.NMS_SIGMA > 0:  # the paper's NMS-free rule, same model
        model.nms_sigma = 0.0
        metrics["coco_nms_free"] = {k: dict(v) for k, v in Trainer.test(cfg, model).items()}
        metrics["mask_quality_nms_free"] = coco_mask_quality(cfg)
        model.nms_sigma = cfg.MODEL.MOBILEINST.INFERENCE.NMS_SIGMA
    metrics["image"] = {
        "config": os.path.relpath(args.config_file, ROOT),
        **record,
        "device": cfg.MODEL.DEVICE,
        "amp": cfg.SOLVER.AMP.ENABLED,
        "weights": os.path.relpath(final, ROOT),
        "config_yaml": os.path.relpath(os.path.join(cfg.OUTPUT_DIR, CONFIG_FILE), ROOT),
        "visualizations": os.path.relpath(vis_dir, ROOT),
    }
    return eval_cfg


# The tracking metrics count the predictions a user would show: those more likely
# than not (score >= 0.5). At the video AP's cut (0.2) the up to VIDEO.MAX_TRACKS
# low-score tracks per video outnumber the objects and MOTA goes negative
# (docs/history.md, "Video fine-tuning and the tracking metrics' score cut").
MOT_SCORE_THRESHOLD = 0.5
TRACKING_RULE = ("motmetrics on mask IoU: a prediction is a candidate for an object at IoU >= 0.5 "
                 "(distance 1 - IoU, motp the mean distance); predictions with score >= {score}")


def tracking_metrics(cfg, model, dataset_name, score_threshold=MOT_SCORE_THRESHOLD, video_ap=False):
    """IDF1, MOTA, identity switches, ... (:mod:`mobileinst.evaluation.mot_metrics`)
    over a video set, with and without kernel association; with ``video_ap``
    also each setting's video AP (YouTube-VIS protocol).

    The ground truth of a video is decoded once and the tracker runs on it once per setting.
    Returns {"with_association": {metric: value}, "without_association": {...}, "rule": str}.
    """
    from mobileinst.data.ytvis_mapper import YTVISTestMapper
    from mobileinst.evaluation import evaluate_ytvis
    from mobileinst.evaluation.mot_metrics import accumulate_video, summarize_tracking, ytvis_gt_tracks
    from mobileinst.video import VideoTracker
    from mobileinst_core.categories import dataset_category_ids
    from mobileinst_core.ytvis_json import ytvis_entries

    settings = {"with_association": True, "without_association": False}
    mapper = YTVISTestMapper(cfg)
    meta = MetadataCatalog.get(dataset_name)
    category_ids = dataset_category_ids(meta.get("thing_dataset_id_to_contiguous_id", None))
    accumulators = {k: [] for k in settings}
    entries = {k: [] for k in settings}
    for video in DatasetCatalog.get(dataset_name):
        frames = mapper(video)["image"]
        gt = ytvis_gt_tracks(video)
        for key, association in settings.items():
            tracker = VideoTracker.from_model(model, association=association, keep_results=video_ap,
                                              output_size=(video["height"], video["width"]))
            with torch.no_grad():
                preds = [tracker.step(f) for f in frames]
            preds = [p[p.scores >= score_threshold] for p in preds]
            accumulators[key].append(accumulate_video(gt, preds, num_frames=len(frames)))
            if video_ap:
                entries[key] += ytvis_entries(tracker.ytvis_result(video["video_id"]), video["video_id"],
                                              category_ids)
    out = {k: summarize_tracking(accs) for k, accs in accumulators.items()}
    if video_ap:
        for key in settings:
            res = evaluate_ytvis(meta.json_file, entries[key], return_per_category=False)
            out[key] = {"video_AP": res["AP"], "video_AP50": res["AP50"], **out[key]}
    out["rule"] = TRACKING_RULE.format(score=score_threshold)
    return out


SHOWCASE_SET = "synthetic_ytvis_showcase"
STRIP_FRAMES = 5


def save_strip(video_path, path, num=STRIP_FRAMES, width=1200):
    """A PNG strip of ``num`` evenly spaced frames of the annotated video, ``width`` pixels wide."""
    cap = cv2.VideoCapture(video_path)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = {int(round(i * (total - 1) / (num - 1))) for i in range(num)}
    frames = []
    for i in range(total):
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            cv2.putText(frame, f"frame {i}", (6, frame.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
            frames.append(frame)
    cap.release()
    if len(frames) != num:
        raise RuntimeError(f"{video_path}: read {len(frames)} of the {num} strip frames ({total} announced)")
    gap = np.full((frames[0].shape[0], 6, 3), 255, np.uint8)
    strip = np.concatenate([x for f in frames for x in (f, gap)][:-1], 1)
    strip = cv2.resize(strip, (width, round(strip.shape[0] * width / strip.shape[1])), interpolation=cv2.INTER_AREA)
    with atomic_path(path) as tmp:
        cv2.imwrite(tmp, strip)
    return path


def run_showcase(cfg, model, eval_cfg, out_dir):
    """Track the showcase clip (``synthetic_ytvis_showcase``: objects that cross,
    pass behind another, leave and come back): its video AP, IDF1 and identity
    switches with and without kernel association, the annotated video (with
    association) and a PNG strip of it."""
    import demo

    video = DatasetCatalog.get(SHOWCASE_SET)[0]
    figures = tracking_metrics(cfg, model, SHOWCASE_SET, video_ap=True)
    video_path, json_path, n = demo.run(eval_cfg, os.path.dirname(video["file_names"][0]), out_dir,
                                        score_threshold=MOT_SCORE_THRESHOLD, fps=10)
    strip = save_strip(video_path, os.path.join(out_dir, "strip.png"))
    return {"frames": n, "size": [video["height"], video["width"]], **figures,
            "annotated_video": os.path.relpath(video_path, ROOT), "results_json": os.path.relpath(json_path, ROOT),
            "strip": os.path.relpath(strip, ROOT)}


def run_video_part(args, metrics, image_weights):
    cfg = video_config(args, image_weights)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    schedule = (f"{cfg.SOLVER.TIME_BUDGET / 60:.1f} minutes" if cfg.SOLVER.TIME_BUDGET
                else f"{cfg.SOLVER.MAX_ITER} iterations")
    logger.info(f"[video 1/3] query-passing training for {schedule} on {cfg.DATASETS.TRAIN}")
    model, record, results = train(cfg, args.processes)
    logger.info(f"[video 2/3] video AP on {cfg.DATASETS.TEST} (YouTube-VIS protocol), tracking metrics")
    name = cfg.DATASETS.TEST[0]
    tracking = tracking_metrics(cfg, model, name)
    eval_cfg = cfg.clone()
    eval_cfg.defrost()
    eval_cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    eval_cfg.freeze()
    save_config(cfg, eval_cfg.MODEL.WEIGHTS)
    metrics["ytvis"] = dict(results.get("ytvis", {}))
    metrics["ytvis"].update({
        "tracking": tracking,
        "config": os.path.relpath(args.video_config_file, ROOT),
        **record,
        "reuse_interval": cfg.MODEL.MOBILEINST.VIDEO.REUSE_INTERVAL,
        "weights": os.path.relpath(eval_cfg.MODEL.WEIGHTS, ROOT),
        "config_yaml": os.path.relpath(os.path.join(cfg.OUTPUT_DIR, CONFIG_FILE), ROOT),
    })
    logger.info(f"[video 3/3] the showcase clip ({SHOWCASE_SET}): tracking, annotated video, strip")
    metrics["showcase"] = run_showcase(cfg, model, eval_cfg, os.path.join(args.output, "showcase"))


def _pct(x):
    """A ratio as a percentage for the log; "n/a" where undefined (None)."""
    return "n/a" if x is None else f"{100 * x:.1f}"


def parse_args(argv=None):
    parser = config_argument_parser(
        description=__doc__, opts_help="config overrides of the image part, KEY VALUE ...; the --flags may stand "
                                       "before, between or after them")
    parser.add_argument("--output", default="output/quickstart")
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs/synthetic/MobileInst_TopFormer_tiny_synthetic.yaml"))
    parser.add_argument("--budget-min", type=float, default=20.0,
                        help="minutes of training, image and video parts together (0: the configs' schedules)")
    parser.add_argument("--video-share", type=float, default=0.25, help="the video part's share of --budget-min")
    parser.add_argument("--max-iter", type=int, default=0, help="a fixed image schedule instead of the budget")
    parser.add_argument("--video-config-file",
                        default=os.path.join(ROOT, "configs/synthetic/MobileInst_TopFormer_tiny_synthetic_ytvis.yaml"))
    parser.add_argument("--video-max-iter", type=int, default=0, help="a fixed video schedule instead of the budget")
    parser.add_argument("--no-video", action="store_true", help="skip the video part")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--device", default="", help="MODEL.DEVICE of both parts, e.g. cuda (default: the configs', cpu)")
    parser.add_argument("--num-workers", type=int, default=None, help="DATALOADER.NUM_WORKERS of both parts")
    parser.add_argument("--processes", type=int, default=0,
                        help="training processes (DistributedDataParallel; on a CPU each gets its share of the "
                             "cores); 0: as many as the cores allow and both parts' IMS_PER_BATCH divide")
    parser.add_argument("--video-opt", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a config override of the video part; repeat it for more")
    args = parse_with_overrides(parser, argv)
    if args.budget_min < 0:
        parser.error(f"--budget-min {args.budget_min}: expected minutes >= 0")
    if not 0.0 <= args.video_share < 1.0:
        parser.error(f"--video-share {args.video_share}: expected a fraction in [0, 1)")
    if args.processes < 0:
        parser.error(f"--processes {args.processes}: expected 0 (automatic) or more")
    if args.processes == 0:
        args.processes = auto_processes([image_config(args)] + ([] if args.no_video else [video_config(args, "")]))
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    setup_logger(output=os.path.join(args.output, "log.txt"))
    setup_logger(output=os.path.join(args.output, "log.txt"), name="mobileinst")
    t0 = time.perf_counter()

    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    logger.info(f"[1/4] synthetic data under {root}")
    generate_all(root, seed=args.seed, log=logger.info)

    metrics = {"machine": machine_info(), "budget_min": args.budget_min or None}
    path = os.path.join(args.output, "metrics.json")
    eval_cfg = run_image_part(args, metrics)
    atomic_write_json(path, metrics, indent=2)
    if not args.no_video:
        run_video_part(args, metrics, eval_cfg.MODEL.WEIGHTS)
    metrics["total_time_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(path, metrics, indent=2)
    segm = metrics["coco"].get("segm", {})
    m, im = metrics["machine"], metrics["image"]
    logger.info(f"machine: {m['cpu']}, sgemm {m['sgemm_gflops_1_thread']} GFLOP/s on 1 thread; image part "
                f"{im['iterations']} iterations in {im['train_time_s'] / 60:.1f} min ({im['images_per_s']} images/s)")
    logger.info(f"synthetic val mask AP {segm.get('AP', float('nan')):.1f} "
                f"(AP50 {segm.get('AP50', float('nan')):.1f}); metrics in {path}")
    if "ytvis" in metrics:
        v = metrics["ytvis"]
        tr = v["tracking"]
        logger.info(f"synthetic val video AP {v.get('AP', float('nan')):.1f}; " + "; ".join(
            f"{k.replace('_', ' ')}: IDF1 {_pct(tr[k]['idf1'])}, MOTA {_pct(tr[k]['mota'])}, "
            f"{tr[k]['num_switches']} identity switches" for k in ("with_association", "without_association")))
    return metrics


if __name__ == "__main__":
    main()
