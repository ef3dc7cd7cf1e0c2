"""The GPU benchmarks of issue 8 run end to end on CPU at toy sizes (their figures need a GPU)."""
import json
import math

import pytest

from bench import step_profile, usual


def test_usual_way_benchmark_runs_and_writes_json(tiny_folder, tmp_path):
    out = tmp_path / "usual.json"
    assert usual.main(["--folder", str(tiny_folder), "--model", "vit_tiny_patch16_224", "--sizes", "32",
                       "--batch", "4", "--workers", "2", "--steps", "3", "--warmup", "1", "--repeats", "1",
                       "--device", "cpu", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["model"] == "vit_tiny_patch16_224" and r["batch_size"] == 4
    assert set(r["results"]) == {"32"} and r["results"]["32"]["images_per_s"] > 0
    # 2 workers deliver batches in bursts of 2: warm-up and window are whole bursts
    assert (r["results"]["32"]["warmup_steps"], r["results"]["32"]["window_steps"]) == (2, 4)
    assert usual.main(["--folder", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_profile_lists_the_top_ops_of_a_training_step(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert step_profile.main(["--sizes", "16", "--steps", "1", "--warmup", "1", "--top", "5", "--out", str(out),
                         "--config", "demo", "--train.batch_size=8", "--model.name=vitday_pico_patch4_local"]) == 0
    rows = json.loads(out.read_text())["sizes"]["16"]
    assert 1 <= len(rows) <= 5 and all(0 < r["share"] <= 1 for r in rows)
    assert rows == sorted(rows, key=lambda r: -r["self_us_per_step"])
    assert "16 px, batch 8" in capsys.readouterr().out


def test_gpu_script_runs_every_step_at_toy_sizes(tmp_path):
    """bench/gpu.sh is issue 8's one command for a lent GPU: SMOKE=1 runs its every step on the CPU
    (toy sizes, no compile), so a broken step shows here and not in scarce GPU time."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out, device_out = tmp_path / "out", tmp_path / "device_out"  # the device tool's $OUT: at most 8 files back
    device_out.mkdir()
    env = dict(os.environ, SMOKE="1", WORK=str(tmp_path / "work"), OUT=str(device_out),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    p = subprocess.run(["bash", str(root / "bench" / "gpu.sh"), str(out)], env=env, cwd=root,
                       capture_output=True, text=True, timeout=540)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    steps = [line.split("\t") for line in (out / "timings.tsv").read_text().splitlines()[1:]]
    assert [s[0] for s in steps] == ["loader", "train", "model", "profile", "usual", "tests", "plan",
                                      "report"]
    assert all(s[2] == "0" for s in steps)
    loader = json.loads((out / "loader_bench.json").read_text())
    assert [r["size"] for r in loader["rows"]] == [32, 48]
    assert all(r["ffcv_images_per_s"] > 0 and r["torchvision_images_per_s"] > 0 for r in loader["rows"])
    train = json.loads((out / "train_bench.json").read_text())
    assert set(train["results"]) == {"32", "48"} and train["complete"]
    assert train["loader_prefetched"] and train["window_steps"] < 4 * train["batches_ahead"]  # toy windows: marked
    assert all(math.isfinite(r["epoch_start_s"]["end_to_end"]) for r in train["results"].values())
    assert all(r["end_to_end"] > 0 for r in train["results"].values())
    assert set(json.loads((out / "usual_bench.json").read_text())["results"]) == {"32", "48"}
    model = json.loads((out / "model_bench.json").read_text())
    assert [r["size"] for r in model["rows"]] == [32, 48] and all(r["eager"]["images_per_s"] > 0 for r in model["rows"])
    assert model["complete"] and model["config"] == "demo" and model["variant"] == "vitday_pico_patch4_local"
    assert "48" in json.loads((out / "profile.json").read_text())["sizes"]
    assert "total" in (out / "plan.txt").read_text()
    import tarfile
    assert [f.name for f in device_out.iterdir()] == ["gpu_out.tgz"]  # every result, as one file
    with tarfile.open(device_out / "gpu_out.tgz") as tar:
        assert {Path(n).name for n in tar.getnames()} - {""} == {f.name for f in out.iterdir()}
    assert " skipped" in (out / "gpu_tests.txt").read_text()  # the CUDA tests, collected, skipped on CPU
    report = json.loads((out / "report.json").read_text())
    assert [r["res"] for r in report["rows"]] == [32, 48] and all(report["files"].values())
    assert all(r["end_to_end"] == train["results"][str(r["res"])]["end_to_end"] for r in report["rows"])
    assert "| 48 |" in (out / "report.md").read_text()


def test_synthetic_folder_is_the_same_for_any_worker_count(tmp_path):
    from tools.synthetic import make_folder

    one = make_folder(tmp_path / "one", n_classes=2, per_class=3, size=(40, 30), seed=3)
    two = make_folder(tmp_path / "two", n_classes=2, per_class=3, size=(40, 30), seed=3, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*.JPEG"))
    assert len(files) == 2 * 3 + 2 * 1  # train + the default val (per_class // 5, at least 1)
    assert files == sorted(p.relative_to(two) for p in two.rglob("*.JPEG"))
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    other = make_folder(tmp_path / "other", n_classes=2, per_class=3, size=(40, 30), seed=4)
    assert any((one / f).read_bytes() != (other / f).read_bytes() for f in files)


def test_report_states_targets_and_what_is_missing(tmp_path, capsys):
    from bench import report

    (tmp_path / "model_bench.json").write_text(json.dumps({"device": "GPU X", "torch": "2.x", "batch": 4, "rows": [
        {"size": 128, "compiled": {"images_per_s": 1000.0, "mfu": 0.40}},
        {"size": 160, "compiled": {"images_per_s": 600.0, "mfu": 0.45}},
        {"size": 224, "compiled": {"images_per_s": 400.0, "mfu": 0.50}}]}))
    (tmp_path / "train_bench.json").write_text(json.dumps({"device": "GPU X", "batch_size": 4, "complete": False, "results": {
        "128": {"end_to_end": 700.0, "on_device": 950.0, "loader": 800.0},    # loader-bound
        "160": {"end_to_end": 500.0, "on_device": 520.0, "loader": 560.0},    # the loader could give 0.93
        "224": {"end_to_end": 380.0, "on_device": 390.0, "loader": 2000.0}}}))  # 0.95 of the bound
    (tmp_path / "usual_bench.json").write_text(json.dumps({"results": {"128": {"images_per_s": 200.0}}}))
    assert report.main([str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    t = {x["target"]: x for x in rep["targets"]}
    assert t["model bound MFU at 224 px"]["met"] is True
    assert t["end to end / model bound at 224 px"]["met"] is True
    assert t["end to end / model bound at 128 px"]["met"] is None and "loader-bound" in t[
        "end to end / model bound at 128 px"]["note"]
    assert t["end to end / usual way at 128 px"]["value"] == 3.5 and t["end to end / usual way at 128 px"]["met"]
    assert t["end to end / model bound at 160 px"]["met"] is False  # not the loader's fault: our step's
    assert {r["res"]: r.get("e2e_over_on_device") for r in rep["rows"]}[160] == 500.0 / 520.0
    out = capsys.readouterr().out
    assert "not found: loader_bench.json" in out and "| 224 | 400 | 50.0% |" in out
    assert "partial (stopped before its last size): train_bench.json" in out  # its step hit the time limit
    (tmp_path / "model_bench.json").write_text(json.dumps({"rows": [{"size": 224, "compiled": {
        "images_per_s": 400.0, "mfu": 0.30}}]}))
    assert report.main([str(tmp_path)]) == 0
    assert "model bound MFU at 224 px: 30.0% (goal >= 0.45): MISSED" in capsys.readouterr().out
    (tmp_path / "train_bench.json").unlink()  # no end-to-end figures: those targets say so, not vanish
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "end to end / model bound (no size has both figures): not measured" in out
    assert "end to end / usual way at 128 px and below (no size has both figures): not measured" in out
    assert report.main([str(tmp_path / "none")]) == 2
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2


def test_gpu_script_runs_plan_and_report_after_the_budget_is_spent(tmp_path):
    """BUDGET_S bounds the measuring steps; plan and report (seconds) still run on what is there."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    env = dict(os.environ, SMOKE="1", WORK=str(tmp_path / "work"), BUDGET_S="5", STEPS="loader plan report",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("OUT", None)
    p = subprocess.run(["bash", str(root / "bench" / "gpu.sh"), str(out)], env=env, cwd=root,
                       capture_output=True, text=True, timeout=300)
    steps = {s.split("\t")[0]: s.split("\t")[2] for s in (out / "timings.tsv").read_text().splitlines()[1:]}
    assert steps["loader"] == "skipped" and "SKIPPED (BUDGET_S=5 spent): loader" in p.stdout
    # nothing was measured, so both fail, but they ran
    assert steps["plan"] not in ("skipped", "0") and steps["report"] == "2"
    assert p.returncode == 3


def test_report_judges_a_prefetched_loader_figure_by_bench_loader(tmp_path):
    """bench.train's loader windows short of 4x batches_ahead overstate it: the loader gate then takes
    bench.loader's whole-pass FFCV figure where that is lower."""
    from bench import report
    (tmp_path / "model_bench.json").write_text(json.dumps({"rows": [{"size": 64, "compiled": {
        "images_per_s": 10000.0, "mfu": 0.3}}]}))
    (tmp_path / "train_bench.json").write_text(json.dumps({"loader_prefetched": True, "results": {
        "64": {"end_to_end": 8000.0, "on_device": 9800.0, "loader": 15000.0}}}))
    (tmp_path / "loader_bench.json").write_text(json.dumps({"rows": [{"size": 64, "mode": "raw",
        "ffcv_images_per_s": 8500.0, "torchvision_images_per_s": 900.0}]}))
    assert report.main([str(tmp_path)]) == 0
    t = {x["target"]: x for x in json.loads((tmp_path / "report.json").read_text())["targets"]}
    assert t["end to end / model bound at 64 px"]["met"] is None
    assert "the loader alone gives 8500 img/s" in t["end to end / model bound at 64 px"]["note"]


def test_loader_keeps_the_ffcv_figure_when_the_imagefolder_loader_fails(tmp_path, monkeypatch, capsys):
    """A small /dev/shm (containers) fails torchvision's DataLoader workers: FFCV's figure, measured first,
    stays, with the error beside it (it was lost with the whole row)."""
    from bench import loader

    def no_shm(*args, **kwargs):
        raise RuntimeError("DataLoader worker exited\nunable to allocate shared memory(shm) for file </torch_1>")
    monkeypatch.setattr(loader, "torchvision_images_per_s", no_shm)
    out = tmp_path / "loader.json"
    assert loader.main(["--images", "32", "--classes", "2", "--sizes", "32", "--batch", "8", "--workers", "1",
                        "--repeats", "1", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["complete"] and r["rows"][0]["ffcv_images_per_s"] > 0
    assert r["rows"][0]["torchvision_images_per_s"] is None and "shared memory" in r["rows"][0]["torchvision_error"]
    assert "torchvision at 32 px failed" in capsys.readouterr().err


def test_peak_flops_by_device_name():
    from bench.model import peak_for
    for name, peak in (("NVIDIA H200", 989e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                       ("NVIDIA H200 NVL", 835e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A10", 125e12),
                       ("NVIDIA L40S", 362e12), ("NVIDIA L40", 181e12), ("NVIDIA L4", 121e12), ("Tesla T4", None)):
        assert peak_for(name) == peak, name


def test_time_calls_times_windows_of_inner_calls(monkeypatch):
    """Each timing covers `inner` calls and gives ms per call: with a clock that moves 10 ms per call, 10."""
    import torch
    from bench import timing
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def call():
        clock[0] += 0.010
    times = timing.time_calls(call, torch.device("cpu"), repeats=3, inner=4)
    assert times == pytest.approx([10.0, 10.0, 10.0]) and clock[0] == pytest.approx(0.12)
