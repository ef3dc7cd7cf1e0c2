"""`python -m pipeline.plan`: a config's curriculum as it would run on a measured GPU.

    python -m pipeline.plan --config s16_24h --throughput results/train_bench.json [--compare paper]

For each curriculum stage: resolution, images/s, hours and epochs of the dataset (ImageNet-1k's
1,281,167 training images unless --images says otherwise), then the totals. Images/s come from a
`python -m bench.train` JSON (its end-to-end figure per resolution, or --rate-key on_device);
a resolution it did not measure is scaled by the model's training FLOPs per image
(model.forward_flops) from the next larger measured one, kept between its measured neighbours'
rates (or from the nearest, outside them), and marked "~". With --compare, the same table for another
config (the authors' recipe: `--compare paper`) on the same measurements. The same schedule
rules as the trainer (pipeline/schedule.py) decide where stages start; the measured rates are for
the benchmark's batch size, so a config with another batch size is planned at those rates
(stated in the output).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline import config as C

IMAGENET_TRAIN = 1_281_167


@dataclass
class Stage:
    resolution: int
    images_per_s: float
    measured: bool
    hours: float
    epochs: float


class Rates:
    """Images/s per resolution: measured ones, others scaled by training FLOPs per image."""

    def __init__(self, measured: dict[int, float], flops_of, measured_here: bool = True):
        if not measured:
            raise ValueError("no measured resolutions")
        self.measured, self.flops_of = dict(measured), flops_of
        self.measured_here = measured_here  # False: the measured rates are another model's, scaled

    def __call__(self, res: int) -> tuple[float, bool]:
        """(images/s, measured) at `res`. Between two measured sizes: the larger one's rate scaled
        by FLOPs (the larger is the likelier to be compute-bound, as the scaling assumes), kept
        between the two measured rates (a low size is often loader-bound, where FLOPs say nothing).
        Outside them: the nearest one's, scaled by FLOPs."""
        m = self.measured
        if res in m:
            return m[res], self.measured_here
        below, above = [r for r in m if r < res], [r for r in m if r > res]
        ref = min(above) if above else max(below)
        rate = m[ref] * self.flops_of(ref) / self.flops_of(res)
        if below and above:
            rate = min(max(rate, m[min(above)]), m[max(below)])
        return rate, False


def plan(cfg: C.Config, rates: Rates, images: int = IMAGENET_TRAIN) -> list[Stage]:
    """The stages of `cfg` on `rates`, cut at its budget (or its epoch plan).

    Args:
        cfg: a resolved config.
        rates: images/s per resolution.
        images: training images per epoch.
    """
    cc, tc = cfg.curriculum, cfg.train
    budget_h = cfg.budget / 3600
    starts, out = list(cc.starts), []
    if tc.clock == "progress":  # stages are fractions of the budget (time) or of the epoch plan
        left_ep = tc.epochs if (budget_h and tc.epochs > 0) else float("inf")  # a budget's epoch cap
        for i, res in enumerate(cc.resolutions):
            share = (starts[i + 1] if i + 1 < len(starts) else 1.0) - starts[i]
            rate, ok = rates(res)
            ep = min(share * budget_h * 3600 * rate / images, left_ep) if budget_h else share * tc.epochs
            if ep <= 0:
                break  # the cap stops the run before this stage (as the trainer's epoch_cap does)
            out.append(Stage(res, rate, ok, ep * images / rate / 3600, ep))
            left_ep -= ep
        return out
    # epoch clock: stages are epoch ranges, cut where the budget (or the epoch cap) runs out
    left_h, end_ep = budget_h or float("inf"), tc.epochs or float("inf")
    for i, res in enumerate(cc.resolutions):
        rate, ok = rates(res)
        ep = min(starts[i + 1] if i + 1 < len(starts) else float("inf"), end_ep) - starts[i]
        if ep <= 0 or left_h <= 0:
            break
        h = min(ep * images / rate / 3600, left_h)
        out.append(Stage(res, rate, ok, h, rate * h * 3600 / images))
        left_h -= h
    return out


def table(name: str, stages: list[Stage]) -> str:
    lines = [f"{name}:", f"  {'stage':>5} {'res':>5} {'img/s':>10} {'epochs':>8} {'hours':>7}"]
    for i, s in enumerate(stages, 1):
        mark = " " if s.measured else "~"
        lines.append(f"  {i:>5} {s.resolution:>5} {mark}{s.images_per_s:>9,.0f} {s.epochs:>8.2f} {s.hours:>7.2f}")
    lines.append(f"  {'total':>5} {'':>5} {'':>10} {sum(s.epochs for s in stages):>8.2f} "
                 f"{sum(s.hours for s in stages):>7.2f}")
    return "\n".join(lines)


