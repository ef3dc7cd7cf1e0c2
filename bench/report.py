"""Issue 8's figures in one table, from the JSON that bench/gpu.sh leaves in its output folder.

    python -m bench.report results/gpu            # prints Markdown; writes results/gpu/report.json

Per resolution: the model bound (bench.model, compiled: images/s and MFU), the trainer's step
with the data on the device, end to end and the loader alone (bench.train), FFCV vs ImageFolder
(bench.loader) and the usual way (bench.usual); then each target of the issue with its measured
value and whether it is met, then the steps that ran (timings.tsv) and the files not found. A file
that is missing (its step failed or was not run) leaves its columns empty and its targets "not
measured": nothing is filled in or assumed. Every target is listed at every size bench.train was
asked for (its JSON's sizes; while it is partial or missing, also gpu.sh's 64, 128 and 224), and a
figure beside a verdict shows the digits that keep it on the verdict's side of the goal.

Targets (issue 8): the model bound at least 45 % MFU at 224 px; end to end at least 90 % of the
model bound wherever the loader can keep up (the loader alone reaches that 90 %; otherwise the
size is marked loader-bound); end to end at least 3x the usual way at 128 px and below. The
"e2e / on device" column splits the rest: the trainer's step with the data on the device (our
augmentation and AdamW included) against the same with the loader.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.logs import write_json

MFU_TARGET, E2E_TARGET, USUAL_TARGET, USUAL_MAX_RES = 0.45, 0.90, 3.0, 128
# bench/gpu.sh's default sizes: those asked of bench.train when its JSON does not say them all
DEFAULT_SIZES = (64, 128, 224)
PROFILE_SIZES = (128, 224)  # the step profile the issue asks for
STEPS = ("loader", "train", "model", "profile", "usual", "tests", "plan")  # gpu.sh's; report runs last
JSONS = ("model_bench.json", "train_bench.json", "loader_bench.json", "usual_bench.json")


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise SystemExit(f"error: {path}: not valid JSON ({e})") from None


def _first(*values):
    """The first value that is not None (None when all are)."""
    return next((v for v in values if v is not None), None)


def collect(folder: Path) -> dict:
    """Per-resolution figures, target verdicts and the steps that ran, from bench/gpu.sh's output.

    Args:
        folder: bench/gpu.sh's OUT_DIR (the JSON files, timings.tsv, profile.json).

    Returns:
        The report: header (device, torch, batch), rows per resolution, targets (each with value,
        goal, met: True, False or None when it cannot be judged, and a note), files, steps, profile.
    """
    model, train, loader, usual = (_load(folder, n) for n in JSONS)
    profile = _load(folder, "profile.json")
    rows: dict[int, dict] = {}

    def row(res) -> dict:
        return rows.setdefault(int(res), {"res": int(res)})

    for r in (model or {}).get("rows", []):
        mode = "compiled" if r.get("compiled") else "eager"  # --modes eager leaves no compiled figure
        best = r.get(mode) or {}
        # mfu as bench.model wrote it (6 decimals, from its unrounded FLOPs): the JSON's images_per_s and
        # train_gflop_per_image are rounded more, so recomputing from them would be less exact
        row(r["size"]).update(model_bound=best.get("images_per_s"), mfu=best.get("mfu"), model_mode=mode)
    prefetched = bool((train or {}).get("loader_prefetched"))  # windows short of 4x batches_ahead
    for res, r in (train or {}).get("results", {}).items():
        row(res).update(on_device=r["on_device"], end_to_end=r["end_to_end"], loader=r["loader"],
                        loader_prefetched=prefetched)
    for r in (loader or {}).get("rows", []):
        row(r["size"]).update(ffcv=r["ffcv_images_per_s"], imagefolder=r["torchvision_images_per_s"],
                              beton_mode=r["mode"], imagefolder_error=r.get("torchvision_error"))
    for res, r in (usual or {}).get("results", {}).items():
        row(res)["usual"] = r["images_per_s"]
    table = [rows[k] for k in sorted(rows)]
    for r in table:
        if r.get("loader_prefetched") and r.get("ffcv") is not None and r["ffcv"] < r["loader"]:
            # bench.train's figure overstates the loader: bench.loader's whole passes judge it instead
            r.update(loader=r["ffcv"], loader_from="bench.loader")
        for key, num, den in (("e2e_over_model", "end_to_end", "model_bound"),
                              ("e2e_over_on_device", "end_to_end", "on_device"),
                              ("e2e_over_usual", "end_to_end", "usual")):
            if r.get(num) and r.get(den):
                r[key] = r[num] / r[den]

    at224 = rows.get(224, {})
    mfu = _verdict("model bound MFU at 224 px", at224.get("mfu"), MFU_TARGET, "fraction")
    if at224.get("model_bound") is not None and at224.get("mfu") is None:
        mfu["note"] = f"peak unknown for {(model or {}).get('device')} (pass --peak-tflops to bench.model)"
    targets = [_mark_eager(mfu, at224)]
    sizes = sorted({int(s) for s in (train or {}).get("results", {})}
                   | (set() if (train or {}).get("complete") else set(DEFAULT_SIZES)))
    for res in sizes:
        r = rows.get(res, {"res": res})
        targets.append(_mark_eager(_model_bound_verdict(r), r))
        if res <= USUAL_MAX_RES:
            targets.append(_verdict(f"end to end / usual way at {res} px", r.get("e2e_over_usual"), USUAL_TARGET,
                                    "ratio", _lacking(r, "usual")))
    for kind, where, goal in (("end to end / model bound", "", E2E_TARGET),
                              ("end to end / usual way", f" at {USUAL_MAX_RES} px and below", USUAL_TARGET)):
        if all(t["value"] is None for t in targets if t["target"].startswith(f"{kind} at ")):
            targets.append(_verdict(f"{kind}{where} (no size has both figures)", None, goal, "ratio"))
    with_env = [d for d in (train, model, usual) if d is not None]
    machine = (loader or {}).get("machine", {})  # bench.loader runs on the CPU alone: the host's
    return {"device": _first(*(d.get("device") for d in with_env),
                             machine.get("cpu") and f"{machine['cpu']} (loader host)"),
            "torch": _first((model or {}).get("torch"),
                            *(d.get("env", {}).get("versions", {}).get("torch") for d in with_env),
                            machine.get("torch")),
            "batch": _first((train or {}).get("batch_size"), (model or {}).get("batch"),
                            (usual or {}).get("batch_size"), (loader or {}).get("batch")),
            "files": {n: (folder / n).is_file() for n in (*JSONS, "profile.json")},
            # written after each size; complete false: the step was stopped (time limit) part way
            "partial": [n for n, d in zip(JSONS, (model, train, loader, usual))
                        if d is not None and d.get("complete") is False],
            "steps": _steps(folder / "timings.tsv"),
            "profile_sizes": None if profile is None else sorted(int(s) for s in profile.get("sizes", {})),
            "rows": table, "targets": targets}


def _lacking(r: dict, other: str) -> str:
    """The "not measured" note of a ratio of end to end over `other`: which figure is missing."""
    missing = [k.replace("_", " ") for k in ("end_to_end", other) if r.get(k) is None]
    return f"not measured (no {' and no '.join(missing)} figure)" if missing else "not measured"


def _model_bound_verdict(r: dict) -> dict:
    """End to end / model bound at one size, judged only where the loader alone keeps up with 90 %."""
    name, ratio = f"end to end / model bound at {r['res']} px", r.get("e2e_over_model")
    if ratio is None:
        return _verdict(name, None, E2E_TARGET, "ratio", _lacking(r, "model_bound"))
    if r.get("loader_prefetched") and r.get("ffcv") is None:
        return {"target": name, "value": ratio, "goal": E2E_TARGET, "met": None, "kind": "ratio",
                "note": "not judged: bench.train's loader figure was prefetched (windows under 4x "
                        "batches_ahead) and loader_bench.json has no figure at this size, so whether the "
                        "loader keeps up is unknown"}
    if r["loader"] < E2E_TARGET * r["model_bound"]:
        return {"target": name, "value": ratio, "goal": E2E_TARGET, "met": None, "kind": "ratio",
                "note": f"loader-bound: the loader alone gives {r['loader']:.0f} img/s, "
                        f"below {E2E_TARGET:.0%} of the model bound {r['model_bound']:.0f}"}
    v = _verdict(name, ratio, E2E_TARGET, "ratio")
    if ratio > 1:  # end to end also runs AdamW and the augmentation, which the model bound leaves out
        v["note"] = ("above the model bound: the two timings differ (bench.model: fwd+bwd timed with CUDA "
                     "events per window of steps; bench.train: the whole step by the wall clock)")
    return v


def _mark_eager(v: dict, r: dict) -> dict:
    """Notes on v that the model bound at r's size is eager's: bench.model measured no compiled mode."""
    if r.get("model_mode") == "eager":
        v["note"] = "; ".join(n for n in (v.get("note"), "model bound eager, not compiled") if n)
    return v


def _verdict(name: str, value: float | None, goal: float, kind: str, missing: str = "not measured") -> dict:
    """A target's verdict: met is None, with the note `missing`, when value was not measured."""
    if value is None:
        return {"target": name, "value": None, "goal": goal, "met": None, "kind": kind, "note": missing}
    return {"target": name, "value": value, "goal": goal, "met": value >= goal, "kind": kind}


