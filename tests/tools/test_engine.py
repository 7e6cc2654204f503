"""The training engine: foreach optimizer and clipping, EMA, time budget, step profiler."""
import os
import sys
import types
import weakref

import pytest
import torch
from conftest import ROOT, small_cfg
from detectron2.solver.build import maybe_add_gradient_clipping

from mobileinst.engine import ModelEMA, build_optimizer, clip_gradients_, scaled_steps
from mobileinst.engine import hooks as engine_hooks


def _grads(*values):
    params = []
    for v in values:
        p = torch.nn.Parameter(torch.zeros(len(v)))
        p.grad = torch.tensor(v, dtype=torch.float32)
        params.append(p)
    return params


def test_clip_norm_is_per_parameter():
    # norms 5 and 0.5: the first is scaled to norm 1, the second is left alone
    a, b = _grads([3.0, 4.0], [0.3, 0.4])
    clip_gradients_([a, b], "norm", 1.0)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.8]), atol=1e-5)
    assert torch.allclose(b.grad, torch.tensor([0.3, 0.4]))


def test_clip_full_model_uses_the_norm_of_all_gradients():
    # all gradients together: sqrt(3^2 + 4^2 + 12^2) = 13
    a, b = _grads([3.0, 4.0], [12.0])
    clip_gradients_([a, b], "full_model", 1.0)
    assert torch.allclose(torch.cat([a.grad, b.grad]), torch.tensor([3.0, 4.0, 12.0]) / 13, atol=1e-5)


def test_clip_value_and_unknown_type():
    (a,) = _grads([-3.0, 0.5])
    clip_gradients_([a], "value", 1.0)
    assert a.grad.tolist() == [-1.0, 0.5]
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        clip_gradients_([a], "bogus", 1.0)


def test_optimizer_step_matches_detectron2s_clipped_adamw():
    """The fused AdamW with foreach clipping makes the same update as detectron2's
    per-parameter clipping around the single-tensor AdamW."""
    cfg = small_cfg("SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm",
                    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.5")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    twin.load_state_dict(model.state_dict())
    ours = build_optimizer(cfg, model)
    assert all(g["fused"] for g in ours.param_groups)
    ref = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        [{"params": [p], "weight_decay": g["weight_decay"], "lr": g["lr"]}
         for g, p in ((g, p) for g in ours.param_groups for p in g["params"])],
        cfg.SOLVER.BASE_LR)
    # the groups of ``ours`` are in parameter order for this tiny model; map twin's params onto them
    order = {id(p): i for i, p in enumerate(model.parameters())}
    twin_params = list(twin.parameters())
    for group in ref.param_groups:
        group["params"] = [twin_params[order[id(group["params"][0])]]]
    x = torch.randn(16, 4) * 10
    for _ in range(3):
        for m, opt in ((model, ours), (twin, ref)):
            opt.zero_grad()
            (m(x) ** 2).sum().backward()
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_scaled_steps():
    assert scaled_steps((1450, 1700), 1800, 3600) == (2900, 3400)
    assert scaled_steps((1450, 1700), 1800, 900) == (725, 850)
    # repeated or out-of-range milestones are dropped
    assert scaled_steps((8, 9), 10, 5) == (4,)
    assert scaled_steps((8, 9), 10, 2) == ()


def test_ema_averages_with_a_warm_up():
    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(0.0)
    trainer = types.SimpleNamespace(model=model, iter=0, max_iter=100)
    ema = ModelEMA(decay=0.9)
    ema.trainer = trainer
    ema.before_train()
    expected = 0.0
    for n, w in enumerate([1.0, 2.0, 3.0, 4.0]):
        model.weight.data.fill_(w)
        ema.after_step()
        # AveragedModel copies the first update; update n + 1 lerps with decay (1 + n) / (10 + n)
        d = min(0.9, (1.0 + n) / (10.0 + n))
        expected = w if n == 0 else d * expected + (1 - d) * w
        assert ema.ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    trainer.iter = 99  # the last step loads the average into the model
    model.weight.data.fill_(5.0)
    ema.after_step()
    assert model.weight.item() == pytest.approx(ema.ema.module.weight.item())
    with pytest.raises(ValueError, match="EMA.DECAY"):
        ModelEMA(decay=1.0)


