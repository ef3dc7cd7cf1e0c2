"""The GPU benchmarks of issue 8 run end to end on CPU at toy sizes (their figures need a GPU)."""
import json

from bench import profile, usual


def test_usual_way_benchmark_runs_and_writes_json(tiny_folder, tmp_path):
    out = tmp_path / "usual.json"
    assert usual.main(["--folder", str(tiny_folder), "--model", "vit_tiny_patch16_224", "--sizes", "32",
                       "--batch", "4", "--workers", "0", "--steps", "1", "--warmup", "1", "--repeats", "1",
                       "--device", "cpu", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["model"] == "vit_tiny_patch16_224" and r["batch_size"] == 4
    assert set(r["results"]) == {"32"} and r["results"]["32"]["images_per_s"] > 0
    assert usual.main(["--folder", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_profile_lists_the_top_ops_of_a_training_step(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert profile.main(["--sizes", "16", "--steps", "1", "--warmup", "1", "--top", "5", "--out", str(out),
                         "--config", "demo", "--train.batch_size=8", "--model.name=vitday_pico_patch4_local"]) == 0
    rows = json.loads(out.read_text())["sizes"]["16"]
    assert 1 <= len(rows) <= 5 and all(0 < r["share"] <= 1 for r in rows)
    assert rows == sorted(rows, key=lambda r: -r["self_us_per_step"])
    assert "16 px, batch 8" in capsys.readouterr().out
