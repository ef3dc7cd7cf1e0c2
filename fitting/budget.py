"""What more budget would buy: the final results of one recipe's runs at several budgets, fit and extrapolated.

A run's own evaluation curve is no scaling curve: its learning rate decays and its curriculum switches at
fractions of its budget, so the same recipe with twice the budget is a different run at every point, and
the single run's curve bends where its own schedule ends. Runs of one recipe at different budgets
(`--train.budget_s`, `--train.budget_h` or `--train.epochs`) each give one point, (budget, final error);
those points are the scaling curve BNSL and M1-M4 fit (Caballero et al. 2022 fit such end-of-training
points too). Here:
- a run is one point: x from its summary.json (`budget_s`, `images_seen`, `flops_seen`, `epochs`), y its
  final error (1 - top-1), top-5 error or validation loss; only runs that finished their plan count;
- runs are grouped into curves by their config.json and their data set (summary.json's `data`: class
  list hash and train images; a run from before that was recorded joins its recipe's only set), ignoring the budget, the seed and the keys that do not change what is
  trained (`pipeline.config.RESUME_SAFE`, `data.dir` among them); with x = budget_s the hardware decides
  what a second buys, so there the device, the process count and the speed settings split curves too;
- repeats (runs of one curve at the same nominal budget: `budget_s`, or `train.epochs` for an epoch plan)
  are one point, x and y averaged, whatever x is; runs of a wall-clock budget and of an epoch plan are
  separate curves (`plan=budget`, `plan=epochs`: seconds and epochs are no common nominal);
- `check`: each form is fit without the largest budget(s) and scored on them (did it predict a run it
  did not see?); then fit on every point and evaluated at multiples of the largest budget.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fitting.fit import FitResult
from fitting.tables import Curve, TableError, _mean_by_x, check_curve, unique_runs

BUDGET_X = ("budget_s", "images_seen", "flops_seen", "epochs")
BUDGET_Y = {"error": "final_top1", "top5_error": "final_top5", "loss": "final_val_loss"}
# Config keys that say how much to train, not what: they vary along a budget curve.
SCALE_KEYS = frozenset({"train.budget_s", "train.budget_h", "train.epochs", "train.seed"})
# Resume-safe keys that still change how much a second of the budget trains.
SPEED_KEYS = frozenset({"train.device", "train.compile", "train.threads", "data.num_workers",
                        "data.batches_ahead", "train.channels_last"})
# Resume-safe keys that change the numbers trained (a run may switch them part way, but runs that
# differ in them are different recipes).
RECIPE_KEYS = frozenset({"train.precision"})


@dataclass
class RunPoint:
    """One finished run: where it is (`dir`), its flattened config, its final (x, y), its nominal budget
    (`budget_s`, or `train.epochs` of an epoch plan: repeats share it) and the hardware it ran on."""
    dir: str
    config: dict
    x: float
    y: float
    nominal: float = math.nan
    hardware: tuple = ()
    data: str = "null"  # summary.json's data set (classes, train images) as JSON: another set, another curve
    plan: str = "budget"  # "budget" (train.budget_s) or "epochs" (an epoch plan): their nominals are not comparable


@dataclass
class BudgetCurve:
    """One recipe's runs. `check` fits all but the `n_check` largest budgets and holds those out; `full`
    fits all (repeats at one budget averaged into one point)."""
    key: dict
    runs: list[RunPoint]
    check: Curve
    full: Curve


def _flatten(cfg: dict) -> dict:
    """section.key -> JSON text; through the current Config first, so a run written before a key was added
    compares equal to one with that key at its default (the raw dict if it no longer parses)."""
    from pipeline.config import ConfigError, from_dict, to_dict  # imports torch: only when runs are read
    try:
        cfg = to_dict(from_dict(cfg, check=False))  # types only: a rule added since must not split curves
    except (ConfigError, TypeError, ValueError, AttributeError):
        pass
    return {f"{sec}.{k}": json.dumps(v, sort_keys=True) for sec, vals in cfg.items() if isinstance(vals, dict)
            for k, v in vals.items()}


def _check_axes(x: str, y: str) -> None:
    if x not in BUDGET_X:
        raise TableError(f"--x must be one of {', '.join(BUDGET_X)}, not {x!r}")
    if y not in BUDGET_Y:
        raise TableError(f"--y must be one of {', '.join(BUDGET_Y)}, not {y!r}")


def read_point(run_dir: str, x: str = "budget_s", y: str = "error") -> RunPoint:
    """The final point of one finished run directory.

    Raises:
        TableError: one line naming the run and what is missing, or why the run is no point of a budget
            curve (not finished under its plan: stopped, failed, cut short by train.max_steps).
    """
    _check_axes(x, y)
    docs = {}
    for name in ("summary.json", "config.json"):
        path = os.path.join(run_dir, name)
        try:
            with open(path) as f:
                docs[name] = json.load(f)
        except FileNotFoundError:
            raise TableError(f"{path}: no such file (not a finished trainer run)") from None
        except (OSError, ValueError) as e:
            raise TableError(f"{path}: not readable JSON ({e})") from None
        if not isinstance(docs[name], dict):
            raise TableError(f"{path}: expected a JSON object")
    s, path = docs["summary.json"], os.path.join(run_dir, "summary.json")
    if s.get("status") != "ok" or s.get("stop_reason") not in ("budget", "epochs"):
        raise TableError(f"{path}: status {s.get('status')!r}, stop reason {s.get('stop_reason')!r}: "
                         "only a run that finished its budget or epochs is a point (resume it first)")
    if x == "budget_s" and not s.get("budget_s"):
        raise TableError(f"{path}: no wall-clock budget (an epoch plan); use --x images_seen or epochs")
    if x == "budget_s" and s.get("stop_reason") != "budget":
        raise TableError(f"{path}: stopped at its train.epochs cap before its budget, so budget_s overstates "
                         "its training; use --x images_seen")
    for field_name in (x, BUDGET_Y[y]):
        v = s.get(field_name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise TableError(f"{path}: field {field_name!r} is {v!r}, expected a finite number")
    v = float(s[BUDGET_Y[y]])
    config = _flatten(docs["config.json"])
    nominal = s.get("budget_s") or json.loads(config.get("train.epochs", "NaN"))
    sessions = s.get("sessions") if isinstance(s.get("sessions"), list) else []
    world = sessions[-1].get("world") if sessions and isinstance(sessions[-1], dict) else None
    return RunPoint(dir=run_dir, config=config, x=float(s[x]), y=1.0 - v if y in ("error", "top5_error") else v,
                    nominal=float(nominal), hardware=(("device", s.get("device")), ("world", world)),
                    data=json.dumps(s.get("data"), sort_keys=True),
                    plan="budget" if s.get("budget_s") else "epochs")


def group_runs(points: list[RunPoint], by_hardware: bool = False) -> list[tuple[dict, list[RunPoint]]]:
    """Runs of the same recipe together, in order of first appearance.

    Args:
        by_hardware: also split by device, process count and speed settings (for x = budget_s).

    Returns:
        (key, runs) pairs; key holds the config keys (and hardware) whose values differ between groups (as
        written in config.json), or the model name when there is one group.
    """
    from pipeline.config import RESUME_SAFE
    ignored = ((RESUME_SAFE - SPEED_KEYS if by_hardware else RESUME_SAFE) - RECIPE_KEYS) | SCALE_KEYS
    base: dict[tuple, list[RunPoint]] = {}
    for p in points:
        hw = tuple((k, json.dumps(v)) for k, v in p.hardware) if by_hardware else ()
        base.setdefault(tuple(sorted([(k, v) for k, v in p.config.items() if k not in ignored] + list(hw))),
                        []).append(p)
    # data.dir may move, the data set may not: runs on other sets are other curves; a run from before
    # summary.json recorded its set ("null") joins its recipe's curve when that has one set only
    groups: dict[tuple, list[RunPoint]] = {}
    for sig, runs in base.items():
        known = {p.data for p in runs} - {"null"}
        for p in runs:
            data = next(iter(known)) if len(known) == 1 else p.data
            groups.setdefault(tuple(sorted(sig + (("data", data), ("plan", json.dumps(p.plan))))), []).append(p)
    sigs = [dict(s) for s in groups]
    all_keys = sorted({k for s in sigs for k in s})
    differ = [k for k in all_keys if len({s.get(k) for s in sigs}) > 1]
    out = []
    for sig, runs in zip(sigs, groups.values()):
        names = differ or ["model.name"]
        out.append(({k: json.loads(sig[k]) if k in sig else None for k in names}, runs))
    return out


def budget_curves(run_dirs: list[str], x: str = "budget_s", y: str = "error",
                  n_check: int = 1) -> tuple[list[BudgetCurve], list[str]]:
    """Read run directories into budget curves.

    Args:
        run_dirs: trainer run directories; those that are no point are skipped with a reason.
        x, y: see BUDGET_X and BUDGET_Y.
        n_check: how many of each curve's largest nominal budgets the check fit holds out (by budget, not x:
            with x = images_seen a smaller budget on a busier host may have seen more).

    Returns:
        The curves and the skipped runs' one-line reasons.
    """
    _check_axes(x, y)  # so that every TableError below is one run's
    if n_check < 0:
        raise TableError(f"--check must be >= 0, not {n_check}")
    points, skipped = [], []
    for d in unique_runs(run_dirs):
        try:
            points.append(read_point(d, x, y))
        except TableError as e:
            skipped.append(str(e))
    curves = []
    for key, runs in group_runs(points, by_hardware=x == "budget_s"):
        # one point per nominal budget: repeats averaged in x and y (their images_seen differ)
        budgets = sorted({r.nominal for r in runs})
        xs = np.array([np.mean([r.x for r in runs if r.nominal == b]) for b in budgets])
        ys = np.array([np.mean([r.y for r in runs if r.nominal == b]) for b in budgets])
        full = check_curve(Curve(key=key, x_fit=xs, y_fit=ys, x_name=x, y_name=y))
        check = Curve(key=key, x_fit=xs, y_fit=ys, x_name=x, y_name=y, error=full.error)
        if full.error is None:
            n_fit = len(xs) - min(n_check, len(xs))  # the largest budgets held out
            check = check_curve(Curve(key=key, x_fit=xs[:n_fit], y_fit=ys[:n_fit], x_heldout=xs[n_fit:],
                                      y_heldout=ys[n_fit:], x_name=x, y_name=y))
            full.x_fit, full.y_fit = _mean_by_x(xs, ys)
        curves.append(BudgetCurve(key=key, runs=runs, check=check, full=full))
    return curves, skipped


def predictions_table(curves: list[BudgetCurve], checks: list[list[FitResult]], fulls: list[list[FitResult]],
                      multiples: list[float]) -> pa.Table:
    """One row per curve, form and x: `kind` check (fit without the largest budgets, at those budgets, with
    the measured y) or predict (fit on every run, at `multiples` of the largest budget)."""
    key_names = list(dict.fromkeys(k for c in curves for k in c.key))
    cols: dict[str, list] = {k: [] for k in key_names}
    names = ["runs", "form", "n_breaks", "kind", "x_name", "x", "multiple", "y_name", "y_pred", "y_measured",
             "rmsle_fit", "rmsle_check", "status", "reason"]
    cols.update({k: [] for k in names})

    def row(c, r, kind, x, mult, y_pred, y_meas, rmsle_check):
        for k in key_names:
            cols[k].append(None if c.key.get(k) is None else str(c.key[k]))
        vals = [len(c.runs), r.form, r.n_breaks, kind, c.full.x_name, x, mult, c.full.y_name, y_pred, y_meas,
                None if math.isnan(r.rmsle_fit) else r.rmsle_fit, rmsle_check, r.status, r.reason]
        for k, v in zip(names, vals):
            cols[k].append(v)

    for c, rc, rf in zip(curves, checks, fulls):
        top = float(c.full.x_fit.max()) if c.full.error is None else math.nan
        for r in rc:
            if not r.ok:
                if c.check.x_heldout.size or c.check.error:
                    row(c, r, "check", None, None, None, None, None)
                continue
            for xh, yh in zip(c.check.x_heldout, c.check.y_heldout):
                row(c, r, "check", float(xh), float(xh) / top, float(r.predict([xh])[0]), float(yh),
                    None if math.isnan(r.rmsle_heldout) else r.rmsle_heldout)
        for r in rf:
            if not r.ok:
                row(c, r, "predict", None, None, None, None, None)
                continue
            for m in multiples:
                row(c, r, "predict", top * m, m, float(r.predict([top * m])[0]), None, None)
    types = {"runs": pa.int32(), "n_breaks": pa.int32(), "x": pa.float64(), "multiple": pa.float64(),
             "y_pred": pa.float64(), "y_measured": pa.float64(), "rmsle_fit": pa.float64(),
             "rmsle_check": pa.float64()}
    schema = pa.schema([pa.field(k, types.get(k, pa.string())) for k in cols])
    return pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()}, schema=schema)


def _show(y_name: str, y: float) -> str:
    """Errors as the accuracy a reader expects (top-1 %), losses as they are."""
    if y is None or (isinstance(y, float) and math.isnan(y)):
        return "-"
    return f"{100 * (1 - y):.2f}" if y_name in ("error", "top5_error") else f"{y:.4f}"


def format_report(curves: list[BudgetCurve], checks, fulls, multiples: list[float]) -> str:
    """Per curve: the measured points, the check (predicted vs measured at the held-out budgets) and the
    predictions at each multiple of the largest budget, one line per form."""
    lines = []
    for c, rc, rf in zip(curves, checks, fulls):
        y_name = c.full.y_name
        what = {"error": "top-1 %", "top5_error": "top-5 %"}.get(y_name, y_name)
        name = ", ".join(f"{k}={v}" for k, v in c.key.items())
        lines.append(f"curve ({name}): {len(c.runs)} runs; x = {c.full.x_name}, shown: {what}")
        if c.full.error:
            lines.append(f"  not fit: {c.full.error}")
            continue
        lines.append("  measured: " + ", ".join(f"{x:g}: {_show(y_name, y)}" for x, y in zip(c.full.x_fit, c.full.y_fit)))
        if c.check.error:
            lines.append(f"  check: not possible ({c.check.error})")
        elif c.check.x_heldout.size:
            n = len(c.check.x_heldout)
            lines.append(f"  check, fit without the {'largest budget' if n == 1 else f'{n} largest budgets'} "
                         f"(x = {', '.join(f'{x:g}' for x in c.check.x_heldout)}; {len(c.check.x_fit)} points "
                         "left): predicted vs measured")
            for r in rc:
                if not r.ok:
                    lines.append(f"    {r.form:<5} failed: {r.reason}")
                    continue
                pred = r.predict(c.check.x_heldout)
                lines.append(f"    {r.form:<5} " + ", ".join(
                    f"{x:g}: {_show(y_name, float(p))} vs {_show(y_name, float(m))}"
                    for x, p, m in zip(c.check.x_heldout, pred, c.check.y_heldout)))
        top = float(c.full.x_fit.max())
        head = "  ".join(f"{m:g}x={top * m:.4g}".rjust(14) for m in multiples)
        lines.append(f"  predicted, fit on all {len(c.full.x_fit)} points:")
        lines.append(f"    {'form':<5} {'n':>2} {head}")
        for r in rf:
            if not r.ok:
                lines.append(f"    {r.form:<5} failed: {r.reason}")
                continue
            vals = "  ".join(_show(y_name, float(r.predict([top * m])[0])).rjust(14) for m in multiples)
            note = f"  ({r.reason})" if r.reason else ""  # an exact fit, a slope at its bound
            lines.append(f"    {r.form:<5} {'' if r.n_breaks is None else r.n_breaks:>2} {vals}{note}")
    return "\n".join(lines)
