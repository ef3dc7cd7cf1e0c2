"""An ImageNet-style folder becomes FFCV betons at several maximum resolutions.

    python tools/write_beton.py SRC OUT --resolutions 32,64,128,224 [--workers N]
        [--jpeg-quality Q] [--raw-max-res R] [--max-per-class K] [--splits train,val]
        [--max-bad-fraction F] [--seed S]

SRC holds train/ and val/, one folder per class. For each split and resolution r this writes
OUT/<split>_<r>.beton: every image converted to RGB, its longest side shrunk to r (never
enlarged), stored as raw pixels when r <= --raw-max-res (FFCV decodes a whole stored JPEG
before cropping, so at low resolution the decode is the bottleneck and raw pixels win) and
as JPEG above. OUT/manifest.json, written last, describes the set; the trainer trusts it.

Safety: each beton is written under a temporary name and renamed when complete, with a
hidden record of its settings beside it; a rerun redoes only the betons that are missing or
were written with other settings. Unreadable files are skipped and listed; if more than
--max-bad-fraction of a split is unreadable, nothing final is written and the exit is 1.
Ctrl-C or SIGTERM stops it at the next file or 0.1 s, partial file removed (exit 130 / 143).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import multiprocessing
import os
import queue
import signal
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from multiprocessing import Array, Pool, Value
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

TOOL_VERSION = "1.1"  # 1.1: short sides of at least MIN_SIDE px (1.0's betons are rewritten)
CHECK_VERSION = 2  # of the check's verdicts (2: too-small images); .check-<split>.json of another is redone
DEFAULT_RAW_MAX_RES = 64
DEFAULT_QUALITY = 90
IMAGE_FIELD, LABEL_FIELD = "image", "label"
PAGE_SIZE = 1 << 23  # FFCV's default page: one raw image must fit in it
MAX_RAW_RES = int((PAGE_SIZE / 3) ** 0.5)  # 1672 px


class WriteError(Exception):
    """Bad input or settings: main() prints it as one line and exits 1."""


# ---------------------------------------------------------------- reading the folder

@dataclass(frozen=True)
class Item:
    path: Path
    rel: str      # path relative to SRC, as recorded in the manifest
    label: int


def list_classes(src: Path) -> list[str]:
    train = src / "train"
    if not train.is_dir():
        raise WriteError(f"{train}: missing folder (SRC must hold train/<class>/ folders)")
    classes = sorted(d.name for d in train.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise WriteError(f"{train}: no class folders found")
    return classes


def list_split(src: Path, split: str, classes: list[str], max_per_class: int | None) -> list[Item]:
    """Files of one split in (class, name) order. Hidden files, files at class level and
    sub-folders inside class folders are ignored."""
    root = src / split
    if not root.is_dir():
        raise WriteError(f"{root}: missing folder (expected {split}/<class>/ folders)")
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _check_stop()
        _utf8_name(d)
        if d.name not in index:
            raise WriteError(f"{d}: class '{d.name}' is not among the train classes")
        # a dangling symlink is listed, so that the check reports it instead of dropping it silently
        files = sorted(f for f in d.iterdir()
                       if (f.is_file() or (f.is_symlink() and not f.exists())) and not f.name.startswith("."))
        for f in files:
            _utf8_name(f)
        if max_per_class is not None:
            files = files[:max_per_class]
        items += [Item(f, f"{split}/{d.name}/{f.name}", index[d.name]) for f in files]
    return items


def _utf8_name(path: Path) -> None:
    """File and class names go into the manifest and the betons' records as UTF-8."""
    try:
        path.name.encode()
    except UnicodeEncodeError:
        raise WriteError(f"{str(path)!r}: name is not valid UTF-8 (rename it)") from None


# ---------------------------------------------------------------- decoding one image

