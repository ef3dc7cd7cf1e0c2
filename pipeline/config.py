"""One typed config for `python -m pipeline.train`: nested dataclasses, dotted overrides.

A run is described by one `Config` (sections train, data, model, optim, curriculum, augment).
Named experiments live in `configs/NAME.py` and expose `get_config() -> Config`; the command
line then overrides single keys, `--section.key=value`. Unknown keys, wrong types and invalid
values are one-line errors naming the key (`ConfigError`), in the spirit of big_vision's
locked configs. The resolved config is written to the run directory as config.json.

One clock drives the run (shared/STYLE.md rule 4): every schedule position in this file (LR
warmup and decay, curriculum stage starts, augmentation ramp, eval period) is in the unit
`train.clock` names: "progress" (a fraction of the run in [0, 1]: training time / budget with
a wall-clock budget, steps / planned steps with an epoch plan) or "epoch" (epochs of data seen).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.augment import AugmentConfig


class ConfigError(ValueError):
    """A bad config: the message is one line and starts with the dotted key."""


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    batch_size: int = _f(256, "images per optimizer step")
    epochs: float = _f(10.0, "epoch plan: train this many epochs (fractions allowed); with a budget, "
                             "an optional cap (0 = none)")
    budget_s: float = _f(0.0, "wall-clock budget of training time in seconds (0 = epoch plan); "
                              "evaluation time does not count")
    budget_h: float = _f(0.0, "the same budget in hours (set one of budget_s, budget_h)")
    clock: Literal["progress", "epoch"] = _f(
        "progress", "unit of every schedule position (optim.warmup, optim.decay_end, curriculum.starts, "
                    "curriculum.strength_ramp_end, train.eval_every): progress in [0, 1] or epochs")
    eval_every: float = _f(0.0, "evaluate every this many clock units (0 = only at the end)")
    eval_resolution: int = _f(0, "evaluation resolution in px (0 = the last curriculum resolution)")
    log_every: int = _f(50, "steps between rows of steps.arrow (the only host syncs of the loop)")
    max_steps: int = _f(0, "stop after this many steps whatever the plan (0 = no limit; tests, benchmarks)")
    seed: int = _f(0, "seed of model init, data order and augmentation")
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "training device (auto = cuda if available)")
    precision: Literal["auto", "bf16", "fp32"] = _f("auto", "autocast dtype (auto = bf16 on cuda, fp32 on cpu)")
    compile: Literal["auto", "on", "off"] = _f("auto", "torch.compile the model, once per resolution "
                                                       "(auto = on for cuda)")
    channels_last: Literal["auto", "on", "off"] = _f("auto", "channels_last input memory format "
                                                             "(auto = on for cuda)")
    threads: int = _f(0, "torch CPU threads on a cpu device (0 = all cores); FFCV resets torch's count to "
                         "data.num_workers at every epoch and the trainer sets it back")
    progress_bar: bool = _f(True, "show a tqdm progress bar")
    ckpt_every: float = _f(0.0, "write a checkpoint every this many clock units (0 = by time only); also "
                                "at the end and on SIGTERM/SIGINT")
    ckpt_every_min: float = _f(30.0, "write a checkpoint at least every this many minutes of wall time "
                                     "(0 = off)")
    ckpt_keep: int = _f(3, "checkpoints kept in RUN/checkpoints (the newest ones)")
    nonfinite: Literal["stop", "skip"] = _f(
        "stop", "on a NaN/inf loss or gradient: stop the run (logs and last good checkpoint kept), or skip "
                "that optimizer step (the run stops if a whole logging interval is skipped)")
    plot: bool = _f(True, "write curves.png at the end")


@dataclass
class DataConfig:
    dir: str = _f("data/demo/betons", "directory of betons with manifest.json (tools/write_beton.py)")
    num_workers: int = _f(0, "FFCV decode threads (0 = all CPU cores)")
    batches_ahead: int = _f(3, "batches FFCV decodes ahead of the training step (more smooths "
                               "decode-time jitter at the cost of pinned memory)")
    crop_scale_min: float = _f(0.08, "random-resized-crop smallest area fraction")
    crop_scale_max: float = _f(1.0, "random-resized-crop largest area fraction")
    crop_ratio_min: float = _f(3 / 4, "random-resized-crop smallest aspect ratio (width / height)")
    crop_ratio_max: float = _f(4 / 3, "random-resized-crop largest aspect ratio")
    val_batch_size: int = _f(0, "evaluation batch size (0 = train.batch_size)")
    beton_scale: float = _f(1.0, "decode a size from the smallest beton at least this many times larger "
                                 "(the largest where none is): a crop is about half its image's side, so 1 "
                                 "enlarges it ~2x; 2 keeps it sharp at a slower loader")


@dataclass
class ModelConfig:
    name: str = _f("vitday_nano_patch4_local", "timm model name (variants registered by `import model`)")
    drop_path: float = _f(0.1, "stochastic depth rate")
    qkv_bias: bool = _f(True, "bias on the attention's qkv projection (timm, DeiT); the authors' code has none")
    init: Literal["timm", "xavier"] = _f("timm", "weight init: timm's (trunc_normal 0.02, zero biases) or the "
                                                 "authors' (xavier_normal, PyTorch's default biases)")


@dataclass
class OptimConfig:
    lr: float = _f(1e-3, "peak learning rate of AdamW for train.batch_size (used as given: scale it "
                         "in the config when changing the batch size)")
    weight_decay: float = _f(0.05, "AdamW decoupled weight decay (not on norms, biases, embeddings)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.999, "AdamW beta2")
    grad_clip: float = _f(0.0, "clip the global gradient norm to this (0 = off)")
    warmup: float = _f(0.0, "linear LR warmup from 0, in clock units")
    decay: Literal["cosine", "linear", "constant"] = _f("cosine", "LR decay after warmup")
    decay_end: float = _f(0.0, "clock position where the decay reaches final_lr_ratio (0 = the end of "
                               "the run); the paper decays over a nominal 300 epochs")
    final_lr_ratio: float = _f(0.0, "LR at decay_end as a fraction of optim.lr")


@dataclass
class CurriculumConfig:
    starts: tuple[float, ...] = _f((0.0,), "clock position where each resolution stage starts "
                                           "(first 0, increasing)")
    resolutions: tuple[int, ...] = _f((32,), "training output resolution of each stage in px")
    adjust_at: Literal["step", "epoch"] = _f(
        "step", "when a planned stage change takes effect: at the next step (ending the epoch early) "
                "or at the next epoch boundary")
    strength_start: float = _f(1.0, "augmentation strength in [0, 1] at the start of the run")
    strength_end: float = _f(1.0, "augmentation strength at strength_ramp_end (linear ramp, then held)")
    strength_ramp_end: float = _f(0.0, "clock position where the strength ramp ends (0 = the end of the run)")


@dataclass
class Config:
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def budget(self) -> float:
        """Training-time budget in seconds (0 = epoch plan)."""
        return self.train.budget_s or self.train.budget_h * 3600.0


SECTIONS = [f.name for f in dataclasses.fields(Config)]


# ---------------------------------------------------------------- keys, types, values

@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.lru_cache(maxsize=None)
def _comment_help(cls: type) -> dict[str, str]:
    """Help of dataclass fields documented by a trailing comment (`name: T = v  # help`), as
    AugmentConfig does; fields with `metadata["help"]` need none of this."""
    try:  # the class's lines read as text: inspect.getsource parses the module with ast, which
        # CPython 3.11.7 can fail with "SystemError: AST constructor recursion depth mismatch"
        # after an earlier failure elsewhere in the process (python/cpython#106905)
        text = Path(inspect.getsourcefile(cls)).read_text()
    except (OSError, TypeError):
        return {}
    m = re.search(rf"^class {cls.__name__}\b.*?(?=^\S|\Z)", text, re.M | re.S)
    src = m.group(0) if m else ""
    return {m[1]: m[2].strip() for m in re.finditer(r"^\s+(\w+)\s*:[^\n#]*#([^\n]*)$", src, re.M)}


def keys(cfg: Config) -> dict[str, tuple[Any, Any, str]]:
    """Every dotted key -> (value, type, help), in declaration order."""
    out = {}
    for sec in SECTIONS:
        obj = getattr(cfg, sec)
        hints, comments = _hints(type(obj)), _comment_help(type(obj))
        for f in dataclasses.fields(obj):
            help = f.metadata.get("help") or comments.get(f.name, "")
            out[f"{sec}.{f.name}"] = (getattr(obj, f.name), hints[f.name], help)
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin is tuple:
        args = typing.get_args(tp)
        return ",".join([args[0].__name__] * (len(args) if Ellipsis not in args else 1)) + (
            ",..." if Ellipsis in args else "")
    if origin in (typing.Union, types.UnionType):
        return "|".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_value(key: str, text: str, tp: Any) -> Any:
    """Parse a command-line string into a value of type `tp`; ConfigError naming `key` if not."""
    origin = typing.get_origin(tp)
    text = text.strip()
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if text == str(c):
                return c
        raise ConfigError(f"{key}: {text!r} is not one of {', '.join(map(str, choices))}")
    if origin is tuple:
        elem = typing.get_args(tp)[0]
        inner = text.strip("()[]")
        parts = inner.split(",") if inner.strip() else []
        if any(not p.strip() for p in parts):
            raise ConfigError(f"{key}: empty item in {text!r} (expected comma-separated values)")
        return check_type(key, tuple(parse_value(key, p, elem) for p in parts), tp)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            try:
                return parse_value(key, text, a)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {text!r}")
    if tp is bool:
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {text!r}")
    try:
        value = tp(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {text!r}") from None
    return check_type(key, value, tp)


def check_type(key: str, value: Any, tp: Any) -> Any:
    """Check a Python value (from a config file or config.json) against `tp`; returns it, coerced
    where lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, typing.get_args(tp)))}")
        return value
    if origin is tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise bad
        args = typing.get_args(tp)
        if Ellipsis not in args and len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(check_type(key, v, args[0]) for v in value)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            try:
                return check_type(key, value, a)
            except ConfigError:
                pass
        raise bad
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):  # inf passes every >= check and stalls the clock (budget_s=inf)
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise bad
    return value


