"""Trainer throughput per resolution: end to end, with data already on the device, and the loader alone.

    python -m bench.train --config demo --resolutions 16,24,32 --steps 20 --repeats 3
    python -m bench.train --config s16_24h --data.dir=data/imagenet/betons --resolutions 64,128,224

For each resolution, images/s of
- end-to-end: the trainer's step (pipeline.train.train_step) fed by the real FFCV loader and the
  batched augmentation, as in a run;
- on-device: the same augmentation + step on one batch already on the device (the model-only
  bound: no decoding, no transfer);
- loader: iterating the loader alone (decode + crop + transfer).
The loader's share is visible as the gap between end-to-end and on-device. Each number is the
median over --repeats timed windows of --steps steps (end-to-end and loader: at most the epoch's
batches but one), after --warmup steps that absorb torch.compile and FFCV's JIT. An end-to-end or
loader window is one epoch: its first batch untimed (FFCV allocates the epoch's buffers and waits
for the first decode: reported apart as epoch_start_s, seconds beyond an ordinary batch), then the
window's batches, then the epoch is left. So a small benchmark set, a few batches per epoch, is not
charged an epoch start every few steps where ImageNet has one every ~1,250. Config overrides (--section.key=value) apply as for the trainer.
Prints a table and writes JSON (default results/train_bench.json) with device and versions.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from pipeline import config as C
from pipeline import train as T
from pipeline.logs import environment, write_json


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(cfg: C.Config, resolutions: list[int], steps: int, warmup: int, repeats: int,
          out_path: Path | None = None) -> dict:
    """Measure images/s (median of `repeats` windows of `steps` steps) at each resolution.

    With `out_path`, the JSON is written after each resolution (`complete` false until the last), so a
    run stopped at its time limit keeps the resolutions it finished.
    """
    import model as vit
    from pipeline.data import BetonSet

    device = T.pick_device(cfg)
    rt = T.Runtime.from_config(cfg, device)
    torch.manual_seed(cfg.train.seed)
    bs = BetonSet(cfg.data.dir)
    loader = T.train_loader_for(cfg, bs, cfg.train.batch_size, resolutions[0],
                                device if device.type == "cuda" else None)
    net, opt, params, aug = T.build_training(cfg, bs.num_classes, cfg.curriculum.resolutions[-1], device, rt,
                                             cfg.train.seed)  # the final size, as the trainer builds it
    fwd = T.compiled_forward(net, rt)
    n_batches = len(loader)

    if n_batches < 2:
        raise C.ConfigError(f"train.batch_size: {cfg.train.batch_size} leaves {n_batches} batch per epoch of "
                            f"{cfg.data.dir}; the timed windows need at least 2")
    window = min(steps, n_batches - 1)
    # FFCV decodes batches_ahead batches before they are asked for, so a window starts with up to that
    # many already decoded: the loader figure overstates its rate by up to window / (window - ahead);
    # below 4x batches_ahead (over 1.33x) it is marked (a review: 2.3 M img/s on one thread at 2 steps)
    prefetched = window < 4 * cfg.data.batches_ahead
    if prefetched:
        print(f"warning: windows of {window} steps < 4 x data.batches_ahead={cfg.data.batches_ahead}: the "
              f"loader figure is mostly batches decoded ahead, not a rate (use a set with more batches per "
              f"epoch, or more --steps)", file=sys.stderr)

    def to_device(batch):
        images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def step(images, labels):
        x, y = aug.train(images, labels, strength=1.0)
        return T.train_step(fwd, opt, params, x, y, rt, cfg.optim.grad_clip)

    def in_epoch(consume, n: int) -> tuple[float, float]:
        """One epoch at the loader's current size: its first batch through `consume` alone (the epoch
        start: FFCV allocates the epoch's batch buffers, pinned and on the device, and waits for its first
        decode), then n more batches timed together inside the epoch, which is then left. Returns
        (images/s of those n, seconds of the first)."""
        it = T.batches(loader, rt.threads)
        try:
            _sync(device)
            t = time.perf_counter()
            consume(to_device(next(it)))
            _sync(device)
            first = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(n):
                consume(to_device(next(it)))
            _sync(device)
            return n * cfg.train.batch_size / (time.perf_counter() - t), first
        finally:
            it.close()

    def timed(fn, n) -> float:
        _sync(device)
        t = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        return n * cfg.train.batch_size / (time.perf_counter() - t)

    def epoch_start(windows) -> float:
        """Seconds an epoch's first batch costs beyond a batch inside the epoch (median)."""
        return statistics.median(first - cfg.train.batch_size / rate for rate, first in windows)

    env = environment(device)
    results = {}

    def summary(complete: bool) -> dict:
        return {"device": env.get("gpu", {}).get("name") or str(device), "model": cfg.model.name,
                "batch_size": cfg.train.batch_size, "precision": str(rt.amp_dtype or "fp32"), "compile": rt.compile,
                "torch_threads": rt.threads or torch.get_num_threads(), "data_workers": cfg.data.num_workers,
                "batches_ahead": cfg.data.batches_ahead,
                "steps": steps, "window_steps": window, "warmup": warmup, "repeats": repeats, "data_dir": cfg.data.dir,
                # The end-to-end and loader windows lie inside one epoch each (after its first batch), so an
                # epoch start (epoch_start_s) weighs as on ImageNet's ~1,250 batches, not this set's few.
                "batches_per_epoch": n_batches, "loader_prefetched": prefetched,
                "complete": complete, "results": results, "env": env}

    for res in resolutions:
        loader.set_output_size(res)
        in_epoch(lambda b: step(*b), min(warmup, window))  # compile at this size, FFCV JIT, allocator
        e2e = [in_epoch(lambda b: step(*b), window) for _ in range(repeats)]
        first = T.batches(loader, rt.threads)  # torch's thread count back after FFCV's epoch start
        images, labels = (t.clone() for t in to_device(next(first)))
        first.close()
        dev = [timed(lambda: step(images, labels), steps) for _ in range(repeats)]
        load = [in_epoch(lambda b: None, window) for _ in range(repeats)]
        e2e_rates, load_rates = [r for r, _ in e2e], [r for r, _ in load]
        results[str(res)] = {
            "end_to_end": statistics.median(e2e_rates), "on_device": statistics.median(dev),
            "loader": statistics.median(load_rates),
            "epoch_start_s": {"end_to_end": epoch_start(e2e), "loader": epoch_start(load)},
            "samples": {"end_to_end": e2e_rates, "on_device": dev, "loader": load_rates},
            "train_gflop_per_image": 3 * vit.forward_flops(net, res) / 1e9,
        }
        if out_path is not None:
            write_json(out_path, summary(False))
        r = results[str(res)]
        print(f"{res:>5} px  end-to-end {r['end_to_end']:9.0f}  on-device {r['on_device']:9.0f}  "
              f"loader {r['loader']:9.0f} img/s; epoch start {r['epoch_start_s']['end_to_end']:+.3f} s",
              file=sys.stderr, flush=True)
    return summary(True)


