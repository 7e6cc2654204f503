# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""What this machine can do: its CPU and its measured sgemm GFLOP/s.

Machines of one kind differ up to 2.5x in speed (AVX-512 or AVX2 only, the
host's load), so every speed figure this project writes carries the
machine's own peak, measured in the same run: ratios to it compare across
machines, raw seconds do not.
"""
import os
import platform
import time
from typing import Dict

import torch

__all__ = ["cpu_name", "sgemm_gflops", "machine_info"]


def _cpuinfo(field: str) -> str:
    """The first ``field`` line of ``/proc/cpuinfo`` (its value), or ""."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` says."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def sgemm_gflops(threads: int, n: int = 1024, seconds: float = 0.5) -> float:
    """Best float32 matrix-product rate (GFLOP/s) of ``torch.mm`` on ``n x n``
    matrices with ``threads`` threads, over about ``seconds`` of repeats (the
    best of several short rounds, so that a busy moment does not count)."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen)
        b = torch.randn(n, n, generator=gen)
        out = torch.empty(n, n)
        torch.mm(a, b, out=out)  # warm-up
        best, spent = 0.0, 0.0
        while spent < seconds or best == 0.0:
            start = time.perf_counter()
            for _ in range(4):
                torch.mm(a, b, out=out)
            dt = time.perf_counter() - start
            spent += dt
            best = max(best, 4 * 2 * n ** 3 / dt / 1e9)
        return best
    finally:
        torch.set_num_threads(old)


def machine_info(threads: int = 0) -> Dict[str, object]:
    """CPU name, cores, vector extensions, and sgemm GFLOP/s on 1 thread and on
    ``threads`` (default: torch's current thread count)."""
    threads = int(threads) or torch.get_num_threads()
    flags = set(_cpuinfo("flags").split())
    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "avx512": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
        "torch": torch.__version__,
        "threads": threads,
        "sgemm_gflops_1_thread": round(sgemm_gflops(1), 1),
    }
    if threads > 1:
        info[f"sgemm_gflops_{threads}_threads"] = round(sgemm_gflops(threads), 1)
    return info
