"""python -m fitting end to end (in process): a small CSV with a bad curve, and a fake run directory."""
import os

import numpy as np
import pyarrow.ipc as ipc

from fitting.__main__ import main
from test_fitting import write_evals  # tests/ is on sys.path (pytest rootdir-less import)


def _csv(path):
    x = np.geomspace(1e4, 1e8, 10)
    lines = ["family,size,examples,loss,split"]
    for fam, size, y in [("a", "s", 0.3 + 40 * x ** -0.35), ("a", "l", 0.2 + 30 * x ** -0.3),
                         ("b", "s", np.r_[0.5, 0.4, -1.0, np.full(7, 0.3)])]:
        for i, (xi, yi) in enumerate(zip(x, y)):
            lines.append(f"{fam},{size},{xi:.6g},{yi:.8g},{'true' if i < 8 else 'false'}")
    path.write_text("\n".join(lines) + "\n")


def test_cli_fit_csv(tmp_path, capsys):
    src = tmp_path / "curves.csv"
    _csv(src)
    out = tmp_path / "fits.arrow"
    rc = main(["fit", str(src), "--x", "examples", "--y", "loss", "--curve", "family,size", "--split-col", "split",
               "--forms", "bnsl,m2,m4", "--breaks", "auto", "--workers", "1", "--out", str(out),
               "--plots", str(tmp_path / "plots")])
    assert rc == 0
    t = ipc.open_file(str(out)).read_all()
    d = t.to_pydict()
    assert t.num_rows == 9
    for col in ("family", "size", "form", "n_breaks", "a", "b", "log_b", "c0", "c", "e_inf", "rmsle_fit", "rmsle_heldout",
                "seconds", "status", "reason"):
        assert col in t.column_names, col
    assert d["form"][:3] == ["bnsl", "m2", "m4"]
    assert d["status"][:6] == ["ok"] * 6 and d["status"][6:] == ["error"] * 3
    assert "family=b" in d["reason"][6] and "'loss'" in d["reason"][6]
    assert all(v is not None and v < 0.05 for v in d["rmsle_heldout"][:6])
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]  # temp file renamed
    assert sorted(os.listdir(tmp_path / "plots")) == [".plots.json", "a_l.png", "a_s.png", "grid.png"]
    text = capsys.readouterr().out
    assert "wins" in text and "bnsl" in text and "failed: curve (family=b" in text

    # The folder reused for other curves: this fit's PNGs only, and the user's files untouched.
    for name in ("mine.png", "notes.txt"):
        (tmp_path / "plots" / name).write_text("x")
    assert main(["fit", str(src), "--x", "examples", "--y", "loss", "--curve", "family", "--split-col", "split",
                 "--forms", "m2", "--workers", "1", "--out", str(out), "--plots", str(tmp_path / "plots")]) == 0
    assert sorted(os.listdir(tmp_path / "plots")) == [".plots.json", "a.png", "mine.png", "notes.txt"]


def test_cli_missing_column_one_line(tmp_path, capsys):
    src = tmp_path / "curves.csv"
    _csv(src)
    rc = main(["fit", str(src), "--x", "examples", "--y", "nope", "--out", str(tmp_path / "o.arrow")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing column 'nope'" in err
    assert not (tmp_path / "o.arrow").exists()


def test_cli_runs(tmp_path, capsys):
    for name in ("run_a", "run_b"):
        (tmp_path / name).mkdir()
        write_evals(tmp_path / name / "evals.arrow", truncate=name == "run_b")
    (tmp_path / "empty_run").mkdir()
    out = tmp_path / "runs.arrow"
    rc = main(["runs", str(tmp_path / "run_a"), str(tmp_path / "run_b"), str(tmp_path / "empty_run"),
               f"{tmp_path}/run_a/", str(tmp_path / ".." / tmp_path.name / "run_b"),  # the same runs again: once
               "--x", "images_seen", "--y", "error", "--holdout-frac", "0.3", "--forms", "bnsl,m1,m4,M1",
               "--workers", "1", "--out", str(out), "--plots", str(tmp_path / "p")])
    assert rc == 0
    d = ipc.open_file(str(out)).read_all().to_pydict()
    assert d["run"] == ["run_a"] * 3 + ["run_b"] * 3 + ["empty_run"] * 3
    assert d["status"][:6] == ["ok"] * 6
    assert d["n_heldout"][0] == 4 and d["n_heldout"][3] == 3  # 12 vs 11 evals after x = 0 is dropped
    assert all(v < 0.05 for v in d["rmsle_heldout"][:6])
    assert "empty_run" in d["reason"][6] and "evals.arrow" in d["reason"][6]
    assert (tmp_path / "p" / "run_a.png").exists()
    capsys.readouterr()
    for bad in ("0", "-3", "two"):
        try:
            main(["runs", str(tmp_path / "run_a"), "--workers", bad, "--out", str(out)])
        except SystemExit as e:
            assert e.code == 2
        assert f"--workers must be a whole number >= 1, not '{bad}'" in capsys.readouterr().err


def test_fit_benchmark_runs_on_a_small_table(tmp_path, capsys):
    """bench/fit.py (README's fitter figures) on three curves in the benchmark's CSV layout: accuracy
    rows for every form, the Numba and plain paths timed and in agreement, the kernel table."""
    import json

    from bench import fit as bench_fit
    x = np.geomspace(1e5, 1e9, 16)
    lines = ["Domain,Task,Model,Seen Examples,Loss,Training"]
    for model, y in [("s", 0.3 + 40 * x ** -0.35), ("m", 0.2 + 30 * x ** -0.3 * (1 + x / 1e7) ** -0.2),
                     ("l", 0.1 + 50 * x ** -0.4)]:
        lines += [f"LM,val,{model},{xi:.6g},{yi:.8g},{int(i < 12)}" for i, (xi, yi) in enumerate(zip(x, y))]
    src = tmp_path / "lang.csv"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "fit_bench.json"
    assert bench_fit.main(["--data", str(src), "--workers", "1", "--repeats", "1", "--plain-curves", "2",
                           "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["curves"] == 3 and len(r["rows"]) == 3
    assert all(set(row["rmsle_heldout"]) == {"bnsl", "m1", "m2", "m3", "m4"} for row in r["rows"])
    s, _, l = r["rows"]  # s and l are exact M2 curves: BNSL (n = 0 is M2) extrapolates them
    assert s["rmsle_heldout"]["bnsl"] < 1e-3 and l["rmsle_heldout"]["bnsl"] < 1e-3
    plain = r["timing"]["plain"]
    assert plain["curves"] == 2 and plain["same_heldout_rmsle_within_5e-4"] == 2 and plain["ratio"] > 0
    assert {k.split(" ")[0] for k in r["timing"]["kernels_numpy_numba_s"]} == {"vp_search", "loss_many", "resid_jac"}
    assert "BNSL best or tied" in capsys.readouterr().out
