"""The trainer end to end on CPU: tiny model (vitday_pico_patch4_local), tiny betons (conftest)."""
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from pipeline import config as C
from pipeline import schedule as S
from pipeline import train as T
from pipeline.logs import EVALS_SCHEMA, STEPS_SCHEMA, ArrowLog, read_table


def tiny_cfg(betons, **over) -> C.Config:
    """24 train images, batch 8: 3 steps per epoch; 12 val images (a partial last val batch)."""
    cfg = C.Config()
    cfg.data.dir, cfg.data.num_workers = str(betons), 1
    cfg.model.name, cfg.model.drop_path = "vitday_pico_patch4_local", 0.0
    t = cfg.train
    t.batch_size, t.epochs, t.log_every, t.progress_bar, t.plot, t.threads = 8, 2.0, 1, False, False, 1
    cfg.curriculum.starts, cfg.curriculum.resolutions = (0.0,), (16,)
    cfg.augment.randaug_ops = 1
    for key, value in over.items():
        obj, name, _ = C._lookup(cfg, key.replace("__", "."))
        setattr(obj, name, value)
    return C.validate(cfg)


def summary_data(betons) -> dict:
    """The data set's record a run keeps (env.json, summary.json), from the manifest."""
    import hashlib
    m = json.loads((betons / "manifest.json").read_text())
    return {"num_classes": len(m["classes"]), "train_images": m["splits"]["train"]["count"],
            "classes_sha256": hashlib.sha256("\n".join(m["classes"]).encode()).hexdigest()}


def test_run_writes_all_outputs(warm, tmp_path):
    cfg = tiny_cfg(warm, train__eval_every=0.5, train__plot=True,
                   curriculum__starts=(0.0, 0.5), curriculum__resolutions=(16, 32))
    run = tmp_path / "run"
    s = T.train(cfg, run)
    for f in ("config.json", "env.json", "steps.arrow", "evals.arrow", "summary.json", "curves.png"):
        assert (run / f).is_file(), f
    steps, evals = read_table(run / "steps.arrow"), read_table(run / "evals.arrow")
    assert steps.schema.equals(STEPS_SCHEMA) and evals.schema.equals(EVALS_SCHEMA)
    # the contract README's "Output files" states, written out (the constants could drift with it)
    assert [(f.name, str(f.type)) for f in steps.schema] == [
        ("step", "int64"), ("epoch", "double"), ("wall_s", "double"), ("images_seen", "int64"),
        ("flops_seen", "double"), ("resolution", "int32"), ("lr", "double"), ("loss", "double"),
        ("images_per_s", "double")]
    assert [(f.name, str(f.type)) for f in evals.schema] == [
        ("step", "int64"), ("wall_s", "double"), ("images_seen", "int64"), ("flops_seen", "double"),
        ("resolution", "int32"), ("top1", "double"), ("top5", "double"), ("loss", "double")]
    assert steps.column("step").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert steps.column("images_seen").to_pylist() == [8 * k for k in range(1, 7)]
    assert all(math.isfinite(v) and v > 0 for v in steps.column("loss").to_pylist())
    assert evals.num_rows == 2  # one at progress 0.5, one at the end
    assert set(evals.column("resolution").to_pylist()) == {32}  # evaluation at the final size
    assert all(0 <= v <= 1 for v in evals.column("top1").to_pylist() + evals.column("top5").to_pylist())
    assert C.from_dict(json.loads((run / "config.json").read_text())) == cfg
    env = json.loads((run / "env.json").read_text())
    assert {"git_hash", "versions", "device"} <= set(env) and env["versions"]["torch"] == torch.__version__
    import importlib.metadata
    assert env["versions"]["ffcv"] == importlib.metadata.version("ffcv") != "0.0.3rc1"  # not ffcv.__version__
    assert env["data"] == summary_data(warm) == json.loads((run / "summary.json").read_text())["data"]
    assert env["train_betons"] == {"16": {"file": "train_16.beton", "mode": "raw", "resolution": 16},
                                   "32": {"file": "train_32.beton", "mode": "jpg", "resolution": 32}}
    summary = json.loads((run / "summary.json").read_text())
    assert summary == json.loads(json.dumps(s))
    assert summary["status"] == "ok" and summary["stop_reason"] == "epochs"
    assert summary["images_seen"] == 48 and summary["steps"] == 6 and summary["epochs"] == 2
    assert summary["final_top1"] == evals.column("top1").to_pylist()[-1]
    assert summary["best_top1"] == max(evals.column("top1").to_pylist())
    assert set(summary["throughput_by_resolution"]) == {"16", "32"}
    assert summary["flops_seen"] == pytest.approx(sum(
        8 * summary["train_flops_per_image"][str(r)] for r in steps.column("resolution").to_pylist()))


@pytest.mark.parametrize("adjust_at, want", [("step", [16, 16, 32, 32, 32, 32]),
                                             ("epoch", [16, 16, 16, 32, 32, 32])])
