"""`python -m pipeline.train`: a curriculum ViT trainer on a wall-clock budget or an epoch plan.

    python -m pipeline.train --config demo --run-dir runs/demo [--section.key=value ...]

    python -m pipeline.train --resume DIR [--force] [--section.key=value ...]
    torchrun --nproc_per_node=N -m pipeline.train ...

Writes DIR/config.json, env.json, steps.arrow, evals.arrow, checkpoints/, summary.json and curves.png.
Checkpoints, resume, signals and DDP: README "Long runs" (pipeline/checkpoint.py, pipeline/dist.py).

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

import errno
import hashlib
import json
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

from pipeline import checkpoint as ckpt
from pipeline import config as C
from pipeline import schedule as S
from pipeline.dist import Dist
from pipeline.logs import EVALS_SCHEMA, STEPS_SCHEMA, ArrowLog, environment, write_json

RUN_FILES = ("config.json", "steps.arrow", "evals.arrow", "summary.json")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped, its logs are kept."""


class RunDirError(RuntimeError):
    """The run directory already holds a run."""


# ---------------------------------------------------------------------------- setup

def pick_device(cfg: C.Config, dd: Dist = Dist()) -> torch.device:
    """cpu, or this process's GPU (cuda:LOCAL_RANK under torchrun)."""
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise C.ConfigError("train.device: cuda requested but torch.cuda.is_available() is False")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        torch.cuda.set_device(dd.local_rank)
        return torch.device("cuda", dd.local_rank)
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
                                 drop_path_rate=cfg.model.drop_path, qkv_bias=cfg.model.qkv_bias,
                                 weight_init='' if cfg.model.init == 'timm' else cfg.model.init)
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


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """opt.load_state_dict(state), then every state tensor laid out like its parameter.

    A checkpoint keeps the memory layout its tensors had (load_state_dict's `.to()` preserves
    strides), so a model built channels_last on resume (a CPU checkpoint continued on CUDA, where
    `train.channels_last=auto` turns it on, or the key changed) would pair channels_last
    parameters with contiguous `exp_avg`/`exp_avg_sq`. Fused AdamW (ours on CUDA) needs one
    layout for both: on CUDA it raises at the first step ("params, grads, exp_avgs, and
    exp_avg_sqs must have same dtype, device, and layout", ATen's check_fast_path_restrictions),
    and on the CPU it walks them as flat buffers, pairing the wrong elements (one step of lr 0.1
    moved weights by up to 0.17 from the same step with matching layouts). The foreach and
    single-tensor paths index by strides and were unaffected.
    """
    opt.load_state_dict(state)
    for p, s in opt.state.items():
        for k, v in s.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                s[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def build_net(cfg: C.Config, num_classes: int, img_size: int, device: torch.device, rt: "Runtime") -> nn.Module:
    """The model as a run trains it: on the device, channels_last when `rt` says so, in train mode."""
    net = build_model(cfg, num_classes, img_size=img_size).to(device)
    if rt.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net.train()


def build_training(cfg: C.Config, num_classes: int, img_size: int, device: torch.device, rt: "Runtime",
                   aug_seed: int):
    """What a training step needs: the model (on the device, channels_last when `rt` says so, in
    train mode), AdamW over it, its trainable parameters and the batched augmentation.

    Returns (net, opt, params, aug); compile the forward with `compiled_forward` (after any DDP wrap).
    """
    from pipeline.augment import BatchAugment
    net = build_net(cfg, num_classes, img_size, device, rt)
    opt = build_optimizer(net, cfg, device)
    params = [p for p in net.parameters() if p.requires_grad]
    return net, opt, params, BatchAugment(cfg.augment, num_classes=num_classes, device=device, seed=aug_seed)


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
        if device.type == "cuda":
            use_fast_cuda_paths()
        p = cfg.train.precision
        bf16 = p == "bf16" or (p == "auto" and device.type == "cuda")
        threads = (cfg.train.threads or os.cpu_count() or 1) if device.type == "cpu" else 0
        return cls(device, torch.bfloat16 if bf16 else None, _on(cfg.train.compile, device),
                   _on(cfg.train.channels_last, device), threads)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


# what a run directory's disk can do to a long run: one line and exit 1, the run resumable
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}


def use_fast_cuda_paths() -> None:
    """cuDNN autotuning (shapes are static within a curriculum stage: the locality conv gets the
    fastest kernel for each size) and TF32 for what runs in fp32 outside autocast."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def train_loader_for(cfg: C.Config, bset, batch_size: int, output_size: int, device: torch.device | None,
                     distributed: bool = False):
    """The training BetonLoader a config asks for (crops, workers, seed, batches ahead).

    Args:
        bset: the BetonSet of cfg.data.dir.
        batch_size: images per batch of this process.
        output_size: the first curriculum resolution (changed later with set_output_size).
        device: where batches land (a CUDA device), or None to keep them on the CPU.
        distributed: shard the order over torch.distributed ranks.
    """
    return bset.loader("train", batch_size=batch_size, output_size=output_size,
                       num_workers=cfg.data.num_workers, device=device, seed=cfg.train.seed,
                       scale=(cfg.data.crop_scale_min, cfg.data.crop_scale_max),
                       ratio=(cfg.data.crop_ratio_min, cfg.data.crop_ratio_max),
                       batches_ahead=cfg.data.batches_ahead, distributed=distributed,
                       beton_scale=cfg.data.beton_scale)


def compiled_forward(net: nn.Module, rt: Runtime) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's forward, torch.compiled with static shapes when `rt.compile`.

    dynamic=False: each new input shape (a new curriculum resolution, the eval size) compiles once
    into its own static graph, kept in dynamo's cache for the rest of the run; no step recompiles.
    """
    if not rt.compile:
        return net
    from pipeline.augment import allow_static_graphs
    allow_static_graphs()
    return torch.compile(net, dynamic=False)


