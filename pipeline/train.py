"""`python -m pipeline.train`: a curriculum ViT trainer on a wall-clock budget or an epoch plan.

    python -m pipeline.train --config demo --run-dir runs/demo [--section.key=value ...]

Writes DIR/config.json, env.json, steps.arrow, evals.arrow, summary.json and curves.png.

Rules of the clock (shared/STYLE.md rule 4; keys in pipeline/config.py):
- Progress in [0, 1] is the one clock. With a budget (`train.budget_s` or `budget_h`) it is
  *training* time / budget: time spent in evaluation (and its host sync) is not counted, so a
  run's LR and curriculum do not depend on how often it evaluates. Training time includes
  everything else: data waits, augmentation, torch.compile of each new resolution. The run stops
  at the first step that ends with training time >= budget, so it overshoots by at most one step
  (plus the GPU queue, synced at the end): well within 1 % of any budget longer than a minute.
  The clock starts when the first training batch arrives: building the model and loaders and
  FFCV's JIT of its first batch are setup, not training.
  Without a budget, progress = steps / planned steps (`train.epochs` x batches per epoch), and
  the run is deterministic given the seed.
- LR, curriculum stage (resolution) and augmentation strength are pure functions of the clock
  position (pipeline/schedule.py), in the unit `train.clock` names (progress or epochs).
- A curriculum stage change takes effect at the next step with `curriculum.adjust_at=step`:
  the epoch in progress ends early and a new epoch starts at the new size (FFCV changes the
  output size only between epochs). With `adjust_at=epoch` it waits for the epoch boundary.
  Epoch counts are steps / batches per epoch either way.
- Evaluation runs at the final curriculum resolution (or `train.eval_resolution`), every
  `train.eval_every` clock units and always at the end.

Layout: setup (device, data, model, optimizer) -> one State holding every counter of the run
(what a checkpoint will save) -> the loop (train steps; logging, the only host sync, every
`train.log_every` steps) -> final evaluation and summary.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline import config as C
from pipeline import schedule as S
from pipeline.logs import EVALS_SCHEMA, STEPS_SCHEMA, ArrowLog, environment, write_json

RUN_FILES = ("config.json", "steps.arrow", "evals.arrow", "summary.json")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped, its logs are kept."""


class RunDirError(RuntimeError):
    """The run directory already holds a run."""


# ---------------------------------------------------------------------------- setup

def pick_device(cfg: C.Config) -> torch.device:
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise C.ConfigError("train.device: cuda requested but torch.cuda.is_available() is False")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)


def build_model(cfg: C.Config, num_classes: int, img_size: int) -> nn.Module:
    """The timm model named by `model.name` (vitday variants are registered by `import model`).

    Args:
        cfg: the run's config.
        num_classes: classes of the beton set.
        img_size: grid the one position embedding is stored at (resampled for other sizes).
    """
    import timm

    import model  # noqa: F401  (registers the vitday variants)
    try:
        return timm.create_model(cfg.model.name, num_classes=num_classes, img_size=img_size,
                                 drop_path_rate=cfg.model.drop_path)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise C.ConfigError(f"model.name: unknown model {cfg.model.name!r} "
                                f"(vitday variants: {', '.join(model.VARIANTS)})") from None
        raise


