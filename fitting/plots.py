"""Plots of fitted curves (matplotlib, Agg backend: works without a display)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fitting.fit import FitResult  # noqa: E402
from fitting.tables import Curve  # noqa: E402
from pipeline.logs import write_json  # noqa: E402
from pipeline.plots import save_figure  # noqa: E402


def _draw(ax, curve: Curve, results: list[FitResult], extend: float = 2.0):
    xs = [v for v in (curve.x_fit, curve.x_heldout) if len(v)]
    if xs:
        allx = np.concatenate(xs)
        lo, hi = float(allx.min()), float(allx.max()) * extend
        grid = np.geomspace(lo, hi, 200)
    ax.plot(curve.x_fit, curve.y_fit, "o", ms=3, color="k", label="fit points")
    if len(curve.x_heldout):
        ax.plot(curve.x_heldout, curve.y_heldout, "o", ms=4, mfc="none", color="k", label="held out")
    x_split = float(curve.x_fit.max()) if len(curve.x_fit) else None
    for r in results:
        if not r.ok or not xs:
            continue
        label = r.form + (f" n={r.n_breaks}" if r.n_breaks is not None else "")
        if not math.isnan(r.rmsle_heldout):
            label += f" ({r.rmsle_heldout:.4f})"
        yhat = r.predict(grid)
        (line,) = ax.plot(grid[grid <= x_split], yhat[grid <= x_split], lw=1.5 if r.form == "bnsl" else 1.0,
                          label=label)
        ax.plot(grid[grid >= x_split], yhat[grid >= x_split], "--", color=line.get_color(),
                lw=line.get_linewidth())  # dashed: extrapolation
    if x_split is not None:
        ax.axvline(x_split, color="0.7", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(curve.x_name)
    ax.set_ylabel(curve.y_name)
    ax.set_title(curve.name, fontsize=8)
    ax.legend(fontsize=6)


def plot_curve(curve: Curve, results: list[FitResult], path: str, extend: float = 2.0):
    """One PNG: data (filled: fit, open: held out), each form's fit (solid) and extrapolation (dashed) to
    `extend` times the largest x."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    _draw(ax, curve, results, extend)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def safe_name(curve: Curve) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(str(v) for v in curve.key.values()) or "curve").strip("_")


INDEX = ".plots.json"  # the PNGs the last plot_all wrote in a folder


def plot_all(curves: list[Curve], results: list[list[FitResult]], out_dir: str, grid: bool = True,
             extend: float = 2.0) -> list[str]:
    """One PNG per curve in out_dir, plus grid.png with the first GRID_MAX when grid is true; returns the paths.

    The PNGs an earlier call wrote in out_dir that this one does not (curves gone or renamed) are
    removed, so a reused folder shows this fit only; other files are never touched."""
    os.makedirs(out_dir, exist_ok=True)
    paths = _plot_all(curves, results, out_dir, grid, extend)
    index = os.path.join(out_dir, INDEX)
    try:
        with open(index) as f:
            before = json.load(f)
    except (OSError, ValueError):
        before = []
    now = [os.path.basename(p) for p in paths]
    for name in before if isinstance(before, list) else []:
        if isinstance(name, str) and name not in now and name.endswith(".png") and os.path.basename(name) == name:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(out_dir, name))
    write_json(index, now)
    return paths


GRID_MAX = 48  # curves in grid.png (the first ones): 2,000 panels would make a 128,000 px image


def _plot_all(curves, results, out_dir, grid, extend) -> list[str]:
    paths, seen = [], {"grid": 1}  # a curve named grid must not overwrite grid.png
    for c, rs in zip(curves, results):
        if c.error:
            continue
        name = safe_name(c)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name += f"_{seen[name]}"
        p = os.path.join(out_dir, name + ".png")
        plot_curve(c, rs, p, extend)
        paths.append(p)
    ok = [(c, rs) for c, rs in zip(curves, results) if not c.error][:GRID_MAX]
    if grid and len(ok) > 1:
        cols = min(4, len(ok))
        rows = math.ceil(len(ok) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax, (c, rs) in zip(axes.ravel(), ok):
            _draw(ax, c, rs, extend)
        for ax in axes.ravel()[len(ok):]:
            ax.axis("off")
        fig.tight_layout()
        p = os.path.join(out_dir, "grid.png")
        save_figure(fig, p, dpi=80)
        paths.append(p)
    return paths
