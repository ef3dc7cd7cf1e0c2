"""Run logs: Arrow IPC streams appended in batches, a tolerant reader, summary.json and env.json.

steps.arrow and evals.arrow are Arrow IPC *stream* files (`pyarrow.ipc.new_stream`): the schema,
then one record batch per flush. A reader can open them while the run is going; a crash can
leave a truncated last batch, so `read_table` reads batches until the first error and keeps
what came before. Columns are fixed by CONTRACTS.md / shared/DESIGN.md.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.ipc as ipc

STEPS_SCHEMA = pa.schema([
    ("step", pa.int64()), ("epoch", pa.float64()), ("wall_s", pa.float64()),
    ("images_seen", pa.int64()), ("flops_seen", pa.float64()), ("resolution", pa.int32()),
    ("lr", pa.float64()), ("loss", pa.float64()), ("images_per_s", pa.float64()),
])
EVALS_SCHEMA = pa.schema([
    ("step", pa.int64()), ("wall_s", pa.float64()), ("images_seen", pa.int64()),
    ("flops_seen", pa.float64()), ("resolution", pa.int32()),
    ("top1", pa.float64()), ("top5", pa.float64()), ("loss", pa.float64()),
])
SCHEMAS = {"steps.arrow": STEPS_SCHEMA, "evals.arrow": EVALS_SCHEMA}


class ArrowLog:
    """Append-only Arrow IPC stream of rows, buffered on the host and flushed in record batches.

    Args:
        path: file to create (must not exist: runs are never overwritten).
        schema: the table's schema; rows are dicts with exactly its column names.
        flush_rows: write a batch once this many rows are buffered.
        flush_s: or once this many seconds passed since the last write.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, flush_rows: int = 64, flush_s: float = 30.0,
                 keep: pa.Table | None = None):
        self.path = Path(path)
        self.schema = schema
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self._rows: list[dict[str, Any]] = []
        self._last = time.monotonic()
        if keep is None:
            self._sink = open(self.path, "xb")
            self._writer = ipc.new_stream(self._sink, schema)
        else:  # a new stream holding `keep`, renamed over the old file once written
            tmp = self.path.with_name(f".{self.path.name}.partial")
            self._sink = open(tmp, "wb")
            self._writer = ipc.new_stream(self._sink, schema)
            for batch in keep.cast(schema).to_batches():
                self._writer.write_batch(batch)
            self._sink.flush()
            os.fsync(self._sink.fileno())
            os.replace(tmp, self.path)  # the open file keeps being appended under its new name
        self._sink.flush()

    @classmethod
    def resume(cls, path: str | os.PathLike, schema: pa.Schema, upto_step: int, **kw) -> "ArrowLog":
        """Continue a log of a resumed run: rows with step <= upto_step are kept (what the
        checkpoint covers), later ones (logged after it, before the crash) are dropped, so the
        resumed run adds no duplicate and leaves no gap."""
        path = Path(path)
        old = read_table(path, schema) if path.exists() else schema.empty_table()
        keep = old.filter(pa.compute.less_equal(old["step"], upto_step))
        return cls(path, schema, keep=keep, **kw)

    def append(self, row: dict[str, Any]) -> None:
        if set(row) != set(self.schema.names):
            raise KeyError(f"{self.path.name}: row keys {sorted(row)} != columns {self.schema.names}")
        self._rows.append(row)
        if len(self._rows) >= self.flush_rows or time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self, sync: bool = False) -> None:
        """Write the buffered rows; with `sync`, to the disk (fsync), as before a checkpoint, so a
        host crash cannot keep a checkpoint whose steps the log lost."""
        try:
            if self._rows and self._writer is not None:
                cols = {n: [r[n] for r in self._rows] for n in self.schema.names}
                self._writer.write_batch(pa.RecordBatch.from_pydict(cols, schema=self.schema))
                self._sink.flush()
                self._rows.clear()
            if sync and self._writer is not None:
                os.fsync(self._sink.fileno())
        except OSError as e:  # name the file: the sink's errors carry none
            raise OSError(e.errno, e.strerror or str(e), str(self.path)) from e
        self._last = time.monotonic()

    def close(self) -> None:
        if self._writer is None:
            return
        self.flush()
        self._writer.close()
        self._sink.close()
        self._writer = None

    def __enter__(self) -> "ArrowLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_table(path: str | os.PathLike, schema: pa.Schema | None = None) -> pa.Table:
    """Read an Arrow IPC stream written by ArrowLog, tolerating a truncated end.

    Reads record batches until the first error (a crash mid-write) and returns those. A file too
    short to hold a schema gives an empty table with `schema` (default: the known schema for
    steps.arrow / evals.arrow by file name).
    """
    path = Path(path)
    schema = schema or SCHEMAS.get(path.name)
    data = path.read_bytes()
    try:
        reader = ipc.open_stream(pa.py_buffer(data))
    except (pa.ArrowInvalid, OSError):
        if schema is None:
            raise
        return schema.empty_table()
    batches = []
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            break
    return pa.Table.from_batches(batches, schema=reader.schema)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temporary file, synced, then renamed)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(obj, indent=2, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:  # a full disk, Ctrl-C: no temporary file left behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _git(*args: str) -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: Any = None) -> dict[str, Any]:
    """What a run ran on: git hash (and whether the tree was dirty), versions, hardware."""
    import numpy
    import torch
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                "pyarrow": pa.__version__}
    for mod in ("timm", "ffcv", "torchvision", "numba"):
        try:  # the installed distribution's: FFCV 1.0.2's own __version__ still says 0.0.3rc1
            versions[mod] = importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:  # a missing optional package is recorded, not fatal
            versions[mod] = None
    env: dict[str, Any] = {
        "git_hash": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "versions": versions,
        "argv": sys.argv,
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        p = torch.cuda.get_device_properties(i)
        env["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                      "capability": f"{p.major}.{p.minor}", "count": torch.cuda.device_count()}
    return env