def build_optimizer(net: nn.Module, cfg: C.Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW over model.param_groups (no decay on norms, biases, pos_embed, cls_token); fused on CUDA."""
    import model
    groups = model.param_groups(net, cfg.optim.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                             fused=device.type == "cuda")


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy against soft targets (B, K) (mixup/cutmix, label smoothing); fp32."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def _on(setting: str, device: torch.device) -> bool:
    return setting == "on" or (setting == "auto" and device.type == "cuda")


@dataclass
class Runtime:
    """How steps run on this device (not part of the config's meaning, only its speed)."""
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None = fp32
    compile: bool
    channels_last: bool
    threads: int = 0  # torch CPU threads to restore after FFCV changes them (cpu device only)

    @classmethod
    def from_config(cls, cfg: C.Config, device: torch.device) -> "Runtime":
        p = cfg.train.precision
        bf16 = p == "bf16" or (p == "auto" and device.type == "cuda")
        threads = (cfg.train.threads or os.cpu_count() or 1) if device.type == "cpu" else 0
        return cls(device, torch.bfloat16 if bf16 else None, _on(cfg.train.compile, device),
                   _on(cfg.train.channels_last, device), threads)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def compiled_forward(net: nn.Module, rt: Runtime) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's forward, torch.compiled with static shapes when `rt.compile`.

    dynamic=False: each new input shape (a new curriculum resolution, the eval size) compiles once
    into its own static graph, kept in dynamo's cache for the rest of the run; no step recompiles.
    """
    if not rt.compile:
        return net
    import torch._dynamo.config as dc
    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
        if hasattr(dc, name):
            setattr(dc, name, max(getattr(dc, name), 64))
    return torch.compile(net, dynamic=False)


def train_step(fwd: Callable, opt: torch.optim.Optimizer, params: list[torch.Tensor], x: torch.Tensor,
               y: torch.Tensor, rt: Runtime, grad_clip: float) -> torch.Tensor:
    """One optimizer step on an augmented batch; returns the loss as a device tensor (no sync)."""
    with rt.autocast():
        logits = fwd(rt.prepare(x))
    loss = soft_cross_entropy(logits, y)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)  # stays on the device: no sync
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def batches(loader, threads: int = 0):
    """Iterate a loader; on a cpu device put torch's thread count back to `threads` after the
    epoch starts (FFCV's Loader.__iter__ sets it to the loader's num_workers, process-wide)."""
    it = iter(loader)
    try:
        first = next(it)
    except StopIteration:
        return
    if threads:
        torch.set_num_threads(threads)
    yield first
    yield from it


@torch.no_grad()
def evaluate(net: nn.Module, fwd: Callable, loader, aug, rt: Runtime) -> dict[str, float]:
    """Top-1, top-5 (fractions) and mean cross entropy on a loader (one sync at the end).

    Args:
        net: the model (eager; used for the last partial batch so it needs no extra compile).
        fwd: the compiled forward of net (or net).
        loader: val BetonLoader at the evaluation resolution.
        aug: BatchAugment (its eval() normalizes).
        rt: Runtime.
    """
    was_training = net.training
    net.eval()
    dev = rt.device
    top1 = torch.zeros((), device=dev, dtype=torch.float64)
    top5 = torch.zeros_like(top1)
    loss = torch.zeros_like(top1)
    n = 0
    for images, labels in batches(loader, rt.threads):
        images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        x = aug.eval(images)
        f = fwd if x.shape[0] == loader.batch_size else net
        with rt.autocast():
            logits = f(rt.prepare(x))
        logits = logits.float()
        loss += F.cross_entropy(logits, labels, reduction="sum").double()
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices == labels.view(-1, 1)
        top1 += hit[:, 0].sum()
        top5 += hit.any(1).sum()
        n += labels.shape[0]
    net.train(was_training)
    n = max(n, 1)
    return {"top1": top1.item() / n, "top5": top5.item() / n, "loss": loss.item() / n, "images": n}


# ---------------------------------------------------------------------------- state

class Clock:
    """Training time: wall seconds with the clock running (stopped during evaluation)."""

    def __init__(self, elapsed: float = 0.0):
        self.elapsed, self._since = elapsed, None

    def start(self) -> None:
        self._since = time.perf_counter()

    def stop(self) -> None:
        if self._since is not None:
            self.elapsed += time.perf_counter() - self._since
            self._since = None

    @property
    def running(self) -> bool:
        return self._since is not None

    def read(self) -> float:
        return self.elapsed + (time.perf_counter() - self._since if self._since is not None else 0.0)


@dataclass
class State:
    """Every counter of a run: what a checkpoint saves besides model, optimizer and augment RNG."""
    step: int = 0
    images_seen: int = 0
    flops_seen: float = 0.0
    train_s: float = 0.0  # training time used (the budget clock), restored into Clock on resume
    eval_s: float = 0.0
    wall_offset_s: float = 0.0  # wall time of earlier sessions of this run
    next_eval: float = 0.0  # clock position of the next periodic evaluation
    best_top1: float = 0.0
    best_top5: float = 0.0
    by_resolution: dict = field(default_factory=dict)  # str(res) -> {"images", "train_s", "rates"}

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "State":
        return cls(**d)


def check_run_dir(run_dir: Path) -> None:
    """Refuse a directory that already holds a run (never overwrite logs)."""
    found = [f for f in RUN_FILES if (run_dir / f).exists()]
    if found:
        raise RunDirError(f"{run_dir} already holds a run ({', '.join(found)}); "
                          f"choose a new --run-dir or remove it")


def _fmt_s(s: float) -> str:
    s = max(int(s), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------------------- the run

def train(cfg: C.Config, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Train per `cfg`, writing logs to `run_dir`; returns the summary dict.

    Raises NonFiniteLossError (logs kept) if the loss becomes NaN or infinite.
    """
    from pipeline.augment import BatchAugment
    from pipeline.data import BetonSet

    import model as vit

    C.validate(cfg)
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    t_wall0 = time.perf_counter()
    tc, oc, cc = cfg.train, cfg.optim, cfg.curriculum
    device = pick_device(cfg)
    rt = Runtime.from_config(cfg, device)
    torch.manual_seed(tc.seed)

    # -- data: one train loader whose output size follows the curriculum, one val loader
    bset = BetonSet(cfg.data.dir)
    loader_device = device if device.type == "cuda" else None
    final_res = cc.resolutions[-1]
    eval_res = tc.eval_resolution or final_res
    train_loader = bset.loader("train", batch_size=tc.batch_size, output_size=cc.resolutions[0],
                               num_workers=cfg.data.num_workers, device=loader_device, seed=tc.seed,
                               scale=(cfg.data.crop_scale_min, cfg.data.crop_scale_max))
    val_loader = bset.loader("val", batch_size=cfg.data.val_batch_size or tc.batch_size,
                             output_size=eval_res, num_workers=cfg.data.num_workers, device=loader_device)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch < 1:
        raise C.ConfigError(f"train.batch_size: {tc.batch_size} exceeds the {bset.count('train')} training "
                            f"images of {cfg.data.dir}")

    # -- model, optimizer, augmentation
    net = build_model(cfg, bset.num_classes, img_size=final_res).to(device)
    if rt.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    fwd = compiled_forward(net, rt)
    opt = build_optimizer(net, cfg, device)
    params = [p for p in net.parameters() if p.requires_grad]
    aug = BatchAugment(cfg.augment, num_classes=bset.num_classes, device=device, seed=tc.seed)
    flops_per_image = {}  # training FLOPs per image at each resolution (3 x forward)

    def train_flops(res: int) -> int:
        if res not in flops_per_image:
            flops_per_image[res] = 3 * vit.forward_flops(net, res)
        return flops_per_image[res]

    # -- the plan: budget or epochs; clock positions
    budget = cfg.budget
    total_steps = None if budget else max(1, round(tc.epochs * steps_per_epoch))
    epoch_cap = round(tc.epochs * steps_per_epoch) if (budget and tc.epochs > 0) else None
    end = C.run_end(cfg)
    decay_end = oc.decay_end or end
    ramp_end = cc.strength_ramp_end or end

    def progress_of(step: int, train_s: float) -> float:
        return S.progress(step=step, total_steps=total_steps, train_s=train_s, budget_s=budget)

    def pos_of(step: int, train_s: float) -> float:
        return S.position(tc.clock, progress=progress_of(step, train_s), epoch=step / steps_per_epoch)

    def lr_of(pos: float) -> float:
        return S.lr_at(pos, peak=oc.lr, warmup=oc.warmup, decay=oc.decay, decay_end=decay_end,
                       final_ratio=oc.final_lr_ratio)

    def strength_of(pos: float) -> float:
        return S.strength_at(pos, start=cc.strength_start, end=cc.strength_end, ramp_end=ramp_end)

    # -- run files
    run_dir.mkdir(parents=True, exist_ok=True)
    C.save(cfg, run_dir / "config.json")
    env = environment(device)
    env.update(params=vit.count_params(net), train_flops_per_image={str(r): train_flops(r) for r in
                                                                     sorted(set(cc.resolutions))})
    write_json(run_dir / "env.json", env)
    steps_log = ArrowLog(run_dir / "steps.arrow", STEPS_SCHEMA)
    evals_log = ArrowLog(run_dir / "evals.arrow", EVALS_SCHEMA, flush_rows=1)

    st = State(next_eval=tc.eval_every)
    clock = Clock(st.train_s)
    bar = None
    if tc.progress_bar:
        from tqdm import tqdm
        bar = tqdm(total=1000, bar_format="{percentage:3.0f}%|{bar}| {postfix}", dynamic_ncols=True,
                   file=sys.stderr)
    stop_reason, error = None, None
    res = S.resolution_at(pos_of(0, 0.0), cc.starts, cc.resolutions)
    last_lr = lr_of(0.0)

    def wall() -> float:
        return st.wall_offset_s + time.perf_counter() - t_wall0

    def run_eval() -> dict[str, float]:
        """Evaluate with the training clock stopped; log a row to evals.arrow."""
        was_running = clock.running
        clock.stop()
        t = time.perf_counter()
        m = evaluate(net, fwd, val_loader, aug, rt)
        st.eval_s += time.perf_counter() - t
        st.best_top1, st.best_top5 = max(st.best_top1, m["top1"]), max(st.best_top5, m["top5"])
        evals_log.append(dict(step=st.step, wall_s=wall(), images_seen=st.images_seen, flops_seen=st.flops_seen,
                              resolution=eval_res, top1=m["top1"], top5=m["top5"], loss=m["loss"]))
        if bar is not None:
            bar.write(f"eval step {st.step}: top-1 {m['top1']:.4f} top-5 {m['top5']:.4f} loss {m['loss']:.4f}")
        if was_running:
            clock.start()
        return m

    # interval accumulators (device loss sum; host counters)
    loss_sum = torch.zeros((), device=device)
    iv = {"steps": 0, "images": 0, "t0": 0.0}

    def log_interval(lr: float) -> None:
        """Flush the interval: one host sync to read the loss; raise on a non-finite loss."""
        if iv["steps"] == 0:
            return
        loss = (loss_sum / iv["steps"]).item()  # the host sync of the loop
        now = clock.read()
        dt = max(now - iv["t0"], 1e-9)
        rate = iv["images"] / dt
        st.train_s = now
        r = st.by_resolution.setdefault(str(res), {"images": 0, "train_s": 0.0, "rates": []})
        r["images"] += iv["images"]
        r["train_s"] += dt
        r["rates"].append(rate)
        steps_log.append(dict(step=st.step, epoch=st.step / steps_per_epoch, wall_s=wall(),
                              images_seen=st.images_seen, flops_seen=st.flops_seen, resolution=res,
                              lr=lr, loss=loss, images_per_s=rate))
        loss_sum.zero_()
        iv.update(steps=0, images=0, t0=now)
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss} at step {st.step} (epoch {st.step / steps_per_epoch:.2f}, resolution {res}, "
                f"lr {lr:.3g}): run stopped; logs kept in {run_dir}")
        if bar is not None:
            p = progress_of(st.step, now)
            left = budget - now if budget else (now / p * (1 - p) if p > 0 else float("nan"))
            bar.n = min(int(p * 1000), 1000)
            bar.set_postfix_str(f"{res}px loss {loss:.3f} {rate:.0f} img/s lr {lr:.2e} "
                                f"left {_fmt_s(left) if math.isfinite(left) else '?'}", refresh=True)

    # ------------------------------------------------------------------ the loop
    try:
        while stop_reason is None:
            # one epoch (or part of one) at the planned resolution
            planned = S.resolution_at(pos_of(st.step, clock.read()), cc.starts, cc.resolutions)
            if planned != res:
                log_interval(last_lr)  # intervals never straddle two resolutions
                res = planned
            train_loader.set_output_size(res)
            flops = train_flops(res)
            it = batches(train_loader, rt.threads)
            for images, labels in it:
                if not clock.running and st.step == 0:
                    clock.start()  # setup (model, loaders, FFCV's JIT of the first batch) is not training
                    iv["t0"] = clock.read()
                pos = pos_of(st.step, clock.read())
                last_lr = lr_of(pos)
                for g in opt.param_groups:
                    g["lr"] = last_lr
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                x, y = aug.train(images, labels, strength=strength_of(pos))
                loss_sum += train_step(fwd, opt, params, x, y, rt, oc.grad_clip)
                st.step += 1
                st.images_seen += x.shape[0]
                st.flops_seen += float(flops) * x.shape[0]
                iv["steps"] += 1
                iv["images"] += x.shape[0]

                # what now: stop, log, evaluate, change stage (host-side arithmetic only)
                t = clock.read()
                pos = pos_of(st.step, t)
                if budget and t >= budget:
                    stop_reason = "budget"
                elif total_steps is not None and st.step >= total_steps:
                    stop_reason = "epochs"
                elif epoch_cap is not None and st.step >= epoch_cap:
                    stop_reason = "epochs"
                elif tc.max_steps and st.step >= tc.max_steps:
                    stop_reason = "max_steps"
                if stop_reason or st.step % tc.log_every == 0:
                    log_interval(last_lr)
                if stop_reason:
                    break
                if tc.eval_every > 0 and pos >= st.next_eval:
                    while st.next_eval <= pos:
                        st.next_eval += tc.eval_every
                    log_interval(last_lr)
                    run_eval()
                    iv["t0"] = clock.read()
                if cc.adjust_at == "step" and S.resolution_at(pos, cc.starts, cc.resolutions) != res:
                    break  # end the epoch early: the next one starts at the new size
            it.close()  # releases FFCV's epoch iterator when the epoch ended early
        if device.type == "cuda":
            torch.cuda.synchronize()
        clock.stop()
        st.train_s = clock.elapsed
        final = run_eval()
    except BaseException as e:
        error = e
        clock.stop()
        st.train_s = clock.elapsed
        raise
    finally:
        if bar is not None:
            bar.close()
        steps_log.close()
        evals_log.close()
        summary = _summary(cfg, st, budget, stop_reason, error, eval_res, wall(), env,
                           final if error is None else None, steps_per_epoch, last_lr)
        write_json(run_dir / "summary.json", summary)
        if tc.plot:
            try:
                from pipeline.plots import plot_run
                plot_run(run_dir)
            except Exception as e:  # a plot must never hide the run's own outcome
                print(f"warning: curves.png not written: {e}", file=sys.stderr)
    return summary


def _summary(cfg, st: State, budget, stop_reason, error, eval_res, wall_s, env, final, steps_per_epoch,
             last_lr) -> dict[str, Any]:
    import statistics
    by_res = {}
    for r, v in sorted(st.by_resolution.items(), key=lambda kv: int(kv[0])):
        by_res[r] = {"images": v["images"], "train_s": round(v["train_s"], 3),
                     "images_per_s": v["images"] / v["train_s"] if v["train_s"] > 0 else None,
                     # the median interval excludes the compile of the first one
                     "median_images_per_s": statistics.median(v["rates"]) if v["rates"] else None}
    return {
        "status": "ok" if error is None else f"failed: {type(error).__name__}: {error}",
        "stop_reason": stop_reason if error is None else "error",
        "final_top1": final["top1"] if final else None,
        "final_top5": final["top5"] if final else None,
        "final_val_loss": final["loss"] if final else None,
        "best_top1": st.best_top1, "best_top5": st.best_top5,
        "eval_resolution": eval_res,
        "wall_s": wall_s, "train_s": st.train_s, "eval_s": st.eval_s, "budget_s": budget or None,
        "steps": st.step, "epochs": st.step / steps_per_epoch, "images_seen": st.images_seen,
        "flops_seen": st.flops_seen, "final_lr": last_lr,
        "params": env.get("params"), "train_flops_per_image": env.get("train_flops_per_image"),
        "throughput_by_resolution": by_res,
        "device": env.get("gpu", {}).get("name") or env.get("device"),
    }


def print_summary(s: dict[str, Any]) -> None:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"
    print(f"\n{s['status']} ({s['stop_reason']}): {s['steps']} steps, {s['epochs']:.2f} epochs, "
          f"{s['images_seen']:,} images, {s['flops_seen']:.3g} FLOPs")
    print(f"time: train {s['train_s']:.1f} s, eval {s['eval_s']:.1f} s, wall {s['wall_s']:.1f} s"
          + (f" (budget {s['budget_s']:.0f} s)" if s["budget_s"] else ""))
    print(f"val @ {s['eval_resolution']} px: top-1 {pct(s['final_top1'])}, top-5 {pct(s['final_top5'])} "
          f"(best top-1 {pct(s['best_top1'])})")
    for r, v in s["throughput_by_resolution"].items():
        print(f"  {r:>4} px: {v['images']:>10,} images, {v['train_s']:8.1f} s, "
              f"{v['median_images_per_s'] or 0:9.0f} img/s (median)")


def _terminate(signum, frame):
    """SIGTERM (a scheduler, `kill`) ends the run like Ctrl-C: logs flushed, summary written."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = C.parse_args(argv)
        if args.help:
            print(C.help_text(args.cfg, args.config_name))
            return 0
        name = Path(args.config_name).stem if args.config_name else "default"
        run_dir = Path(args.run_dir or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        check_run_dir(run_dir)
        print(f"run dir: {run_dir}", file=sys.stderr)
        summary = train(args.cfg, run_dir)
    except (C.ConfigError, RunDirError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, C.ConfigError) else 1
    except KeyboardInterrupt:
        print("interrupted: logs and summary.json kept", file=sys.stderr)
        return 130
    except Exception as e:  # data errors (manifest missing, ...) as one line, not a traceback
        from pipeline.data import ManifestError
        if isinstance(e, ManifestError):
            print(f"error: data.dir: {e}", file=sys.stderr)
            return 2
        raise
    print_summary(summary)
    print(f"logs: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
