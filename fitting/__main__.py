"""Command line: fit scaling laws to curves in a table or to trainer runs.

    python -m fitting fit TABLE --x COL --y COL --curve COL[,COL...] [--split-col COL]
        [--forms bnsl,m1,m2,m3,m4] [--breaks auto|0..3] [--workers N] --out FITS.arrow [--plots DIR]
    python -m fitting runs RUN_DIR... --x images_seen --y error [--holdout-frac 0.3] --out FITS.arrow [--plots DIR]
    python -m fitting budget RUN_DIR... [--x budget_s] [--y error] [--check 1] [--at 1,2,4,8]
        --out PREDICTIONS.arrow [--fits FITS.arrow] [--plots DIR]

Writes one row per curve and form (Arrow IPC file, written to a temporary name and renamed), prints
a summary per form (mean RMSLE, wins) and the failed curves with their reasons. `budget` takes one point
per finished run (its budget and final error), fits the runs of each recipe as one curve and predicts
what larger budgets would give (fitting/budget.py says why a run's own curve cannot).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import pyarrow as pa
import pyarrow.ipc as ipc

from fitting import batch, budget, tables
from fitting.fit import ALL_FORMS


def write_arrow(table: pa.Table, path: str):
    """Write an Arrow IPC file atomically (temporary name in the same directory, then rename)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with pa.OSFile(tmp, "wb") as sink, ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _forms(s: str) -> list[str]:
    forms = [f.strip().lower() for f in s.split(",") if f.strip()]
    bad = [f for f in forms if f not in ALL_FORMS]
    if bad or not forms:
        raise argparse.ArgumentTypeError(f"unknown form(s) {', '.join(bad) or '(none)'}; choose from "
                                         f"{','.join(ALL_FORMS)}")
    return list(dict.fromkeys(forms))  # each form once


