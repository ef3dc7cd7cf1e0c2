"""Timing shared by the benchmarks: CUDA events on a GPU (no host clock skew from async
launches), perf_counter on the CPU."""
from __future__ import annotations

import time

import torch


def time_calls(fn, device: torch.device, repeats: int, inner: int = 1) -> list[float]:
    """Milliseconds per call of fn(), one number per `inner` consecutive calls (warm up before calling this).

    On CUDA a timing ends with a sync; with inner > 1 the host queues each next call while the device runs
    the last, as a training loop does, so the host's launch time after a sync counts once per timing, not
    once per call (it would understate a short step's rate)."""
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append(1e3 * (time.perf_counter() - t0) / inner)
    return times


def steady_loader(dataset, batch: int, workers: int, batches: int, pin: bool = False):
    """A torch DataLoader over `dataset` that hands out `batches` shuffled batches as one epoch.

    A DataLoader builds each batch in one worker and drains at every epoch's end, so on a benchmark
    set of a few batches per epoch (10,000 images, batch 1,024, 16 workers: 9 batches, 7 workers idle)
    every epoch is mostly start-up, which ImageNet's ~1,250 batches per epoch amortize. One long
    epoch (passes over the set in fresh random orders, as RandomSampler draws beyond its length)
    measures the steady state a real run sees.
    """
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=batches * batch)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                       drop_last=True, pin_memory=pin)
