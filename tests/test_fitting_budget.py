"""python -m fitting budget: one point per finished run, runs grouped by recipe, check and predictions."""
import json
import os

import numpy as np
import pyarrow.ipc as ipc
import pytest

from fitting.__main__ import main
from fitting.budget import budget_curves, read_point
from fitting.tables import TableError
from pipeline.config import load_config, to_dict


def true_error(budget_s, lr):
    """A known law per recipe: M2 (BNSL without breaks), a = 0.08, b = 1.5, c = -0.45 (and a worse lr)."""
    return (0.08 if lr == 3e-3 else 0.12) + 1.5 * budget_s ** -0.45


def write_run(d, budget_s=0.0, lr=3e-3, seed=0, top1=None, status="ok", stop_reason="budget", epochs=0.0,
              data_dir="data/demo/betons", device="cpu", world=1, drop_key=None, train=None, **summary):
    d.mkdir(parents=True)
    cfg = to_dict(load_config("demo"))
    cfg["train"].update(budget_s=budget_s, epochs=epochs, seed=seed, **(train or {}))
    cfg["optim"]["lr"] = lr
    cfg["data"]["dir"] = data_dir
    if drop_key:  # a run written before that key existed
        sec, key = drop_key.split(".")
        del cfg[sec][key]
    (d / "config.json").write_text(json.dumps(cfg))
    s = {"status": status, "stop_reason": stop_reason, "budget_s": budget_s, "images_seen": int(500 * budget_s),
         "flops_seen": 2e7 * 500 * budget_s, "epochs": budget_s / 120,
         "final_top1": 1 - true_error(budget_s, lr) if top1 is None else top1,
         "final_top5": 0.99, "final_val_loss": 0.4, "device": device,
         "sessions": [{"step": 0, "checkpoint": None, "world": world}]}
    s.update(summary)
    (d / "summary.json").write_text(json.dumps(s))
    return d


