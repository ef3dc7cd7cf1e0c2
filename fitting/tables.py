"""Reading curves from Arrow IPC (file or stream), Parquet and CSV tables, and from trainer run directories.

A curve is the rows sharing a key (one or more columns). Rows with the same x are averaged (within
the fit and the held-out part separately). A split column marks fit rows (true/1/yes) vs held-out rows.
Problems with one curve (NaN, y <= 0, a single x...) are recorded on that curve (`Curve.error`) so the
batch can report it and go on; problems with the whole table (missing column, unreadable file) raise
TableError with a one-line message.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq


class TableError(ValueError):
    """A table cannot be used (unreadable, missing column); message is one line."""


@dataclass
class Curve:
    """One curve: key values, fit points and held-out points (sorted by x, duplicate x averaged).

    error: why this curve cannot be fit at all (None if it can); the message names the curve and column.
    """
    key: dict
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_heldout: np.ndarray = field(default_factory=lambda: np.empty(0))
    y_heldout: np.ndarray = field(default_factory=lambda: np.empty(0))
    x_name: str = "x"
    y_name: str = "y"
    error: str | None = None

    @property
    def name(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.key.items())


def read_stream_tolerant(path: str) -> pa.Table:
    """Read an Arrow IPC stream batch by batch, stopping at the first bad batch (a crashed writer).
    The trainer's run logs own this format, so their reader (pipeline.logs.read_table) does it."""
    from pipeline.logs import read_table as read_log

    try:
        return read_log(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise TableError(f"{path}: not an Arrow IPC stream ({e})") from None


def read_table(path: str) -> pa.Table:
    """Read a CSV (.csv/.tsv, also compressed: .csv.gz, .tsv.bz2, ...), Parquet (.parquet/.pq) or Arrow IPC file
    or stream (anything else)."""
    if not os.path.exists(path):
        raise TableError(f"{path}: no such file")
    base, ext = os.path.splitext(path.lower())
    if ext in (".gz", ".bz2", ".zst", ".lz4"):  # pyarrow's CSV reader decompresses by this suffix
        ext = os.path.splitext(base)[1]
    try:
        if ext in (".csv", ".tsv"):
            opts = pcsv.ParseOptions(delimiter="\t" if ext == ".tsv" else ",")
            return pcsv.read_csv(path, parse_options=opts)
        if ext in (".parquet", ".pq"):
            return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise TableError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
    try:
        with ipc.open_file(path) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, OSError):
        return read_stream_tolerant(path)


def _truthy(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_boolean(col.type):
        return np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False)) == 1
    vals = [str(v).strip().lower() if v is not None else "" for v in col.to_pylist()]
    return np.array([v in ("1", "true", "yes", "fit", "train", "t", "y") for v in vals], dtype=bool)


def _mean_by_x(x: np.ndarray, y: np.ndarray):
    if x.size == 0:
        return x, y
    ux, inv = np.unique(x, return_inverse=True)
    sums = np.bincount(inv, weights=y, minlength=len(ux))
    counts = np.bincount(inv, minlength=len(ux))
    return ux, sums / counts


