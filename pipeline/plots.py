"""curves.png of a run: top-1 vs images seen, top-1 vs time, images/s by curriculum stage."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.logs import read_table  # noqa: E402


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draw DIR/curves.png from DIR/steps.arrow and DIR/evals.arrow; returns the path.

    Panels: val top-1 (and top-5) vs images seen; val top-1 vs wall time; median images/s of
    training at each resolution (from the steps log) with the training loss over images seen.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "curves.png"
    steps = read_table(run_dir / "steps.arrow").to_pydict()
    evals = read_table(run_dir / "evals.arrow").to_pydict()

    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    a = ax[0]
    if evals["step"]:
        a.plot(evals["images_seen"], evals["top1"], "o-", label="top-1")
        a.plot(evals["images_seen"], evals["top5"], "s--", alpha=0.6, label="top-5")
        a.legend()
    a.set(xlabel="images seen", ylabel="val accuracy", title="accuracy vs images", ylim=(0, 1))

    a = ax[1]
    if evals["step"]:
        a.plot(np.asarray(evals["wall_s"]) / 60, evals["top1"], "o-")
    a.set(xlabel="wall time (min)", ylabel="val top-1", title="accuracy vs time", ylim=(0, 1))

    a = ax[2]
    res = np.asarray(steps["resolution"])
    ips = np.asarray(steps["images_per_s"])
    sizes = sorted(set(res.tolist()))
    med = [float(np.median(ips[res == r])) for r in sizes]
    a.bar([str(r) for r in sizes], med)
    for i, m in enumerate(med):
        a.annotate(f"{m:.0f}", (i, m), ha="center", va="bottom")
    a.set(xlabel="resolution (px)", ylabel="train images/s (median)", title="throughput by stage")

    a = ax[3]
    if steps["step"]:
        a.plot(steps["images_seen"], steps["loss"])
        a.set_yscale("log")
    a.set(xlabel="images seen", ylabel="train loss", title="loss")

    fig.suptitle(run_dir.name)
    fig.tight_layout()
    save_figure(fig, out, dpi=100)
    return out


def save_figure(fig, path: str | os.PathLike, dpi: int) -> None:
    """Write a PNG under a temporary name and rename it, then close the figure: a kill mid-write
    never leaves a truncated image under the real name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