def test_budget_cli_groups_checks_and_predicts(tmp_path, capsys):
    budgets = [10, 20, 40, 80, 160, 320]
    dirs = [write_run(tmp_path / f"b{b}", b, data_dir="/elsewhere" if b == 40 else "data/demo/betons",
                      drop_key="augment.erase_mode" if b == 80 else None) for b in budgets]
    # a repeat at 320 s with another seed: averaged with the first (error 0.01 above and below the law)
    e320 = true_error(320, 3e-3)
    write_run(tmp_path / "b320s1", 320, seed=1, top1=1 - (e320 + 0.01))
    (tmp_path / "b320" / "summary.json").write_text(json.dumps(
        {**json.loads((tmp_path / "b320" / "summary.json").read_text()), "final_top1": 1 - (e320 - 0.01)}))
    dirs.append(tmp_path / "b320s1")
    dirs += [write_run(tmp_path / f"lr{b}", b, lr=1e-3) for b in (10, 40, 160, 640)]
    dirs.append(write_run(tmp_path / "stopped", 1000, status="stopped", stop_reason="signal"))
    (tmp_path / "not_a_run").mkdir()
    dirs.append(tmp_path / "not_a_run")
    dirs.append(f"{dirs[0]}/")  # the same run twice counts once
    out, fits = tmp_path / "pred.arrow", tmp_path / "fits.arrow"
    rc = main(["budget", *map(str, dirs), "--forms", "bnsl,m2", "--at", "1,2,4", "--check", "1", "--workers", "1",
               "--out", str(out), "--fits", str(fits), "--plots", str(tmp_path / "plots")])
    assert rc == 0
    cap = capsys.readouterr()
    assert "skipped: " in cap.err and "stopped" in cap.err and "not_a_run" in cap.err
    assert "optim.lr=0.003" in cap.out and "optim.lr=0.001" in cap.out
    assert "6 runs" not in cap.out and "7 runs" in cap.out  # b10 named twice, counted once
    d = ipc.open_file(str(out)).read_all().to_pydict()
    assert set(d["optim.lr"]) == {"0.003", "0.001"}  # data.dir and seed do not split a recipe
    rows = list(zip(d["optim.lr"], d["form"], d["kind"], d["x"], d["multiple"], d["y_pred"], d["y_measured"],
                    d["runs"], d["status"]))
    assert all(r[-1] == "ok" for r in rows)
    assert {r[7] for r in rows if r[0] == "0.003"} == {7} and {r[7] for r in rows if r[0] == "0.001"} == {4}
    for lr, form, kind, x, mult, y_pred, y_meas, _, _ in rows:
        lr = float(lr)
        if kind == "check":  # fit without the largest budget, predicted at it
            top = 320 if lr == 3e-3 else 640
            assert x == top and mult == 1.0
            assert y_meas == pytest.approx(true_error(top, lr), abs=1e-9)  # the two seeds averaged
            assert y_pred == pytest.approx(y_meas, rel=0.02), (lr, form)
        else:
            top = 320 if lr == 3e-3 else 640
            assert x == pytest.approx(top * mult) and y_meas is None
            assert y_pred == pytest.approx(true_error(x, lr), rel=0.02), (lr, form, mult)
    check = next(r for r in rows if r[:3] == ("0.003", "bnsl", "check"))
    assert f"bnsl  320: {100 * (1 - check[5]):.2f} vs {100 * (1 - check[6]):.2f}" in cap.out  # report = table
    kinds = [(r[0], r[1], r[2]) for r in rows]
    assert kinds.count(("0.003", "bnsl", "check")) == 1 and kinds.count(("0.003", "m2", "predict")) == 3
    f = ipc.open_file(str(fits)).read_all().to_pydict()
    assert f["form"] == ["bnsl", "m2", "bnsl", "m2"] and f["n_fit"] == [6, 6, 4, 4]
    assert f["a"][1] == pytest.approx(0.08, abs=0.005)
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["0.001.png", "0.003.png", "grid.png"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_budget_and_epoch_plans_are_separate_curves(tmp_path):
    # a 1 s budget and a 1-epoch plan share the number 1 but nothing else: never one averaged point
    dirs = [write_run(tmp_path / f"b{b}", b) for b in (1, 2, 4)]
    dirs += [write_run(tmp_path / f"e{e}", 0.0, epochs=e, stop_reason="epochs", images_seen=60000 * e,
                       top1=0.5 + 0.1 * e) for e in (1, 2, 4)]
    curves, skipped = budget_curves(list(map(str, dirs)), "images_seen", n_check=0)
    assert not skipped and sorted((c.key["plan"], len(c.runs)) for c in curves) == [("budget", 3), ("epochs", 3)]
    by_plan = {c.key["plan"]: c.full for c in curves}
    assert list(by_plan["epochs"].x_fit) == [60000, 120000, 240000]
    assert list(by_plan["budget"].x_fit) == [500, 1000, 2000]
    assert np.allclose(1 - by_plan["epochs"].y_fit, [0.6, 0.7, 0.9])


def test_budget_one_recipe_images_x_and_report(tmp_path, capsys):
    dirs = [write_run(tmp_path / f"e{e}", 0.0, epochs=e, stop_reason="epochs", images_seen=60000 * e,
                      top1=1 - true_error(60 * e, 3e-3)) for e in (1, 2, 4, 8)]
    rc = main(["budget", *map(str, dirs), "--x", "images_seen", "--forms", "m1,m2", "--check", "0",
               "--out", str(tmp_path / "p.arrow")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "model.name=vitday_pico_patch4_local" in text and "x = images_seen" in text
    assert "check" not in text  # --check 0: no check
    d = ipc.open_file(str(tmp_path / "p.arrow")).read_all().to_pydict()
    assert set(d["kind"]) == {"predict"} and d["x"][:4] == [480000.0, 960000.0, 1920000.0, 3840000.0]
    # the epoch-planned runs have no wall-clock budget: --x budget_s says so per run
    rc = main(["budget", *map(str, dirs), "--out", str(tmp_path / "q.arrow")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not (tmp_path / "q.arrow").exists()
    assert all("no wall-clock budget" in line for line in err[:-1]) and len(err) == 5
    assert err[-1] == "error: none of the 4 run directories is a finished run"


def test_budget_too_few_runs_and_bad_input(tmp_path, capsys):
    a = write_run(tmp_path / "a", 100)
    b = write_run(tmp_path / "b", 200)
    curves, skipped = budget_curves([str(a), str(b)], n_check=1)
    assert not skipped and curves[0].full.error is None
    assert "no fit rows" not in (curves[0].check.error or "")  # one point left: a single x value
    assert "single value" in curves[0].check.error
    rc = main(["budget", str(a), str(b), "--forms", "m2", "--out", str(tmp_path / "p.arrow")])
    out = capsys.readouterr().out
    assert rc == 1 and "check: not possible" in out and "2 points < 3 parameters" in out
    (tmp_path / "a" / "summary.json").write_text('{"status": "ok", "stop_reason": "budget", "budget_s": 100, '
                                                 '"final_top1": NaN}')
    with pytest.raises(TableError, match=r"a/summary.json: field 'final_top1' is nan, expected a finite number"):
        read_point(str(a))
    (tmp_path / "b" / "summary.json").write_text("{not json")
    with pytest.raises(TableError, match=r"b/summary.json: not readable JSON"):
        read_point(str(b))
    with pytest.raises(SystemExit):
        main(["budget", str(a), "--at", "0,2", "--out", str(tmp_path / "p.arrow")])
    assert "--at must be positive numbers" in capsys.readouterr().err


def test_budget_single_points_are_not_lost_with_check(tmp_path):
    """--check larger than the curve: every point held out, the check says so; the full fit is untouched."""
    dirs = [str(write_run(tmp_path / f"r{b}", b)) for b in (10, 20, 40)]
    curves, _ = budget_curves(dirs, n_check=5)
    assert curves[0].check.error.endswith("no fit rows") and len(curves[0].full.x_fit) == 3
    assert np.allclose(curves[0].full.y_fit, [true_error(b, 3e-3) for b in (10, 20, 40)])


def test_budget_repeats_and_hardware(tmp_path, capsys):
    """Repeats at one budget are one point whatever x is, and the check holds out budgets, not x values;
    with x = budget_s a run on other hardware is another curve, with x = images_seen it is not."""
    dirs = [write_run(tmp_path / f"b{b}", b) for b in (10, 20, 40, 80)]
    dirs.append(write_run(tmp_path / "b80s1", 80, seed=1, images_seen=38000))  # 40,000 for the first
    dirs.append(write_run(tmp_path / "gpu80", 80, device="NVIDIA H200", top1=0.95, images_seen=40000 * 30))
    dirs.append(write_run(tmp_path / "b80x2", 80, world=2, top1=0.9))
    dirs.append(write_run(tmp_path / "capped", 160, stop_reason="epochs"))  # hit train.epochs first
    curves, skipped = budget_curves(list(map(str, dirs)), "budget_s", n_check=1)
    assert len(skipped) == 1 and "train.epochs cap" in skipped[0]
    assert [len(c.runs) for c in curves] == [5, 1, 1]
    assert curves[1].key == {"device": "NVIDIA H200", "world": 1} and curves[2].key["world"] == 2
    cpu = curves[0]
    assert list(cpu.full.x_fit) == [10, 20, 40, 80] and list(cpu.check.x_heldout) == [80]
    assert cpu.check.y_heldout[0] == pytest.approx(true_error(80, 3e-3))
    curves, skipped = budget_curves([str(d) for d in dirs if d.name not in ("gpu80", "b80x2", "capped")],
                                    "images_seen", n_check=1)
    assert not skipped and len(curves) == 1 and len(curves[0].runs) == 5
    c = curves[0]
    assert list(c.full.x_fit) == [5000, 10000, 20000, 39000]  # the two 80 s runs: one point
    assert list(c.check.x_heldout) == [39000] and list(c.check.x_fit) == [5000, 10000, 20000]  # no repeat leaks
    curves, skipped = budget_curves([str(d) for d in dirs], "images_seen", n_check=1)
    assert not skipped and len(curves) == 1 and len(curves[0].runs) == 8  # any hardware, and the capped run


def test_budget_precision_is_a_recipe_and_channels_last_a_speed(tmp_path):
    """Both may change on resume, but bf16 and fp32 runs train different numbers (always other
    curves), while channels_last only changes what a second buys (another curve for budget_s)."""
    dirs = [write_run(tmp_path / f"b{b}", b) for b in (10, 20, 40)]
    dirs += [write_run(tmp_path / f"p{b}", b, train={"precision": "bf16"}) for b in (10, 20, 40)]
    dirs += [write_run(tmp_path / f"c{b}", b, train={"channels_last": "on"}) for b in (10, 20, 40)]
    for x, sizes in (("images_seen", [6, 3]), ("budget_s", [3, 3, 3])):
        curves, skipped = budget_curves(list(map(str, dirs)), x, n_check=0)
        assert not skipped and [len(c.runs) for c in curves] == sizes
        assert any(c.key.get("train.precision") == "bf16" for c in curves)


def test_budget_output_paths_refused_before_fitting(tmp_path, capsys):
    dirs = [str(write_run(tmp_path / f"b{b}", b)) for b in (10, 20, 40, 80)]
    p = str(tmp_path / "p.arrow")
    (tmp_path / "afile").write_text("x")
    for extra, what in ((["--out", p, "--fits", p], "two outputs name the same path"),
                        (["--out", p, "--plots", p], "two outputs name the same path"),
                        (["--out", str(tmp_path)], "is a directory"),
                        (["--out", p, "--plots", str(tmp_path / "afile")], "is not a directory")):
        assert main(["budget", *dirs, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: ") and what in err, err
    assert not os.path.exists(p)
    assert main(["fit", str(tmp_path / "afile"), "--x", "a", "--y", "b", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "afile"), "--x", "a", "--y", "b", "--out", str(tmp_path / "afile")]) == 2
    assert "afile: is an input (the table, or a run directory's own file); the output would overwrite it" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "x"
    # a run directory's own files are inputs too (runs, budget); an output under a file cannot be made
    summary = open(os.path.join(dirs[0], "summary.json")).read()
    (tmp_path / "b10" / "evals.arrow").write_text("x")  # stands for the run's log
    for argv in (["budget", *dirs, "--out", os.path.join(dirs[0], "summary.json")],
                 ["budget", *dirs, "--out", p, "--fits", os.path.join(dirs[1], "config.json")],
                 ["runs", dirs[0], "--out", os.path.join(dirs[0], "evals.arrow")]):
        assert main(argv) == 2
        assert "is an input (the table, or a run directory's own file)" in capsys.readouterr().err
    assert open(os.path.join(dirs[0], "summary.json")).read() == summary
    # an output of ours in a run directory is no input: the same command runs again
    for _ in range(2):
        assert main(["budget", *dirs, "--forms", "m1", "--check", "0", "--out", os.path.join(dirs[0], "b.arrow")]) == 0
    assert main(["budget", *dirs, "--out", str(tmp_path / "afile" / "sub" / "o.arrow")]) == 2
    assert f"{tmp_path / 'afile'} is not a directory" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("x,y\n")
    assert main(["fit", str(tmp_path / "empty.csv"), "--x", "x", "--y", "y", "--out", p]) == 2
    assert f"error: {tmp_path / 'empty.csv'}: " in capsys.readouterr().err


def test_budget_runs_on_another_data_set_are_another_curve(tmp_path):
    """data.dir may move, so it does not split curves; the data set itself (summary.json's `data`) does:
    a run on 4 classes used to become a point of the 6-class curve, silently."""
    six = {"num_classes": 6, "train_images": 120, "classes_sha256": "a" * 64}
    four = {"num_classes": 4, "train_images": 80, "classes_sha256": "b" * 64}
    dirs = [write_run(tmp_path / f"s{b}", budget_s=b, data_dir=f"/disk{b}/betons", data=six) for b in (10, 20, 40)]
    dirs.append(write_run(tmp_path / "other", budget_s=15, data=four))
    curves, skipped = budget_curves([str(d) for d in dirs], n_check=0)
    assert not skipped and sorted(len(c.runs) for c in curves) == [1, 3]
    assert sorted(c.key["data"]["num_classes"] for c in curves) == [4, 6]


def test_budget_runs_from_before_the_data_record_join_their_recipe(tmp_path):
    """summary.json records the data set since 2026-12-02: older runs of the same recipe join its
    curve when it has one data set (they were a curve of their own), and a rule added to the config
    since a run was saved does not split it either."""
    six = {"num_classes": 6, "train_images": 120, "classes_sha256": "a" * 64}
    dirs = [write_run(tmp_path / f"old{b}", budget_s=b) for b in (10, 20)]
    dirs.append(write_run(tmp_path / "rule", budget_s=30, train={"eval_every": 2.0},  # valid when saved,
                          drop_key="augment.erase_mode"))  # before that key existed
    dirs += [write_run(tmp_path / f"new{b}", budget_s=b, data=six) for b in (40, 80)]
    curves, skipped = budget_curves([str(d) for d in dirs], n_check=0)
    assert not skipped and [len(c.runs) for c in curves] == [5]
