"""Checkpoints of a run: written atomically, verified by a checksum, loaded without pickled code.

    RUN/checkpoints/ckpt-000001234.pt     torch.save of a dict of tensors and plain values
    RUN/checkpoints/ckpt-000001234.json   sha256, size and step of that file (written after it)

A checkpoint counts only once its .json is there and its bytes hash to the recorded sha256, so
a file cut short by `kill -9`, a full disk or a flipped bit is never mistaken for a good one:
`load_latest` warns and falls back to the previous checkpoint. Files are written under a
temporary name and renamed; the last `keep` checkpoints are kept, and any of a higher step (the
ones a resume skipped as unusable: a future this run no longer has) are renamed aside to
`*.abandoned` so they can neither crowd out new checkpoints nor be resumed from. Loading uses
`torch.load(weights_only=True)`: a checkpoint cannot run code.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (the previous ones are intact) or none could be read."""


def path_for(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"ckpt-{step:09d}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def listing(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files in the folder, newest (highest step) first; verified or not."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if _NAME.match(p.name)), reverse=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save(ckpt_dir: str | os.PathLike, step: int, payload: dict[str, Any], keep: int = 3) -> Path:
    """Write `payload` as the checkpoint of `step`, then drop all but the newest `keep`.

    Args:
        ckpt_dir: folder of the checkpoints (created if missing).
        step: optimizer steps done; names the file.
        payload: tensors, dicts, lists and plain values (what weights_only loading accepts).
        keep: checkpoints to keep (>= 1).

    Raises CheckpointError naming the file if it cannot be written (disk full, ...); no partial
    file is left and earlier checkpoints are untouched.
    """
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = path_for(d, step)
    buf = io.BytesIO()
    torch.save(dict(payload, format=FORMAT, step=step), buf)
    data = buf.getvalue()
    meta = {"file": path.name, "step": step, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "format": FORMAT}
    try:
        _sidecar(path).unlink(missing_ok=True)  # an older record of this step no longer applies
        _write_atomic(path, data)
        _write_atomic(_sidecar(path), (json.dumps(meta, indent=2) + "\n").encode())
    except OSError as e:
        path.unlink(missing_ok=True)
        good = [p.name for p in listing(d) if p != path and _sidecar(p).is_file()]
        prev = f"previous checkpoint {good[0]} intact" if good else "no earlier checkpoint"
        raise CheckpointError(f"{path}: not written ({e.strerror or e}); {prev}") from None
    for p in listing(d):
        if int(_NAME.match(p.name).group(1)) > step:
            for f in (p, _sidecar(p)):
                if f.exists():
                    os.replace(f, f.with_name(f.name + ".abandoned"))
    for old in listing(d)[keep:]:
        old.unlink(missing_ok=True)
        _sidecar(old).unlink(missing_ok=True)
    for stale in d.glob(".ckpt-*.partial"):  # left by a process killed mid-write (ours are renamed by now)
        stale.unlink(missing_ok=True)
    return path


def verify(path: str | os.PathLike) -> str | None:
    """None if the checkpoint is complete and intact, else why not (one line)."""
    path = Path(path)
    try:
        meta = json.loads(_sidecar(path).read_text())
    except FileNotFoundError:
        return "no .json record (the write did not finish)"
    except ValueError:
        return "its .json record is not valid JSON"
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if len(data) != meta.get("bytes"):
        return f"{len(data)} bytes, expected {meta.get('bytes')} (truncated)"
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        return "sha256 mismatch (corrupt)"
    return None


def load(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load one verified checkpoint (weights_only: tensors and plain values, no code)."""
    path = Path(path)
    why = verify(path)
    if why:
        raise CheckpointError(f"{path}: {why}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused by weights_only loading (it holds objects other than "
                              f"tensors and plain values)") from None
    if ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {ck.get('format')!r}, expected {FORMAT}")
    return ck


def load_latest(ckpt_dir: str | os.PathLike, map_location: Any = "cpu",
                warn=lambda msg: print(msg, file=sys.stderr)) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies and loads; each one skipped is reported through `warn`.

    Returns (path, checkpoint) or None if the folder holds no usable checkpoint.
    """
    for p in listing(ckpt_dir):
        try:
            return p, load(p, map_location)
        except (CheckpointError, RuntimeError, OSError, ValueError) as e:
            msg = str(e) if str(e).startswith(str(p)) else f"{p}: {e}"
            warn(f"warning: checkpoint {msg.splitlines()[0]}; using the previous one")
    return None
