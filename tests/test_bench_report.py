"""bench.report on hand-made GPU-like JSON: every required verdict shows, none is contradicted by its figure."""
import json

from bench import report


def _write(folder, **files):
    """Writes each keyword as folder/NAME.json (a dict) or folder/NAME (text: a name with a dot)."""
    for name, content in files.items():
        if isinstance(content, str):
            (folder / name.replace("_tsv", ".tsv")).write_text(content)
        else:
            (folder / f"{name}.json").write_text(json.dumps(content))


def _run(folder, capsys) -> tuple[dict, str]:
    """(targets by name, the Markdown) of bench.report on folder."""
    assert report.main([str(folder)]) == 0
    rep = json.loads((folder / "report.json").read_text())
    return {t["target"]: t for t in rep["targets"]}, capsys.readouterr().out


def _model(*rows, peak=989e12, device="NVIDIA H200"):
    """model_bench.json with rows of (size, images/s, mfu) measured compiled."""
    return {"device": device, "torch": "2.x", "batch": 1024, "peak_flops": peak, "complete": True,
            "rows": [{"size": s, "compiled": {"images_per_s": ips, **({"mfu": m} if m is not None else {})}}
                     for s, ips, m in rows]}


def _train(results, **extra):
    return {"device": "NVIDIA H200", "batch_size": 1024, "complete": True, "loader_prefetched": False,
            "results": {str(s): {"end_to_end": e, "on_device": d, "loader": lo} for s, (e, d, lo) in results.items()},
            **extra}


def test_every_required_size_has_a_verdict_not_measured_where_its_data_is_missing(tmp_path, capsys):
    _write(tmp_path, model_bench=_model((224, 4000.0, 0.5)),
           train_bench=_train({64: (30000.0, 31000.0, 90000.0), 128: (12000.0, 12500.0, 40000.0),
                               224: (3900.0, 3950.0, 9000.0)}),
           usual_bench={"results": {"64": {"images_per_s": 5000.0}}})  # 6x at 64 px, nothing at 128
    t, out = _run(tmp_path, capsys)
    assert t["end to end / usual way at 64 px"]["met"] is True
    at128 = t["end to end / usual way at 128 px"]
    assert at128["met"] is None and "not measured" in at128["note"] and "usual" in at128["note"]
    assert "end to end / usual way at 128 px: not measured" in out  # not left out, as if met
    for res in (64, 128):
        assert t[f"end to end / model bound at {res} px"]["met"] is None
        assert "no model bound" in t[f"end to end / model bound at {res} px"]["note"]
    assert "end to end / usual way at 224 px" not in t  # the 3x target is for 128 px and below
    (tmp_path / "train_bench.json").unlink()  # bench.train not run: gpu.sh's default sizes are required
    t, _ = _run(tmp_path, capsys)
    assert {n for n in t if n.startswith("end to end / model bound at ")} == {
        f"end to end / model bound at {s} px" for s in (64, 128, 224)}
    assert all(t[f"end to end / usual way at {s} px"]["met"] is None for s in (64, 128))


def test_a_prefetched_loader_figure_without_bench_loader_leaves_the_verdict_open(tmp_path, capsys):
    _write(tmp_path, model_bench=_model((128, 10000.0, 0.4)),
           train_bench=_train({128: (5000.0, 9800.0, 50000.0)}, loader_prefetched=True))
    t, _ = _run(tmp_path, capsys)
    v = t["end to end / model bound at 128 px"]
    assert v["met"] is None and "prefetched" in v["note"]  # not MISSED: loader-bound or not is unknown
    _write(tmp_path, loader_bench={"rows": [{"size": 128, "mode": "raw", "ffcv_images_per_s": 20000.0,
                                             "torchvision_images_per_s": 900.0}]})
    t, out = _run(tmp_path, capsys)
    assert t["end to end / model bound at 128 px"]["met"] is False  # bench.loader's 20,000 keeps up
    assert "| 20,000 (bench.loader's) |" in out and "bench.loader's FFCV figure" in out  # whose number it is


