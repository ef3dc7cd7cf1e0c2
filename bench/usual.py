"""The usual way, as a user would train without vitday: timm ViT-S/16 fed by torchvision.

    python -m bench.usual --folder data/bench_loader/jpeg_2000 --sizes 64,128,224 [--batch 256]
    python -m bench.usual --device cpu --model vit_tiny_patch16_224 --sizes 32 --batch 8   # a smoke run

torchvision `ImageFolder` + `DataLoader` (--workers processes, pinned memory, one long epoch: the
steady state, see bench/timing.py) with PIL transforms
(RandomResizedCrop, flip, ToTensor, Normalize), then timm's `vit_small_patch16_224` built at each
size, AMP (bf16 autocast on CUDA), AdamW, non-blocking copies: the plain recipe of a timm or DeiT
training script, without our betons, GPU augmentation or torch.compile. Images/s per size is the
median over --repeats windows of --steps steps after --warmup steps (each rounded up to whole
bursts of --workers batches), on the same folder of images
that bench/loader.py makes (and bench.train's betons are written from). Writes JSON
(results/usual_bench.json) and prints a table; compare with bench.train's end-to-end figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.timing import steady_loader
from pipeline.logs import environment, write_json


def loader(folder: Path, size: int, batch: int, workers: int, pin: bool, batches: int):
    """The DataLoader of a timm/DeiT script, handing out `batches` batches as one long epoch (the
    steady state of ImageNet's long epochs; see bench.timing.steady_loader)."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.RandomResizedCrop(size, antialias=True), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    ds = datasets.ImageFolder(str(folder / "train"), transform=tf)
    if len(ds) < batch:
        raise SystemExit(f"error: --batch {batch} exceeds the {len(ds)} images of {folder / 'train'}")
    return steady_loader(ds, batch, workers, batches, pin=pin)


def bench(folder: Path, model_name: str, sizes: list[int], batch: int, workers: int, steps: int, warmup: int,
          repeats: int, device: torch.device, after_size=lambda results: None) -> dict:
    import timm
    cuda = device.type == "cuda"
    results = {}
    for size in sizes:
        net = timm.create_model(model_name, num_classes=1000, img_size=size).to(device).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
        # The workers start together and each builds a whole batch, so batches come in bursts of
        # `workers`: warm-up and windows are whole bursts (as bench.loader's), else a window that
        # starts on the queued rest of a burst overstates the rate (~25 % in a simulation: 8 workers,
        # 10-step windows, as gpu.sh's 16 and 20). Enough batches that no window reaches the epoch's end (2 prefetched each).
        burst = max(workers, 1)
        warm, window = (burst * max(1, -(-n // burst)) for n in (warmup, steps))
        dl = loader(folder, size, batch, workers, pin=cuda, batches=warm + repeats * window + 2 * workers + 2)
        it = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in dl)

        def step():
            x, y = next(it)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(warm):
            step()
        rates = []
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(window):
                step()
            if cuda:
                torch.cuda.synchronize()
            rates.append(window * batch / (time.perf_counter() - t))
        results[str(size)] = {"images_per_s": statistics.median(rates), "samples": rates, "window_steps": window,
                              "warmup_steps": warm}
        del it, dl  # the workers end before the next size's start
        after_size(results)
        print(f"{size:>5} px  {results[str(size)]['images_per_s']:9.0f} img/s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", type=Path, default=Path("data/bench_loader/jpeg_2000"),
                   help="ImageNet-style folder (train/<class>/*.JPEG), e.g. from bench/loader.py")
    p.add_argument("--model", default="vit_small_patch16_224", help="timm model name")
    p.add_argument("--sizes", default="64,128,224")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("results/usual_bench.json"))
    a = p.parse_args(argv)
    if not (a.folder / "train").is_dir():
        print(f"error: --folder: {a.folder / 'train'} not found (make one with python -m bench.loader)",
              file=sys.stderr)
        return 2
    device = torch.device(a.device)
    sizes = [int(s) for s in a.sizes.split(",")]
    env = environment(device)
    a.out.parent.mkdir(parents=True, exist_ok=True)

    def summary(results: dict, complete: bool) -> dict:
        return {"benchmark": "usual", "device": env.get("gpu", {}).get("name") or str(device), "model": a.model,
                "batch_size": a.batch, "workers": a.workers, "precision": "bf16" if device.type == "cuda" else "fp32",
                "folder": str(a.folder), "steps": a.steps, "repeats": a.repeats, "complete": complete,
                "results": results, "env": env}

    # written after each size: a run stopped part way (time limit, /dev/shm) keeps the sizes done
    results = bench(a.folder, a.model, sizes, a.batch, a.workers, a.steps, a.warmup, a.repeats, device,
                    after_size=lambda r: write_json(a.out, summary(r, False)))
    out = summary(results, True)
    print(f"usual way: {a.model}, torchvision ImageFolder + DataLoader ({a.workers} workers), batch {a.batch}, "
          f"{out['precision']}, device {out['device']}; median of {a.repeats} x {a.steps} steps")
    print(f"{'size':>5} {'img/s':>10}")
    for s, r in results.items():
        print(f"{s:>5} {r['images_per_s']:>10.0f}")
    write_json(a.out, out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
