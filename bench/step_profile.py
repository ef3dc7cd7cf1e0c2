"""Where a training step's time goes: torch.profiler over the trainer's step, top kernels.

    python -m bench.step_profile --config s16_24h --sizes 128,224 [--batch 256] [--steps 5]
    python -m bench.step_profile --config demo --sizes 16,24 --device cpu          # CPU ops instead

One step is what the trainer runs per batch with the data already on the device: the batched
augmentation (pipeline/augment.py) and pipeline.train.train_step (compiled forward, bf16 autocast,
backward, fused AdamW on CUDA). After --warmup steps (compilation), --steps steps are profiled;
the table lists the CUDA kernels with the most device time (CUDA) or the ops with the most self CPU time,
with their share of the total. Writes results/profile.json (top rows per size) and a Chrome
trace per size next to it with --trace (profile_<size>.json; large).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pipeline import config as C
from pipeline import train as T
from pipeline.logs import write_json


def profile_size(cfg: C.Config, size: int, steps: int, warmup: int, top: int, trace: Path | None) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    device = T.pick_device(cfg)
    rt = T.Runtime.from_config(cfg, device)
    torch.manual_seed(0)
    # built at the run's final size, as the trainer builds it (the position embedding is resampled)
    net, opt, params, aug = T.build_training(cfg, 1000, cfg.curriculum.resolutions[-1], device, rt, aug_seed=0)
    fwd = T.compiled_forward(net, rt)
    b = cfg.train.batch_size
    images = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (b,), device=device)

    def step():
        x, y = aug.train(images, labels, strength=1.0)
        T.train_step(fwd, opt, params, x, y, rt, cfg.optim.grad_clip)

    for _ in range(warmup):
        step()
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    if trace is not None:
        prof.export_chrome_trace(str(trace))
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    if cuda:
        # Only the kernels: CPU ops also carry the device time of the kernels they launched, and user
        # annotations (e.g. "## Call CompiledFxGraph ##") span whole graphs; summing those would count
        # each kernel two or three times (torch's own table sums the same subset).
        from torch.autograd import DeviceType
        events = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [{"name": e.key, "self_us_per_step": getattr(e, key) / steps, "share": getattr(e, key) / total,
             "calls_per_step": e.count / steps} for e in events[:top]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="128,224")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--trace", action="store_true", help="also write a Chrome trace per size")
    p.add_argument("--out", type=Path, default=Path("results/profile.json"))
    args, rest = p.parse_known_args(argv)
    try:
        cfg = C.parse_args(rest or ["--config", "s16_24h"]).cfg
    except C.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = {"model": cfg.model.name, "batch_size": cfg.train.batch_size, "steps": args.steps, "sizes": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for size in [int(s) for s in args.sizes.split(",")]:
        trace = args.out.with_name(f"profile_{size}.json") if args.trace else None
        rows = profile_size(cfg, size, args.steps, args.warmup, args.top, trace)
        out["sizes"][str(size)] = rows
        print(f"\n{size} px, batch {cfg.train.batch_size}: top {len(rows)} by self time per step")
        print(f"{'share':>6} {'us/step':>10} {'calls':>6}  name")
        for r in rows:
            print(f"{100 * r['share']:5.1f}% {r['self_us_per_step']:>10.0f} {r['calls_per_step']:>6.0f}  {r['name'][:90]}")
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