def train_step(fwd: Callable, opt: torch.optim.Optimizer, params: list[torch.Tensor], x: torch.Tensor,
               y: torch.Tensor, rt: Runtime, grad_clip: float, skip_nonfinite: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer step on an augmented batch; returns (loss, bad) as device tensors (no sync).

    With `skip_nonfinite`, `bad` is True where the global gradient norm is NaN/inf and the update is
    skipped: a fused AdamW reads the flag on the device (`found_inf`, the mechanism GradScaler
    uses; no host sync); other optimizers check it on the host (the CPU path, where a sync costs
    nothing). Under DDP the norm is of the all-reduced gradients, so every rank skips alike.
    """
    with rt.autocast():
        logits = fwd(rt.prepare(x))
    loss = soft_cross_entropy(logits, y)
    loss.backward()
    bad = None
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)  # stays on the device: no sync
    elif skip_nonfinite:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if skip_nonfinite:
        bad = ~torch.isfinite(norm)
        if opt.defaults.get("fused"):
            opt.found_inf = bad.float()
            opt.step()
        elif not bad.item():
            opt.step()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach(), bad


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
def evaluate(net: nn.Module, fwd: Callable, loader, aug, rt: Runtime, dd: Dist = Dist()) -> dict[str, float]:
    """Top-1, top-5 (fractions) and mean cross entropy on a loader (one sync at the end).

    Args:
        net: the model (eager; used for the last partial batch so it needs no extra compile).
        fwd: the compiled forward of net (or net).
        loader: val BetonLoader at the evaluation resolution (under DDP, this rank's shard).
        aug: BatchAugment (its eval() normalizes).
        rt: Runtime.
        dd: the process group; sums are added over ranks (each image counted once).
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
    sums = dd.all_reduce(torch.stack([top1, top5, loss, torch.full_like(top1, n)]))
    top1, top5, loss, n = sums.tolist()
    n = max(n, 1)
    return {"top1": top1 / n, "top5": top5 / n, "loss": loss / n, "images": int(n)}


# ---------------------------------------------------------------------------- state

class Clock:
    """Training time: wall seconds with the clock running (stopped during evaluation and checkpoints).

    Under DDP the ranks must take every decision (LR, stage, evaluation, stop) at the same step, so
    they read `at(step)`: the time agreed at the last logging interval (`agree`, the max over
    ranks) plus the agreed seconds per step since then; in one process `at` is the clock itself.
    """

    def __init__(self, elapsed: float = 0.0, step: int = 0, synced: bool = False):
        self.elapsed, self._since = elapsed, None
        self.synced = (elapsed, step, 0.0) if synced else None  # (time, step, seconds per step)

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

    def at(self, step: int) -> float:
        if self.synced is None:
            return self.read()
        t, s, per_step = self.synced
        return t + (step - s) * per_step

    def agree(self, step: int, t: float) -> None:
        """Set the agreed time `t` at `step` (identical on every rank)."""
        if self.synced is not None:
            t0, s0, per_step = self.synced
            self.synced = (t, step, (t - t0) / (step - s0) if step > s0 else per_step)


@dataclass
class State:
    """Every counter of a run: what a checkpoint saves besides model, optimizer and RNG states."""
    step: int = 0
    images_seen: int = 0
    flops_seen: float = 0.0
    train_s: float = 0.0  # training time used (the budget clock), restored into Clock on resume
    eval_s: float = 0.0
    ckpt_s: float = 0.0
    wall_offset_s: float = 0.0  # wall time of earlier sessions of this run
    next_eval: float = 0.0  # clock position of the next periodic evaluation
    next_ckpt: float = 0.0  # clock position of the next periodic checkpoint (train.ckpt_every)
    best_top1: float = 0.0
    best_top5: float = 0.0
    skipped: int = 0  # optimizer steps skipped for a non-finite gradient (train.nonfinite=skip)
    data_epoch: int = 0  # train loader epochs started
    data_batch: int = 0  # batches taken from the epoch in progress
    epoch_res: int = 0  # resolution of the epoch in progress
    by_resolution: dict = field(default_factory=dict)  # str(res) -> {"images", "train_s", "rates"}
    sessions: list = field(default_factory=list)  # one entry per start/resume: step, checkpoint, world

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "State":
        return cls(**d)


def check_run_dir(run_dir: Path) -> None:
    """Refuse a directory that already holds a run (never overwrite logs)."""
    found = [f for f in RUN_FILES if (run_dir / f).exists()]
    if ckpt.listing(run_dir / "checkpoints"):  # a new run's checkpoints would be pruned in favour of these
        found.append("checkpoints/")
    if found:
        raise RunDirError(f"{run_dir} already holds a run ({', '.join(found)}); "
                          f"choose a new --run-dir, remove it, or continue it with --resume {run_dir}")


def _fmt_s(s: float) -> str:
    s = max(int(s), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class StopRequest:
    """SIGTERM/SIGINT (a scheduler's preemption, Ctrl-C) ask the run to stop cleanly: the step in
    progress finishes, a checkpoint and the logs are written, and the command exits with
    EXIT_STOPPED. A second signal stops at once (KeyboardInterrupt)."""

    # Under torchrun one stop reaches a worker twice: from the scheduler or a process-group kill, and
    # forwarded by torchrun. Taking the copy for a second signal stopped that rank alone, at once,
    # and the others died in their next collective without a checkpoint (a review: 3 runs in 5).
    DUPLICATE_S = 5.0

    def __init__(self):
        self.signum = 0
        self.checkpointed = False  # the stop's checkpoint is written: what is left is the logs
        self.first_at = 0.0

    def __call__(self, signum, frame):
        if self.signum and self.checkpointed:
            print(f"\nsignal {signum}: the checkpoint is written; finishing the logs", file=sys.stderr)
            return
        if (self.signum == signum and os.environ.get("TORCHELASTIC_RUN_ID")
                and time.monotonic() - self.first_at < self.DUPLICATE_S):
            return  # the same stop again, forwarded by torchrun
        if self.signum:
            raise KeyboardInterrupt(f"signal {signum} (second)")
        self.signum, self.first_at = signum, time.monotonic()
        print(f"\nsignal {signum}: stopping after this step (checkpoint and logs); "
              f"send it again to stop at once", file=sys.stderr)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self)


STOP = StopRequest()
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal with a checkpoint written; resume with --resume


# ---------------------------------------------------------------------------- the run

def train(cfg: C.Config, run_dir: str | os.PathLike, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Train per `cfg`, writing logs to `run_dir`; returns the summary dict.

    Args:
        cfg: the resolved config.
        run_dir: where logs and checkpoints go; must not hold a run unless `resume`.
        resume: continue the run in `run_dir` from its newest good checkpoint.
        force: with resume, start again from step 0 when checkpoints exist but none is usable
            (otherwise that is a RunDirError: the logs are not cut back to step 0 unasked).

    Under torchrun (WORLD_SIZE > 1) every rank calls this; rank 0 writes the files.
    Raises NonFiniteLossError (logs kept) if the loss becomes NaN or infinite, CheckpointError
    if a checkpoint cannot be written (the previous one intact).
    """
    from pipeline.data import BetonSet

    import model as vit

    C.validate(cfg)
    STOP.checkpointed = False
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "config.json").is_file():
            raise RunDirError(f"{run_dir}: no run to resume (config.json not found)")
    else:
        check_run_dir(run_dir)
    try:  # before the setup's seconds: a run dir that cannot be written fails now, in one line
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        if not os.access(run_dir, os.W_OK) or not os.access(run_dir / "checkpoints", os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as e:
        raise RunDirError(f"{run_dir}: cannot write the run there ({e.strerror or e})") from None
    t_wall0 = time.perf_counter()
    tc, oc, cc = cfg.train, cfg.optim, cfg.curriculum
    dd = Dist.from_env()
    device = pick_device(cfg, dd)
    dd.init(device)
    rt = Runtime.from_config(cfg, device)
    torch.manual_seed(tc.seed)
    if tc.batch_size % dd.world:
        raise C.ConfigError(f"train.batch_size: {tc.batch_size} is not divisible by the {dd.world} processes")
    rank_batch = tc.batch_size // dd.world  # train.batch_size is the global batch: the recipe is unchanged
    say = print if dd.main else (lambda *a, **k: None)

    # -- data: one train loader whose output size follows the curriculum, one val loader
    bset = BetonSet(cfg.data.dir)
    loader_device = device if device.type == "cuda" else None
    final_res = cc.resolutions[-1]
    eval_res = tc.eval_resolution or final_res
    train_loader = train_loader_for(cfg, bset, rank_batch, cc.resolutions[0], loader_device, dd.enabled)
    val_loader = bset.loader("val", batch_size=cfg.data.val_batch_size or rank_batch,
                             output_size=eval_res, num_workers=cfg.data.num_workers, device=loader_device,
                             batches_ahead=cfg.data.batches_ahead, beton_scale=cfg.data.beton_scale,
                             shard=(dd.rank, dd.world) if dd.enabled else None)
    steps_per_epoch = len(train_loader)
    data_id = {"classes": bset.classes, "train": bset.count("train")}  # what a resume must train on
    if steps_per_epoch < 1:
        raise C.ConfigError(f"train.batch_size: {tc.batch_size} exceeds the {bset.count('train')} training "
                            f"images of {cfg.data.dir}")

    # -- model, optimizer, augmentation; then the checkpoint to continue from
    net, opt, params, aug = build_training(cfg, bset.num_classes, final_res, device, rt, aug_seed=tc.seed + dd.rank)
    # caught here, not at the first step or the final evaluation (timm's PatchEmbed, wrapped or not)
    patch = next(m.patch_size[0] for m in net.modules() if hasattr(m, "patch_size"))
    for key, sizes in (("curriculum.resolutions", cc.resolutions), ("train.eval_resolution", [eval_res])):
        bad = [r for r in sizes if r % patch]
        if bad:
            raise C.ConfigError(f"{key}: {', '.join(map(str, bad))} px not a multiple of the patch size {patch} "
                                f"of {cfg.model.name}")
    ck, ck_name = None, None
    if resume:
        # on the CPU: the RNG states must stay there (set_rng_state takes CPU byte tensors only);
        # load_state_dict copies weights and optimizer state to their parameters' device
        found = ckpt.load_latest(run_dir / "checkpoints", map_location="cpu",
                                 warn=lambda m: say(m, file=sys.stderr))
        if found is None and ckpt.listing(run_dir / "checkpoints") and not force:
            raise RunDirError(f"{run_dir / 'checkpoints'}: no usable checkpoint (each is reported above); nothing "
                              f"changed: add --force to start this run again from step 0 (its logs are cut back)")
        if found is None:
            say(f"warning: {run_dir / 'checkpoints'} holds no usable checkpoint: the run starts again "
                f"from step 0", file=sys.stderr)
        else:
            path, ck = found
            ck_name = path.name
            restore(net, opt, ck, path, data_id, cfg.data.dir, force)
    st = State.from_state_dict(ck["state"]) if ck else State(next_eval=tc.eval_every, next_ckpt=tc.ckpt_every)
    st.sessions.append({"step": st.step, "checkpoint": ck_name, "world": dd.world, "time": time.time()})
    model = net
    if dd.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
                    find_unused_parameters=_has_unused_params(net, cc.resolutions[0], device))
    new_seed = tc.seed + 7919 * (st.step + dd.rank)  # where a resume cannot continue the saved streams
    if ck and len(ck["rng"]) == dd.world:  # the same random streams as an uninterrupted run
        mine = ck["rng"][dd.rank]
        torch.set_rng_state(mine["torch"])
        if device.type == "cuda" and mine["cuda"] is not None:
            torch.cuda.set_rng_state(mine["cuda"], device)
        if not aug.load_state_dict(mine["aug"]):
            say(f"warning: {ck_name} was written on another device type: new augmentation random streams "
                f"from here", file=sys.stderr)
            aug.reseed(new_seed)
    elif ck:
        say(f"warning: {ck_name} was written by {len(ck['rng'])} processes, this run has {dd.world}: "
            f"new random streams and data shards from here", file=sys.stderr)
        torch.manual_seed(new_seed)
        aug.reseed(new_seed)
    elif dd.enabled:
        torch.manual_seed(tc.seed + 7919 * dd.rank)  # one init (DDP broadcasts rank 0's), own drop-path masks
    fwd = compiled_forward(model, rt)
    fwd_eval = compiled_forward(net, rt) if dd.enabled else fwd  # no DDP hooks: shards may differ in batches
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
    ramp_end = cc.strength_ramp_end or end or 0.0  # None: epoch clock, budget, no cap (constant strength only)
    skip_nonfinite = tc.nonfinite == "skip"

    def progress_of(step: int, train_s: float) -> float:
        return S.progress(step=step, total_steps=total_steps, train_s=train_s, budget_s=budget)

    def pos_of(step: int, train_s: float) -> float:
        return S.position(tc.clock, progress=progress_of(step, train_s), epoch=step / steps_per_epoch)

    def lr_of(pos: float) -> float:
        return S.lr_at(pos, peak=oc.lr, warmup=oc.warmup, decay=oc.decay, decay_end=decay_end,
                       final_ratio=oc.final_lr_ratio)

    def strength_of(pos: float) -> float:
        return S.strength_at(pos, start=cc.strength_start, end=cc.strength_end, ramp_end=ramp_end)

    finishing = None  # the stop reason of a resumed run that is complete but for its final evaluation
    if ck:  # a finished run stays finished unless its plan was changed (--force)
        done = [(label, reason, how) for label, reason, how, cond in [
            ("budget spent", "budget", "--force with a larger train.budget_s or train.budget_h",
             budget and st.train_s >= budget),
            ("epochs done", "epochs", "--force with a larger train.epochs",
             (total_steps and st.step >= total_steps) or (epoch_cap and st.step >= epoch_cap)),
            ("max_steps", "max_steps", "a larger train.max_steps", tc.max_steps and st.step >= tc.max_steps)]
            if cond]
        if done and _final_eval_logged(run_dir, st.step):
            raise RunDirError(f"{run_dir}: the run is complete at step {st.step} ({done[0][0]}); nothing to resume "
                              f"(extend it: {done[0][2]})")
        if done:
            # the final checkpoint is written before the final evaluation: one killed during that
            # evaluation is finished now (the evaluation alone), not trained again
            finishing = done[0][1]
            say(f"{run_dir}: complete at step {st.step}; its final evaluation did not finish: running it",
                file=sys.stderr)

    # -- run files (rank 0): a resumed run keeps the rows its checkpoint covers, no more
    env = environment(device)
    # Which beton each stage decodes: a stage cropping from a much larger (or JPEG) beton is where
    # the loader falls behind the GPU (README, "Which betons for ImageNet").
    stages = sorted(set(cc.resolutions))
    served = {str(r): bset.beton_for("train", r, cfg.data.beton_scale) for r in stages}
    env.update(data={"num_classes": len(data_id["classes"]), "train_images": data_id["train"],  # which data set
                     "classes_sha256": hashlib.sha256("\n".join(data_id["classes"]).encode()).hexdigest()},
               params=vit.count_params(net), world_size=dd.world,
               train_flops_per_image={str(r): train_flops(r) for r in stages},
               train_betons={r: {"file": b.path.name, "mode": b.mode, "resolution": b.resolution}
                             for r, b in served.items()})
    say("train betons: " + ", ".join(f"{r} px <- {b.path.name} ({b.mode})" for r, b in served.items()),
        file=sys.stderr)
    enlarged = [f"train {r} px" for r, b in served.items() if b.resolution < int(r)]
    if bset.beton_for("val", eval_res, cfg.data.beton_scale).resolution < eval_res:
        enlarged.append(f"val {eval_res} px")
    if enlarged:  # what the user most likely forgot in write_beton's --resolutions
        say(f"warning: {', '.join(enlarged)}: no beton that large in {cfg.data.dir}, so those images are "
            f"enlarged from a smaller one (write betons at those sizes with tools/write_beton.py)", file=sys.stderr)
    steps_log = evals_log = None
    if dd.main:
        C.save(cfg, run_dir / "config.json")
        k = len(st.sessions) - 1  # a session that died before its first checkpoint left its K behind
        while resume and (run_dir / f"env-resume-{k}.json").exists():
            k += 1
        write_json(run_dir / ("env.json" if not resume else f"env-resume-{k}.json"), env)
        if resume:
            steps_log = ArrowLog.resume(run_dir / "steps.arrow", STEPS_SCHEMA, st.step, flush_rows=1)
            evals_log = ArrowLog.resume(run_dir / "evals.arrow", EVALS_SCHEMA,  # an unfinished final one goes
                                        st.step - 1 if finishing else st.step, flush_rows=1)
        else:  # a row per flush: a crash loses at most the logging interval in progress
            steps_log = ArrowLog(run_dir / "steps.arrow", STEPS_SCHEMA, flush_rows=1)
            evals_log = ArrowLog(run_dir / "evals.arrow", EVALS_SCHEMA, flush_rows=1)

    clock = Clock(st.train_s, st.step, synced=dd.enabled)
    bar = None
    if tc.progress_bar and dd.main:
        from tqdm import tqdm
        bar = tqdm(total=1000, bar_format="{percentage:3.0f}%|{bar}| {postfix}", dynamic_ncols=True,
                   file=sys.stderr)
    stop_reason, error, final = finishing, None, None
    start_pos = pos_of(st.step, clock.at(st.step))
    res = S.resolution_at(start_pos, cc.starts, cc.resolutions)
    # The train loader goes on from the checkpoint's epoch; one taken mid-epoch continues that epoch
    # after its used batches, in the same order, at its resolution, unless the stage it was written
    # at had just ended (adjust_at=step ends the epoch there).
    train_loader.epoch = st.data_epoch
    continue_epoch = (ck is not None and 0 < st.data_batch < steps_per_epoch
                      and not (cc.adjust_at == "step" and res != st.epoch_res))
    if continue_epoch:
        res = st.epoch_res
        train_loader.resume(st.data_epoch, st.data_batch)
    last_lr = lr_of(start_pos)
    if ck:  # a period changed on resume applies from now, not from the old schedule's next point
        old = ck["config"]["train"]
        for every, attr, key in ((tc.eval_every, "next_eval", "eval_every"), (tc.ckpt_every, "next_ckpt", "ckpt_every")):
            if every > 0 and every != old.get(key):
                setattr(st, attr, S.next_point(start_pos, every, getattr(st, attr)))
    last_ckpt = {"step": st.step if ck else -1, "mono": time.monotonic()}
    ckpt_dir = run_dir / "checkpoints"

    def wall() -> float:
        return st.wall_offset_s + time.perf_counter() - t_wall0

    def paused() -> Callable[[], float]:
        """Stop the training clock (evaluation, checkpoint); the returned call restarts it and
        gives the seconds spent."""
        was_running, t = clock.running, time.perf_counter()
        clock.stop()

        def restart() -> float:
            if was_running:
                clock.start()
            return time.perf_counter() - t
        return restart

    def run_eval() -> dict[str, float]:
        """Evaluate with the training clock stopped; log a row to evals.arrow."""
        restart = paused()
        m = evaluate(net, fwd_eval, val_loader, aug, rt, dd)
        st.best_top1, st.best_top5 = max(st.best_top1, m["top1"]), max(st.best_top5, m["top5"])
        if dd.main:
            evals_log.append(dict(step=st.step, wall_s=wall(), images_seen=st.images_seen,
                                  flops_seen=st.flops_seen, resolution=eval_res, top1=m["top1"],
                                  top5=m["top5"], loss=m["loss"]))
        if bar is not None:
            bar.write(f"eval step {st.step}: top-1 {m['top1']:.4f} top-5 {m['top5']:.4f} loss {m['loss']:.4f}")
        st.eval_s += restart()
        return m

    def save_checkpoint() -> None:
        """Checkpoint with the clock stopped, right after a logged interval (the logs on disk cover
        every step it holds). Never writes non-finite weights."""
        if last_ckpt["step"] == st.step:
            return
        log_interval(last_lr)
        restart = paused()
        if not bool(torch.stack([p.isfinite().all() for p in params]).all()):
            raise NonFiniteLossError(f"weights are not finite at step {st.step}: checkpoint not written; "
                                     f"the last good one stays in {ckpt_dir}")
        if dd.enabled:  # the replicas must hold the same weights (same LR, same skipped steps, ...)
            sums = dd.gather(torch.stack([p.detach().double().sum() for p in params]).sum().item())
            if len(set(sums)) > 1:
                raise RuntimeError(f"DDP replicas diverged at step {st.step}: weight sums {sums}")
        rng = dd.gather({"torch": torch.get_rng_state(), "aug": aug.state_dict(),
                         "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None})
        if dd.main:
            steps_log.flush(sync=True)
            evals_log.flush(sync=True)
            saved = dict(st.state_dict(), train_s=clock.read(), wall_offset_s=wall())
            ckpt.save(ckpt_dir, st.step, {"config": C.to_dict(cfg), "model": net.state_dict(),
                                          "optimizer": opt.state_dict(), "state": saved, "rng": rng,
                                          "data": data_id},
                      keep=tc.ckpt_keep)
        last_ckpt.update(step=st.step, mono=time.monotonic())
        st.ckpt_s += restart()

    # interval accumulators: loss sum, finite steps, skipped steps on the device; host counters
    acc = torch.zeros(3, device=device, dtype=torch.float64)
    iv = {"steps": 0, "images": 0, "t0": clock.read()}
    sync = {"signal": False, "wall_ckpt": False}

    def log_interval(lr: float) -> None:
        """Flush the interval: one host sync (under DDP also the collectives that keep the ranks
        agreed: loss, clock, signals, checkpoint time); raise on a non-finite loss."""
        if iv["steps"] == 0:
            return
        loss_sum, ok, skipped = dd.all_reduce(acc.clone()).tolist()  # the host sync of the loop
        now = clock.read()
        wall_due = tc.ckpt_every_min > 0 and time.monotonic() - last_ckpt["mono"] >= 60 * tc.ckpt_every_min
        if dd.enabled:
            agreed, sig, wall_due = dd.max_floats([now, float(STOP.signum), float(wall_due)], device)
            clock.agree(st.step, agreed)
            sync["signal"] = sig > 0
            if sig > 0 and not STOP.signum:  # another rank's: its number for the messages, and this
                STOP.signum, STOP.first_at = int(sig), time.monotonic()  # rank's own copy is no second
        sync["wall_ckpt"] = bool(wall_due)
        loss = loss_sum / ok if ok else float("nan")
        dt = max(now - iv["t0"], 1e-9)
        rate = iv["images"] * dd.world / dt
        st.train_s = now
        st.skipped += int(skipped)
        r = st.by_resolution.setdefault(str(res), {"images": 0, "train_s": 0.0, "rates": []})
        r["images"] += iv["images"] * dd.world
        r["train_s"] += dt
        r["rates"].append(rate)
        if dd.main:
            steps_log.append(dict(step=st.step, epoch=st.step / steps_per_epoch, wall_s=wall(),
                                  images_seen=st.images_seen, flops_seen=st.flops_seen, resolution=res,
                                  lr=lr, loss=loss, images_per_s=rate))
        acc.zero_()
        iv.update(steps=0, images=0, t0=now)
        if not math.isfinite(loss):
            what = "every step of the interval was skipped" if skip_nonfinite else "run stopped"
            raise NonFiniteLossError(
                f"loss is {loss} at step {st.step} (epoch {st.step / steps_per_epoch:.2f}, resolution {res}, "
                f"lr {lr:.3g}): {what}; logs kept in {run_dir}")
        if skipped and bar is not None:
            bar.write(f"warning: {int(skipped)} step(s) with a non-finite gradient skipped before step {st.step}")
        if bar is not None:
            p = progress_of(st.step, now)
            left = budget - now if budget else (now / p * (1 - p) if p > 0 else float("nan"))
            bar.n = min(int(p * 1000), 1000)
            bar.set_postfix_str(f"{res}px loss {loss:.3f} {rate:.0f} img/s lr {lr:.2e} "
                                f"left {_fmt_s(left) if math.isfinite(left) else '?'}", refresh=True)

    # ------------------------------------------------------------------ the loop
    started = False
    try:
        while stop_reason is None:
            # one epoch (or part of one) at the planned resolution
            if not continue_epoch:
                planned = S.resolution_at(pos_of(st.step, clock.at(st.step)), cc.starts, cc.resolutions)
                if planned != res:
                    log_interval(last_lr)  # intervals never straddle two resolutions
                    res = planned
            continue_epoch = False
            train_loader.set_output_size(res)
            st.epoch_res = res
            flops = train_flops(res)
            it = batches(train_loader, rt.threads)
            for images, labels in it:
                if not started:
                    started = True  # setup (model, loaders, FFCV's JIT of the first batch) is not training
                    clock.start()
                    iv["t0"] = clock.read()
                pos = pos_of(st.step, clock.at(st.step))
                last_lr = lr_of(pos)
                for g in opt.param_groups:
                    g["lr"] = last_lr
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                x, y = aug.train(images, labels, strength=strength_of(pos))
                loss, bad = train_step(fwd, opt, params, x, y, rt, oc.grad_clip, skip_nonfinite)
                if bad is None:
                    acc[0] += loss
                    acc[1] += 1
                else:
                    acc += torch.stack([torch.where(bad, 0.0, loss.double()), (~bad).double(), bad.double()])
                st.step += 1
                st.images_seen += x.shape[0] * dd.world
                st.flops_seen += float(flops) * x.shape[0] * dd.world
                st.data_epoch, st.data_batch = train_loader.epoch, train_loader.batches_done
                iv["steps"] += 1
                iv["images"] += x.shape[0]

                # what now: stop, log, evaluate, checkpoint, change stage (host-side arithmetic only)
                t = clock.at(st.step)
                pos = pos_of(st.step, t)
                if budget and t >= budget:
                    stop_reason = "budget"
                elif total_steps is not None and st.step >= total_steps:
                    stop_reason = "epochs"
                elif epoch_cap is not None and st.step >= epoch_cap:
                    stop_reason = "epochs"
                elif tc.max_steps and st.step >= tc.max_steps:
                    stop_reason = "max_steps"
                elif STOP.signum and not dd.enabled:
                    stop_reason = "signal"  # under DDP the ranks agree on it at the next logging interval
                if stop_reason or st.step % tc.log_every == 0:
                    log_interval(last_lr)
                    if sync["signal"] and not stop_reason:
                        stop_reason = "signal"
                if stop_reason and stop_reason != "signal":
                    break  # the final evaluation follows
                if tc.eval_every > 0 and pos >= st.next_eval:
                    while st.next_eval <= pos:
                        st.next_eval += tc.eval_every
                    log_interval(last_lr)
                    run_eval()
                    iv["t0"] = clock.read()
                if stop_reason:
                    break  # a signal: the evaluation due at this step is done, the checkpoint follows
                if (tc.ckpt_every > 0 and pos >= st.next_ckpt) or sync["wall_ckpt"]:
                    while tc.ckpt_every > 0 and st.next_ckpt <= pos:
                        st.next_ckpt += tc.ckpt_every
                    sync["wall_ckpt"] = False
                    save_checkpoint()
                    iv["t0"] = clock.read()
                if cc.adjust_at == "step" and S.resolution_at(pos, cc.starts, cc.resolutions) != res:
                    break  # end the epoch early: the next one starts at the new size
            it.close()  # releases FFCV's epoch iterator when the epoch ended early
        if device.type == "cuda":
            torch.cuda.synchronize()
        clock.stop()
        st.train_s = clock.elapsed
        save_checkpoint()  # first: a kill during the final evaluation loses no training
        if stop_reason == "signal":
            STOP.checkpointed = True
        else:
            final = run_eval()
    except BaseException as e:
        error = e
        clock.stop()
        st.train_s = clock.elapsed
        raise
    finally:
        if bar is not None:
            bar.close()
        summary = _summary(cfg, st, budget, stop_reason, error, eval_res, wall(), env, final,
                           steps_per_epoch, last_lr)
        if dd.main:
            try:
                for log in (steps_log, evals_log):
                    if log is not None:
                        log.close()
                write_json(run_dir / "summary.json", summary)
            except OSError as e:  # a full disk must not hide the run's own error
                if error is None:
                    raise
                print(f"warning: summary.json not written: {e}", file=sys.stderr)
            if tc.plot:
                try:
                    from pipeline.plots import plot_run
                    plot_run(run_dir)
                except Exception as e:  # a plot must never hide the run's own outcome
                    print(f"warning: curves.png not written: {e}", file=sys.stderr)
        if error is None:
            dd.close()
    return summary


def _final_eval_logged(run_dir: Path, step: int) -> bool:
    """Whether summary.json holds the final evaluation of the run ending at `step`."""
    try:
        prev = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(prev, dict) and prev.get("steps") == step and prev.get("final_top1") is not None


def restore(net: nn.Module, opt: torch.optim.Optimizer, ck: dict, path: Path, data_id: dict, data_dir: str,
            force: bool) -> None:
    """Load a checkpoint's weights and AdamW state. RunDirError (one line, nothing changed) when it
    was trained on another data set, unless `force` (another train count moves the epoch plan, and
    with it the LR and the stages; other classes relabel the data), or does not fit the model."""
    was = ck.get("data")  # checkpoints before 2026-12-02 have none
    if was is not None and was != data_id and not force:
        def size(k, v):
            return len(v) if k == "classes" else v
        diff = "; ".join(f"{k} {size(k, was.get(k))} -> {size(k, data_id[k])}"
                         + (" (other names)" if k == "classes" and len(was[k]) == len(data_id[k]) else "")
                         for k in data_id if was.get(k) != data_id[k])
        raise RunDirError(f"data.dir: {data_dir} is not the data set this run trained on ({diff}); "
                          f"nothing changed: add --force to continue on it")
    try:
        net.load_state_dict(ck["model"])
        load_optimizer_state(opt, ck["optimizer"])
    except (RuntimeError, ValueError) as e:  # another model, or classes (with --force)
        misfit = ("loading state_dict" in str(e) or "pos_embed" in str(e)  # torch's; our resample's
                  or "parameter group" in str(e))  # the optimizer's
        if type(e) not in (RuntimeError, ValueError) or not misfit:
            raise
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]  # torch's header line
        raise RunDirError(f"{path}: does not fit this model and data ({why})") from None


def _has_unused_params(net: nn.Module, res: int, device: torch.device) -> bool:
    """Whether some parameters get no gradient (the last block's MLP under class-token pooling with
    the class token skipping locality, as in the paper): DDP must then look for unused ones."""
    net.zero_grad(set_to_none=True)
    net(torch.zeros(2, 3, res, res, device=device)).float().sum().backward()
    unused = any(p.grad is None for p in net.parameters() if p.requires_grad)
    net.zero_grad(set_to_none=True)
    return unused


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
        "status": (f"failed: {type(error).__name__}: {error}" if error is not None
                   else "stopped" if stop_reason == "signal" else "ok"),
        "stop_reason": stop_reason if error is None else "error",
        "final_top1": final["top1"] if final else None,
        "final_top5": final["top5"] if final else None,
        "final_val_loss": final["loss"] if final else None,
        "best_top1": st.best_top1, "best_top5": st.best_top5,
        "eval_resolution": eval_res,
        "wall_s": wall_s, "train_s": st.train_s, "eval_s": st.eval_s, "checkpoint_s": st.ckpt_s,
        "budget_s": budget or None, "skipped_steps": st.skipped, "sessions": st.sessions,
        "steps": st.step, "epochs": st.step / steps_per_epoch, "images_seen": st.images_seen,
        "flops_seen": st.flops_seen, "final_lr": last_lr,
        "params": env.get("params"), "train_flops_per_image": env.get("train_flops_per_image"),
        "throughput_by_resolution": by_res,
        "device": env.get("gpu", {}).get("name") or env.get("device"),
        "data": env.get("data"),
    }


def print_summary(s: dict[str, Any]) -> None:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"
    print(f"\n{s['status']} ({s['stop_reason']}): {s['steps']} steps, {s['epochs']:.2f} epochs, "
          f"{s['images_seen']:,} images, {s['flops_seen']:.3g} FLOPs")
    print(f"time: train {s['train_s']:.1f} s, eval {s['eval_s']:.1f} s, wall {s['wall_s']:.1f} s"
          + (f" (budget {s['budget_s']:.0f} s)" if s["budget_s"] else ""))
    print(f"val @ {s['eval_resolution']} px: top-1 {pct(s['final_top1'])}, top-5 {pct(s['final_top5'])} "
          f"(best top-1 {pct(s['best_top1'] if s['final_top1'] is not None else None)})")
    for r, v in s["throughput_by_resolution"].items():
        print(f"  {r:>4} px: {v['images']:>10,} images, {v['train_s']:8.1f} s, "
              f"{v['median_images_per_s'] or 0:9.0f} img/s (median)")


def _remove_if_empty(*dirs: Path) -> None:
    for d in dirs:
        try:
            d.rmdir()  # only ever removes an empty directory
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    """The command line; exit codes: 0 done, 1 run error (logs kept), 2 bad config or data,
    75 stopped by SIGTERM/SIGINT with a checkpoint (continue with --resume DIR), 130 forced stop."""
    argv = sys.argv[1:] if argv is None else argv
    STOP.install()
    main_rank = Dist.from_env().main
    try:
        args = C.parse_args(argv)
        if args.help:
            print(C.help_text(args.cfg, args.config_name))
            return 0
        name = Path(args.config_name).stem if args.config_name else "default"
        run_dir = Path(args.run_dir or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if not args.resume:
            check_run_dir(run_dir)
        if main_rank:
            print(f"{'resuming' if args.resume else 'run dir'}: {run_dir}", file=sys.stderr)
        fresh = main_rank and not run_dir.exists()
        try:
            summary = train(args.cfg, run_dir, resume=args.resume, force=args.force)
        except BaseException:
            if fresh:  # a run that failed in its setup (bad data.dir, ...) leaves no empty run dir behind
                _remove_if_empty(run_dir / "checkpoints", run_dir)
            raise
    except (C.ConfigError, RunDirError, NonFiniteLossError, ckpt.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, C.ConfigError) else 1
    except KeyboardInterrupt:
        print("interrupted: logs and summary.json kept; --resume continues from the last checkpoint "
              "written (this point only if it was), or from step 0 if there is none", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        print(f"error: {e.filename or 'a run file'}: {e.strerror}; the logs up to their last "
              f"flush and the last complete checkpoint are kept", file=sys.stderr)
        return 1
    except Exception as e:  # data errors (manifest missing, ...) as one line, not a traceback
        from pipeline.data import ManifestError, ThreadingLayerError
        if isinstance(e, ManifestError):
            print(f"error: data.dir: {e}", file=sys.stderr)
            return 2
        if isinstance(e, ThreadingLayerError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
    if not main_rank:
        return EXIT_STOPPED if summary["stop_reason"] == "signal" else 0
    print_summary(summary)
    print(f"logs: {run_dir}")
    if summary["stop_reason"] == "signal":
        print(f"stopped by signal {STOP.signum} at step {summary['steps']}; checkpoint written; continue with:\n"
              f"  python -m pipeline.train --resume {run_dir}", file=sys.stderr)
        return EXIT_STOPPED
    return 0


if __name__ == "__main__":
    sys.exit(main())