def _to_rgb(img: Image.Image) -> Image.Image:
    """Any decodable PIL image as 8-bit RGB: alpha over white, 16-bit scaled down."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        if img.mode != "I" or arr.max(initial=0) > 255:
            arr = arr >> 8
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


MIN_SIDE = 2  # px of a stored image's short side (fit_size)


def fit_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    """(w, h) with the longest side shrunk to max_side; never enlarged. The short side keeps
    MIN_SIDE px: a 1-px side gives FFCV's evaluation centre crop (int(0.875 * 1) = 0 px) an empty
    image, and OpenCV aborts the loader process."""
    longest = max(w, h)
    if longest <= max_side:
        return w, h
    s = max_side / longest
    return max(MIN_SIDE, round(w * s)), max(MIN_SIDE, round(h * s))


def load_rgb(path: Path, max_side: int) -> np.ndarray:
    """Decodes path to an (H, W, 3) uint8 array, EXIF orientation applied, longest side
    <= max_side. Raises ValueError with the reason for empty, truncated or non-image files."""
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        with Image.open(path) as img, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's multi-line warnings: the verdict is one line
            target = fit_size(*img.size, max_side)
            # JPEG DCT scaling: decode at 1/2, 1/4 or 1/8 size when that still covers the
            # target; the low-resolution betons then cost a fraction of a full decode.
            if img.format == "JPEG":
                img.draft("RGB", target)
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - a corrupt EXIF block: keep the pixels, unrotated
                pass
            img = _to_rgb(img)
    except UnidentifiedImageError:
        raise ValueError("not an image PIL can identify") from None
    except OSError as e:
        if e.errno is not None:  # the file system's (permission, I/O), not the image's: not remembered
            raise
        raise ValueError(f"cannot decode: {e}") from None
    except (SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot decode: {e}") from None
    except Exception as e:  # noqa: BLE001 - any other decoder failure is this file's, not the run's
        raise ValueError(f"cannot decode: {type(e).__name__}: {e}") from None
    if min(img.size) < MIN_SIDE:
        raise ValueError(f"too small: {img.size[0]}x{img.size[1]} px (expected at least {MIN_SIDE} px a side)")
    size = fit_size(*img.size, max_side)
    if size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


UNREADABLE = "unreadable"  # an OSError while reading: perhaps transient, so never remembered


def _probe(arg: tuple[Path, int]) -> str | None:
    path, max_side = arg
    try:
        load_rgb(path, max_side)
        return None
    except ValueError as e:
        return str(e)
    except OSError as e:  # gone or unreadable since it was listed
        return f"{UNREADABLE} ({e.strerror or e})"


def probe_split(items: list[Item], max_side: int, workers: int, desc: str) -> Iterator[str | None]:
    """Decodes every file once (at the smallest resolution, so cheaply); yields, in order, a
    reason per unreadable file, None per good one."""
    args = [(it.path, max_side) for it in items]
    if workers <= 1:
        yield from (_probe(a) for a in tqdm(args, desc=desc, unit="img"))
        return
    with _signals_held():
        pool = Pool(workers, initializer=_worker_signals)
    with pool:
        yield from tqdm(pool.imap(_probe, args, chunksize=64), total=len(args), desc=desc, unit="img")


CHECK_SAVE_EVERY_S = 60.0


def _stat_key(path: Path) -> list[int] | None:
    """(size, mtime_ns) that a remembered verdict is for; None (never a hit) if stat fails, as for
    a dangling symlink, which the probe then reports."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def check_split(items: list[Item], max_side: int, workers: int, cache: Path,
                desc: str) -> list[str | None]:
    """probe_split, remembering results in `cache` by (path, size, mtime): a rerun (after an
    interruption, or with other settings) decodes only new or changed files again.

    Verdicts reached at a larger `max_side` are kept for a smaller one (a lower resolution added
    to the set): the smaller decode reads the same compressed stream and only scales it down
    further. The file is then labelled with the smaller size, so going back up checks again.

    The cache is saved as the check goes (every CHECK_SAVE_EVERY_S, or ten times as long as a
    save took, whichever is longer) and when it stops for any reason, so Ctrl-C or a crash during
    the check of ImageNet's 1.28M files keeps what was decoded. OSErrors (a flaky disk or network
    mount) are reported but not remembered: the next run reads those files again."""
    try:
        saved = json.loads(cache.read_text())
        same_rules = saved.get("version") == CHECK_VERSION and saved.get("max_side", 0) >= max_side
        known = saved["files"] if same_rules else {}
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = {}
    keys = [_stat_key(it.path) for it in items]
    reasons: list[str | None] = [None] * len(items)
    remembered, todo = {}, []
    for i, (it, key) in enumerate(zip(items, keys)):
        hit = known.get(it.rel)
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == key:
            reasons[i] = remembered[it.rel] = hit[2]
        else:
            todo.append(i)
    if not todo:
        return reasons

    def save() -> float:
        t0 = time.monotonic()
        _atomic_write_json(cache, {"version": CHECK_VERSION, "max_side": max_side, "files": remembered})
        return time.monotonic() - t0

    last, cost = time.monotonic(), 0.0
    try:
        for i, r in zip(todo, probe_split([items[i] for i in todo], max_side, workers, desc)):
            _check_stop()
            reasons[i] = r
            if keys[i] is not None and not (r or "").startswith(UNREADABLE):
                remembered[items[i].rel] = [*keys[i], r]
            if time.monotonic() - last > max(CHECK_SAVE_EVERY_S, 10 * cost):
                cost, last = save(), time.monotonic()
    finally:
        save()
    return reasons


