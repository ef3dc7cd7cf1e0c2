"""Fitting many curves: one row per curve and form, in parallel over curves, failures reported per row.

The unit of work is one curve (`fit_curve`), a plain picklable function of a Curve, so a process pool
here (or a cluster scheduler elsewhere) can map it. Worker processes run Numba single-threaded: the
parallelism is across curves, not inside one.
"""
from __future__ import annotations

import math
import os
import traceback
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pyarrow as pa

from fitting import bnsl
from fitting.fit import ALL_FORMS, FitResult, SearchConfig, fit
from fitting.tables import Curve

# Parameter columns of the output table: the union of every form's names.
# log_b: b's natural log, which predictions use (b may be 0 or inf; bnsl.to_natural).
PARAM_COLUMNS = ["a", "b", "log_b", "c", "g", "e_inf", "e0", "alpha"] + bnsl.param_names(3)[2:]


def fit_curve(curve: Curve, forms=ALL_FORMS, breaks="auto", cfg: SearchConfig | None = None,
              backend: str = "numba") -> list[FitResult]:
    """Fit every form to one curve; never raises: a failure becomes a result with status and reason."""
    out = []
    for form in forms:
        if curve.error:
            out.append(FitResult(form=form, status="error", reason=curve.error))
            continue
        try:
            r = fit(form, curve.x_fit, curve.y_fit, curve.x_heldout, curve.y_heldout, breaks=breaks, cfg=cfg,
                    backend=backend)
        except Exception as e:  # a bug or an odd curve must not stop the batch
            r = FitResult(form=form, status="error",
                          reason=f"{type(e).__name__}: {e} ({traceback.format_exc(limit=1).splitlines()[-1]})")
        if not r.ok and not r.reason.startswith("curve"):
            r.reason = f"curve ({curve.name}), column {curve.y_name!r}: {r.reason}"
        out.append(r)
    return out


def _init_worker():
    import numba
    numba.set_num_threads(1)


def _job(args):
    return fit_curve(*args)


POOL_MIN_CURVES = 64  # below this, starting worker processes (imports, Numba cache) costs more than it saves


def fit_curves(curves: list[Curve], forms=ALL_FORMS, breaks="auto", workers: int | None = None,
               cfg: SearchConfig | None = None, backend: str = "numba") -> list[list[FitResult]]:
    """Fit all curves.

    Args:
        workers: None (default) runs in this process when there are fewer than POOL_MIN_CURVES curves
            (the Numba search kernels still use every core) and a process pool over all cores otherwise;
            1 forces serial; N > 1 forces a pool of N spawned processes, Numba single-threaded in each.

    Returns:
        For each curve (same order) the list of FitResults, one per form.
    """
    if workers is None:
        workers = 1 if len(curves) < POOL_MIN_CURVES else len(os.sched_getaffinity(0))  # the cores we may use
    workers = max(1, int(workers))
    jobs = [(c, tuple(forms), breaks, cfg, backend) for c in curves]
    if workers == 1 or len(curves) <= 1:
        return [_job(j) for j in jobs]
    # spawn, not fork: Numba's threading layer is not safe to fork after use.
    with ProcessPoolExecutor(max_workers=min(workers, len(curves)), mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        return list(pool.map(_job, jobs, chunksize=1))


def results_table(curves: list[Curve], results: list[list[FitResult]]) -> pa.Table:
    """One row per curve and form: key columns, form, n_breaks, parameters, rmsle_fit, rmsle_heldout,
    n_fit, n_heldout, evaluations, seconds, status, reason."""
    key_names = []
    for c in curves:
        for k in c.key:
            if k not in key_names:
                key_names.append(k)
    cols: dict[str, list] = {k: [] for k in key_names}
    for name in ["form", "n_breaks", *PARAM_COLUMNS, "rmsle_fit", "rmsle_heldout", "n_fit", "n_heldout",
                 "evaluations", "seconds", "status", "reason"]:
        cols[name] = []
    for c, rs in zip(curves, results):
        for r in rs:
            for k in key_names:
                v = c.key.get(k)
                cols[k].append(None if v is None else str(v))
            cols["form"].append(r.form)
            cols["n_breaks"].append(r.n_breaks)
            for p in PARAM_COLUMNS:
                cols[p].append(r.params.get(p))
            for m in ("rmsle_fit", "rmsle_heldout"):
                v = getattr(r, m)
                cols[m].append(None if v is None or math.isnan(v) else v)
            cols["n_fit"].append(r.n_fit)
            cols["n_heldout"].append(r.n_heldout)
            cols["evaluations"].append(r.evaluations)
            cols["seconds"].append(r.seconds)
            cols["status"].append(r.status)
            cols["reason"].append(r.reason)
    types = {"form": pa.string(), "n_breaks": pa.int32(), "n_fit": pa.int32(), "n_heldout": pa.int32(),
             "evaluations": pa.int64(), "status": pa.string(), "reason": pa.string()}
    fields = [pa.field(k, pa.string()) for k in key_names]
    fields += [pa.field(k, types.get(k, pa.float64())) for k in list(cols)[len(key_names):]]
    schema = pa.schema(fields)
    return pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()}, schema=schema)


def summary(results: list[list[FitResult]], decimals: int = 3) -> dict[str, dict]:
    """Per form: curves ok, mean RMSLE (fit and held-out, over ok curves) and wins.

    A form wins a curve when its held-out RMSLE rounded to `decimals` is the lowest (ties all win);
    curves without held-out points are ranked by fit RMSLE.
    """
    forms = []
    for rs in results:
        for r in rs:
            if r.form not in forms:
                forms.append(r.form)
    out = {f: {"ok": 0, "failed": 0, "rmsle_fit": [], "rmsle_heldout": [], "wins": 0} for f in forms}
    for rs in results:
        scores = {}
        for r in rs:
            s = out[r.form]
            if not r.ok:
                s["failed"] += 1
                continue
            s["ok"] += 1
            s["rmsle_fit"].append(r.rmsle_fit)
            if not math.isnan(r.rmsle_heldout):
                s["rmsle_heldout"].append(r.rmsle_heldout)
            v = r.rmsle_heldout if not math.isnan(r.rmsle_heldout) else r.rmsle_fit
            if not math.isnan(v):
                scores[r.form] = round(v, decimals)
        if scores:
            best = min(scores.values())
            for f, v in scores.items():
                out[f]["wins"] += v == best
    for s in out.values():
        for m in ("rmsle_fit", "rmsle_heldout"):
            s[m] = float(np.mean(s[m])) if s[m] else math.nan
    return out


def format_summary(summ: dict[str, dict]) -> str:
    lines = [f"{'form':<6} {'ok':>4} {'failed':>6} {'mean rmsle_fit':>15} {'mean rmsle_heldout':>19} {'wins':>5}"]
    for f, s in summ.items():
        lines.append(f"{f:<6} {s['ok']:>4} {s['failed']:>6} {s['rmsle_fit']:>15.5f} "
                     f"{s['rmsle_heldout']:>19.5f} {s['wins']:>5}")
    return "\n".join(lines)
