"""Benchmark of fitting/ on the 20 language curves of Alabdulmohsin et al. 2022 (shared/DESIGN.md).

    .venv/bin/python -m bench.fit [--data ../shared/data/scaling/benchmark.lang.csv] [--workers 2]
        [--repeats 3] [--plain-curves 20] [--out results/fit_bench.json] [--plots DIR]

Per curve: RMSLE on the held-out rows (Training = 0) for BNSL (breaks chosen by the validation rule)
and M1-M4, the winner(s) at 3 decimals, and wins per form. Timing: the whole 20-curve BNSL benchmark
(median of --repeats, after a warm-up that absorbs Numba compilation / cache loading), serial and with
a process pool of --workers; then the same BNSL procedure through the plain NumPy/SciPy kernels
(backend="numpy", serial) on the first --plain-curves curves, for the speed ratio (serial vs serial).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from fitting import batch, tables
from fitting.fit import ALL_FORMS, fit

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "scaling", "benchmark.lang.csv")


def _time_bnsl(curves, workers, backend="numba"):
    t0 = time.perf_counter()
    res = batch.fit_curves(curves, ["bnsl"], workers=workers, backend=backend)
    return time.perf_counter() - t0, res


def _median_time(fn, repeats=5):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def kernel_times(curve) -> dict:
    """Each Numba kernel against its NumPy twin on one real curve (the grids fit_bnsl_n uses)."""
    from fitting import bnsl
    from fitting.fit import SearchConfig, search_grids
    x, y = curve.x_fit, curve.y_fit
    zc = np.log(x) - np.log(x).mean()
    out = {}
    for n in (2, 3):
        a_grid, _, _, basis, combos = search_grids(zc, y, n, SearchConfig())
        t_nb = _median_time(lambda: bnsl.vp_search_nb(y, a_grid, basis, combos))
        t_np = _median_time(lambda: bnsl.vp_search_np(y, a_grid, basis, combos), repeats=1)
        out[f"vp_search n={n} ({len(a_grid) * len(combos)} candidates)"] = (t_np, t_nb)
    rng = np.random.default_rng(0)
    thetas = np.tile([0.5 * y.min(), np.log(y.mean()), 0.1, 0.2, 0.0, 0.5, -0.1, 1.0, 0.3], (256, 1))
    thetas += rng.normal(0, 0.05, thetas.shape)
    logy = np.log(y)
    out["loss_many (256 vectors, 2 breaks)"] = (_median_time(lambda: bnsl.loss_many_np(thetas, zc, logy)),
                                               _median_time(lambda: bnsl.loss_many_nb(thetas, zc, logy)))
    out["resid_jac (one call, 2 breaks)"] = (_median_time(lambda: bnsl.resid_jac_np(thetas[0], zc, logy), 50),
                                            _median_time(lambda: bnsl.resid_jac_nb(thetas[0], zc, logy), 50))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--plain-curves", type=int, default=20, help="curves timed through the NumPy path (0: skip)")
    ap.add_argument("--out", default="results/fit_bench.json")
    ap.add_argument("--plots", default=None)
    args = ap.parse_args(argv)

    curves = tables.curves_from_table(tables.read_table(args.data), "Seen Examples", "Loss",
                                      ["Domain", "Task", "Model"], "Training", path=args.data)
    fit("bnsl", curves[0].x_fit, curves[0].y_fit)  # warm-up: Numba compile or cache load

    # accuracy: every form on every curve (serial, also gives per-form fit time)
    results = batch.fit_curves(curves, ALL_FORMS, workers=1)
    summ = batch.summary(results)
    rows = []
    print(f"{'curve':<44} " + " ".join(f"{f:>7}" for f in ALL_FORMS) + "  n  best")
    for c, rs in zip(curves, results):
        sc = {r.form: r.rmsle_heldout for r in rs}
        best = min(round(v, 3) for v in sc.values() if not np.isnan(v))
        winners = [f for f, v in sc.items() if round(v, 3) == best]
        bn = rs[0]
        rows.append({"curve": c.key, "rmsle_heldout": sc, "winners": winners, "bnsl_breaks": bn.n_breaks,
                     "bnsl_val_rmsle": bn.val_rmsle, "bnsl_seconds": bn.seconds,
                     "n_fit": len(c.x_fit), "n_heldout": len(c.x_heldout)})
        name = f"{c.key['Domain']} {c.key['Task']} {c.key['Model']}"[:44]
        print(f"{name:<44} " + " ".join(f"{sc[f]:7.4f}" for f in ALL_FORMS) + f"  {bn.n_breaks}  {','.join(winners)}")
    print(batch.format_summary(summ))
    bnsl_wins = summ["bnsl"]["wins"]
    print(f"BNSL best or tied (3 decimals) on {bnsl_wins}/{len(curves)} curves")

    # speed: whole BNSL benchmark, Numba path
    serial = [_time_bnsl(curves, 1)[0] for _ in range(args.repeats)]
    pooled = [_time_bnsl(curves, args.workers)[0] for _ in range(args.repeats)] if args.workers > 1 else []
    t_serial = statistics.median(serial)
    print(f"BNSL, 20 curves, Numba, serial: median {t_serial:.2f} s of {[round(t, 2) for t in serial]}")
    if pooled:
        print(f"BNSL, 20 curves, Numba, {args.workers} processes: median {statistics.median(pooled):.2f} s "
              f"of {[round(t, 2) for t in pooled]} (includes starting the pool)")

    plain = None
    if args.plain_curves > 0:
        sub = curves[: args.plain_curves]
        t_plain, res_plain = _time_bnsl(sub, 1, backend="numpy")
        t_nb_sub = statistics.median([_time_bnsl(sub, 1)[0] for _ in range(args.repeats)])
        same = sum(abs(a[0].rmsle_heldout - b[0].rmsle_heldout) < 5e-4 for a, b in zip(res_plain, results))
        plain = {"curves": len(sub), "numpy_s": t_plain, "numba_s": t_nb_sub, "ratio": t_plain / t_nb_sub,
                 "same_heldout_rmsle_within_5e-4": same}
        print(f"BNSL plain NumPy/SciPy path, {len(sub)} curves, serial: {t_plain:.2f} s vs Numba serial "
              f"{t_nb_sub:.2f} s: {t_plain / t_nb_sub:.1f}x ({same}/{len(sub)} held-out RMSLE within 5e-4)")

    kt = kernel_times(max(curves, key=lambda c: len(c.x_fit)))
    print(f"kernels on the longest curve ({max(len(c.x_fit) for c in curves)} points): NumPy vs Numba")
    for k, (t_np, t_nb) in kt.items():
        print(f"  {k:<44} {t_np * 1e3:9.3f} ms {t_nb * 1e3:9.3f} ms  {t_np / t_nb:6.1f}x")

    if args.plots:
        from fitting.plots import plot_all
        plot_all(curves, results, args.plots)
    import numba
    import scipy
    out = {
        "data": os.path.abspath(args.data), "rows": rows,
        "summary": summ, "bnsl_wins": bnsl_wins, "curves": len(curves),
        "timing": {"bnsl_serial_s": serial, "bnsl_pool_s": pooled, "workers": args.workers, "plain": plain,
                   "kernels_numpy_numba_s": kt},
        "env": {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
                "numba": numba.__version__, "cpus": os.cpu_count(), "machine": platform.processor() or
                platform.machine(), "load_avg_at_end": os.getloadavg()},
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=1, default=float)
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