def test_curriculum_switches_resolution_when_planned(warm, tmp_path, monkeypatch, adjust_at, want):
    # 6 planned steps; stage 2 starts at progress 0.3, reached after step 2 (2/6 = 0.33)
    cfg = tiny_cfg(warm, curriculum__starts=(0.0, 0.3), curriculum__resolutions=(16, 32),
                   curriculum__adjust_at=adjust_at, optim__warmup=0.2, optim__lr=1e-3)
    fed = []  # the image size of every training forward: what the model is given, not what is logged
    real = T.build_model

    def recording(*a, **k):
        net = real(*a, **k)
        net.register_forward_pre_hook(lambda m, args: fed.append(args[0].shape[-1]) if m.training else None)
        return net
    monkeypatch.setattr(T, "build_model", recording)
    T.train(cfg, tmp_path / "run")
    rows = read_table(tmp_path / "run" / "steps.arrow").to_pylist()
    assert [r["resolution"] for r in rows] == want
    assert fed == want
    for r in rows:  # the LR of step k is the schedule at the position before it, (k - 1) / 6
        assert r["lr"] == pytest.approx(S.lr_at((r["step"] - 1) / 6, peak=1e-3, warmup=0.2, decay_end=1.0))


def test_epoch_clock_curriculum(warm, tmp_path):
    cfg = tiny_cfg(warm, train__clock="epoch", train__epochs=3.0,
                   curriculum__starts=(0.0, 1.0, 2.0), curriculum__resolutions=(16, 24, 32))
    T.train(cfg, tmp_path / "run")
    rows = read_table(tmp_path / "run" / "steps.arrow").to_pylist()
    assert [r["resolution"] for r in rows] == [16] * 3 + [24] * 3 + [32] * 3
    assert [r["epoch"] for r in rows][2::3] == [1.0, 2.0, 3.0]


def test_budget_mode_stops_on_time_with_lr_at_final_value(warm, tmp_path):
    budget = 4.0
    cfg = tiny_cfg(warm, train__budget_s=budget, train__epochs=0.0, optim__lr=1e-3, optim__final_lr_ratio=0.1,
                   curriculum__starts=(0.0, 0.5), curriculum__resolutions=(16, 32))
    s = T.train(cfg, tmp_path / "run")
    rows = read_table(tmp_path / "run" / "steps.arrow").to_pylist()
    assert s["stop_reason"] == "budget"
    # it stops at the first step that ends past the budget: overshoot < the longest step
    # (log_every=1, no periodic eval, so consecutive wall_s differences are step times)
    walls = [0.0] + [r["wall_s"] for r in rows]
    longest = max(b - a for a, b in zip(walls, walls[1:]))
    assert budget <= s["train_s"] <= budget + longest + 0.5
    before_last = s["train_s"] - (walls[-1] - walls[-2])  # the training clock when the last step began
    assert before_last < budget + 0.05, (before_last, budget)  # no step started past the budget
    # the LR of the last step is the schedule at a progress within one step of the end
    assert s["final_lr"] == rows[-1]["lr"]
    lo = S.lr_at(1.0, peak=1e-3, decay_end=1.0, final_ratio=0.1)
    hi = S.lr_at(max(0.0, 1 - (longest + 0.5) / budget), peak=1e-3, decay_end=1.0, final_ratio=0.1)
    assert lo <= rows[-1]["lr"] <= hi
    assert rows[-1]["resolution"] == 32


class NanAfter(nn.Module):
    """Wraps a model; its outputs become NaN from the `k`-th training forward on."""

    def __init__(self, net: nn.Module, k: int):
        super().__init__()
        self.net, self.k, self.calls = net, k, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
        out = self.net(x)
        return out * float("nan") if self.calls >= self.k else out


