"""Run by tests/test_ddp.py under torchrun (2 CPU processes, gloo): checks that need every rank.

    torchrun --nproc_per_node=2 tests/ddp_worker.py BETONS OUT.json

Rank 0 writes what every rank saw to OUT.json: the train indices of each epoch (FFCV's
distributed order), the val indices (our shard), whether one DDP train_step on half a batch
per rank gives the weights of one single-process step on the whole batch, and rank 0's threads
after `Dist.close()` (gloo's must be gone).
"""
import json
import os
import sys
from pathlib import Path

import torch

from pipeline import config as C
from pipeline import train as T
from pipeline.data import BetonSet
from pipeline.dist import Dist


def main(betons: str, out: str) -> None:
    dd = Dist.from_env()
    dd.init(torch.device("cpu"))
    torch.set_num_threads(1)
    bs = BetonSet(betons)
    train = bs.loader("train", batch_size=4, output_size=16, num_workers=1, seed=0, distributed=True)
    val = bs.loader("val", batch_size=4, output_size=16, num_workers=1, shard=(dd.rank, dd.world))
    order = train._ffcv().traversal_order
    seen = {"train": [[int(i) for i in order.sample_order(e)] for e in range(2)],
            "val": [int(i) for i in val._ffcv().indices], "train_batches": len(train)}

    # one step: DDP over half a batch per rank == one process over the whole batch
    cfg = C.Config()
    cfg.model.name, cfg.model.drop_path = "vitday_pico_patch4_local", 0.0
    torch.manual_seed(0)
    net = T.build_model(cfg, 3, 16)
    ref = T.build_model(cfg, 3, 16)
    ref.load_state_dict(net.state_dict())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.softmax(torch.randn(8, 3, generator=g), -1)
    rt = T.Runtime(torch.device("cpu"), None, False, False)
    ddp = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=T._has_unused_params(
        net, 16, torch.device("cpu")))
    # plain SGD: its step is proportional to the gradient, so a sum instead of a mean would show
    # (Adam's first step is nearly scale-free and would hide it)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    init = [p.detach().clone() for p in net.parameters()]
    half = slice(4 * dd.rank, 4 * dd.rank + 4)
    T.train_step(ddp, opt, list(net.parameters()), x[half], y[half], rt, grad_clip=0.0)
    T.train_step(ref, torch.optim.SGD(ref.parameters(), lr=0.5), list(ref.parameters()), x, y, rt, grad_clip=0.0)
    diff = max((a - b).abs().max().item() for a, b in zip(net.parameters(), ref.parameters()))
    moved = max((a - b).abs().max().item() for a, b in zip(net.parameters(), init))
    seen["step_max_diff"], seen["step_moved"] = diff, moved
    everyone = dd.gather(seen)
    del ddp
    dd.close()
    if dd.main:
        # what is left of the process group: nothing once DDP is dropped and the group destroyed
        everyone[0]["threads_after_close"] = sorted(
            (Path("/proc/self/task") / t / "comm").read_text().strip() for t in os.listdir("/proc/self/task"))
        with open(out, "w") as f:
            json.dump(everyone, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