def _numeric(table: pa.Table, col: str, path: str) -> np.ndarray:
    c = table.column(col)
    if not (pa.types.is_integer(c.type) or pa.types.is_floating(c.type) or pa.types.is_boolean(c.type)):
        try:
            c = pc.cast(c, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise TableError(f"{path}: column {col!r} is not numeric ({c.type})") from None
    return np.asarray(c.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def check_curve(c: Curve) -> Curve:
    """Set c.error for data no form can use: NaN/inf, x <= 0, y <= 0, a single x value, no points."""
    for arr, col in ((c.x_fit, c.x_name), (c.y_fit, c.y_name), (c.x_heldout, c.x_name), (c.y_heldout, c.y_name)):
        bad = int(np.sum(~np.isfinite(arr)))
        if bad:
            c.error = f"curve ({c.name}): column {col!r} has {bad} NaN/inf values"
            return c
    for arr, col, what in ((c.x_fit, c.x_name, "log x"), (c.y_fit, c.y_name, "log y"),
                           (c.x_heldout, c.x_name, "log x"), (c.y_heldout, c.y_name, "log y")):
        bad = int(np.sum(arr <= 0))
        if bad:
            c.error = f"curve ({c.name}): column {col!r} has {bad} values <= 0 ({what} is taken)"
            return c
    if len(c.x_fit) == 0:
        c.error = f"curve ({c.name}): no fit rows"
    elif len(np.unique(c.x_fit)) < 2:
        c.error = f"curve ({c.name}): column {c.x_name!r} has a single value ({c.x_fit[0]:g}) among fit rows"
    return c


def curves_from_table(table: pa.Table, x: str, y: str, curve: list[str] | None = None,
                      split_col: str | None = None, path: str = "table") -> list[Curve]:
    """Split a table into curves.

    Args:
        table: any Arrow table.
        x, y: column names (numeric).
        curve: key columns; rows sharing their values form one curve (None or []: one curve).
        split_col: rows where it is true/1 are fit, the others held out.
        path: used in messages.

    Returns:
        Curves in order of first appearance; curves with bad data carry `error`.
    """
    curve = list(curve or [])
    for col in [x, y, *curve] + ([split_col] if split_col else []):
        if col not in table.column_names:
            raise TableError(f"{path}: missing column {col!r} (has {', '.join(table.column_names)})")
    xs, ys = _numeric(table, x, path), _numeric(table, y, path)
    fit_mask = _truthy(table.column(split_col)) if split_col else np.ones(table.num_rows, dtype=bool)
    keys = [table.column(c).to_pylist() for c in curve]
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(zip(*keys) if curve else [()] * table.num_rows):
        # NaN is not equal to itself: as a key it would make one curve per row; it groups as null
        groups.setdefault(tuple(None if isinstance(v, float) and v != v else v for v in k), []).append(i)
    out = []
    for k, rows in groups.items():
        rows = np.array(rows)
        f = fit_mask[rows]
        xf, yf = xs[rows[f]], ys[rows[f]]
        xh, yh = xs[rows[~f]], ys[rows[~f]]
        c = Curve(key=dict(zip(curve, k)), x_fit=xf, y_fit=yf, x_heldout=xh, y_heldout=yh, x_name=x, y_name=y)
        check_curve(c)
        if c.error is None:
            c.x_fit, c.y_fit = _mean_by_x(xf, yf)
            c.x_heldout, c.y_heldout = _mean_by_x(xh, yh)
        out.append(c)
    return out


RUN_X = ("images_seen", "flops_seen", "wall_s", "step")
RUN_Y = ("error", "top5_error", "loss")


def unique_runs(run_dirs: list[str]) -> list[str]:
    """The run directories in order, each once (runs/a, runs/a/ and x/../runs/a are one run: named twice,
    it would weigh twice)."""
    first: dict[str, str] = {}
    for d in run_dirs:
        first.setdefault(os.path.realpath(d), d)
    return list(first.values())


def run_names(run_dirs: list[str]) -> list[str]:
    """A name per run directory: its last path part, or as many trailing parts as tell it apart from
    the others (runs/a/s10 and dup/s10 -> a/s10, dup/s10)."""
    real = [os.path.realpath(d) for d in run_dirs]  # one run named twice keeps one short name
    parts = [r.split(os.sep) for r in real]
    depth = [1] * len(parts)
    while True:
        names = [os.sep.join(p[-k:]) or os.sep for p, k in zip(parts, depth)]
        clash = [i for i, n in enumerate(names) if depth[i] < len(parts[i])
                 and any(m == n and real[j] != real[i] for j, m in enumerate(names))]
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


def read_run(run_dir: str, x: str = "images_seen", y: str = "error", holdout_frac: float = 0.3,
             name: str | None = None) -> Curve:
    """The eval curve of one trainer run directory (evals.arrow, an Arrow IPC stream).

    Args:
        run_dir: directory written by `python -m pipeline.train`.
        name: the curve's `run` key (default: the directory's name; see run_names).
        x: images_seen, flops_seen, wall_s or step.
        y: error (1 - top1), top5_error (1 - top5) or loss.
        holdout_frac: the last fraction of eval points (by x) is held out to score extrapolation.

    Returns:
        Curve keyed by run name; evals with x <= 0 (the evaluation before training) are dropped.
    """
    if x not in RUN_X:
        raise TableError(f"--x must be one of {', '.join(RUN_X)}, not {x!r}")
    if y not in RUN_Y:
        raise TableError(f"--y must be one of {', '.join(RUN_Y)}, not {y!r}")
    path = os.path.join(run_dir, "evals.arrow")
    name = name or os.path.basename(os.path.normpath(run_dir))
    key = {"run": name}

    def failed(why: str) -> Curve:
        return Curve(key=key, x_fit=np.empty(0), y_fit=np.empty(0), x_name=x, y_name=y, error=f"run {name}: {why}")
    if not os.path.isdir(run_dir):
        return failed(f"{run_dir}: {'not a directory' if os.path.exists(run_dir) else 'no such directory'} "
                      "(expected a trainer run directory)")
    try:
        table = read_table(path)
    except TableError as e:
        return failed(str(e))
    if table.num_rows == 0:
        return failed(f"{path}: no evaluations yet")
    src = {"error": "top1", "top5_error": "top5", "loss": "loss"}[y]
    for col in (x, src):
        if col not in table.column_names:
            return failed(f"{path} has no column {col!r}")
    xs, v = _numeric(table, x, path), _numeric(table, src, path)
    ys = 1.0 - v if y in ("error", "top5_error") else v
    keep = ~(np.isfinite(xs) & (xs <= 0))
    xs, ys = xs[keep], ys[keep]
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    n_hold = int(round(holdout_frac * len(xs)))
    if len(xs) - n_hold < 2:
        n_hold = max(0, len(xs) - 2)
    cut = len(xs) - n_hold
    c = Curve(key=key, x_fit=xs[:cut], y_fit=ys[:cut], x_heldout=xs[cut:], y_heldout=ys[cut:], x_name=x, y_name=y)
    check_curve(c)
    if c.error is None:
        c.x_fit, c.y_fit = _mean_by_x(c.x_fit, c.y_fit)
        c.x_heldout, c.y_heldout = _mean_by_x(c.x_heldout, c.y_heldout)
    return c
