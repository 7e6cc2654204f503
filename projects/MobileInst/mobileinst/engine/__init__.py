"""Training engine pieces used by ``train_net.py``'s Trainer: the optimizer,
hooks for short schedules (EMA, time budget, progress bar), the launch and
threads of several CPU training processes."""
from .hooks import ModelEMA, ProgressBar, TimeBudget, scaled_steps  # noqa: F401
from .optimizer import build_optimizer, clip_gradients_  # noqa: F401
from .launch import check_same_start, launch  # noqa: F401
from .threads import split_cpu_threads  # noqa: F401