def _measured(path: str, key: str) -> dict:
    """bench.train's JSON at `path`, its `key` rates checked: finite and > 0 at one size at least."""
    try:
        bench = json.loads(Path(path).read_text())
        bench["rates"] = {int(r): float(v[key]) for r, v in bench["results"].items()}
    except FileNotFoundError:
        raise C.ConfigError(f"--throughput: {path} not found (write it with python -m bench.train)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise C.ConfigError(f"--throughput: {path}: expected bench.train's JSON with results.<res>.{key} "
                            f"({type(e).__name__}: {e})") from None
    if key == "loader" and bench.get("loader_prefetched"):
        raise C.ConfigError(f"--throughput: {path}: its loader figures timed batches decoded ahead "
                            f"(windows of {bench.get('window_steps')} steps, under 4x batches_ahead), not a rate")
    bad = {r: v for r, v in bench["rates"].items() if not (math.isfinite(v) and v > 0)}
    if bad or not bench["rates"]:
        raise C.ConfigError(f"--throughput: {path}: expected images/s > 0 in results.<res>.{key}, "
                            f"got {bad or 'no results'}")
    return bench


def rates_for(cfg: C.Config, bench: dict, key: str = "end_to_end") -> tuple[Rates, str]:
    """Rates of `cfg`'s model from the benchmark's, and a note when the benchmark ran another model
    (its rates then scaled by the two models' FLOPs per image: marked unmeasured). The loader's rates
    do not depend on the model: unmeasured sizes are scaled by pixels per image instead."""
    if key == "loader":
        return Rates(bench["rates"], lambda res: res * res), " (loader rates: unmeasured sizes scaled by pixels)"
    import timm

    import model  # noqa: F401  (registers the vitday variants)

    def flops_fn(name: str):
        net = timm.create_model(name, num_classes=1000, img_size=cfg.curriculum.resolutions[-1],
                                device="meta")  # shapes only: FLOPs need no weights
        return functools.lru_cache(maxsize=None)(lambda res: model.forward_flops(net, res))

    mine, measured_on = flops_fn(cfg.model.name), bench.get("model") or cfg.model.name
    if measured_on == cfg.model.name:
        return Rates(bench["rates"], mine), ""
    try:
        theirs = flops_fn(measured_on)
        scaled = {r: v * theirs(r) / mine(r) for r, v in bench["rates"].items()}
    except (RuntimeError, ValueError) as e:  # timm's unknown model, a size off the patch grid
        raise C.ConfigError(f"--throughput: rates of {measured_on} cannot be scaled to {cfg.model.name}: "
                            f"{str(e).splitlines()[0]}") from None
    return Rates(scaled, mine, measured_here=False), f" (rates of {measured_on} scaled by FLOPs to {cfg.model.name})"


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.plan", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="s16_24h", help="config to plan (name in configs/ or .py path)")
    p.add_argument("--throughput", default="results/train_bench.json", help="python -m bench.train JSON")
    p.add_argument("--rate-key", default="end_to_end", choices=["end_to_end", "on_device", "loader"],
                   help="which measured images/s to plan with")
    p.add_argument("--compare", default="paper", help="a second config on the same rates ('' for none)")
    p.add_argument("--images", type=_positive_int, default=IMAGENET_TRAIN, help="training images per epoch")
    args = p.parse_args(argv)
    try:
        cfgs = [(n, C.validate(C.load_config(n, option=opt)))
                for n, opt in [(args.config, "--config"), (args.compare, "--compare")] if n]
        bench = _measured(args.throughput, args.rate_key)
        rates = [rates_for(cfg, bench, args.rate_key) for _, cfg in cfgs]
    except C.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"rates: {args.rate_key} images/s of {args.throughput} (device {bench.get('device')}, "
          f"{bench.get('model')}, batch {bench.get('batch_size')}); ~ = scaled by FLOPs from the next larger "
          f"measured resolution, kept between the measured neighbours' rates; epochs of {args.images:,} images")
    if bench.get("complete") is False:  # a time limit stopped it: the sizes missing are scaled, not measured
        print(f"warning: {args.throughput} is partial (measured at {', '.join(map(str, sorted(bench['rates'])))} px "
              f"only)", file=sys.stderr)
    for (name, cfg), (r, model_note) in zip(cfgs, rates):
        stages = plan(cfg, r, args.images)
        note = model_note + ("" if cfg.train.batch_size == bench.get("batch_size") else
                             f" (planned at the rates of batch {bench.get('batch_size')}; "
                             f"it runs at batch {cfg.train.batch_size})")
        if cfg.budget and cfg.train.epochs > 0 and sum(st.epochs for st in stages) >= cfg.train.epochs - 1e-9:
            note += f" (cut at train.epochs={cfg.train.epochs:g}, before its budget is spent)"
        print(table(f"{name}{note}", stages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