# ---------------------------------------------------------------- writing betons

class ResizedFolder:
    """The indexed dataset FFCV's writer pulls from: (H, W, 3) uint8 and a label.

    A file that fails here (it passed the check, then changed) is counted in a shared flag and
    replaced by a 1-pixel placeholder, so the write goes on and warns of every such file;
    write_beton then discards the temporary file and fails."""

    def __init__(self, items: list[Item], max_side: int):
        self.items, self.max_side = items, max_side
        self.failures = Value("i", 0)
        self.worker_error = Array("c", 400)  # the first failure of a writer worker itself

    def fail(self, message: str) -> None:
        with self.worker_error.get_lock():
            if not self.worker_error.value:
                self.worker_error.value = message.encode(errors="replace")[:399]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        it = self.items[i]
        try:
            return load_rgb(it.path, self.max_side), it.label
        except Exception as e:  # noqa: BLE001 - any failure must reach the parent
            with self.failures.get_lock():
                self.failures.value += 1
            print(f"warning: {it.rel} failed while writing: {e}", file=sys.stderr)
            return np.zeros((1, 1, 3), np.uint8), it.label


def beton_settings(split: str, res: int, mode: str, quality: int, items: list[Item],
                   order: np.ndarray, stats: list[tuple[int, int]]) -> dict:
    """What a beton is a function of; a rerun skips a beton whose record matches. `stats`:
    each item's (size, mtime_ns), so a file rewritten under the same name redoes the beton."""
    h = hashlib.sha256()
    for i in order:
        h.update(f"{items[i].rel}\t{items[i].label}\t{stats[i][0]}\t{stats[i][1]}\n".encode())
    return {"split": split, "resolution": res, "mode": mode,
            "quality": quality if mode == "jpg" else None, "count": len(order),
            "files_sha256": h.hexdigest(), "tool_version": TOOL_VERSION}


def _record_path(beton: Path) -> Path:
    return beton.with_name(f".{beton.name}.json")


def _atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def is_current(beton: Path, settings: dict) -> bool:
    rec = _record_path(beton)
    if not (beton.is_file() and rec.is_file()):
        return False
    try:
        saved = json.loads(rec.read_text())
    except (OSError, ValueError):
        return False
    return saved.get("settings") == settings and saved.get("bytes") == beton.stat().st_size


