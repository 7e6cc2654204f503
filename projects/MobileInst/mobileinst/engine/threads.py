# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""CPU threads of each training process.

``train_net.py --num-gpus N`` on a machine without GPUs starts N processes that
train with DistributedDataParallel over gloo (detectron2's ``launch``), each on
IMS_PER_BATCH / N images. Every process would start one thread per core, N
times too many; :func:`split_cpu_threads` gives each its share of the cores.
"""
import os

import torch
from detectron2.utils import comm

__all__ = ["split_cpu_threads"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def split_cpu_threads(device: str) -> int:
    """With several processes on one machine training on the CPU, set torch's
    intra-op threads to this process's share of the cores (at least 1);
    otherwise leave them. Returns the threads in use."""
    local = comm.get_local_size()
    if local > 1 and str(device).startswith("cpu"):
        torch.set_num_threads(max(1, available_cores() // local))
    return torch.get_num_threads()
