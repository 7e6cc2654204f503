"""detectron2's ``launch`` for CPU training in several processes, where each
process leaves its process group before it exits.

detectron2's ``launch`` never calls ``torch.distributed.destroy_process_group``.
With the gloo backend, a process that exits with the group still alive may have
gloo's C++ worker threads torn down during interpreter finalisation, which
aborts it ("terminate called without an active exception", SIGABRT) after all
its work is done and fails the whole launch (pytorch/pytorch#190489).

:func:`check_same_start`: the processes of a run, on one machine or several, resume
from the same iteration (each reads OUTPUT_DIR's last checkpoint itself)."""
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


def check_same_start(start_iter: int, output_dir: str) -> None:
    """Raise a ``RuntimeError`` in every process when the processes of a run would start
    at different iterations: with several machines, ``--resume`` reads
    ``output_dir/last_checkpoint`` on each, so OUTPUT_DIR must be one folder they all
    share (as detectron2 expects); otherwise a machine without the checkpoint starts
    from MODEL.WEIGHTS at iteration 0 while the others resume, and the collectives
    of DDP no longer pair up. A no-op in a single process."""
    starts = comm.all_gather(int(start_iter))
    if len(set(starts)) > 1:
        per_rank = ", ".join(f"rank {r}: {s}" for r, s in enumerate(starts))
        raise RuntimeError(
            f"The processes would start training at different iterations ({per_rank}): they did not all "
            f"find the same last checkpoint in OUTPUT_DIR '{output_dir}'. With --num-machines > 1, "
            "OUTPUT_DIR must be a folder every machine shares (a network file system)."
        )
