"""Loader throughput: our FFCV betons vs torchvision ImageFolder, same cores, same output.

    python -m bench.loader [--images 2000] [--sizes 64,128,224] [--workers N]
        [--work data/bench_loader] [--out results/loader_bench.json]

Makes (once, kept in --work) a folder of ImageNet-sized JPEGs (about 500x375, quality 90,
seeded textures with a real decode cost), writes betons of it with tools/write_beton.py
(timing the writer), then measures images/s of
  (a) torchvision ImageFolder + DataLoader: RandomResizedCrop + flip + PILToTensor, and
  (b) pipeline.data's FFCV train loader: random-resized crop from the smallest serving beton
      (flip runs later, on the training device),
both yielding uint8 (B, 3, S, S) batches on the CPU. Each figure is the median of --repeats
passes over the folder after one warm-up pass (FFCV's JIT, the OS page cache, worker start-up), in
the steady state a long epoch reaches: each FFCV epoch is timed after its first batch, and the
DataLoader draws all passes as one epoch (bench.timing.steady_loader), since both otherwise spend a
set of a few batches per epoch mostly starting up (the DataLoader builds each batch in one worker).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.timing import steady_loader
from pipeline.data import BetonSet
from pipeline.logs import write_json
from tools import write_beton
from tools.synthetic import make_folder


def ffcv_images_per_s(loader, repeats: int) -> float:
    """Median images/s over `repeats` epochs after one warm-up epoch (FFCV's JIT, the page cache),
    each timed after its first batch (the epoch start, which ImageNet's ~1,250 batches amortize)."""
    rates = []
    for i in range(repeats + 1):
        it = iter(loader)
        next(it)
        n, t0 = 0, time.perf_counter()
        for images, _ in it:
            n += images.shape[0]
        if i:
            rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def torchvision_images_per_s(root: Path, size: int, batch: int, workers: int, repeats: int) -> float:
    """Median images/s over `repeats` windows after a warm-up (worker start-up, page cache), from one
    long epoch (bench.timing.steady_loader: the steady state). The workers start together and each
    builds a whole batch, so batches come in bursts of `workers`: a window is a whole number of
    bursts covering at least one pass over the folder, else it would catch a burst or a gap."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomResizedCrop(size, antialias=True),
                             transforms.RandomHorizontalFlip(), transforms.PILToTensor()])
    ds = datasets.ImageFolder(str(root / "train"), transform=tf)
    burst = max(workers, 1)
    window = burst * max(1, -(-(len(ds) // batch) // burst))
    it = iter(steady_loader(ds, batch, workers, burst + window * repeats))
    for _ in range(burst):
        next(it)
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        for _ in range(window):
            n += next(it)[0].shape[0]
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000, help="train images in the folder")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--sizes", default="64,128,224")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--raw-max-res", type=int, default=write_beton.DEFAULT_RAW_MAX_RES)
    p.add_argument("--work", type=Path, default=Path("data/bench_loader"))
    p.add_argument("--out", type=Path, default=Path("results/loader_bench.json"))
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]

    src = a.work / f"jpeg_{a.images}"
    if not (src / "train").is_dir():
        print(f"making {a.images} synthetic ImageNet-sized JPEGs in {src} ...")
        tmp = src.with_name(src.name + ".partial")
        make_folder(tmp, a.classes, a.images // a.classes, size=(500, 375), splits={"val": 1},
                    workers=a.workers)
        tmp.rename(src)
    betons = a.work / f"betons_{a.images}"
    for b in betons.glob("*.beton"):  # time a full write every run
        b.unlink()
    t0 = time.perf_counter()
    write_beton.run(src, betons, sizes, ["train"], a.workers, 90, a.raw_max_res, None, 0.001, 0)
    write_s = time.perf_counter() - t0
    n_train = BetonSet(betons).count("train")

    rows = []
    bs = BetonSet(betons)
    a.out.parent.mkdir(parents=True, exist_ok=True)

    def summary(complete: bool) -> dict:
        return {
            "benchmark": "loader", "images": n_train, "batch": a.batch, "workers": a.workers,
            "repeats": a.repeats, "writer_images_per_s": n_train * len(sizes) / write_s,
            "writer_seconds": write_s, "complete": complete, "rows": rows,
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "python": platform.python_version(), "torch": torch.__version__},
        }
    for size in sizes:
        ffcv_loader = bs.loader("train", batch_size=a.batch, output_size=size,
                                num_workers=a.workers, drop_last=False)
        if len(ffcv_loader) < 2:
            raise SystemExit(f"error: --batch {a.batch}: {n_train} images make {len(ffcv_loader)} batch per "
                             f"epoch; the timing needs at least 2")
        ffcv = ffcv_images_per_s(ffcv_loader, a.repeats)
        rows.append({"size": size, "beton": ffcv_loader.beton.path.name, "mode": ffcv_loader.beton.mode,
                     "ffcv_images_per_s": ffcv, "torchvision_images_per_s": None, "speedup": None})
        write_json(a.out, summary(False))  # a run stopped part way (time limit) keeps the figures taken
        try:  # the DataLoader's workers hand batches over in /dev/shm, small in some containers
            tv = torchvision_images_per_s(src, size, a.batch, a.workers, a.repeats)
            rows[-1].update(torchvision_images_per_s=tv, speedup=ffcv / tv)
        except (RuntimeError, OSError) as e:
            rows[-1]["torchvision_error"] = str(e).strip().splitlines()[-1][:300]
            print(f"warning: torchvision at {size} px failed: {rows[-1]['torchvision_error']}", file=sys.stderr)
        write_json(a.out, summary(False))

    result = summary(True)
    print(f"\nloader benchmark: {n_train} images of ~500x375, batch {a.batch}, "
          f"{a.workers} workers, median of {a.repeats}")
    print(f"{'size':>5} {'beton':<16} {'ffcv img/s':>11} {'torchvision img/s':>18} {'speedup':>8}")
    for r in rows:
        tv = r["torchvision_images_per_s"]
        print(f"{r['size']:>5} {r['beton'] + ' ' + r['mode']:<16} {r['ffcv_images_per_s']:>11.0f} "
              + (f"{tv:>18.0f} {r['speedup']:>7.1f}x" if tv else f"{'failed':>18} {'-':>8}"))
    print(f"writer: {result['writer_images_per_s']:.0f} images/s "
          f"({n_train} images x {len(sizes)} resolutions in {write_s:.1f} s)")
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