def _workers(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--workers must be a whole number >= 1, not {s!r}")
    return n


def _breaks(s: str):
    if s == "auto":
        return "auto"
    if s in ("0", "1", "2", "3"):
        return int(s)
    raise argparse.ArgumentTypeError(f"--breaks must be auto or 0..3, not {s!r}")


def check_outputs(out: str, plots: str | None = None, *more: str | None, inputs: tuple[str, ...] = ()) -> None:
    """Refuse output paths that would fail after the fitting, overwrite each other or overwrite an
    input (TableError, one line)."""
    files = [p for p in (out, *more) if p]
    for p in files + ([plots] if plots else []):
        if os.path.isdir(p) and p != plots:
            raise tables.TableError(f"{p}: is a directory, expected an output file path")
        parent = os.path.dirname(os.path.abspath(p))
        while not os.path.exists(parent):  # the first that exists must be a folder to create the rest in
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise tables.TableError(f"{p}: {parent} is not a directory, so the output cannot be written there")
    real = [os.path.realpath(p) for p in files]
    if len(set(real)) < len(files) or (plots and os.path.realpath(plots) in real):
        raise tables.TableError(f"{', '.join(files + ([plots] if plots else []))}: two outputs name the same path")
    real_inputs = {os.path.realpath(i) for i in inputs}
    for p, r in zip(files, real):
        if r in real_inputs:
            raise tables.TableError(f"{p}: is an input (the table, or a run directory's own file); "
                                    f"the output would overwrite it")
    if plots and os.path.exists(plots) and not os.path.isdir(plots):
        raise tables.TableError(f"{plots}: exists and is not a directory (--plots)")


# What python -m pipeline.train writes in a run directory (README, "Output files"), and env-resume-K.json
TRAINER_FILES = ("config.json", "env.json", "steps.arrow", "evals.arrow", "summary.json", "curves.png")


def run_files(run_dirs: list[str]) -> tuple[str, ...]:
    """The trainer's own files in the run directories (logs, summary, config, checkpoints): outputs must not
    overwrite them. Other files there (an earlier fit's output) may be rewritten."""
    found = []
    for d in run_dirs:
        for sub in ("", "checkpoints"):
            try:
                names = os.listdir(os.path.join(d, sub))
            except OSError:  # not a directory: reading the run says so
                continue
            found += [os.path.join(d, sub, n) for n in names
                      if sub or n in TRAINER_FILES or n.startswith("env-resume-")]
    return tuple(found)


def _multiples(s: str) -> list[float]:
    try:
        vals = [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise argparse.ArgumentTypeError(f"--at must be positive numbers separated by commas, not {s!r}")
    return vals


def _common(p: argparse.ArgumentParser):
    p.add_argument("--forms", type=_forms, default=",".join(ALL_FORMS), help="comma list of forms")
    p.add_argument("--breaks", type=_breaks, default="auto", help="auto (validation rule) or 0..3")
    p.add_argument("--workers", type=_workers, default=None,
                   help="processes (default: 1 below 64 curves, else the cores this process may use; the Numba kernels "
                        "use all cores)")
    p.add_argument("--out", required=True, help="output Arrow IPC file")
    p.add_argument("--plots", default=None, help="directory for one PNG per curve and grid.png")


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each default, but not None ones (a required option, or 'none')."""

    def _get_help_string(self, action):
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fitting", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    fmt = dict(formatter_class=_DefaultsHelp)
    pf = sub.add_parser("fit", **fmt, help="fit curves of a CSV/Parquet/Arrow table")
    pf.add_argument("table")
    pf.add_argument("--x", required=True)
    pf.add_argument("--y", required=True)
    pf.add_argument("--curve", default="", help="key column(s), comma separated (empty: one curve)")
    pf.add_argument("--split-col", default=None, help="true/1 rows are fit, the others held out and scored")
    _common(pf)
    pr = sub.add_parser("runs", **fmt, help="fit the eval curves of trainer run directories")
    pr.add_argument("run_dirs", nargs="+")
    pr.add_argument("--x", default="images_seen", choices=tables.RUN_X, help="x of the curves")
    pr.add_argument("--y", default="error", choices=tables.RUN_Y, help="y of the curves")
    pr.add_argument("--holdout-frac", type=float, default=0.3, help="last fraction of evals held out")
    _common(pr)
    pb = sub.add_parser("budget", **fmt, help="final points of one recipe's runs at several budgets: fit, predict more")
    pb.add_argument("run_dirs", nargs="+", help="finished trainer run directories (others are skipped, with why)")
    pb.add_argument("--x", default="budget_s", choices=budget.BUDGET_X,
                    help="the budget axis, from each run's summary.json")
    pb.add_argument("--y", default="error", choices=list(budget.BUDGET_Y),
                    help="error = 1 - final top-1, top5_error, or the final val loss")
    pb.add_argument("--check", type=int, default=1,
                    help="fit without this many largest budgets first and predict them (0: no check)")
    pb.add_argument("--at", type=_multiples, default="1,2,4,8",
                    help="predict at these multiples of the largest budget")
    pb.add_argument("--fits", default=None, help="also write the fits on all points (parameters) here")
    _common(pb)
    args = ap.parse_args(argv)
    if args.cmd == "budget":
        return _budget(args)

    t0 = time.perf_counter()
    try:
        check_outputs(args.out, args.plots,
                      inputs=(args.table,) if args.cmd == "fit" else run_files(args.run_dirs))
        if args.cmd == "fit":
            key = [c.strip() for c in args.curve.split(",") if c.strip()]
            curves = tables.curves_from_table(tables.read_table(args.table), args.x, args.y, key,
                                              args.split_col, path=args.table)
        else:
            if not 0.0 <= args.holdout_frac < 1.0:
                raise tables.TableError(f"--holdout-frac must be in [0, 1), not {args.holdout_frac}")
            dirs = tables.unique_runs(args.run_dirs)
            curves = [tables.read_run(d, args.x, args.y, args.holdout_frac, name=n)
                      for d, n in zip(dirs, tables.run_names(dirs))]
    except tables.TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not curves:
        print(f"error: {args.table if args.cmd == 'fit' else 'run dirs'}: no curves (empty table?)", file=sys.stderr)
        return 2

    results = batch.fit_curves(curves, args.forms, args.breaks, args.workers)
    try:
        write_arrow(batch.results_table(curves, results), args.out)
        if args.plots:
            from fitting.plots import plot_all  # matplotlib only when plots are asked for
            plot_all(curves, results, args.plots)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    print(f"{len(curves)} curves, forms {','.join(args.forms)}, {time.perf_counter() - t0:.2f} s -> {args.out}")
    print(batch.format_summary(batch.summary(results)))
    failed = [r.reason for rs in results for r in rs if not r.ok]
    for reason in dict.fromkeys(failed):  # unique, in order
        print(f"failed: {reason}")
    n_ok = sum(r.ok for rs in results for r in rs)
    return 0 if n_ok else 1


def _budget(args) -> int:
    try:
        check_outputs(args.out, args.plots, args.fits, inputs=run_files(args.run_dirs))
        curves, skipped = budget.budget_curves(args.run_dirs, args.x, args.y, args.check)
    except tables.TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if not curves:
        print(f"error: none of the {len(args.run_dirs)} run directories is a finished run", file=sys.stderr)
        return 2
    fulls = batch.fit_curves([c.full for c in curves], args.forms, args.breaks, args.workers)
    checks = (batch.fit_curves([c.check for c in curves], args.forms, args.breaks, args.workers)
              if args.check else [[] for _ in curves])
    print(budget.format_report(curves, checks, fulls, args.at))
    try:
        write_arrow(budget.predictions_table(curves, checks, fulls, args.at), args.out)
        if args.fits:
            write_arrow(batch.results_table([c.full for c in curves], fulls), args.fits)
        if args.plots:
            from fitting.plots import plot_all
            plot_all([c.full for c in curves], fulls, args.plots, extend=max(args.at + [1.0]))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"-> {args.out}")
    return 0 if any(r.ok for rs in fulls for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
