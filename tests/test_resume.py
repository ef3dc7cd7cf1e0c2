"""Long runs survive (issue 7): checkpoints, resume, signals, kill -9, corrupt files, NaN guards.

Runs are tiny (conftest's 24-image betons, pico model, CPU, one thread) and deterministic, random
crops included (pipeline/crops.py), so an interrupted and resumed run must reproduce an
uninterrupted one exactly.
"""
import errno
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline import checkpoint as ckpt
from pipeline import config as C
from pipeline import schedule as S
from pipeline import train as T
from pipeline.logs import read_table
from tests.test_train import NanAfter, tiny_cfg


def det_cfg(betons, **over) -> C.Config:
    """4 epochs x 3 steps; stage 16 px then 32 px from progress 0.5; checkpoint every quarter."""
    base = dict(train__epochs=4.0, train__eval_every=0.5, train__ckpt_every=0.25,
                curriculum__starts=(0.0, 0.5), curriculum__resolutions=(16, 32))
    return tiny_cfg(betons, **{**base, **over})


@pytest.fixture(autouse=True)
def no_pending_signal():
    """No stop request leaks between tests, and T.main's handlers are put back."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    T.STOP.signum, T.STOP.checkpointed = 0, False
    yield
    T.STOP.signum, T.STOP.checkpointed = 0, False
    for sig, h in handlers.items():
        signal.signal(sig, h)


def stop_at(monkeypatch, k: int) -> None:
    """A SIGTERM arrives during the k-th optimizer step."""
    real, calls = T.train_step, [0]

    def step(*a, **kw):
        calls[0] += 1
        if calls[0] == k:
            T.STOP.signum = signal.SIGTERM
        return real(*a, **kw)
    monkeypatch.setattr(T, "train_step", step)


def rows(run, name="steps.arrow"):
    return read_table(run / name).to_pylist()


# ------------------------------------------------------------------ checkpoint files

def test_checkpoints_keep_the_newest_and_load_weights_only(tmp_path):
    d = tmp_path / "ck"
    for step in (1, 2, 3):
        ckpt.save(d, step, {"w": torch.full((3,), float(step)), "state": {"step": step}}, keep=2)
    assert [p.name for p in ckpt.listing(d)] == ["ckpt-000000003.pt", "ckpt-000000002.pt"]
    assert sorted(p.name for p in d.iterdir()) == ["ckpt-000000002.json", "ckpt-000000002.pt",
                                                   "ckpt-000000003.json", "ckpt-000000003.pt"]
    path, ck = ckpt.load_latest(d)
    assert path.name == "ckpt-000000003.pt" and ck["step"] == 3 and torch.equal(ck["w"], torch.full((3,), 3.0))


class Payload:
    """Not a tensor or plain value: weights_only loading must refuse it."""


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_record", "pickled_object"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    d = tmp_path / "ck"
    ckpt.save(d, 1, {"w": torch.ones(1000)})
    newest = ckpt.save(d, 2, {"w": torch.zeros(1000)})
    data = newest.read_bytes()
    if damage == "flip":
        newest.write_bytes(data[:500] + bytes([data[500] ^ 0xFF]) + data[501:])
    elif damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "no_record":
        newest.with_suffix(".json").unlink()
    else:  # a file that verifies but holds pickled code (hand-made or tampered with)
        torch.save({"w": Payload(), "format": ckpt.FORMAT, "step": 2}, newest)
        import hashlib
        raw = newest.read_bytes()
        newest.with_suffix(".json").write_text(json.dumps(
            {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}))
    warnings = []
    path, ck = ckpt.load_latest(d, warn=warnings.append)
    assert path.name == "ckpt-000000001.pt" and torch.equal(ck["w"], torch.ones(1000))
    assert len(warnings) == 1 and "ckpt-000000002.pt" in warnings[0] and "previous" in warnings[0]
    assert "\n" not in warnings[0]


def test_save_sets_higher_steps_aside_and_clears_partials(tmp_path):
    """After a resume from step 2 (steps 3 and 4 unusable), checkpoint 3 of the new session must not be pruned
    in favour of the old 3 and 4, nor may those be resumed from later: they are renamed aside."""
    d = tmp_path / "ck"
    for step in (2, 3, 4):
        ckpt.save(d, step, {"w": torch.full((3,), float(step))})
    (d / "ckpt-000000004.pt").write_bytes(b"junk")  # unusable; 3 left usable but of the abandoned future
    (d / ".ckpt-000000009.pt.partial").write_bytes(b"half")  # a kill -9 mid-write
    ckpt.save(d, 3, {"w": torch.full((3,), 30.0)}, keep=2)
    assert [p.name for p in ckpt.listing(d)] == ["ckpt-000000003.pt", "ckpt-000000002.pt"]
    assert sorted(p.name for p in d.iterdir() if "abandoned" in p.name) == [
        "ckpt-000000004.json.abandoned", "ckpt-000000004.pt.abandoned"]
    assert not list(d.glob(".*partial"))
    assert torch.equal(ckpt.load_latest(d)[1]["w"], torch.full((3,), 30.0))


def test_disk_full_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    d = tmp_path / "ck"
    ckpt.save(d, 1, {"w": torch.ones(10)})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ckpt.CheckpointError, match=r"ckpt-000000002\.pt: not written \(No space left on device\); "
                                                   r"previous checkpoint ckpt-000000001\.pt intact"):
        ckpt.save(d, 2, {"w": torch.zeros(10)})
    monkeypatch.undo()
    assert sorted(p.name for p in d.iterdir()) == ["ckpt-000000001.json", "ckpt-000000001.pt"]
    assert ckpt.verify(d / "ckpt-000000001.pt") is None


def fail_fsync(monkeypatch, name_part: str, code: int) -> None:
    """os.fsync of the first file whose path contains `name_part` fails with errno `code`."""
    real = os.fsync

    def fsync(fd):
        if name_part in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_during_a_run_stops_it_with_one_line(warm, tmp_path, monkeypatch, capsys):
    fail_fsync(monkeypatch, "ckpt-000000006", errno.ENOSPC)  # checkpoint 1 (step 3) is written, 2 not
    run = tmp_path / "run"
    code = T.main(cli(warm, run, "--train.epochs=4", "--train.ckpt_every=0.25")[3:])  # in process
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: ") and err[-1].endswith(
        "ckpt-000000006.pt: not written (No space left on device); previous checkpoint ckpt-000000003.pt intact")
    monkeypatch.undo()
    assert [p.name for p in ckpt.listing(run / "checkpoints")] == ["ckpt-000000003.pt"]
    assert ckpt.verify(run / "checkpoints" / "ckpt-000000003.pt") is None
    assert [r["step"] for r in rows(run)] == list(range(1, 7))  # logs kept
    assert json.loads((run / "summary.json").read_text())["status"].startswith("failed: CheckpointError")


def test_a_quota_or_io_error_of_a_log_is_one_line_naming_it(warm, tmp_path, monkeypatch, capsys):
    """Cluster users meet a quota (EDQUOT) more often than a full disk: the same one line, the file
    named (the log's own errors carry no file name), the run resumable from its last checkpoint."""
    run = tmp_path / "run"
    fail_fsync(monkeypatch, "evals.arrow", errno.EDQUOT)  # the logs are synced before each checkpoint
    code = T.main(cli(warm, run, "--train.epochs=2", "--train.ckpt_every=0.5")[3:])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == (f"error: {run / 'evals.arrow'}: Disk quota exceeded; the logs up to their last flush "
                       "and the last complete checkpoint are kept")


def test_config_json_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """A resume rewrites config.json; a kill (here: the rename never happens) keeps the old one whole."""
    path = tmp_path / "config.json"
    C.save(C.Config(), path)
    before = path.read_text()
    cfg = C.Config()
    cfg.train.batch_size = 7

    def killed(*a):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        C.save(cfg, path)
    monkeypatch.undo()
    assert path.read_text() == before and C.from_dict(json.loads(before)).train.batch_size == 256


def test_resume_on_another_data_set_needs_force_and_a_misfit_is_one_line(warm, tmp_path):
    """data.dir may move on resume (resume-safe), but not to other data: a train set of another size
    changes the epoch plan (and the LR and stage positions) silently; other classes relabel it."""
    from tests.conftest import write_set
    from tools.synthetic import make_folder
    run = tmp_path / "run"
    T.train(det_cfg(warm, train__max_steps=3), run)
    bigger = tmp_path / "bigger"
    write_set(make_folder(tmp_path / "src", n_classes=3, per_class=16, size=(40, 30), splits={"val": 4}, seed=1),
              bigger, resolutions=(16, 32))
    with pytest.raises(T.RunDirError, match=r"^data.dir: .*bigger is not the data set this run trained on "
                                            r"\(train 24 -> 48\); nothing changed: add --force"):
        T.train(det_cfg(bigger), run, resume=True)
    four = tmp_path / "four"
    write_set(make_folder(tmp_path / "src4", n_classes=4, per_class=8, size=(40, 30), splits={"val": 4}, seed=1),
              four, resolutions=(16, 32))
    with pytest.raises(T.RunDirError, match=r"^data.dir: .*\(classes 3 -> 4; train 24 -> 32\)"):
        T.train(det_cfg(four), run, resume=True)
    with pytest.raises(T.RunDirError, match=r"ckpt-000000003.pt: does not fit this model and data \(.*head"):
        T.train(det_cfg(four), run, resume=True, force=True)
    s = T.train(det_cfg(warm), run, resume=True)  # the run itself is untouched
    assert s["status"] == "ok" and [r["step"] for r in rows(run)] == list(range(1, 13))


# ------------------------------------------------------------------ resume in process

@pytest.mark.parametrize("stop_step", [5, 6])  # 5: mid-epoch; 6: where the 32 px stage starts
def test_resume_after_sigterm_reproduces_the_uninterrupted_run(warm, tmp_path, monkeypatch, stop_step):
    full = tmp_path / "full"
    ref = T.train(det_cfg(warm), full)

    run = tmp_path / "run"
    stop_at(monkeypatch, stop_step)
    s = T.train(det_cfg(warm), run)
    assert s["stop_reason"] == "signal" and s["status"] == "stopped" and s["steps"] == stop_step
    assert ckpt.listing(run / "checkpoints")[0].name == f"ckpt-{stop_step:09d}.pt"
    assert [r["step"] for r in rows(run)] == list(range(1, stop_step + 1))

    monkeypatch.undo()
    T.STOP.signum = 0
    s2 = T.train(det_cfg(warm), run, resume=True)
    check_matches_uninterrupted(run, full)
    assert s2["status"] == "ok" and s2["steps"] == 12 and s2["images_seen"] == ref["images_seen"]
    assert s2["final_top1"] == ref["final_top1"] and s2["final_val_loss"] == pytest.approx(
        ref["final_val_loss"], rel=1e-6)
    assert [x["step"] for x in s2["sessions"]] == [0, stop_step]
    assert set(s2["throughput_by_resolution"]) == {"16", "32"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda(warm, tmp_path, monkeypatch):
    """On CUDA the checkpoint's RNG states must come back as CPU byte tensors (set_rng_state takes
    nothing else) while weights and AdamW's state (fused) land on the GPU; bf16 kernels are not
    bit-reproducible, so the schedule must match the uninterrupted run exactly and the losses closely."""
    cfg = dict(train__device="cuda", train__compile="off")
    full = tmp_path / "full"
    T.train(det_cfg(warm, **cfg), full)
    run = tmp_path / "run"
    stop_at(monkeypatch, 5)
    assert T.train(det_cfg(warm, **cfg), run)["stop_reason"] == "signal"
    _, ck = ckpt.load_latest(run / "checkpoints")
    assert ck["rng"][0]["cuda"] is not None and ck["rng"][0]["torch"].device.type == "cpu"
    monkeypatch.undo()
    T.STOP.signum = 0
    s = T.train(det_cfg(warm, **cfg), run, resume=True)
    assert s["status"] == "ok" and s["steps"] == 12 and [x["step"] for x in s["sessions"]] == [0, 5]
    got, want = rows(run), rows(full)
    assert [(r["step"], r["resolution"], r["images_seen"]) for r in got] == \
        [(r["step"], r["resolution"], r["images_seen"]) for r in want]
    assert [r["lr"] for r in got] == pytest.approx([r["lr"] for r in want], rel=1e-12)
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_trainer_runs_compiled_on_cuda(warm, tmp_path):
    """The whole trainer as a GPU run uses it (bench.train times steps only): the model compiled at two
    stage sizes and in eval mode, the augmentation compiled, evaluations, checkpoints, the summary."""
    s = T.train(det_cfg(warm, train__device="cuda", train__compile="on"), tmp_path / "run")
    assert s["status"] == "ok" and s["steps"] == 12 and set(s["throughput_by_resolution"]) == {"16", "32"}
    assert all(math.isfinite(r["loss"]) for r in rows(tmp_path / "run"))
    assert s["final_top1"] is not None and math.isfinite(s["final_val_loss"])
    assert ckpt.load_latest(tmp_path / "run" / "checkpoints") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cpu_checkpoint_continues_on_cuda(warm, tmp_path, monkeypatch):
    """train.device is resume-safe: a run stopped on the CPU (contiguous, fp32, plain AdamW)
    continues on CUDA (channels_last, bf16, fused AdamW, which checks that a parameter and its
    state share one layout) and finishes its plan."""
    run = tmp_path / "run"
    stop_at(monkeypatch, 5)
    assert T.train(det_cfg(warm), run)["stop_reason"] == "signal"
    monkeypatch.undo()
    T.STOP.signum = 0
    s = T.train(det_cfg(warm, train__device="cuda", train__compile="off"), run, resume=True)
    assert s["status"] == "ok" and s["steps"] == 12 and [x["step"] for x in s["sessions"]] == [0, 5]
    assert all(math.isfinite(r["loss"]) for r in rows(run))


def test_a_checkpoint_of_another_device_type_resumes_with_new_augmentation_streams(warm, tmp_path, monkeypatch,
                                                                                  capsys):
    """A CUDA checkpoint continued on the CPU: its augmentation generator's state (CUDA's 16 bytes,
    made here by the first session's state_dict) cannot be set on a CPU generator; the run warns,
    reseeds that generator and finishes its plan."""
    from pipeline.augment import BatchAugment
    real = BatchAugment.state_dict
    monkeypatch.setattr(BatchAugment, "state_dict",
                        lambda self: {**real(self), "torch": torch.zeros(16, dtype=torch.uint8)})
    run = tmp_path / "run"
    stop_at(monkeypatch, 5)
    assert T.train(det_cfg(warm), run)["stop_reason"] == "signal"
    monkeypatch.undo()
    T.STOP.signum = 0
    s = T.train(det_cfg(warm), run, resume=True)
    assert s["status"] == "ok" and s["steps"] == 12
    assert "written on another device type: new augmentation random streams" in capsys.readouterr().err


def test_resume_with_another_memory_layout_keeps_adamw_state_aligned(warm, tmp_path, monkeypatch):
    """A run stopped channels_last and resumed without it continues the uninterrupted run under
    fused AdamW (as built for CUDA, here on the CPU), which reads a parameter and its state as flat
    buffers: a CPU checkpoint continued on CUDA (`channels_last=auto` turns it on) is the same case
    the other way round. Without load_optimizer_state the losses after the resume differ."""
    real = T.build_optimizer

    def fused(net, cfg, device):  # as built for CUDA: fused=True (supported on the CPU too)
        opt = real(net, cfg, torch.device("cuda"))
        assert opt.defaults["fused"]
        return opt
    monkeypatch.setattr(T, "build_optimizer", fused)
    full = tmp_path / "full"
    T.train(det_cfg(warm), full)
    run = tmp_path / "run"
    stop_at(monkeypatch, 5)
    assert T.train(det_cfg(warm, train__channels_last="on"), run)["stop_reason"] == "signal"
    _, ck = ckpt.load_latest(run / "checkpoints")
    assert any(t.dim() == 4 and not t.is_contiguous() for v in ck["optimizer"]["state"].values()
               for t in v.values())  # the test means something: a state tensor was saved channels_last
    monkeypatch.undo()
    monkeypatch.setattr(T, "build_optimizer", fused)
    T.STOP.signum = 0
    assert T.train(det_cfg(warm), run, resume=True)["status"] == "ok"
    check_matches_uninterrupted(run, full)


def check_matches_uninterrupted(run, full):
    """Row by row the same schedule and losses, the same evaluations, the same final weights and
    AdamW state as the uninterrupted run."""
    got, want = rows(run), rows(full)
    assert [r["step"] for r in got] == list(range(1, 13))  # no duplicate, no gap
    for g, w in zip(got, want):
        assert (g["resolution"], g["images_seen"], g["epoch"]) == (w["resolution"], w["images_seen"], w["epoch"])
        assert g["lr"] == pytest.approx(w["lr"], rel=1e-12) and g["loss"] == pytest.approx(w["loss"], rel=1e-6)
    ev, ew = rows(run, "evals.arrow"), rows(full, "evals.arrow")
    assert [(r["step"], r["top1"]) for r in ev] == [(r["step"], r["top1"]) for r in ew]
    assert [r["loss"] for r in ev] == pytest.approx([r["loss"] for r in ew], rel=1e-6)
    (_, a), (_, b) = ckpt.load_latest(run / "checkpoints"), ckpt.load_latest(full / "checkpoints")
    assert a["step"] == b["step"] == 12
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v, rtol=1e-5, atol=1e-7)
    for k, v in b["optimizer"]["state"].items():
        for name, t in v.items():
            torch.testing.assert_close(a["optimizer"]["state"][k][name], t, rtol=1e-5, atol=1e-7)


def test_resume_from_a_corrupt_checkpoint_uses_the_previous_one(warm, tmp_path, monkeypatch, capsys):
    full = tmp_path / "full"
    T.train(det_cfg(warm), full)
    run = tmp_path / "run"
    stop_at(monkeypatch, 8)
    T.train(det_cfg(warm), run)  # checkpoints at steps 3 and 6 (every quarter), 8 (signal)
    assert [p.name for p in ckpt.listing(run / "checkpoints")] == [
        "ckpt-000000008.pt", "ckpt-000000006.pt", "ckpt-000000003.pt"]
    newest = run / "checkpoints" / "ckpt-000000008.pt"
    newest.write_bytes(newest.read_bytes()[:-100])
    monkeypatch.undo()
    T.STOP.signum = 0
    capsys.readouterr()
    T.train(det_cfg(warm), run, resume=True)
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "ckpt-000000008.pt" in err and "truncated" in err
    check_matches_uninterrupted(run, full)  # rows 7-8 of the first session replaced, none doubled


def test_resume_without_a_usable_checkpoint_needs_force(warm, tmp_path, capsys):
    run = tmp_path / "run"
    T.train(det_cfg(warm, train__max_steps=7), run)  # checkpoints 3, 6, 7
    for p in ckpt.listing(run / "checkpoints"):
        data = p.read_bytes()
        p.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    before = [r["step"] for r in rows(run)]
    with pytest.raises(T.RunDirError, match=r"no usable checkpoint .* nothing changed: add --force"):
        T.train(det_cfg(warm, train__max_steps=10), run, resume=True)
    assert [r["step"] for r in rows(run)] == before == list(range(1, 8))  # logs untouched
    capsys.readouterr()
    s = T.train(det_cfg(warm, train__max_steps=5), run, resume=True, force=True)  # from step 0 again
    assert s["steps"] == 5 and [r["step"] for r in rows(run)] == [1, 2, 3, 4, 5]
    # the new checkpoints stay (not pruned for the corrupt 6 and 7, which are set aside)
    assert [p.name for p in ckpt.listing(run / "checkpoints")] == ["ckpt-000000005.pt", "ckpt-000000003.pt"]
    assert ckpt.verify(run / "checkpoints" / "ckpt-000000003.pt") is None


def test_a_new_run_refuses_a_dir_with_leftover_checkpoints(warm, tmp_path):
    run = tmp_path / "run"
    T.train(det_cfg(warm, train__max_steps=3), run)
    for f in T.RUN_FILES:
        (run / f).unlink()
    with pytest.raises(T.RunDirError, match=r"already holds a run \(checkpoints/\)"):
        T.train(det_cfg(warm), run)


def test_a_period_changed_on_resume_applies_at_once(warm, tmp_path, monkeypatch):
    run = tmp_path / "run"
    stop_at(monkeypatch, 2)
    T.train(det_cfg(warm, train__ckpt_every=0.5), run)  # 12 steps; checkpoints would be at 6, 12
    monkeypatch.undo()
    T.STOP.signum = 0
    # every 1/8 from step 2 (progress 1/6): next at 1/4, step 3, not the old 1/2 (step 6)
    T.train(det_cfg(warm, train__ckpt_every=0.125, train__max_steps=4), run, resume=True)
    assert [p.name for p in ckpt.listing(run / "checkpoints")] == [
        "ckpt-000000004.pt", "ckpt-000000003.pt", "ckpt-000000002.pt"]
    assert S.next_point(1 / 6, 0.125, 0.5) == 0.25 and S.next_point(1 / 6, 0.5, 0.25) == 0.25
    assert S.next_point(0.6, 0.5, 0.5) == 1.0  # the old point already passed


def test_resume_and_run_dir_mistakes_are_one_line(warm, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(C.ConfigError, match=r"--resume: .*afile is not a directory"):
        C.parse_args(["--resume", str(afile)])
    bad = tmp_path / "bad"
    (bad / "config.json").mkdir(parents=True)
    with pytest.raises(C.ConfigError, match=r"--resume: .*config.json: cannot read"):
        C.parse_args(["--resume", str(bad)])
    (bad / "config.json").rmdir()
    for text, what in (("[]", "config: expected an object of sections"),
                       ('{"train": 5}', "train: expected an object of key: value")):
        (bad / "config.json").write_text(text)
        with pytest.raises(C.ConfigError, match=what):
            C.parse_args(["--resume", str(bad)])
    with pytest.raises(T.RunDirError, match=r"afile: cannot write the run there"):
        T.train(det_cfg(warm), afile)
    with pytest.raises(C.ConfigError, match=r"curriculum.resolutions: 18 px not a multiple of the patch size 4"):
        T.train(det_cfg(warm, curriculum__resolutions=(16, 18)), tmp_path / "r1")
    with pytest.raises(C.ConfigError, match=r"train.eval_resolution: 30 px not a multiple"):
        T.train(det_cfg(warm, train__eval_resolution=30), tmp_path / "r2")
    assert not (tmp_path / "r2" / "steps.arrow").exists()  # refused before any training


def test_a_run_failing_in_its_setup_leaves_no_empty_run_dir(tmp_path, capsys):
    """A wrong data.dir is one line and exit 2; the run dir the command made for it is removed
    (otherwise each corrected attempt would leave a timestamped empty one in runs/), one the user
    made is kept."""
    run = tmp_path / "runs" / "new"
    assert T.main(["--config", "demo", "--run-dir", str(run), f"--data.dir={tmp_path / 'none'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: data.dir: {tmp_path / 'none' / 'manifest.json'}: not found (write the set with tools/write_beton.py)")
    assert not run.exists() and (tmp_path / "runs").is_dir()
    mine = tmp_path / "mine"
    mine.mkdir()
    assert T.main(["--config", "demo", "--run-dir", str(mine), f"--data.dir={tmp_path / 'none'}"]) == 2
    assert mine.is_dir()


def test_a_second_signal_after_the_stop_checkpoint_is_ignored(capsys):
    stop = T.StopRequest()
    stop(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGTERM, None)  # before the checkpoint: stop at once
    stop.checkpointed = True
    stop(signal.SIGTERM, None)  # after it: the logs are finished, exit 75 stays
    assert "the checkpoint is written" in capsys.readouterr().err


def test_resume_refuses_overrides_that_change_the_plan(warm, tmp_path):
    run = tmp_path / "run"
    T.train(det_cfg(warm, train__max_steps=2), run)
    with pytest.raises(C.ConfigError, match=r"--resume: overrides change the run's plan \(optim.lr: 0.001 -> 0.5\)"
                                            r".*--force"):
        C.parse_args(["--resume", str(run), "--optim.lr=0.5"])
    a = C.parse_args(["--resume", str(run), "--optim.lr=0.5", "--force"])
    assert a.resume and a.cfg.optim.lr == 0.5 and a.run_dir == str(run)
    a = C.parse_args(["--resume", str(run), "--train.max_steps=0", "--data.num_workers=2",
                      "--train.channels_last=on", "--train.precision=fp32"])  # no plan change
    assert a.cfg.train.max_steps == 0 and a.cfg.train.channels_last == "on"
    with pytest.raises(C.ConfigError, match="--force: only with --resume"):
        C.parse_args(["--config", "demo", "--force"])
    with pytest.raises(C.ConfigError, match="--resume: .*not found"):
        C.parse_args(["--resume", str(tmp_path / "nothing")])


def test_a_finished_run_is_not_resumed_unless_extended(warm, tmp_path):
    run = tmp_path / "run"
    T.train(det_cfg(warm, train__max_steps=4), run)
    with pytest.raises(T.RunDirError, match="the run is complete at step 4 \\(max_steps\\); nothing to resume"):
        T.train(det_cfg(warm, train__max_steps=4), run, resume=True)
    s = T.train(det_cfg(warm, train__max_steps=7), run, resume=True)  # extended: goes on to step 7
    assert s["steps"] == 7 and [r["step"] for r in rows(run)] == list(range(1, 8))


# ------------------------------------------------------------------ non-finite guards

class NanAt(torch.nn.Module):
    """Wraps a model; its output is NaN at the k-th training forward only."""

    def __init__(self, net, k: int):
        super().__init__()
        self.net, self.k, self.calls = net, k, 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls == self.k:
                out = out * float("nan")
        return out


def test_skip_policy_skips_a_nan_step_and_finishes(warm, tmp_path, monkeypatch):
    real = T.build_model
    build = lambda *a, **k: NanAt(real(*a, **k), k=4)  # noqa: E731
    monkeypatch.setattr(T, "build_model", build)
    monkeypatch.setattr("model.forward_flops", lambda net, size: 1000)
    s = T.train(det_cfg(warm, train__nonfinite="skip", train__eval_every=0.0, train__ckpt_every=0.0,
                        train__log_every=3, curriculum__starts=(0.0,), curriculum__resolutions=(16,)),
                tmp_path / "run")
    assert s["status"] == "ok" and s["steps"] == 12 and s["skipped_steps"] == 1
    logged = rows(tmp_path / "run")
    assert [r["step"] for r in logged] == [3, 6, 9, 12]
    assert all(math.isfinite(r["loss"]) for r in logged)  # the skipped step's loss is left out of its row
    _, ck = ckpt.load_latest(tmp_path / "run" / "checkpoints")
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_stop_policy_keeps_the_last_good_checkpoint(warm, tmp_path, monkeypatch):
    real = T.build_model
    monkeypatch.setattr(T, "build_model", lambda *a, **k: NanAfter(real(*a, **k), k=8))
    monkeypatch.setattr("model.forward_flops", lambda net, size: 1000)
    run = tmp_path / "run"
    with pytest.raises(T.NonFiniteLossError, match="loss is nan at step 8"):
        T.train(det_cfg(warm, train__eval_every=0.0), run)
    assert [p.name for p in ckpt.listing(run / "checkpoints")] == ["ckpt-000000006.pt", "ckpt-000000003.pt"]
    _, ck = ckpt.load_latest(run / "checkpoints")
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


# ------------------------------------------------------------------ real processes

def cli(betons, run, *extra):
    return [sys.executable, "-m", "pipeline.train", "--run-dir", str(run), f"--data.dir={betons}",
            "--model.name=vitday_pico_patch4_local", "--model.drop_path=0", "--train.batch_size=8",
            "--train.budget_s=0", "--train.epochs=3000", "--train.log_every=1", "--train.ckpt_every=0.002",
            "--train.progress_bar=false", "--train.plot=false", "--train.threads=1", "--data.num_workers=1",
            "--augment.randaug_ops=0", "--curriculum.starts=0", "--curriculum.resolutions=16", *extra]


def wait_for(cond, proc, timeout=240):
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < timeout, "timed out waiting for the run"
        time.sleep(0.05)


def test_kill_9_mid_run_then_resume(warm, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(cli(warm, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # two checkpoints written (steps 18 and 36 of 9000), then kill -9 at an arbitrary moment
    wait_for(lambda: len(list((run / "checkpoints").glob("*.json"))) >= 2, proc)
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    logged = [r["step"] for r in rows(run)]  # readable after kill -9: whole up to the last flush
    assert logged == list(range(1, len(logged) + 1))
    last = int(ckpt.listing(run / "checkpoints")[0].stem.split("-")[1])
    assert ckpt.verify(ckpt.listing(run / "checkpoints")[0]) in (None, "no .json record (the write did not finish)")
    stop = max(logged) + 10
    out = subprocess.run([sys.executable, "-m", "pipeline.train", "--resume", str(run),
                          f"--train.max_steps={stop}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = [r["step"] for r in rows(run)]
    assert got == list(range(1, stop + 1))  # no duplicate, no gap
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "ok" and s["steps"] == stop and s["images_seen"] == 8 * stop
    assert s["sessions"][1]["step"] >= min(last, 18) and len(s["sessions"]) == 2


def test_sigterm_writes_a_checkpoint_and_exits_75(warm, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(cli(warm, run, "--train.ckpt_every=0"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run / "steps.arrow").is_file() and len(rows(run)) >= 5, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == T.EXIT_STOPPED == 75, err[-2000:]
    assert f"--resume {run}" in err
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "stopped" and s["stop_reason"] == "signal"
    newest = ckpt.listing(run / "checkpoints")[0]
    assert newest.name == f"ckpt-{s['steps']:09d}.pt" and ckpt.verify(newest) is None
    assert rows(run)[-1]["step"] == s["steps"]


def test_a_kill_during_the_final_evaluation_is_finished_on_resume(warm, tmp_path, monkeypatch):
    """The final checkpoint comes before the final evaluation; a run killed during that evaluation
    is finished by --resume (the evaluation alone), with the uninterrupted run's result and logs."""
    full = tmp_path / "full"
    ref = T.train(det_cfg(warm), full)
    run = tmp_path / "run"
    real, calls, n_evals = T.evaluate, [0], len(rows(full, "evals.arrow"))

    def evaluate(*a, **kw):
        calls[0] += 1
        if calls[0] == n_evals:  # the final evaluation
            raise KeyboardInterrupt("second signal")
        return real(*a, **kw)
    monkeypatch.setattr(T, "evaluate", evaluate)
    with pytest.raises(KeyboardInterrupt):
        T.train(det_cfg(warm), run)
    monkeypatch.undo()
    assert ckpt.listing(run / "checkpoints")[0].name == "ckpt-000000012.pt"
    assert json.loads((run / "summary.json").read_text())["final_top1"] is None
    s = T.train(det_cfg(warm), run, resume=True)
    assert s["status"] == "ok" and s["steps"] == 12 and s["final_top1"] == ref["final_top1"]
    assert [(r["step"], r["top1"]) for r in rows(run, "evals.arrow")] == [
        (r["step"], r["top1"]) for r in rows(full, "evals.arrow")]  # the final one once
    assert [r["step"] for r in rows(run)] == list(range(1, 13))
    with pytest.raises(T.RunDirError, match="the run is complete at step 12"):
        T.train(det_cfg(warm), run, resume=True)
