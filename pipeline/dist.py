"""torch.distributed for the trainer: one process per GPU, started by torchrun.

    torchrun --nproc_per_node=8 -m pipeline.train --config s16_24h --run-dir runs/s16x8

`Dist.from_env()` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK); with WORLD_SIZE
unset or 1 it is a single process and every collective below is the identity, so the trainer
has one code path. NCCL on CUDA, gloo on CPU (the tests run 2 gloo processes).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes logs and checkpoints."""
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        """Join the process group (NCCL for CUDA devices, gloo otherwise)."""
        if self.enabled and not dist.is_initialized():
            # DDP imports torch.distributed.nn.functional, whose functions take `group=group.WORLD` as a
            # default argument, evaluated at import: imported after init_process_group, ten of them hold
            # the default group for good, so destroy_process_group cannot free it and gloo's threads live
            # on until the interpreter's teardown frees the group amid everything else (the likely cause
            # of a test worker's rare "terminate called without an active exception" at exit). Imported
            # first, those defaults are None.
            import torch.distributed.nn.functional  # noqa: F401
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    rank=self.rank, world_size=self.world)

    def close(self) -> None:
        """Leave the process group. Its backend (gloo's threads, NCCL's communicators) is freed once
        nothing else holds it (a DDP-wrapped model does, until it is freed).

        Freeing gloo's process group joins its worker threads while holding the GIL, and a worker
        that has just finished a collective releases the work's tensors, which needs the GIL when
        Python still refers to them: the two wait on each other. Seen as a rank that never exited
        after `ok (max_steps)` (gdb: ~ProcessGroupGloo in std::thread::join, the worker in
        ~AsyncAllreduceWork -> decref_pyobject -> take_gil; 1 run in 3 of tests/test_ddp.py's
        resume under Python 3.12 and torch 2.11). So first a barrier, so every rank is done, then a
        sleep, which releases the GIL while the workers finish releasing their last works.
        """
        if self.enabled and dist.is_initialized():
            dist.barrier()
            time.sleep(0.2)
            dist.destroy_process_group()

    def all_reduce(self, values: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum or max of a tensor over ranks (in place; returned)."""
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return values

    def max_floats(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise max of host floats over ranks (one collective; a host sync)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        return self.all_reduce(t, "max").tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (picklable objects)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()