def _steps(path: Path) -> list[dict] | None:
    """timings.tsv's rows (step, seconds, exit: a number or "skipped"), None when there is no file."""
    try:
        lines = path.read_text().splitlines()[1:]
    except FileNotFoundError:
        return None
    return [dict(zip(("step", "seconds", "exit"), line.split("\t"))) for line in lines if line.strip()]


FORMATS = {"fraction": ("{:.{}%}", 1), "ratio": ("{:.{}f}", 3), "times": ("{:.{}f}x", 1)}


def _show(value: float, kind: str, goal: float | None = None, digits: int | None = None) -> str:
    """value as text, with digits added while the text would read as the other side of goal.

    Args:
        value: the unrounded figure, which the verdict compares.
        kind: "fraction" (as %), "ratio" or "times" (a ratio with an x).
        goal: the target it is judged against, if any: 0.44996 then shows as 44.996%, not 45.0%.
        digits: decimals at least (default: 1 for % and x, 3 for ratios).
    """
    fmt, d = FORMATS[kind]
    d = d if digits is None else digits

    def shown(v: float) -> float:
        return float(fmt.format(v, d).rstrip("%x"))

    while goal is not None and d < 9 and (shown(value) >= shown(goal)) != (value >= goal):
        d += 1
    return fmt.format(value, d)