class _Clock:
    """A fake ``time`` module whose clock advances only when told."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def _budget_trainer(out_dir, monkeypatch, budget_s, steps, slow_from=10 ** 9, *opts):
    """A Trainer on the small config with SOLVER.TIME_BUDGET ``budget_s`` on a fake
    clock that a first hook advances by 1 s per iteration (2 s from ``slow_from``);
    returns (trainer, its TimeBudget hook, the LR of each iteration)."""
    from train_net import Trainer

    clock = _Clock()
    monkeypatch.setattr(engine_hooks, "time", clock)
    cfg = small_cfg("SOLVER.MAX_ITER", "1000", "SOLVER.STEPS", steps, "SOLVER.TIME_BUDGET", str(budget_s),
                    "SOLVER.IMS_PER_BATCH", "1", "MODEL.MOBILEINST.INSTANCE_DECODER.NUM_QUERIES", "4", *opts)
    cfg.OUTPUT_DIR = out_dir
    trainer = Trainer(cfg)
    budget = next(h for h in trainer._hooks if isinstance(h, engine_hooks.TimeBudget))
    lrs = []
    tick = _Tick(clock, lrs, slow_from)
    tick.trainer = weakref.proxy(trainer)
    trainer._hooks.insert(0, tick)  # the clock moves before the budget looks at it
    return trainer, budget, lrs


def test_time_budget_sets_the_schedule_from_the_measured_speed(synthetic_root, monkeypatch):
    trainer, budget, lrs = _budget_trainer(str(synthetic_root) + "/budget_out", monkeypatch, 30.0, "(900, 966)",
                                           10 ** 9, "SOLVER.WARMUP_ITERS", "0")
    trainer.train()
    # 5 skipped + 20 timed iterations at 1 s each: 25 s spent, 5 s left -> 5 more
    assert budget.seconds_per_iter == pytest.approx(1.0)
    assert trainer.max_iter == 30 and trainer.iter == 30 and len(lrs) == 30
    # the LR steps keep their fractions (90%, 96.6%) of the new schedule: iterations 27 and 29
    base = trainer.cfg.SOLVER.BASE_LR
    assert lrs[26] == pytest.approx(base) and lrs[27] == pytest.approx(base * 0.1)
    assert lrs[28] == pytest.approx(base * 0.1) and lrs[29] == pytest.approx(base * 0.01)


def test_time_budget_refits_the_schedule_when_the_speed_changes(synthetic_root, monkeypatch):
    trainer, budget, _ = _budget_trainer(str(synthetic_root) + "/budget_out2", monkeypatch, 200.0, "(900,)", 25)
    budget.recheck = 10
    trainer.train()
    # iteration 24: 1 s per iteration, 175 s left -> 200 iterations; then 2 s per iteration.
    # Iteration 34: the median of the windows (1, 2) is 1.5 s, 155 s left -> 35 + 103 = 138;
    # iteration 44: median of (1, 2, 2) = 2 s, 135 s left -> 45 + 67 = 112; iteration 54: the
    # same speed, 115 s left -> 55 + 57 = 112; iteration 64 is past half of 112
    assert trainer.max_iter == 112 and trainer.iter == 112
    assert budget.seconds_per_iter == pytest.approx(2.0)
    assert 25 + 87 * 2 <= 200  # the budget holds: 25 iterations at 1 s, 87 at 2 s


def test_time_budget_is_not_shortened_by_one_slow_window(synthetic_root, monkeypatch):
    trainer, budget, _ = _budget_trainer(str(synthetic_root) + "/budget_out3", monkeypatch, 200.0, "(900,)",
                                         range(85, 95))
    budget.recheck = 10
    trainer.train()
    # windows of 1 s per iteration up to the last refit (iteration 94, half of 200), whose window
    # took 2 s per iteration: the median stays 1 s, so the schedule keeps what the budget buys
    # at 1 s: 200 s - 10 s lost = 190 iterations (fitted on that window alone: 95 + 47 = 142)
    assert budget.seconds_per_iter == pytest.approx(1.0)
    assert trainer.max_iter == 190 and trainer.iter == 190


class _Tick(engine_hooks.HookBase):
    """Advances the fake clock by one second per iteration (two from ``slow_from``, or
    in it where it is a range) and records the LR used."""

    def __init__(self, clock, lrs, slow_from=10 ** 9):
        self.clock, self.lrs, self.slow_from = clock, lrs, slow_from

    def before_step(self):
        self.lrs.append(self.trainer.optimizer.param_groups[0]["lr"])

    def after_step(self):
        slow = self.trainer.iter in self.slow_from if isinstance(self.slow_from, range) \
            else self.trainer.iter >= self.slow_from
        self.clock.now += 2.0 if slow else 1.0


def test_step_profiler_times_every_phase(synthetic_root):
    """tools/step_profile.py (tools/benchmark.py --train)."""
    if os.path.join(ROOT, "tools") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "tools"))
    from step_profile import PHASES, StepProfiler
    from train_net import Trainer

    cfg = small_cfg()
    model = Trainer.build_model(cfg)
    prof = StepProfiler(model, Trainer.build_optimizer(cfg, model), iter(Trainer.build_train_loader(cfg)))
    t = prof.step()
    assert all(t[k] >= 0 for k in PHASES) and t["loss"] > 0 and t["forward"] > 0
    assert t["total"] == pytest.approx(sum(t[k] for k in PHASES), rel=1e-6)


def test_split_cpu_threads(monkeypatch):
    """--num-gpus N on a CPU machine: each of the N local processes gets cores // N threads (at least 1)."""
    from detectron2.utils import comm

    from mobileinst.engine import split_cpu_threads
    from mobileinst.engine import threads as threads_module

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads_module, "available_cores", lambda: 4)
        monkeypatch.setattr(comm, "get_local_size", lambda: 1)
        torch.set_num_threads(3)
        assert split_cpu_threads("cpu") == 3  # one process: left as it is
        monkeypatch.setattr(comm, "get_local_size", lambda: 2)
        assert split_cpu_threads("cuda") == 3  # GPU training: not touched
        assert split_cpu_threads("cpu") == 2
        monkeypatch.setattr(comm, "get_local_size", lambda: 8)
        assert split_cpu_threads("cpu") == 1
    finally:
        torch.set_num_threads(before)