def _lookup(cfg: Config, key: str) -> tuple[Any, str, Any]:
    """(section object, field name, type) of a dotted key; ConfigError with a suggestion if unknown."""
    all_keys = keys(cfg)
    if key not in all_keys:
        close = difflib.get_close_matches(key, list(all_keys), n=1)
        hint = f" (did you mean {close[0]}?)" if close else " (see --help)"
        raise ConfigError(f"{key}: unknown key{hint}")
    sec, name = key.split(".", 1)
    return getattr(cfg, sec), name, all_keys[key][1]


def override(cfg: Config, key: str, text: str) -> None:
    """Set one dotted key from its command-line text, in place."""
    obj, name, tp = _lookup(cfg, key)
    setattr(obj, name, parse_value(key, text, tp))


# ---------------------------------------------------------------- validation

def _need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def validate(cfg: Config) -> Config:
    """Check types and values of every key; returns cfg (types coerced in place)."""
    for key, (value, tp, _) in keys(cfg).items():
        sec, name = key.split(".", 1)
        setattr(getattr(cfg, sec), name, check_type(key, value, tp))
    t, o, c, d = cfg.train, cfg.optim, cfg.curriculum, cfg.data
    _need(t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    _need(t.epochs >= 0, "train.epochs", f"must be >= 0, got {t.epochs}")
    _need(t.budget_s >= 0, "train.budget_s", f"must be >= 0, got {t.budget_s}")
    _need(t.budget_h >= 0, "train.budget_h", f"must be >= 0, got {t.budget_h}")
    _need(not (t.budget_s and t.budget_h), "train.budget_h", "set train.budget_s or train.budget_h, not both")
    _need(cfg.budget > 0 or t.epochs > 0, "train.epochs",
          "must be > 0 without a budget (or set train.budget_s)")
    _need(t.eval_every >= 0, "train.eval_every", f"must be >= 0, got {t.eval_every}")
    _need(t.eval_resolution >= 0, "train.eval_resolution", f"must be >= 0, got {t.eval_resolution}")
    _need(t.log_every >= 1, "train.log_every", f"must be >= 1, got {t.log_every}")
    _need(t.max_steps >= 0, "train.max_steps", f"must be >= 0, got {t.max_steps}")
    _need(t.threads >= 0, "train.threads", f"must be >= 0, got {t.threads}")
    _need(t.ckpt_every >= 0, "train.ckpt_every", f"must be >= 0, got {t.ckpt_every}")
    _need(t.ckpt_every_min >= 0, "train.ckpt_every_min", f"must be >= 0, got {t.ckpt_every_min}")
    _need(t.ckpt_keep >= 1, "train.ckpt_keep", f"must be >= 1, got {t.ckpt_keep}")
    _need(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
    _need(d.batches_ahead >= 1, "data.batches_ahead", f"must be >= 1, got {d.batches_ahead}")
    _need(0 < d.crop_scale_min <= d.crop_scale_max <= 1, "data.crop_scale_min",
          f"need 0 < crop_scale_min <= crop_scale_max <= 1, got {d.crop_scale_min}, {d.crop_scale_max}")
    _need(d.beton_scale >= 1, "data.beton_scale", f"expected >= 1, got {d.beton_scale}")
    _need(0 < d.crop_ratio_min <= d.crop_ratio_max, "data.crop_ratio_min",
          f"need 0 < crop_ratio_min <= crop_ratio_max, got {d.crop_ratio_min}, {d.crop_ratio_max}")
    _need(d.val_batch_size >= 0, "data.val_batch_size", f"must be >= 0, got {d.val_batch_size}")
    _need(0 <= cfg.model.drop_path < 1, "model.drop_path", f"must be in [0, 1), got {cfg.model.drop_path}")
    _need(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _need(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _need(0 <= o.beta1 < 1, "optim.beta1", f"must be in [0, 1), got {o.beta1}")
    _need(0 <= o.beta2 < 1, "optim.beta2", f"must be in [0, 1), got {o.beta2}")
    _need(o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {o.grad_clip}")
    _need(o.warmup >= 0, "optim.warmup", f"must be >= 0, got {o.warmup}")
    _need(0 <= o.final_lr_ratio <= 1, "optim.final_lr_ratio", f"must be in [0, 1], got {o.final_lr_ratio}")
    end = run_end(cfg)
    _need(o.decay_end >= 0, "optim.decay_end", f"must be >= 0, got {o.decay_end}")
    _need(o.decay_end > 0 or end is not None, "optim.decay_end",
          "must be set with train.clock=epoch and a budget without train.epochs (the run end is unknown)")
    _need(c.strength_ramp_end > 0 or end is not None or c.strength_start == c.strength_end,
          "curriculum.strength_ramp_end",
          "must be set with train.clock=epoch and a budget without train.epochs (the run end is unknown)")
    _need(o.decay_end == 0 or o.decay_end > o.warmup, "optim.decay_end",
          f"must be > optim.warmup ({o.warmup}), got {o.decay_end}")
    _need(len(c.resolutions) >= 1, "curriculum.resolutions", "needs at least one resolution")
    _need(len(c.starts) == len(c.resolutions), "curriculum.starts",
          f"needs one start per resolution ({len(c.resolutions)}), got {len(c.starts)}")
    _need(c.starts[0] == 0, "curriculum.starts", f"first stage must start at 0, got {c.starts[0]}")
    _need(all(a < b for a, b in zip(c.starts, c.starts[1:])), "curriculum.starts",
          f"must be strictly increasing, got {_fmt(c.starts)}")
    if t.clock == "progress":
        _need(c.starts[-1] < 1, "curriculum.starts", f"progress starts must be < 1, got {_fmt(c.starts)}")
        for key, v in [("optim.warmup", o.warmup), ("optim.decay_end", o.decay_end),
                       ("curriculum.strength_ramp_end", c.strength_ramp_end), ("train.eval_every", t.eval_every),
                       ("train.ckpt_every", t.ckpt_every)]:
            _need(v <= 1, key, f"is a progress fraction with train.clock=progress: must be <= 1, got {v}")
    elif t.epochs > 0:  # epoch clock, an epoch plan or cap: a stage starting after it would never run
        _need(c.starts[-1] < t.epochs, "curriculum.starts",
              f"stages start after train.epochs={t.epochs:g} would never run, got {_fmt(c.starts)}")
    _need(all(r >= 1 for r in c.resolutions), "curriculum.resolutions", f"must be > 0, got {_fmt(c.resolutions)}")
    for key in ("strength_start", "strength_end"):
        v = getattr(c, key)
        _need(0 <= v <= 1, f"curriculum.{key}", f"must be in [0, 1], got {v}")
    _need(c.strength_ramp_end >= 0, "curriculum.strength_ramp_end", f"must be >= 0, got {c.strength_ramp_end}")
    _validate_augment(cfg.augment)
    return cfg


def _validate_augment(a: AugmentConfig) -> None:
    """AugmentConfig checks its own values in __post_init__ (messages name augment.KEY)."""
    try:
        type(a)(**{f.name: getattr(a, f.name) for f in dataclasses.fields(a)})
    except (TypeError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(msg if msg.startswith("augment.") else f"augment: {msg}") from None


def run_end(cfg: Config) -> float | None:
    """Clock position of the planned end of the run: 1 with the progress clock, the epoch count
    with the epoch clock, None if unknown (epoch clock, budget, no epoch cap)."""
    if cfg.train.clock == "progress":
        return 1.0
    return cfg.train.epochs if cfg.train.epochs > 0 else None


# ---------------------------------------------------------------- files and command line

def to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain dict (tuples become lists in JSON)."""
    return dataclasses.asdict(cfg)


def from_dict(d: dict[str, Any], check: bool = True) -> Config:
    """Inverse of to_dict (e.g. a run's config.json); unknown keys and wrong types are errors; the
    value checks (`validate`) run unless `check` is False (a resume validates after its overrides)."""
    cfg = Config()
    if not isinstance(d, dict):
        raise ConfigError(f"config: expected an object of sections ({', '.join(SECTIONS)}), got {type(d).__name__}")
    for sec, values in d.items():
        if sec in SECTIONS and not isinstance(values, dict):
            raise ConfigError(f"{sec}: expected an object of key: value, got {type(values).__name__}")
        if sec not in SECTIONS:
            raise ConfigError(f"{sec}: unknown section (sections: {', '.join(SECTIONS)})")
        for name, value in values.items():
            obj, attr, tp = _lookup(cfg, f"{sec}.{name}")
            setattr(obj, attr, check_type(f"{sec}.{name}", value, tp))
    return validate(cfg) if check else cfg


# Keys a resumed run may change freely: where the data is and how fast or verbosely it runs, not
# what is trained (anything else changes the plan and needs --force). The arithmetic's precision
# and the memory layout go with the device (`auto` follows it), so they may change with it.
RESUME_SAFE = frozenset({
    "data.dir", "data.num_workers", "data.batches_ahead", "data.val_batch_size", "train.device", "train.compile",
    "train.precision", "train.channels_last", "train.threads", "train.progress_bar", "train.plot", "train.log_every", "train.eval_every", "train.max_steps",
    "train.ckpt_every", "train.ckpt_every_min", "train.ckpt_keep", "train.nonfinite",
})


def plan_changes(old: Config, new: Config) -> list[str]:
    """Keys outside RESUME_SAFE whose values differ, as `key: old -> new`."""
    a, b = keys(old), keys(new)
    return [f"{k}: {_fmt(a[k][0])} -> {_fmt(b[k][0])}" for k in a
            if k not in RESUME_SAFE and a[k][0] != b[k][0]]


def save(cfg: Config, path: str | os.PathLike) -> None:
    """Written under a temporary name and renamed: a resume rewrites it, and a kill or a full disk
    in the middle must not leave a run that cannot be resumed."""
    from pipeline.logs import write_json
    write_json(path, to_dict(cfg))


def load_config(name_or_path: str, option: str = "--config") -> Config:
    """A named config (configs/NAME.py) or a path to a Python file exposing `get_config()`; errors
    name the command-line `option` that gave it."""
    p = Path(name_or_path)
    if p.suffix == ".py" or os.sep in name_or_path:
        if not p.is_file():
            raise ConfigError(f"{option}: no such file {name_or_path!r}")
        spec = importlib.util.spec_from_file_location(f"_vitday_config_{p.stem}", p)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(f"configs.{name_or_path}")
        except ModuleNotFoundError as e:
            if e.name != f"configs.{name_or_path}":
                raise
            import configs
            names = sorted(q.stem for q in Path(configs.__file__).parent.glob("*.py") if q.stem != "__init__")
            raise ConfigError(f"{option}: no config named {name_or_path!r} (known: {', '.join(names)})") from None
    if not hasattr(mod, "get_config"):
        raise ConfigError(f"{option}: {name_or_path!r} has no get_config()")
    cfg = mod.get_config()
    if not isinstance(cfg, Config):
        raise ConfigError(f"{option}: get_config() of {name_or_path!r} returned {type(cfg).__name__}, not Config")
    return cfg


def help_text(cfg: Config, config_name: str | None = None) -> str:
    lines = [
        "usage: python -m pipeline.train [--config NAME_OR_PATH] [--run-dir DIR] [--section.key=value ...]",
        "       python -m pipeline.train --resume DIR [--force] [--section.key=value ...]",
        "",
        "  --config NAME_OR_PATH  a config in configs/ (demo, paper, s16_24h) or a path to a .py file",
        "  --run-dir DIR          output directory (default runs/<config>-<time>); must not hold a run",
        "  --resume DIR           continue the run in DIR from its newest good checkpoint, with its config",
        "  --force                with --resume: allow overrides that change the plan (schedule, model, ...)",
        "",
        f"keys (defaults{' of ' + config_name if config_name else ''}; set with --section.key=value):",
    ]
    sec = None
    for key, (value, tp, help) in keys(cfg).items():
        if key.split(".")[0] != sec:
            sec = key.split(".")[0]
            lines.append(f"  [{sec}]")
        lines.append(f"    --{key}={_fmt(value)}  ({_type_name(tp)})  {help}".rstrip())
    return "\n".join(lines)


@dataclass
class Args:
    cfg: Config
    run_dir: str | None
    config_name: str | None
    help: bool = False
    resume: bool = False  # run_dir holds the run to continue
    force: bool = False  # with resume: plan changes allowed, and a run without a usable checkpoint restarts


def parse_args(argv: list[str]) -> Args:
    """Parse `[--config X] [--run-dir D] [--section.key=value | --section.key value ...] [--help]`.

    The config is loaded first, then overrides are applied in order, then everything is validated.
    """
    items: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help", "--force"):
            items.append(({"-h": "help", "--help": "help", "--force": "force"}[a], None))
            i += 1
            continue
        if not a.startswith("--"):
            raise ConfigError(f"{a}: unexpected argument (overrides look like --section.key=value)")
        if "=" in a:
            k, v = a[2:].split("=", 1)
        else:
            k = a[2:]
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ConfigError(f"{k}: missing value")
            v = argv[i + 1]
            i += 1
        items.append((k, v))
        i += 1
    opts = dict(items)
    name = opts.get("config")
    run_dir = opts.get("run-dir", opts.get("run_dir"))
    resume = opts.get("resume")
    if resume is not None:
        if name or run_dir:
            raise ConfigError("--resume: takes the config and run directory of the run it continues; "
                              "drop --config and --run-dir")
        saved = Path(resume) / "config.json"
        if not Path(resume).exists():
            raise ConfigError(f"--resume: {resume} not found (not a run directory)")
        if not Path(resume).is_dir():
            raise ConfigError(f"--resume: {resume} is not a directory (give the run directory)")
        try:
            # validated once the overrides are applied: a rule added since the run was saved can be
            # met by an override instead of making the run impossible to resume
            cfg = from_dict(json.loads(saved.read_text()), check=False)
        except FileNotFoundError:
            raise ConfigError(f"--resume: {saved} not found (not a run directory)") from None
        except OSError as e:
            raise ConfigError(f"--resume: {saved}: cannot read ({e.strerror or e})") from None
        except ConfigError as e:
            raise ConfigError(f"--resume: {saved}: {e}") from None
        except ValueError as e:
            raise ConfigError(f"--resume: {saved}: {str(e).splitlines()[0]}") from None
        run_dir, name = resume, None
    elif "force" in opts:
        raise ConfigError("--force: only with --resume")
    else:
        cfg = load_config(name) if name else Config()
    before = copy.deepcopy(cfg)
    for k, v in items:
        if k in ("config", "run-dir", "run_dir", "help", "resume", "force"):
            continue
        if "." not in k:
            raise ConfigError(f"{k}: unknown option (keys look like --section.key=value; see --help)")
        override(cfg, k, v)
    # the budget in one unit replaces the config's budget in the other (s16_24h sets budget_h)
    given = {k for k, _ in items}
    for mine, other in (("budget_s", "budget_h"), ("budget_h", "budget_s")):
        if f"train.{mine}" in given and f"train.{other}" not in given:
            setattr(cfg.train, other, 0.0)
    want_help = any(k == "help" for k, _ in items)
    if not want_help:
        try:
            validate(cfg)
        except ConfigError as e:
            if resume is None:
                raise
            raise ConfigError(f"{e} (in {Path(resume) / 'config.json'} or an override: override it, "
                              f"with --force if it changes the plan)") from None
    if resume is not None and "force" not in opts:
        changed = plan_changes(before, cfg)
        if changed:
            raise ConfigError(f"--resume: overrides change the run's plan ({'; '.join(changed)}); "
                              f"add --force to continue with them")
    return Args(cfg, run_dir, name, want_help, resume=resume is not None, force="force" in opts)