EXITS = {"0": "ok", "124": "FAILED (exit 124: its time limit)", "137": "FAILED (exit 137: killed)",
         "skipped": "SKIPPED (budget spent)"}


def markdown(rep: dict) -> str:
    """The report as a Markdown table, a list of targets, then the steps that ran and what is missing."""
    def n(v, fmt="{:,.0f}"):
        return "" if v is None else fmt.format(v)

    def ratio(r, key, kind, goal, digits):
        return "" if r.get(key) is None else _show(r[key], kind, goal, digits)

    lines = [f"device {rep['device'] or 'unknown'}, torch {rep['torch'] or 'unknown'}, batch {rep['batch']} "
             "(images/s)", "",
             "| px | model bound | MFU | trainer on device | end to end | loader alone | FFCV (beton) "
             "| ImageFolder | usual way | e2e / model | e2e / on device | e2e / usual |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        bound = n(r.get("model_bound")) + (" (eager)" if r.get("model_mode") == "eager" else "")
        loader = n(r.get("loader")) + (" (bench.loader's)" if r.get("loader_from") else
                                       " (prefetched)" if r.get("loader_prefetched") else "")
        ffcv = n(r.get("ffcv")) + (f" ({r['beton_mode']})" if r.get("beton_mode") else "")
        lines.append(f"| {r['res']} | {bound} | {ratio(r, 'mfu', 'fraction', MFU_TARGET, None)} "
                     f"| {n(r.get('on_device'))} | {n(r.get('end_to_end'))} | {loader} | {ffcv} "
                     f"| {'failed' if r.get('imagefolder_error') else n(r.get('imagefolder'))} | {n(r.get('usual'))} "
                     f"| {ratio(r, 'e2e_over_model', 'ratio', E2E_TARGET, 2)} "
                     f"| {ratio(r, 'e2e_over_on_device', 'ratio', None, 2)} "
                     f"| {ratio(r, 'e2e_over_usual', 'times', USUAL_TARGET, None)} |")
    if any(r.get("loader_from") for r in rep["rows"]):
        lines += ["", "loader alone: (bench.loader's) is bench.loader's FFCV figure, lower than bench.train's, "
                      "whose windows were mostly batches decoded ahead (prefetched)"]
    for r in rep["rows"]:
        if r.get("imagefolder_error"):
            lines.append(f"\nImageFolder at {r['res']} px failed: {r['imagefolder_error']}")
    lines.append("")
    for t in rep["targets"]:
        if t["met"] is None:
            lines.append(f"- {t['target']}: {t['note']} (goal {t['goal']})")
        else:
            note = f"; {t['note']}" if t.get("note") else ""
            lines.append(f"- {t['target']}: {_show(t['value'], t['kind'], t['goal'])} (goal >= {t['goal']}): "
                         f"{'met' if t['met'] else 'MISSED'}{note}")
    lines.append("")
    if rep["steps"] is None:
        lines.append("- steps: timings.tsv not found, so which steps ran is unknown")
    else:
        lines.append("- steps (timings.tsv): " + ", ".join(
            f"{s['step']} {s['seconds']} s {EXITS.get(s['exit'], 'FAILED (exit ' + s['exit'] + ')')}"
            for s in rep["steps"]))
        not_run = [s for s in STEPS if s not in {x["step"] for x in rep["steps"]}]
        if not_run:
            lines.append(f"- not run: {', '.join(not_run)}")
    missing = [f for f, ok in rep["files"].items() if not ok]
    if missing:
        lines.append(f"- not found: {', '.join(missing)}")
    if rep["profile_sizes"] is not None:
        lacking = [s for s in PROFILE_SIZES if s not in rep["profile_sizes"]]
        lines.append(f"- profile.json: {', '.join(map(str, rep['profile_sizes'])) or 'no'} px"
                     + (f" (required {' and '.join(map(str, lacking))} px missing)" if lacking else ""))
    if rep.get("partial"):
        lines.append(f"- partial (stopped before its last size): {', '.join(rep['partial'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="bench/gpu.sh's output folder")
    p.add_argument("--out", type=Path, default=None, help="JSON (default FOLDER/report.json)")
    a = p.parse_args(argv)
    if not a.folder.is_dir():
        print(f"error: {a.folder}: not a folder (bench/gpu.sh's OUT_DIR)", file=sys.stderr)
        return 2
    rep = collect(a.folder)
    if not rep["rows"]:
        print(f"error: {a.folder}: none of model_bench.json, train_bench.json, loader_bench.json, "
              f"usual_bench.json found", file=sys.stderr)
        return 2
    print(markdown(rep))
    write_json(a.out or a.folder / "report.json", rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
