"""Timing shared by the benchmarks: CUDA events on a GPU (no host clock skew from async
launches), perf_counter on the CPU."""
from __future__ import annotations

import time

import torch


def time_calls(fn, device: torch.device, repeats: int) -> list[float]:
    """Milliseconds per call of fn(), one number per call (warm up before calling this)."""
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return times
