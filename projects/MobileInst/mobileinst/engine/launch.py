"""detectron2's ``launch`` for CPU training in several processes, where each
process leaves its process group before it exits.

detectron2's ``launch`` never calls ``torch.distributed.destroy_process_group``.
With the gloo backend, a process that exits with the group still alive may have
gloo's C++ worker threads torn down during interpreter finalisation, which
aborts it ("terminate called without an active exception", SIGABRT) after all
its work is done and fails the whole launch (pytorch/pytorch#190489)."""
import functools

import torch.distributed as dist
from detectron2.engine import launch as _d2_launch
from detectron2.utils import comm


def run_then_leave_group(main_func, *args):
    """Run ``main_func(*args)``; then, in a process of a group, wait for the
    others (so that no collective is still in flight) and destroy the group."""
    try:
        result = main_func(*args)
        if dist.is_available() and dist.is_initialized():
            comm.synchronize()
        return result
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def launch(main_func, num_processes, **kwargs):
    """``detectron2.engine.launch(main_func, num_processes, **kwargs)`` whose
    processes each destroy their process group when ``main_func`` returns."""
    _d2_launch(functools.partial(run_then_leave_group, main_func), num_processes, **kwargs)
