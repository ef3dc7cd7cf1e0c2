"""The demo on the embedded default dataset (what `make demo` runs).

    python -m tools.demo [--out data/demo]

1. Debian's Fashion-MNIST -> OUT/fashion-mnist/ (ImageNet-style folder of JPEGs)
2. -> OUT/betons/ (train/val betons at 16, 24, 32 px, raw pixels) and their summary
3. -> OUT/runs/<time>/: `python -m pipeline.train --config demo` (10 minutes of training on CPU)
4. -> OUT/runs/<time>/fits.arrow and fit_plots/: BNSL and M1-M4 fit to the run's error curve
   (error = 1 - top-1 against images seen), fit on the first 70 % of the evaluations and
   scored on the last 30 %.
Steps 1-2 skip what is already complete; every run of the demo trains a new run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tools import fashion_mnist, write_beton

DEMO_RESOLUTIONS = [16, 24, 32]


def build_betons(out: Path, workers: int) -> Path:
    folder, betons = out / "fashion-mnist", out / "betons"
    if fashion_mnist.main([str(folder)]) != 0:
        raise SystemExit(1)
    print(f"\n== betons: {folder} -> {betons}")
    try:
        write_beton.run(folder, betons, DEMO_RESOLUTIONS, ["train", "val"], workers,
                        write_beton.DEFAULT_QUALITY, raw_max_res=max(DEMO_RESOLUTIONS),
                        max_per_class=None, max_bad_fraction=0.001, seed=0)
    except write_beton.WriteError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)
    return betons


def summarize_betons(betons: Path) -> None:
    m = json.loads((betons / "manifest.json").read_text())
    print(f"\n{betons}/manifest.json: {m['num_classes']} classes ({', '.join(m['classes'])})")
    for split, info in m["splits"].items():
        print(f"  {split}: {info['count']} images, {len(info['skipped'])} skipped")
    total = sum(b["bytes"] for b in m["betons"])
    print(f"  {len(m['betons'])} betons, {total / 2**20:.0f} MiB in all")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/demo"))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--skip-train", action="store_true", help="stop after the betons")
    a = p.parse_args(argv)
    print(f"== Fashion-MNIST -> {a.out / 'fashion-mnist'}")
    betons = build_betons(a.out, a.workers)
    summarize_betons(betons)
    if a.skip_train:
        return 0
    run = a.out / "runs" / time.strftime("%Y%m%d-%H%M%S")
    steps = [
        ("train", [sys.executable, "-m", "pipeline.train", "--config", "demo",
                   "--run-dir", str(run), f"--data.dir={betons}"]),
        ("fit", [sys.executable, "-m", "fitting", "runs", str(run), "--x", "images_seen",
                 "--y", "error", "--holdout-frac", "0.3", "--out", str(run / "fits.arrow"),
                 "--plots", str(run / "fit_plots")]),
    ]
    for name, cmd in steps:
        print(f"\n== {name}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"error: demo step '{name}' failed (command above)", file=sys.stderr)
            return 1
    print(f"\ndemo done: {run} (summary.json, curves.png, fits.arrow, fit_plots/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