def test_non_finite_loss_stops_with_clear_error_and_keeps_logs(warm, tmp_path, monkeypatch):
    real = T.build_model
    monkeypatch.setattr(T, "build_model", lambda *a, **k: NanAfter(real(*a, **k), k=4))
    monkeypatch.setattr("model.forward_flops", lambda net, size: 1000)
    run = tmp_path / "run"
    with pytest.raises(T.NonFiniteLossError, match=r"loss is nan at step 4 .*logs kept in"):
        T.train(tiny_cfg(warm), run)
    rows = read_table(run / "steps.arrow").to_pylist()
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in rows[:3]) and math.isnan(rows[3]["loss"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"].startswith("failed: NonFiniteLossError")


def test_refuses_a_dir_that_holds_a_run(warm, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "steps.arrow").write_bytes(b"")
    with pytest.raises(T.RunDirError, match="already holds a run"):
        T.train(tiny_cfg(warm), run)
    assert (run / "steps.arrow").read_bytes() == b""


def test_read_table_tolerates_a_truncated_last_batch(tmp_path):
    p = tmp_path / "steps.arrow"
    row = dict(step=1, epoch=0.1, wall_s=1.0, images_seen=8, flops_seen=1e9, resolution=16, lr=1e-3,
               loss=2.0, images_per_s=10.0)
    log = ArrowLog(p, STEPS_SCHEMA, flush_rows=2)
    for k in range(1, 6):
        log.append(dict(row, step=k))
    assert read_table(p).column("step").to_pylist() == [1, 2, 3, 4]  # readable while running
    log.close()
    data = p.read_bytes()
    p.write_bytes(data[:-40])  # a crash in the middle of the last batch
    assert read_table(p).column("step").to_pylist() == [1, 2, 3, 4]
    p.write_bytes(data[:10])
    assert read_table(p).num_rows == 0


def test_cli_runs_and_prints_summary(warm, tmp_path):
    run = tmp_path / "cli"
    cmd = [sys.executable, "-m", "pipeline.train", "--config", "demo", "--run-dir", str(run),
           f"--data.dir={warm}", "--model.name=vitday_pico_patch4", "--train.budget_s=0", "--train.epochs=1",
           "--train.batch_size=8", "--data.val_batch_size=8", "--train.eval_every=0",
           "--train.progress_bar=false", "--train.plot=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "top-1" in out.stdout and (run / "summary.json").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "already holds a run" in again.stderr
    assert again.stderr.strip().count("\n") <= 1


def test_the_authors_recipe_runs(warm, tmp_path):
    """configs/paper.py as it is, but for size: the epoch clock with a wall-clock budget and no epoch
    cap, where the run's end is unknown (it used to fail at its first step on the strength ramp)."""
    cfg = C.load_config("paper")
    cfg.data.dir, cfg.data.num_workers, cfg.model.name = str(warm), 1, "vitday_pico_patch4_local"
    t = cfg.train
    t.batch_size, t.budget_h, t.budget_s, t.max_steps = 8, 0.0, 600.0, 7
    t.compile, t.progress_bar, t.plot, t.threads, t.log_every = "off", False, False, 1, 1
    cfg.curriculum.starts, cfg.curriculum.resolutions = (0.0, 2.0), (16, 32)  # epochs 0-1 at 16 px, then 32
    s = T.train(C.validate(cfg), tmp_path / "run")
    assert s["status"] == "ok" and s["steps"] == 7 and s["stop_reason"] == "max_steps"
    steps = read_table(tmp_path / "run" / "steps.arrow").to_pylist()
    assert [r["resolution"] for r in steps] == [16] * 6 + [32]  # 3 steps per epoch: 32 px from epoch 2
    assert steps[0]["lr"] == pytest.approx(1.25e-4) and all(math.isfinite(r["loss"]) for r in steps)
    assert len(read_table(tmp_path / "run" / "evals.arrow")) >= 2  # every epoch, and the final one


def test_beton_scale_decodes_each_size_from_a_larger_beton(warm, tmp_path):
    """data.beton_scale=2: the 16 px stage crops from train_32 (sharper crops), and says so."""
    cfg = tiny_cfg(warm, train__max_steps=2, data__beton_scale=2.0)
    s = T.train(cfg, tmp_path / "run")
    assert s["status"] == "ok" and s["steps"] == 2
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["train_betons"] == {"16": {"file": "train_32.beton", "mode": "jpg", "resolution": 32}}


def test_a_cuda_runtime_turns_on_autotuning_and_tf32():
    """The trainer's CUDA settings (flags only: they are set without touching a GPU)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32
    try:
        cudnn.benchmark = cudnn.allow_tf32 = matmul.allow_tf32 = False
        T.Runtime.from_config(C.Config(), torch.device("cpu"))
        assert not (cudnn.benchmark or cudnn.allow_tf32 or matmul.allow_tf32)
        T.Runtime.from_config(C.Config(), torch.device("cuda"))
        assert cudnn.benchmark and cudnn.allow_tf32 and matmul.allow_tf32
    finally:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_sizes_above_every_beton_are_warned_of(warm, tmp_path, capsys):
    """A stage or evaluation size larger than every beton decodes from the largest and enlarges it: on
    ImageNet, the last hours of a run on blurred images if write_beton's --resolutions missed them."""
    cfg = tiny_cfg(warm, train__max_steps=1, curriculum__starts=(0.0, 0.5), curriculum__resolutions=(16, 48))
    T.train(cfg, tmp_path / "run")
    err = capsys.readouterr().err
    assert "warning: train 48 px, val 48 px: no beton that large in" in err
    T.train(tiny_cfg(warm, train__max_steps=1), tmp_path / "ok")
    assert "no beton that large" not in capsys.readouterr().err


def test_torchrun_forwarding_a_stop_is_not_a_second_signal(monkeypatch):
    """Under torchrun one SIGTERM reaches a worker twice (a process-group kill, then torchrun's copy):
    the copy within a few seconds is ignored there; alone, a second signal still stops at once."""
    import signal
    stop = T.StopRequest()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    stop(signal.SIGTERM, None)
    stop(signal.SIGTERM, None)  # the forwarded copy: no KeyboardInterrupt
    assert stop.signum == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGINT, None)  # another signal is the user's second
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    alone = T.StopRequest()
    alone(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        alone(signal.SIGTERM, None)