def test_the_report_lists_the_steps_that_ran_and_the_profile(tmp_path, capsys):
    _write(tmp_path, model_bench=_model((224, 4000.0, 0.5)),
           timings_tsv="step\tseconds\texit\nloader\t80\t0\ntrain\t200\t124\nmodel\t0\tskipped\n")
    _, out = _run(tmp_path, capsys)
    assert "loader 80 s ok" in out and "train 200 s FAILED (exit 124" in out and "model 0 s SKIPPED" in out
    assert "not run: profile, usual, tests, plan" in out
    assert "not found: train_bench.json, loader_bench.json, usual_bench.json, profile.json" in out
    _write(tmp_path, profile={"sizes": {"128": []}})
    (tmp_path / "timings.tsv").unlink()
    _, out = _run(tmp_path, capsys)
    assert "profile.json: 128 px (required 224 px missing)" in out
    assert "timings.tsv not found" in out


def test_a_shown_figure_never_reads_as_the_other_side_of_its_goal(tmp_path, capsys):
    _write(tmp_path, model_bench=_model((128, 10000.0, 0.4), (224, 4000.0, 0.449996)),
           train_bench=_train({128: (8996.0, 9000.0, 50000.0)}),
           usual_bench={"results": {"128": {"images_per_s": 8996.0 / 2.996}}})
    t, out = _run(tmp_path, capsys)
    assert t["model bound MFU at 224 px"]["met"] is False
    assert "model bound MFU at 224 px: 44.9996% (goal >= 0.45): MISSED" in out  # not 45.0% beside MISSED
    assert "end to end / model bound at 128 px: 0.8996 (goal >= 0.9): MISSED" in out
    assert "end to end / usual way at 128 px: 2.996 (goal >= 3.0): MISSED" in out
    assert "| 44.9996% |" in out and "| 0.8996 |" in out and "| 2.996x |" in out  # the table's cells too
    assert "| 40.0% |" in out  # one decimal where it cannot mislead


def test_end_to_end_above_the_model_bound_is_met_with_a_note(tmp_path, capsys):
    _write(tmp_path, model_bench=_model((224, 4000.0, 0.5)), train_bench=_train({224: (4200.0, 4300.0, 9000.0)}))
    t, out = _run(tmp_path, capsys)
    v = t["end to end / model bound at 224 px"]
    assert v["met"] is True and "above the model bound" in v["note"]
    assert "1.050 (goal >= 0.9): met; above the model bound" in out


def test_the_header_takes_device_and_torch_from_whichever_json_has_them(tmp_path, capsys):
    _write(tmp_path, usual_bench={"device": "NVIDIA H200", "batch_size": 1024, "env": {"versions": {"torch": "2.9"}},
                                  "results": {"64": {"images_per_s": 5000.0}}})
    _, out = _run(tmp_path, capsys)
    assert out.startswith("device NVIDIA H200, torch 2.9, batch 1024")
    (tmp_path / "usual_bench.json").unlink()
    _write(tmp_path, loader_bench={"batch": 1024, "machine": {"cpu": "x86_64", "torch": "2.9"}, "rows": [
        {"size": 64, "mode": "raw", "ffcv_images_per_s": 90000.0, "torchvision_images_per_s": 900.0}]})
    _, out = _run(tmp_path, capsys)
    assert out.startswith("device x86_64 (loader host), torch 2.9, batch 1024")


def test_an_unknown_peak_is_named_rather_than_not_measured(tmp_path, capsys):
    _write(tmp_path, model_bench=_model((224, 4000.0, None), peak=None, device="NVIDIA B300"))
    t, _ = _run(tmp_path, capsys)
    v = t["model bound MFU at 224 px"]
    assert v["met"] is None and "peak unknown for NVIDIA B300" in v["note"] and "--peak-tflops" in v["note"]


def test_an_eager_model_bound_is_marked(tmp_path, capsys):
    model = _model()
    model["rows"] = [{"size": 224, "eager": {"images_per_s": 2000.0, "mfu": 0.5}}]
    _write(tmp_path, model_bench=model, train_bench=_train({224: (1900.0, 1950.0, 9000.0)}))
    t, out = _run(tmp_path, capsys)
    assert "eager, not compiled" in t["model bound MFU at 224 px"]["note"]
    assert "eager, not compiled" in t["end to end / model bound at 224 px"]["note"]
    assert "| 224 | 2,000 (eager) |" in out


def test_a_failed_imagefolder_loader_is_shown_with_its_error(tmp_path, capsys):
    _write(tmp_path, loader_bench={"batch": 1024, "rows": [
        {"size": 224, "mode": "jpg", "ffcv_images_per_s": 20000.0, "torchvision_images_per_s": None,
         "speedup": None, "torchvision_error": "unable to allocate shared memory"}]})
    _, out = _run(tmp_path, capsys)
    assert "| failed |" in out and "ImageFolder at 224 px failed: unable to allocate shared memory" in out
