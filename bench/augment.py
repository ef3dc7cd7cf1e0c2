"""Time pipeline/augment.py per batch on the available device.

    python -m bench.augment                       # CUDA if present (compiled), else CPU (eager)
    python -m bench.augment --device cpu --batch 64 --sizes 64,128,224 --repeats 5

Three cases per resolution: `train` (DeiT recipe at strength 1: flip, RandAugment m9 n2,
erasing 0.25, mixup/cutmix), `train_s0` (strength 0: flip + normalize only) and `eval`
(normalize). The input batch is already on the device (as the FFCV loader delivers it).
CUDA timings use CUDA events after warm-up steps that absorb compilation; medians over
`--repeats` timed steps. Writes results/augment_bench.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

from bench.timing import time_calls
from pipeline.augment import AugmentConfig, BatchAugment


def time_step(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds per call of fn(), one number per timed call."""
    for _ in range(warmup):
        fn()
    return time_calls(fn, device, repeats)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", default="64,128,224", help="comma-separated resolutions")
    p.add_argument("--batch", type=int, default=None, help="default 256 on CUDA, 64 on CPU")
    p.add_argument("--repeats", type=int, default=None, help="timed steps (default 50 CUDA, 5 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 10 CUDA, 1 CPU)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile the tensor parts (auto: on for CUDA only)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="results/augment_bench.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    device = torch.device(a.device)
    cuda = device.type == "cuda"
    batch = a.batch or (256 if cuda else 64)
    repeats = a.repeats or (50 if cuda else 5)
    warmup = a.warmup if a.warmup is not None else (10 if cuda else 1)
    compile_ = {"auto": None, "on": True, "off": False}[a.compile]
    aug = BatchAugment(AugmentConfig(), num_classes=a.num_classes, device=device, seed=0,
                       compile=compile_)
    compiled = aug.compiled

    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        g = torch.Generator(device=device).manual_seed(size)
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device, generator=g)
        labels = torch.randint(0, a.num_classes, (batch,), device=device, generator=g)
        cases = {
            "train": lambda: aug.train(images, labels, strength=1.0),
            "train_s0": lambda: aug.train(images, labels, strength=0.0),
            "eval": lambda: aug.eval(images),
        }
        for case, fn in cases.items():
            ms = time_step(fn, device, warmup, repeats)
            med = statistics.median(ms)
            rows.append({"size": size, "case": case, "batch": batch, "median_ms": med,
                         "min_ms": min(ms), "max_ms": max(ms), "images_per_s": batch / med * 1e3})

    result = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "compiled": compiled,
        "batch": batch, "repeats": repeats, "warmup": warmup,
        "config": AugmentConfig().__dict__,
        "rows": rows,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"{result['device']}, torch {result['torch']}, {result['threads']} threads, "
          f"batch {batch}, compiled={compiled}, median of {repeats}")
    print(f"{'size':>5} {'case':>9} {'ms/batch':>10} {'images/s':>10}")
    for r in rows:
        print(f"{r['size']:>5} {r['case']:>9} {r['median_ms']:>10.2f} {r['images_per_s']:>10.0f}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
