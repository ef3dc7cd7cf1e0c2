"""Contracts of pipeline/schedule.py: pure functions of the clock position."""
import math

import pytest

from pipeline import schedule as S


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_lr_warmup_peak_and_final(decay):
    kw = dict(peak=1e-3, warmup=0.1, decay=decay, decay_end=1.0, final_ratio=0.01)
    assert S.lr_at(0.0, **kw) == 0.0
    assert S.lr_at(0.05, **kw) == pytest.approx(0.5e-3)
    assert S.lr_at(0.1, **kw) == pytest.approx(1e-3)
    assert S.lr_at(1.0, **kw) == pytest.approx(1e-5)
    assert S.lr_at(5.0, **kw) == pytest.approx(1e-5)  # held after decay_end
    xs = [0.1 + 0.9 * i / 100 for i in range(101)]
    lrs = [S.lr_at(x, **kw) for x in xs]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "decay is monotone"


def test_lr_cosine_midpoint_and_no_warmup():
    assert S.lr_at(0.0, peak=2.0, decay="cosine", decay_end=1.0) == 2.0
    assert S.lr_at(0.5, peak=2.0, decay="cosine", decay_end=1.0) == pytest.approx(1.0)
    assert S.lr_at(0.3, peak=2.0, decay="constant") == 2.0


def test_lr_epoch_unit_paper_schedule_barely_decays():
    # cosine over a nominal 300 epochs: after 30 epochs the LR is still ~97.6 % of its peak
    lr = S.lr_at(30, peak=1.25e-4, decay="cosine", decay_end=300)
    assert lr / 1.25e-4 == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))


def test_lr_rejects_decay_end_before_warmup():
    with pytest.raises(ValueError, match="decay_end"):
        S.lr_at(0.5, peak=1.0, warmup=0.5, decay_end=0.2)


def test_stages_and_resolution():
    starts, res = (0.0, 0.4, 0.7), (16, 24, 32)
    assert [S.resolution_at(p, starts, res) for p in (0, 0.39, 0.4, 0.69, 0.7, 1.0)] == [16, 16, 24, 24, 32, 32]
    assert S.stage_at(0.55, starts) == 1
    with pytest.raises(ValueError):
        S.resolution_at(0.1, (0.0,), (16, 32))


def test_paper_curriculum():
    starts, res = S.paper_curriculum()
    assert res == (32, 64, 96, 128, 160, 192, 224)
    assert [S.resolution_at(e, starts, res) for e in (0, 4.99, 5, 29.9, 30, 299)] == [32, 32, 64, 192, 224, 224]


def test_strength_ramp():
    assert S.strength_at(0.0, start=0.2, end=1.0, ramp_end=0.5) == pytest.approx(0.2)
    assert S.strength_at(0.25, start=0.2, end=1.0, ramp_end=0.5) == pytest.approx(0.6)
    assert S.strength_at(0.9, start=0.2, end=1.0, ramp_end=0.5) == pytest.approx(1.0)
    assert S.strength_at(0.3, start=0.2, end=0.7, ramp_end=0.0) == 0.7


def test_progress_budget_and_epoch_plan():
    assert S.progress(step=0, total_steps=None, train_s=30.0, budget_s=60.0) == 0.5
    assert S.progress(step=0, total_steps=None, train_s=90.0, budget_s=60.0) == 1.0  # clipped
    assert S.progress(step=25, total_steps=100, train_s=1e9, budget_s=0.0) == 0.25
    with pytest.raises(ValueError):
        S.progress(step=1, total_steps=None, train_s=0.0, budget_s=0.0)
    assert S.position("progress", progress=0.3, epoch=7.0) == 0.3
    assert S.position("epoch", progress=0.3, epoch=7.0) == 7.0
