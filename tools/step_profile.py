# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Where a training step's time goes: data, forward, loss, backward, optimizer.

``forward`` is the network (backbone, mask decoder, instance decoder, mask
logits); ``loss`` the criterion (matching, the focal, dice, BCE and objectness
losses, the pooled class head's losses), timed by hooks on
``model.criterion`` around each of its calls. Used by
``tools/benchmark.py --train``.
"""
import contextlib
import time
from typing import Callable, Dict, Iterator, Optional

import torch

__all__ = ["StepProfiler"]

PHASES = ("data", "forward", "loss", "backward", "optimizer")


class StepProfiler:
    """Runs training steps of ``model`` on batches from ``data`` and times their phases."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: Iterator,
                 autocast: Optional[Callable[[], contextlib.AbstractContextManager]] = None):
        self.model = model
        self.optimizer = optimizer
        self.data = data
        self.autocast = autocast or contextlib.nullcontext
        self._loss_s = 0.0
        self._t = None
        criterion = getattr(getattr(model, "module", model), "criterion", None)  # DDP wraps the model
        if criterion is not None:
            criterion.register_forward_pre_hook(self._loss_start)
            criterion.register_forward_hook(self._loss_end)

    def _loss_start(self, *_):
        self._t = time.perf_counter()

    def _loss_end(self, *_):
        self._loss_s += time.perf_counter() - self._t

    def step(self) -> Dict[str, float]:
        """One training step; returns seconds per phase and the summed loss."""
        self.model.train()
        t0 = time.perf_counter()
        batch = next(self.data)
        t1 = time.perf_counter()
        self._loss_s = 0.0
        with self.autocast():
            losses = self.model(batch)
        loss = sum(losses.values())
        t2 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        self.optimizer.step()
        t4 = time.perf_counter()
        return {"data": t1 - t0, "forward": t2 - t1 - self._loss_s, "loss": self._loss_s,
                "backward": t3 - t2, "optimizer": t4 - t3, "total": t4 - t0, "loss_value": float(loss)}
