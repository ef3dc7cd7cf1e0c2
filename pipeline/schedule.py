"""Schedules of a run as pure functions of its clock position.

The run has one clock (shared/STYLE.md rule 4). `progress` is the fraction of the run done, in
[0, 1]: training time used / budget with a wall-clock budget, steps done / planned steps with an
epoch plan. A config gives every schedule position in one unit, `train.clock`: "progress" or
"epoch" (epochs of data seen, fractional). `position()` turns the run's counters into that unit;
everything else here maps a position to a value and keeps no state, so a resumed run (issue 7)
only has to restore the counters.
"""

from __future__ import annotations

import bisect
import math
from typing import Literal, Sequence


def progress(*, step: int, total_steps: int | None, train_s: float, budget_s: float) -> float:
    """Fraction of the run done, in [0, 1].

    With a budget (`budget_s > 0`) it is training time / budget; otherwise steps / planned steps.

    Args:
        step: optimizer steps done.
        total_steps: planned steps of an epoch plan (ignored with a budget).
        train_s: training seconds used so far (evaluation excluded).
        budget_s: wall-clock budget of training time, 0 for an epoch plan.
    """
    if budget_s > 0:
        p = train_s / budget_s
    else:
        if not total_steps or total_steps <= 0:
            raise ValueError("total_steps must be > 0 for an epoch plan")
        p = step / total_steps
    return min(max(p, 0.0), 1.0)


def position(unit: Literal["progress", "epoch"], *, progress: float, epoch: float) -> float:
    """The clock position in the config's unit: `progress` itself or epochs seen (fractional)."""
    if unit == "progress":
        return progress
    if unit == "epoch":
        return epoch
    raise ValueError(f"unknown clock unit {unit!r}")


def lr_at(pos: float, *, peak: float, warmup: float = 0.0,
          decay: Literal["cosine", "linear", "constant"] = "cosine",
          decay_end: float = 1.0, final_ratio: float = 0.0) -> float:
    """Learning rate at clock position `pos`.

    Linear warmup from 0 to `peak` over [0, warmup], then a decay from `peak` to
    `final_ratio * peak` over [warmup, decay_end], held at the final value after:

        cosine: lr = final + (peak - final) * (1 + cos(pi * u)) / 2,  u = (pos - warmup) / (decay_end - warmup)
        linear: lr = peak - (peak - final) * u

    Args:
        pos: clock position (same unit as warmup and decay_end).
        peak: the LR reached at the end of warmup.
        warmup: warmup length; 0 starts at `peak`.
        decay: "cosine", "linear" or "constant" (no decay).
        decay_end: position where the LR reaches its final value; must exceed warmup.
        final_ratio: final LR as a fraction of peak, in [0, 1].
    """
    if warmup > 0 and pos < warmup:
        return peak * max(pos, 0.0) / warmup
    if decay == "constant":
        return peak
    if decay_end <= warmup:
        raise ValueError(f"decay_end ({decay_end}) must be > warmup ({warmup})")
    u = min(max((pos - warmup) / (decay_end - warmup), 0.0), 1.0)
    final = peak * final_ratio
    if decay == "cosine":
        return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * u))
    if decay == "linear":
        return peak - (peak - final) * u
    raise ValueError(f"unknown decay {decay!r}")


def stage_at(pos: float, starts: Sequence[float]) -> int:
    """Index of the curriculum stage at `pos`: the last stage whose start is <= pos.

    Args:
        pos: clock position.
        starts: increasing stage starts, the first 0.
    """
    return max(bisect.bisect_right(list(starts), pos) - 1, 0)


def resolution_at(pos: float, starts: Sequence[float], resolutions: Sequence[int]) -> int:
    """Training resolution at `pos` (stage `stage_at(pos, starts)`)."""
    if len(starts) != len(resolutions):
        raise ValueError("one start per resolution")
    return int(resolutions[stage_at(pos, starts)])


def strength_at(pos: float, *, start: float, end: float, ramp_end: float) -> float:
    """Augmentation strength: linear from `start` at position 0 to `end` at `ramp_end`, then held.

    A weak-to-strong ramp lets a short run fit early and regularise late (Beyer et al. 2022
    find lighter augmentation pays for short schedules); start == end gives a constant.
    """
    if ramp_end <= 0:
        return end
    u = min(max(pos / ramp_end, 0.0), 1.0)
    return start + (end - start) * u


def next_point(pos: float, every: float, scheduled: float) -> float:
    """The next evaluation or checkpoint position after `pos` for a period `every` set on resume: the
    first multiple of `every` past `pos`, or the point the old period `scheduled` if that comes sooner
    and is still ahead.

    Args:
        pos: the clock position now; every: the new period (> 0); scheduled: the old next point.
    """
    first = (math.floor(pos / every) + 1) * every
    return min(first, scheduled) if scheduled > pos else first


def paper_curriculum(first: int = 32, last: int = 224, step_px: int = 32, every: float = 5.0):
    """(starts, resolutions) of the paper: `first` px for `every` epochs, +`step_px` each `every`
    epochs up to `last` (32 px for epochs 0-4, ..., 224 px from epoch 30)."""
    res = list(range(first, last + 1, step_px))
    return tuple(float(i * every) for i in range(len(res))), tuple(res)
