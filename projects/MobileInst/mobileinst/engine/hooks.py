# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Training hooks for short schedules on small machines.

* :class:`ModelEMA` (``SOLVER.EMA``): an exponential moving average of the
  weights (``torch.optim.swa_utils.AveragedModel``), copied into the model at
  the end of training, so that ``model_final.pth`` and the final evaluation
  use the averaged weights.
* :class:`TimeBudget` (``SOLVER.TIME_BUDGET``): measures the iteration speed
  after the first iterations and sets ``max_iter`` so that training ends on
  time; the LR schedule (warm-up, steps) is rebuilt for the new length.
* :class:`ProgressBar`: a tqdm bar with the ETA on the main process.
"""
import logging
import statistics
import time

import torch
from detectron2.engine.hooks import HookBase, LRScheduler, PeriodicCheckpointer
from detectron2.solver import LRMultiplier
from detectron2.utils import comm
from torch.optim.swa_utils import AveragedModel

__all__ = ["ModelEMA", "TimeBudget", "ProgressBar", "scaled_steps"]

logger = logging.getLogger(__name__)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class ModelEMA(HookBase):
    """EMA of the parameters and buffers, ``decay`` with a warm-up
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (short schedules
    would otherwise average in the random initialisation)."""

    def __init__(self, decay: float = 0.999, device=None):
        self.decay = float(decay)
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"SOLVER.EMA.DECAY={decay}: expected a value in (0, 1)")
        self.device = device
        self.ema = None

    def _average(self, ema_params, params, num_averaged):
        n = int(num_averaged)
        d = min(self.decay, (1.0 + n) / (10.0 + n))
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p.detach() for _, p in floats], 1.0 - d)
        for e, p in zip(ema_params, params):
            if not e.is_floating_point():
                e.copy_(p)

    def before_train(self):
        model = _unwrap(self.trainer.model)
        self.ema = AveragedModel(model, device=self.device, multi_avg_fn=self._average, use_buffers=True)
        self.ema.requires_grad_(False)

    def after_step(self):
        self.ema.update_parameters(_unwrap(self.trainer.model))
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self.copy_to_model()

    def copy_to_model(self):
        """Load the averaged weights into the trained model (the last step
        does it before the checkpointer writes model_final)."""
        model = _unwrap(self.trainer.model)
        with torch.no_grad():
            for mine, avg in zip(model.state_dict().values(), self.ema.module.state_dict().values()):
                mine.copy_(avg)

    def state_dict(self):
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state_dict):
        if self.ema is not None and "ema" in state_dict:
            self.ema.load_state_dict(state_dict["ema"])


def scaled_steps(steps, old_max_iter: int, new_max_iter: int):
    """LR steps at the same fractions of a schedule of ``new_max_iter`` iterations
    (distinct, inside (0, new_max_iter): detectron2 rejects repeated milestones)."""
    return tuple(sorted({s for s in (int(round(x * new_max_iter / old_max_iter)) for x in steps)
                         if 0 < s < new_max_iter}))


class TimeBudget(HookBase):
    """Fit the schedule to ``budget_s`` seconds of training.

    After ``skip`` iterations (allocator and thread-pool warm-up) the next
    ``measure`` iterations are timed; ``max_iter`` becomes the iterations that
    the rest of the budget buys at that speed, and
    the LR schedule is rebuilt from ``build_scheduler(max_iter)``. Every
    ``recheck`` iterations until half the schedule (before any LR step) the
    speed is measured again over the ``recheck`` iterations just done and the
    schedule is refitted on the median speed of the last ``windows`` such
    measurements: the rest of the budget is spent at the speed of now, so that
    a slow start (warm-up) does not shorten the whole schedule, and one slow
    window (a busy moment) does not either, while a lasting change of speed is
    taken from its second window on. All processes take the main process's decision.
    """

    def __init__(self, budget_s: float, build_scheduler, skip: int = 5, measure: int = 20,
                 recheck: int = 100, windows: int = 3):
        if budget_s <= 0:
            raise ValueError(f"SOLVER.TIME_BUDGET={budget_s}: expected seconds > 0")
        self.budget_s = float(budget_s)
        self.build_scheduler = build_scheduler
        self.skip = int(skip)
        self.measure = max(1, int(measure))
        self.recheck = max(1, int(recheck))
        self.windows = max(1, int(windows))
        self._speeds = []  # seconds per iteration of each measured window
        self.seconds_per_iter = None
        self._t0 = self._tm = None

    def before_train(self):
        self._t0 = time.perf_counter()

    def before_step(self):
        if self.trainer.iter == self.trainer.start_iter + self.skip:
            self._tm = (time.perf_counter(), self.trainer.iter)

    def after_step(self):
        timed = self.trainer.iter + 1 - (self.trainer.start_iter + self.skip)
        first = timed == self.measure
        again = timed > self.measure and (timed - self.measure) % self.recheck == 0 \
            and 2 * (self.trainer.iter + 1) < self.trainer.max_iter
        if not (first or again):
            return
        now = time.perf_counter()
        since, start = self._tm
        self._speeds.append((now - since) / (self.trainer.iter + 1 - start))  # the iterations since the last fit
        spi = statistics.median(self._speeds[-self.windows:])
        self._tm = (now, self.trainer.iter + 1)
        left = self.budget_s - (now - self._t0)
        new_max = self.trainer.iter + 1 + max(1, int(left / spi))
        new_max, spi = comm.all_gather((new_max, spi))[0]
        self.seconds_per_iter = spi
        if new_max != self.trainer.max_iter:
            self.set_max_iter(new_max)
            logger.info(f"SOLVER.TIME_BUDGET {self.budget_s:.0f} s: {spi:.3f} s per iteration -> "
                        f"{new_max} iterations")

    def set_max_iter(self, max_iter: int):
        """New schedule length: the loop bound, the LR schedule, the final checkpoint."""
        trainer = self.trainer
        trainer.max_iter = int(max_iter)
        sched = self.build_scheduler(trainer.max_iter)
        if not isinstance(sched, LRMultiplier):
            raise TypeError(f"SOLVER.TIME_BUDGET needs detectron2's LRMultiplier scheduler, got {type(sched)}")
        sched = LRMultiplier(trainer.optimizer, sched._multiplier, trainer.max_iter, last_iter=trainer.iter)
        trainer.scheduler = sched
        for h in trainer._hooks:
            if isinstance(h, LRScheduler):
                h._scheduler = sched
            if isinstance(h, PeriodicCheckpointer):
                h.max_iter = trainer.max_iter


class ProgressBar(HookBase):
    """tqdm progress bar over the iterations, with the ETA (main process only)."""

    def __init__(self, desc: str = "training"):
        self.desc = desc
        self.bar = None

    def before_train(self):
        if comm.is_main_process():
            from tqdm import tqdm

            self.bar = tqdm(total=self.trainer.max_iter, initial=self.trainer.start_iter, desc=self.desc,
                            unit="it", dynamic_ncols=True, mininterval=2.0)

    def after_step(self):
        if self.bar is not None:
            if self.bar.total != self.trainer.max_iter:
                self.bar.total = self.trainer.max_iter
                self.bar.refresh()
            self.bar.update(1)

    def after_train(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