def write_beton(beton: Path, items: list[Item], order: np.ndarray, res: int, mode: str,
                quality: int, workers: int) -> None:
    """Writes one beton under a temporary name, then renames it; its record goes last.

    The temporary name carries our pid: a writer worker orphaned by a killed run may still
    append to its own file for a while, never to ours; such leftovers are removed first."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    for stale in beton.parent.glob(f".{beton.name}.*partial"):
        stale.unlink(missing_ok=True)
    tmp = beton.with_name(f".{beton.name}.{os.getpid()}.partial")
    _record_path(beton).unlink(missing_ok=True)
    data = ResizedFolder(items, res)
    fields = {IMAGE_FIELD: RGBImageField(write_mode=mode, max_resolution=None, jpeg_quality=quality),
              LABEL_FIELD: IntField()}
    writer = DatasetWriter(str(tmp), fields, num_workers=max(1, workers), page_size=PAGE_SIZE)
    procs: list = []
    try:  # from the partial file's creation to its rename
        _write_watched(writer, list(enumerate(order.tolist())), data, procs, beton.name)
        if data.failures.value:
            raise WriteError(f"{beton.name}: {data.failures.value} file(s) became unreadable "
                             "while writing (warnings above); rerun to write this beton")
        os.replace(tmp, beton)
    except BaseException:  # a failed worker, Ctrl-C, SIGTERM: no partial file stays behind
        for p in procs:
            p.terminate()
            p.join(timeout=10)
            if p.is_alive():  # never wait on a worker
                p.kill()
                p.join()
        _release(writer)
        tmp.unlink(missing_ok=True)
        raise


def _write_watched(writer, indices: list[tuple[int, int]], data: "ResizedFolder", procs: list,
                   name: str) -> None:
    """FFCV 1.0.2's DatasetWriter._write_common with our worker, and its wait for the workers
    made a loop that also ends on a stop (Ctrl-C, SIGTERM) and on a worker that ended in an error
    or was killed (the OOM killer): FFCV's own waits forever for samples a dead worker never
    writes. `procs` receives the worker processes as they start, for the caller to end."""
    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.utils import chunks

    n = writer.num_samples = len(indices)
    writer.prepare()
    work, allocations = multiprocessing.Queue(), multiprocessing.Queue()
    for todo in chunks(indices, 100):
        work.put(todo)
    for _ in range(writer.num_workers):
        work.put(None)  # no more work
    done = Value("Q", 0)
    allocator = MemoryAllocator(writer.fname, writer.data_region_start, writer.page_size)
    args = (work, writer.metadata_sm, writer.metadata_type, writer.fields, allocator, done,
            allocations, data)
    for _ in range(writer.num_workers):
        p = multiprocessing.Process(target=_guarded_worker, args=args)
        with _signals_held():
            p.start()
        procs.append(p)

    def check() -> None:
        _check_stop()
        failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if failed:
            why = data.worker_error.value.decode(errors="replace") or f"exit code {failed[0]}" + (
                f", killed by signal {-failed[0]} (out of memory?)" if failed[0] < 0 else "")
            raise WriteError(f"{name}: a writer worker failed ({why}); nothing written")

    with tqdm(total=n, unit="img") as bar:
        while bar.n < n:
            check()
            bar.update(done.value - bar.n)
            time.sleep(0.1)
    table = []
    while len(table) < len(procs):  # each worker sends its allocations as it ends
        check()
        with contextlib.suppress(queue.Empty):
            table.append(allocations.get(timeout=0.1))
    writer.finalize([a for t in table for a in t])
    _release(writer)
    for p in procs:
        p.join()


class _Stopped(Exception):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's time limit), received by main()'s handler and
    raised where the tool checks for it (_check_stop): between files, and every 0.1 s while
    writing, never at an arbitrary point (an exception raised inside a library's lock or
    Process.start left a lock held or a worker nothing ended, both seen in tests)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_STOP: list[int] = []  # the stop signals received
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _stop_signal(signum, frame):
    _STOP.append(signum)
    if len(_STOP) > 1:  # the second Ctrl-C does not wait: default action (a .partial may stay)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _check_stop() -> None:
    if _STOP:
        raise _Stopped(_STOP[0])


@contextlib.contextmanager
def _signals_held():
    """Hold Ctrl-C and SIGTERM while a worker process is forked: the child starts with them held
    and takes them only once it has set its own handlers (_worker_signals), so main()'s (which
    only records) never runs there, where a SIGTERM from the parent would then be ignored."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _worker_signals() -> None:
    """In a worker process: Ctrl-C is the parent's to handle (it terminates the workers), and
    SIGTERM (how it terminates them) ends the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In a writer worker (Linux): the kernel kills it when the parent dies. After a kill -9 of
    the parent nobody sends the work queue's end markers, and a worker would wait on it forever,
    holding its memory and the deleted partial beton open."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no prctl
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os._exit(1)


def _guarded_worker(*args) -> None:
    """FFCV's indexed-dataset worker, but a failure of its own (disk full, an encoder error)
    leaves its message and a non-zero exit code for the parent's loop."""
    from ffcv.writer import worker_job_indexed_dataset

    _die_with_parent()
    _worker_signals()
    try:
        worker_job_indexed_dataset(*args)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which stops the write
        args[-1].fail(f"{type(e).__name__}: {e}")
        sys.exit(1)


def _release(writer) -> None:
    """Free the shared memory FFCV's writer holds (before the writer makes it, FFCV keeps a
    placeholder int there; after, a second release does nothing)."""
    from multiprocessing import shared_memory

    sm = getattr(writer, "metadata_sm", None)
    if isinstance(sm, shared_memory.SharedMemory):
        with contextlib.suppress(OSError):
            sm.close()
            sm.unlink()


# ---------------------------------------------------------------- the whole tool

