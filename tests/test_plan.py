"""pipeline.plan: a config's curriculum on measured throughputs (issue 8's planning table)."""
import json

import pytest

import model
from pipeline import config as C
from pipeline import plan as P


def fake_bench(tmp_path, rates):
    path = tmp_path / "train_bench.json"
    path.write_text(json.dumps({"device": "test GPU", "model": "vitday_small_patch16_local", "batch_size": 1024,
                                "results": {str(r): {"end_to_end": v, "on_device": 2 * v} for r, v in rates.items()}}))
    return path


def test_progress_plan_splits_the_budget_and_scales_unmeasured_sizes_by_flops(tmp_path):
    import timm
    cfg = C.load_config("s16_24h")
    net = timm.create_model(cfg.model.name, num_classes=1000, img_size=224)
    rates = P.Rates({64: 40_000.0, 224: 4_000.0}, lambda r: model.forward_flops(net, r))
    stages = P.plan(cfg, rates)
    assert [s.resolution for s in stages] == [64, 96, 128, 160, 192, 224]
    assert sum(s.hours for s in stages) == pytest.approx(24.0)
    assert stages[0].hours == pytest.approx(2.4) and stages[0].measured
    assert stages[0].epochs == pytest.approx(40_000 * 2.4 * 3600 / P.IMAGENET_TRAIN)
    s96 = stages[1]  # scaled from the next larger measured size (224 px) by FLOPs, marked unmeasured
    assert not s96.measured
    assert s96.images_per_s == pytest.approx(4_000 * model.forward_flops(net, 224) / model.forward_flops(net, 96))


def test_an_unmeasured_size_stays_between_its_measured_neighbours():
    """64 px loader-bound (its rate far below what FLOPs would give), 128 px compute-bound: 96 px is
    scaled from 128 px and capped at the 64 px rate, never planned slower than 128 px."""
    flops = {64: 1.0, 96: 2.0, 128: 4.0, 160: 6.0, 224: 12.0, 256: 16.0, 32: 0.5}.__getitem__
    rates = P.Rates({64: 60_000.0, 128: 40_000.0, 224: 14_000.0}, flops)
    assert rates(96) == (60_000.0, False)  # 40k x 4/2 = 80k, capped at 64 px's 60k
    assert rates(160) == (pytest.approx(28_000.0), False)  # 14k x 12/6, within [14k, 40k]
    assert rates(256) == (pytest.approx(10_500.0), False) and rates(32) == (pytest.approx(120_000.0), False)
    slow = P.Rates({64: 60_000.0, 128: 40_000.0}, lambda r: {64: 1.0, 96: 100.0, 128: 4.0}[r])
    assert slow(96) == (40_000.0, False)  # never below the larger neighbour's measured rate


def test_epoch_clock_plan_runs_stages_until_the_budget_is_spent():
    cfg = C.load_config("paper")  # 5 epochs per size from 32 px, 24 h
    stages = P.plan(cfg, P.Rates({r: 10_000.0 for r in range(32, 225, 32)}, lambda r: r * r))
    per_stage_h = 5 * P.IMAGENET_TRAIN / 10_000 / 3600  # 0.178 h
    assert [s.resolution for s in stages] == [32, 64, 96, 128, 160, 192, 224]
    assert all(s.epochs == pytest.approx(5) and s.hours == pytest.approx(per_stage_h) for s in stages[:-1])
    assert sum(s.hours for s in stages) == pytest.approx(24.0)
    assert sum(s.epochs for s in stages) == pytest.approx(24 * 3600 * 10_000 / P.IMAGENET_TRAIN)