def print_table(out: dict) -> None:
    print(f"device {out['device']}, {out['model']}, batch {out['batch_size']}, {out['precision']}, "
          f"compile {out['compile']}; median of {out['repeats']} windows of {out['window_steps']} steps "
          f"(on-device {out['steps']}) in images/s; epoch start: seconds beyond a batch")
    print(f"{'res':>5} {'end-to-end':>11} {'on-device':>10} {'loader':>10} {'e2e/on-dev':>11} {'GFLOP/img':>10} "
          f"{'epoch start':>12}")
    for res, r in out["results"].items():
        print(f"{res:>5} {r['end_to_end']:11.0f} {r['on_device']:10.0f} {r['loader']:10.0f} "
              f"{r['end_to_end'] / r['on_device']:11.2f} {r['train_gflop_per_image']:10.3f} "
              f"{r['epoch_start_s']['end_to_end']:+11.3f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.train", description=__doc__.splitlines()[0],
        epilog="Every other argument is the trainer's: --config NAME and --section.key=value overrides "
               "(python -m pipeline.train --help lists them), e.g. --config s16_24h --data.dir=BETONS.")
    p.add_argument("--resolutions", default=None, help="comma-separated sizes (default: the curriculum's)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed window (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per resolution first (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="timed windows per number, median reported (default 3)")
    p.add_argument("--out", default="results/train_bench.json", help="JSON output (default results/train_bench.json)")
    args, rest = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = C.parse_args(rest).cfg
    except C.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.resolutions.split(",")] if args.resolutions else \
        sorted(set(cfg.curriculum.resolutions))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out = bench(cfg, sizes, args.steps, args.warmup, args.repeats, out_path=Path(args.out))
    print_table(out)
    write_json(Path(args.out), out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