def run(src: Path, out: Path, resolutions: list[int], splits: list[str], workers: int,
        quality: int, raw_max_res: int, max_per_class: int | None,
        max_bad_fraction: float, seed: int) -> dict:
    """Writes the beton set and its manifest; returns the manifest."""
    classes = list_classes(src)
    listed = {s: list_split(src, s, classes, max_per_class) for s in splits}
    for s, items in listed.items():
        if not items:
            raise WriteError(f"{src / s}: no image files found")

    # Pass 1: find unreadable files before anything final is written.
    if out.exists() and not out.is_dir():
        raise WriteError(f"{out}: exists and is not a folder (OUT must be a folder)")
    out.mkdir(parents=True, exist_ok=True)
    kept, skipped = {}, {}
    for s, items in listed.items():
        reasons = check_split(items, min(resolutions), workers, out / f".check-{s}.json",
                              desc=f"check {s}")
        skipped[s] = [{"path": it.rel, "reason": r} for it, r in zip(items, reasons) if r]
        kept[s] = [it for it, r in zip(items, reasons) if r is None]
        for sk in skipped[s]:
            print(f"warning: skipped {sk['path']}: {sk['reason']}", file=sys.stderr)
        frac = len(skipped[s]) / len(items)
        if frac > max_bad_fraction:
            raise WriteError(
                f"{src / s}: {len(skipped[s])} of {len(items)} files unreadable "
                f"({100 * frac:.2f} %), above --max-bad-fraction {100 * max_bad_fraction:.2f} %; "
                "nothing written")
        if not kept[s]:
            raise WriteError(f"{src / s}: no readable images")
        if s == "train":
            have = {it.label for it in kept[s]}
            for c in (c for i, c in enumerate(classes) if i not in have):
                print(f"warning: {src / s / c}: no readable images (the class keeps its label, "
                      "with nothing to learn it from)", file=sys.stderr)
    n_skipped = sum(len(v) for v in skipped.values())
    n_listed = sum(len(v) for v in listed.values())
    print(f"checked {n_listed} files: {n_skipped} skipped as unreadable")

    # Pass 2: the betons. The manifest goes first so nothing trusts a half-rewritten set.
    manifest_path = out / "manifest.json"
    if manifest_path.is_dir():
        raise WriteError(f"{manifest_path}: is a folder, expected the manifest file (remove it)")
    others = _other_splits(manifest_path, classes, splits)
    manifest_path.unlink(missing_ok=True)
    betons, rows = [], []
    for s in splits:
        # One shuffled order per split (its own seed, so writing one split alone gives the same
        # order), shared by all resolutions, so that FFCV's QUASI_RANDOM order does not yield
        # class-sorted batches.
        order = np.random.default_rng([seed, zlib.crc32(s.encode())]).permutation(len(kept[s]))
        stats = [(st.st_size, st.st_mtime_ns) for st in (it.path.stat() for it in kept[s])]
        for res in sorted(resolutions):
            mode = "raw" if res <= raw_max_res else "jpg"
            beton = out / f"{s}_{res}.beton"
            settings = beton_settings(s, res, mode, quality, kept[s], order, stats)
            if is_current(beton, settings):
                rate = "reused"
            else:
                t0 = time.perf_counter()
                write_beton(beton, kept[s], order, res, mode, quality, workers)
                rate = f"{len(order) / (time.perf_counter() - t0):.0f}"
                _atomic_write_json(_record_path(beton),
                                   {"settings": settings, "bytes": beton.stat().st_size})
            size = beton.stat().st_size
            betons.append({"split": s, "resolution": res, "path": beton.name, "mode": mode,
                           "quality": settings["quality"], "count": len(order), "bytes": size})
            rows.append((s, res, mode, len(order), size, rate))

    manifest = {
        "tool": "vitday tools/write_beton.py", "tool_version": TOOL_VERSION,
        "source": str(src.resolve()), "classes": classes, "num_classes": len(classes),
        "raw_max_res": raw_max_res, "jpeg_quality": quality, "seed": seed,
        "fields": {"image": IMAGE_FIELD, "label": LABEL_FIELD},
        "splits": {**others["splits"], **{s: {"count": len(kept[s]), "listed": len(listed[s]),
                                                 "skipped": skipped[s]} for s in splits}},
        "betons": others["betons"] + betons,
    }
    _atomic_write_json(manifest_path, manifest)
    print_table(rows)
    if n_skipped:
        print(f"{n_skipped} file(s) skipped as unreadable; listed in {manifest_path}")
    return manifest