def test_cli_prints_both_tables_and_rejects_a_bad_file(tmp_path, capsys):
    path = fake_bench(tmp_path, {64: 40_000.0, 128: 15_000.0, 224: 4_000.0})
    assert P.main(["--config", "s16_24h", "--throughput", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s16_24h:" in out and "paper (planned at the rates of batch 1024; it runs at batch 64)" in out
    assert out.count("total") == 2 and "test GPU" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert P.main(["--throughput", str(bad)]) == 2
    assert "expected bench.train's JSON" in capsys.readouterr().err
    # a benchmark a time limit stopped part way: planned, with a warning
    path.write_text(json.dumps({**json.loads(path.read_text()), "complete": False,
                                "results": {"64": {"end_to_end": 40_000.0}}}))
    assert P.main(["--config", "s16_24h", "--throughput", str(path)]) == 0
    assert "is partial (measured at 64 px only)" in capsys.readouterr().err


def test_progress_plan_stops_at_the_epoch_cap_as_the_trainer_does():
    """With a budget, train.epochs is a cap: the trainer stops there (its epoch_cap), mid-curriculum."""
    cfg = C.load_config("s16_24h")
    cfg.train.epochs = 300.0  # 64 px alone plans 269.75 epochs in its 2.4 h, 96 px another 290
    stages = P.plan(cfg, P.Rates({r: 40_000.0 for r in (64, 96, 128, 160, 192, 224)}, lambda r: r * r))
    assert [s.resolution for s in stages] == [64, 96]
    assert sum(s.epochs for s in stages) == pytest.approx(300.0)
    first = 40_000 * 2.4 * 3600 / P.IMAGENET_TRAIN  # 269.74 epochs, all of 64 px's share
    assert stages[0].epochs == pytest.approx(first) and stages[0].hours == pytest.approx(2.4)
    assert stages[1].hours == pytest.approx((300 - first) * P.IMAGENET_TRAIN / 40_000 / 3600)


def test_another_models_rates_are_scaled_by_flops_and_marked(tmp_path, capsys):
    """The benchmark ran ViT-S/16; demo's pico/4 is planned from it scaled by the two models' FLOPs
    per image (before: scaled by ViT-S's FLOPs alone, or a traceback at demo's 24 px)."""
    import timm
    path = fake_bench(tmp_path, {64: 40_000.0, 128: 15_000.0, 224: 4_000.0})
    bench = P._measured(str(path), "end_to_end")
    demo = C.load_config("demo")
    rates, note = P.rates_for(demo, bench)
    assert "scaled by FLOPs to vitday_pico_patch4_local" in note
    s16 = timm.create_model("vitday_small_patch16_local", num_classes=1000)
    pico = timm.create_model(demo.model.name, num_classes=1000)
    at64 = 40_000 * model.forward_flops(s16, 64) / model.forward_flops(pico, 64)
    assert rates(64) == (pytest.approx(at64), False)
    assert rates(24) == (pytest.approx(at64 * model.forward_flops(pico, 64) / model.forward_flops(pico, 24)), False)
    assert P.main(["--config", "s16_24h", "--compare", "demo", "--throughput", str(path)]) == 0
    assert "demo (rates of vitday_small_patch16_local scaled" in capsys.readouterr().out


@pytest.mark.parametrize("rates, words", [
    ({}, "got no results"), ({64: 0.0}, "got {64: 0.0}"), ({64: -5.0}, "got {64: -5.0}"),
    ({64: float("nan")}, "got {64: nan}"),
])
def test_rates_that_are_not_positive_are_one_line_errors(tmp_path, capsys, rates, words):
    path = fake_bench(tmp_path, rates)
    assert P.main(["--throughput", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --throughput:") and words in err and err.count("\n") == 1


def test_cli_errors_name_the_option(tmp_path, capsys):
    path = fake_bench(tmp_path, {64: 40_000.0})
    assert P.main(["--throughput", str(path), "--compare", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --compare: no config named 'nope'")
    with pytest.raises(SystemExit):
        P.main(["--throughput", str(path), "--images", "0"])
    assert "--images: expected a positive integer" in capsys.readouterr().err


def test_loader_rates_are_not_scaled_by_model_flops(tmp_path):
    """The loader's images/s are the same for any model: another model's plan keeps them, and an
    unmeasured size is scaled by pixels (a review: scaled by the two models' FLOPs, 324,838 img/s)."""
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"model": "vitday_small_patch16_local", "batch_size": 256,
                                "results": {"64": {"loader": 40_000.0}, "128": {"loader": 12_000.0}}}))
    bench = P._measured(str(path), "loader")
    rates, note = P.rates_for(C.load_config("demo"), bench, "loader")
    assert "pixels" in note and rates(64) == (40_000.0, True)
    assert rates(96) == (pytest.approx(12_000.0 * 128 ** 2 / 96 ** 2), False)


def test_loader_figures_of_prefetched_windows_are_refused(tmp_path, capsys):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"model": "vitday_small_patch16_local", "batch_size": 32, "loader_prefetched": True,
                                "window_steps": 2, "results": {"64": {"loader": 2_338_633.0, "end_to_end": 300.0}}}))
    assert P.main(["--throughput", str(path), "--rate-key", "loader"]) == 2
    assert "timed batches decoded ahead" in capsys.readouterr().err
    assert P.main(["--throughput", str(path), "--compare", ""]) == 0  # its end-to-end figures stand
