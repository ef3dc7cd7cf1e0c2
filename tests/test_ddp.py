"""DDP with torchrun: 2 CPU processes on the gloo backend (issue 7)."""
import json
import socket
import subprocess
import sys
from pathlib import Path

from pipeline import checkpoint as ckpt
from pipeline.logs import read_table

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
    # Dist.close() frees the group itself (it once lived on in torch.distributed.nn.functional's default
    # arguments until interpreter teardown, the likely cause of a worker's rare abort at exit)
    gloo = [t for t in ranks[0]["threads_after_close"] if "gloo" in t]
    assert not gloo, f"gloo threads still running after Dist.close(): {gloo}"


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


def test_torchrun_budget_run_stops_together_on_sigterm_and_resumes(warm, tmp_path):
    """The ranks agree on the budget clock and on a signal: SIGTERM to torchrun stops both at the
    same logging interval with one checkpoint holding both ranks' states; --resume continues."""
    import signal
    import time
    run = tmp_path / "run"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--data.dir=" + str(warm), "--train.progress_bar=false", "--train.plot=false", "--train.threads=1",
            "--data.num_workers=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "pipeline.train", "--run-dir", str(run),
           "--model.name=vitday_pico_patch4_local", "--train.batch_size=8", "--train.budget_s=120",
           "--train.epochs=0", "--train.log_every=2", "--curriculum.starts=0,0.5", "--curriculum.resolutions=16,32",
           *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent)
    t0 = time.monotonic()
    while not ((run / "steps.arrow").is_file() and read_table(run / "steps.arrow").num_rows >= 5):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() - t0 < 200
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=200)
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "stopped" and s["stop_reason"] == "signal", err[-3000:]
    assert s["steps"] % 2 == 0  # at a logging interval, where the ranks agree
    path, ck = ckpt.load_latest(run / "checkpoints")
    assert ck["step"] == s["steps"] and len(ck["rng"]) == 2
    assert 0 < s["train_s"] < 120
    stop = s["steps"] + 6
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "pipeline.train",
                        "--resume", str(run), f"--train.max_steps={stop}", *args],
                       capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    s2 = json.loads((run / "summary.json").read_text())
    assert s2["status"] == "ok" and s2["stop_reason"] == "max_steps" and s2["steps"] == stop
    steps = [x["step"] for x in read_table(run / "steps.arrow").to_pylist()]
    assert steps == list(range(2, stop + 1, 2))  # no duplicate, no gap
    assert [x["world"] for x in s2["sessions"]] == [2, 2]