def _other_splits(manifest_path: Path, classes: list[str], splits: list[str]) -> dict:
    """The entries of the previous manifest for splits this run does not write, kept when their
    betons are intact (same classes, file and record of the recorded size), so that writing one
    split alone does not drop the others from the set."""
    keep = {"splits": {}, "betons": []}
    try:
        old = json.loads(manifest_path.read_text())
        if old.get("classes") != classes:
            return keep
        for s, entry in old["splits"].items():
            if s in splits:
                continue
            mine = [b for b in old["betons"] if b["split"] == s]
            beton_files = [manifest_path.parent / b["path"] for b in mine]
            if mine and all(p.is_file() and p.stat().st_size == b["bytes"] and _record_path(p).is_file()
                            for p, b in zip(beton_files, mine)):
                keep["splits"][s] = entry
                keep["betons"] += mine
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {"splits": {}, "betons": []}
    return keep


def print_table(rows) -> None:
    print(f"{'split':<6} {'res':>5} {'mode':<4} {'count':>9} {'size':>10} {'images/s':>9}")
    for s, res, mode, n, size, rate in rows:
        print(f"{s:<6} {res:>5} {mode:<4} {n:>9} {size / 2**20:>8.1f}Mi {rate:>9}")


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'")
    if not vals or any(v < 8 for v in vals):
        raise argparse.ArgumentTypeError(f"expected resolutions >= 8, got '{text}'")
    return sorted(set(vals))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="folder with train/<class>/ and val/<class>/")
    p.add_argument("out", type=Path, help="output folder for the betons and manifest.json")
    p.add_argument("--resolutions", type=_int_list, default=[32, 64, 128, 224],
                   help="maximum longest sides, comma-separated (default 32,64,128,224)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes for decoding and writing (default: all cores)")
    p.add_argument("--jpeg-quality", type=int, default=DEFAULT_QUALITY,
                   help=f"JPEG quality of the jpg betons (default {DEFAULT_QUALITY})")
    p.add_argument("--raw-max-res", type=int, default=DEFAULT_RAW_MAX_RES,
                   help=f"resolutions up to this are stored as raw pixels (default {DEFAULT_RAW_MAX_RES})")
    p.add_argument("--max-per-class", type=int, default=None,
                   help="at most K files per class and split (first K by name)")
    p.add_argument("--splits", default="train,val", help="splits to write (default train,val)")
    p.add_argument("--max-bad-fraction", type=float, default=0.001,
                   help="fail if more than this fraction of a split is unreadable (default 0.001)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled write order")
    args = p.parse_args(argv)
    args.splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    if not args.splits or len(set(args.splits)) != len(args.splits):
        p.error(f"--splits: expected distinct comma-separated names, got {','.join(args.splits)}")
    if not 1 <= args.jpeg_quality <= 100:
        p.error(f"--jpeg-quality: expected 1..100, got {args.jpeg_quality}")
    if args.max_per_class is not None and args.max_per_class < 1:
        p.error(f"--max-per-class: expected >= 1, got {args.max_per_class}")
    if not 0 <= args.max_bad_fraction <= 1:
        p.error(f"--max-bad-fraction: expected 0..1, got {args.max_bad_fraction}")
    too_big = [r for r in args.resolutions if r <= args.raw_max_res and r > MAX_RAW_RES]
    if too_big:
        p.error(f"--raw-max-res: raw images of {too_big[0]} px do not fit FFCV's {PAGE_SIZE >> 20} MiB "
                f"page; store resolutions above {MAX_RAW_RES} px as JPEG (a lower --raw-max-res)")
    return args


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    _STOP.clear()
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _stop_signal)
    try:
        run(a.src, a.out, a.resolutions, a.splits, a.workers, a.jpeg_quality, a.raw_max_res,
            a.max_per_class, a.max_bad_fraction, a.seed)
    except _Stopped as e:
        print(f"error: {a.out}: stopped by {signal.Signals(e.signum).name}; no partial file is left, "
              "finished betons and the files checked so far are kept: rerun the same command to "
              "continue", file=sys.stderr)
        return 128 + e.signum
    except WriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # permissions, a full disk outside the betons' own writes
        print(f"error: {e.filename or a.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
