#!/usr/bin/env python
# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""MobileInst training and evaluation with detectron2's DefaultTrainer.

    python train_net.py --config-file configs/coco/MobileInst_TopFormer_base_640.yaml --num-gpus 8
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth

Only what the model needs is added to the stock trainer: AdamW with parameter
groups and gradient clipping (``mobileinst.engine``), MobileInst's dataset
mappers, the evaluator chosen by the dataset's ``evaluator_type``, and the
optional EMA, time-budget and progress-bar hooks (SOLVER.EMA,
SOLVER.TIME_BUDGET, SOLVER.PROGRESS_BAR). Checkpoints are read as data and
must fit the model (``MobileInstCheckpointer``); the weights training starts
from (MODEL.WEIGHTS, else the backbone's ImageNet file) are checked before
anything is built, and NUM_CLASSES against every training and test set before
training starts.
"""
import logging
import os
import sys
import weakref

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import (
    AMPTrainer,
    hooks,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    default_argument_parser,
    default_setup,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import LVISEvaluator, verify_results
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger

try:
    import mobileinst  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "projects", "MobileInst"))
from mobileinst import add_mobileinst_config  # noqa: E402
from mobileinst.data import (  # noqa: E402
    build_test_mapper,
    build_train_loader,
    check_batch_size,
    check_num_classes,
    naming_unknown_categories,
)
from mobileinst.engine import (  # noqa: E402
    ModelEMA,
    ProgressBar,
    TimeBudget,
    build_optimizer,
    check_same_start,
    launch,
    scaled_steps,
    split_cpu_threads,
)
from mobileinst.evaluation import MobileInstCOCOEvaluator, YTVISEvaluator  # noqa: E402
from mobileinst.utils.checkpoint import MobileInstCheckpointer  # noqa: E402
from mobileinst.utils.cli import describe_overrides, parse_with_overrides  # noqa: E402
from mobileinst.utils.pretrained import check_start_weights  # noqa: E402


class Trainer(DefaultTrainer):
    """DefaultTrainer with MobileInst's optimizer, mappers and evaluators."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__, except that DDP gets device_ids=None on CPU
        # (detectron2 passes [local_rank], which DDP rejects for CPU modules).
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        check_batch_size(cfg, comm.get_world_size())  # before detectron2's divisibility assert
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        # the file training starts from, before the model and the data (a run with
        # a last checkpoint may resume from that instead of MODEL.WEIGHTS)
        if not (cfg.MODEL.WEIGHTS and os.path.exists(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))):
            check_start_weights(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        check_num_classes(cfg)  # every training and test set, before any iteration
        on_cpu = next(model.parameters()).device.type == "cpu"
        # gradients as views of DDP's buckets: no copy into the buckets each step
        # (8% of a 2-process CPU step, tools/benchmark.py --train --processes 2)
        model = create_ddp_model(
            model, broadcast_buffers=False, gradient_as_bucket_view=True, **({"device_ids": None} if on_cpu else {})
        )
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = MobileInstCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        # detectron2's JSONWriter creates metrics.json when the hooks are built: a run
        # that then fails to resume removes it again if it made it (and it is empty)
        self._metrics_file = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
        self._metrics_existed = os.path.exists(self._metrics_file)
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """DefaultTrainer.resume_or_load; then every process (on every machine) must
        start at the same iteration (:func:`mobileinst.engine.check_same_start`). If
        either fails, no empty metrics.json of this run is left behind."""
        try:
            super().resume_or_load(resume=resume)
            check_same_start(self.start_iter, self.cfg.OUTPUT_DIR)
        except BaseException:
            self._discard_metrics_file()
            raise

    def _discard_metrics_file(self):
        for h in self._hooks:
            for w in getattr(h, "_writers", ()):
                w.close()
        path = self._metrics_file
        if not self._metrics_existed and os.path.exists(path) and os.path.getsize(path) == 0:
            os.remove(path)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        check_num_classes(cfg, [dataset_name])
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type == "coco":
            return MobileInstCOCOEvaluator(dataset_name, output_dir=output_folder)
        if evaluator_type == "lvis":
            return LVISEvaluator(dataset_name, output_dir=output_folder)
        if evaluator_type == "ytvis":
            return YTVISEvaluator(dataset_name, output_dir=output_folder)
        raise NotImplementedError(
            f"No evaluator for dataset '{dataset_name}' with evaluator_type={evaluator_type!r}; "
            "expected 'coco', 'lvis' or 'ytvis'"
        )

    @classmethod
    def build_train_loader(cls, cfg):
        # annotations without a usable mask dropped (one warning per set), then images
        # without objects as DATALOADER.FILTER_EMPTY_ANNOTATIONS says (videos all kept);
        # the sets drawn in the shares of DATASETS.TRAIN_RATIOS
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = build_test_mapper(cfg, dataset_name)
        with naming_unknown_categories(dataset_name):  # the json and the annotation, not a bare KeyError
            return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    def build_hooks(self):
        """detectron2's hooks, plus SOLVER.EMA, SOLVER.TIME_BUDGET and SOLVER.PROGRESS_BAR.

        The EMA hook comes before the checkpointer (model_final holds the averaged
        weights); the time budget after the LR scheduler (it replaces the schedule)."""
        ret = super().build_hooks()
        s = self.cfg.SOLVER
        if s.EMA.ENABLED:
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicCheckpointer))
            ret.insert(at, ModelEMA(s.EMA.DECAY))
        if s.TIME_BUDGET > 0:
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.LRScheduler))
            ret.insert(at + 1, TimeBudget(s.TIME_BUDGET, self._scheduler_for))
        if s.PROGRESS_BAR:
            ret.append(ProgressBar())
        return ret

    def _scheduler_for(self, max_iter):
        """The configured LR schedule stretched to ``max_iter`` iterations."""
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.SOLVER.STEPS = scaled_steps(cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER, max_iter)
        cfg.SOLVER.MAX_ITER = max_iter
        return self.build_lr_scheduler(cfg, self.optimizer)

    def train(self):
        """DefaultTrainer.train, with a loop bound that a hook may change
        (SOLVER.TIME_BUDGET sets ``max_iter`` once it has measured the speed)."""
        logger = logging.getLogger("detectron2")
        logger.info(f"Starting training from iteration {self.start_iter}")
        self.iter = self.start_iter
        with EventStorage(self.start_iter) as self.storage:
            try:
                self.before_train()
                while self.iter < self.max_iter:
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    self.iter += 1
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            assert hasattr(self, "_last_eval_results"), "No evaluation results obtained during training!"
            verify_results(self.cfg, self._last_eval_results)
            return self._last_eval_results


def setup(args):
    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mobileinst")
    split_cpu_threads(cfg.MODEL.DEVICE)  # --num-gpus N on a CPU machine: N processes share the cores
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        MobileInstCheckpointer(model, cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    """detectron2's ``default_argument_parser``; its flags may also stand after
    the trailing KEY VALUE config overrides (parse it with ``parse_with_overrides``)."""
    return describe_overrides(default_argument_parser())


if __name__ == "__main__":
    args = parse_with_overrides(argument_parser())
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