def test_launched_process_leaves_its_group(tmp_path):
    """Each process that mobileinst.engine.launch starts destroys its gloo group
    when its function returns (or raises): no group is left to be torn down at
    interpreter exit, which can abort the process."""
    import torch.distributed as dist

    from mobileinst.engine.launch import run_then_leave_group

    def init():
        dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store{len(calls)}", rank=0, world_size=1)

    calls = []

    def work(x):
        calls.append(x)
        t = torch.tensor([x])
        dist.all_reduce(t)
        return int(t)

    init()
    assert run_then_leave_group(work, 3) == 3
    assert not dist.is_initialized()

    def fails():
        raise RuntimeError("boom")

    init()
    with pytest.raises(RuntimeError, match="boom"):
        run_then_leave_group(fails)
    assert not dist.is_initialized()


def test_processes_that_would_resume_at_different_iterations_stop(monkeypatch):
    """--resume with several machines: a machine that did not find OUTPUT_DIR's last
    checkpoint (a folder not shared) would start at 0 while the others resume."""
    from detectron2.utils import comm

    from mobileinst.engine import check_same_start

    monkeypatch.setattr(comm, "all_gather", lambda x: [x, x])
    check_same_start(4, "out")  # the same iteration everywhere: nothing happens
    monkeypatch.setattr(comm, "all_gather", lambda x: [x, 0])
    with pytest.raises(RuntimeError, match=r"rank 0: 4, rank 1: 0.*OUTPUT_DIR 'out'.*shares"):
        check_same_start(4, "out")
