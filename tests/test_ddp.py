"""DDP with torchrun: 2 CPU processes on the gloo backend (issue 7)."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import checkpoint as ckpt
from pipeline.logs import read_table
from tests.test_train import warm  # noqa: F401  (fixture)

HERE = Path(__file__).parent


def torchrun(*args, timeout=300):
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)


def test_ranks_see_disjoint_data_and_a_ddp_step_equals_the_whole_batch_step(warm, tmp_path):
    out = tmp_path / "seen.json"
    r = torchrun(str(HERE / "ddp_worker.py"), str(warm), str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert len(ranks) == 2
    for epoch in range(2):  # FFCV's distributed order: disjoint halves of all 24 images, new each epoch
        a, b = (set(rk["train"][epoch]) for rk in ranks)
        assert not a & b and a | b == set(range(24))
    assert ranks[0]["train"][0] != ranks[0]["train"][1]
    assert ranks[0]["train_batches"] == ranks[1]["train_batches"] == 3  # 24 images / (2 x 4)
    va, vb = (rk["val"] for rk in ranks)
    assert not set(va) & set(vb) and sorted(va + vb) == list(range(12))  # each val image once
    for rk in ranks:
        assert rk["step_moved"] > 1e-4  # the step changed the weights ...
        assert rk["step_max_diff"] < 1e-3 * rk["step_moved"]  # ... as one process on the whole batch


def test_torchrun_trains_with_one_set_of_logs(warm, tmp_path):
    run = tmp_path / "run"
    r = torchrun("-m", "pipeline.train", "--run-dir", str(run), f"--data.dir={warm}",
                 "--model.name=vitday_pico_patch4_local", "--train.batch_size=8", "--train.budget_s=0",
                 "--train.epochs=2", "--train.log_every=1", "--train.eval_every=0.5", "--train.ckpt_every=0.5",
                 "--train.progress_bar=false", "--train.plot=false", "--train.threads=1", "--data.num_workers=1",
                 "--curriculum.starts=0", "--curriculum.resolutions=16")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("val @") == 1  # only rank 0 prints the summary
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "ok" and s["steps"] == 6 and s["images_seen"] == 48  # 3 steps/epoch of 2 x 4 images
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    steps = read_table(run / "steps.arrow").to_pylist()
    assert [x["step"] for x in steps] == [1, 2, 3, 4, 5, 6]
    assert [x["images_seen"] for x in steps] == [8 * k for k in range(1, 7)]
    assert read_table(run / "evals.arrow").num_rows == 2
    assert sorted(p.name for p in run.iterdir() if p.suffix in (".arrow", ".json")) == [
        "config.json", "env.json", "evals.arrow", "steps.arrow", "summary.json"]
    _, ck = ckpt.load_latest(run / "checkpoints")
    assert ck["step"] == 6 and len(ck["rng"]) == 2  # both ranks' random streams, for resume
    assert ck["rng"][0]["aug"]["numpy"] != ck["rng"][1]["aug"]["numpy"]
