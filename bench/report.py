"""Issue 8's figures in one table, from the JSON that bench/gpu.sh leaves in its output folder.

    python -m bench.report results/gpu            # prints Markdown; writes results/gpu/report.json

Per resolution: the model bound (bench.model, compiled: images/s and MFU), the trainer's step
with the data on the device, end to end and the loader alone (bench.train), FFCV vs ImageFolder
(bench.loader) and the usual way (bench.usual); then each target of the issue with its measured
value and whether it is met. A file that is missing (its step failed or was not run) leaves its
columns empty and its targets "not measured": nothing is filled in or assumed.

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


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise SystemExit(f"error: {path}: not valid JSON ({e})") from None


def collect(folder: Path) -> dict:
    """Per-resolution figures and target verdicts from the benchmark JSON files in folder."""
    model, train = _load(folder, "model_bench.json"), _load(folder, "train_bench.json")
    loader, usual = _load(folder, "loader_bench.json"), _load(folder, "usual_bench.json")
    rows: dict[int, dict] = {}

    def row(res) -> dict:
        return rows.setdefault(int(res), {"res": int(res)})

    for r in (model or {}).get("rows", []):
        best = r.get("compiled") or r.get("eager") or {}
        row(r["size"]).update(model_bound=best.get("images_per_s"), mfu=best.get("mfu"),
                              model_mode="compiled" if "compiled" in r else "eager")
    for res, r in (train or {}).get("results", {}).items():
        row(res).update(on_device=r["on_device"], end_to_end=r["end_to_end"], loader=r["loader"])
        if (train or {}).get("loader_prefetched"):  # windows short of 4x batches_ahead: overstated
            row(res)["loader_prefetched"] = True
    for r in (loader or {}).get("rows", []):
        row(r["size"]).update(ffcv=r["ffcv_images_per_s"], imagefolder=r["torchvision_images_per_s"],
                              beton_mode=r["mode"])
    for res, r in (usual or {}).get("results", {}).items():
        row(res)["usual"] = r["images_per_s"]
    table = [rows[k] for k in sorted(rows)]
    for r in table:
        if r.get("end_to_end") and r.get("model_bound"):
            r["e2e_over_model"] = r["end_to_end"] / r["model_bound"]
        if r.get("end_to_end") and r.get("on_device"):
            r["e2e_over_on_device"] = r["end_to_end"] / r["on_device"]
        if r.get("end_to_end") and r.get("usual"):
            r["e2e_over_usual"] = r["end_to_end"] / r["usual"]

    targets = []
    at224 = rows.get(224, {})
    targets.append(_verdict("model bound MFU at 224 px", at224.get("mfu"), MFU_TARGET, "fraction"))
    for r in table:
        if r.get("loader_prefetched") and r.get("ffcv") is not None:  # bench.loader's whole passes instead
            r["loader"] = min(r["loader"], r["ffcv"])
        if r.get("e2e_over_model") is not None and r.get("loader") is not None:
            if r["loader"] >= E2E_TARGET * r["model_bound"]:
                targets.append(_verdict(f"end to end / model bound at {r['res']} px", r["e2e_over_model"],
                                        E2E_TARGET, "ratio"))
            else:
                targets.append({"target": f"end to end / model bound at {r['res']} px", "value": r["e2e_over_model"],
                                "goal": E2E_TARGET, "met": None,
                                "note": f"loader-bound: the loader alone gives {r['loader']:.0f} img/s, "
                                        f"below {E2E_TARGET:.0%} of the model bound {r['model_bound']:.0f}"})
        if r["res"] <= USUAL_MAX_RES and r.get("e2e_over_usual") is not None:
            targets.append(_verdict(f"end to end / usual way at {r['res']} px", r["e2e_over_usual"],
                                    USUAL_TARGET, "ratio"))
    for kind, sizes, goal in (("end to end / model bound", "", E2E_TARGET),
                              ("end to end / usual way", f" at {USUAL_MAX_RES} px and below", USUAL_TARGET)):
        if not any(t["target"].startswith(f"{kind} at ") for t in targets):
            targets.append(_verdict(f"{kind}{sizes} (no size has both figures)", None, goal, "ratio"))
    src = train or model or {}
    return {"device": (train or {}).get("device") or (model or {}).get("device"),
            "torch": (model or {}).get("torch") or src.get("env", {}).get("versions", {}).get("torch"),
            "batch": (train or {}).get("batch_size") or (model or {}).get("batch"),
            "files": {n: (folder / n).is_file() for n in ("model_bench.json", "train_bench.json",
                                                          "loader_bench.json", "usual_bench.json")},
            # written after each size; complete false: the step was stopped (time limit) part way
            "partial": [n for n, d in (("model_bench.json", model), ("train_bench.json", train),
                                       ("loader_bench.json", loader), ("usual_bench.json", usual))
                        if d is not None and d.get("complete") is False],
            "rows": table, "targets": targets}


def _verdict(name: str, value: float | None, goal: float, kind: str) -> dict:
    if value is None:
        return {"target": name, "value": None, "goal": goal, "met": None, "note": "not measured"}
    return {"target": name, "value": value, "goal": goal, "met": value >= goal, "kind": kind}


def markdown(rep: dict) -> str:
    """The report as a Markdown table plus a list of targets."""
    def n(v, fmt="{:,.0f}"):
        return "" if v is None else fmt.format(v)

    lines = [f"device {rep['device']}, torch {rep['torch']}, batch {rep['batch']} (images/s)", "",
             "| px | model bound | MFU | trainer on device | end to end | loader alone | FFCV (beton) "
             "| ImageFolder | usual way | e2e / model | e2e / on device | e2e / usual |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        ffcv = n(r.get("ffcv")) + (f" ({r['beton_mode']})" if r.get("beton_mode") else "")
        lines.append(f"| {r['res']} | {n(r.get('model_bound'))} | {n(r.get('mfu'), '{:.1%}')} "
                     f"| {n(r.get('on_device'))} | {n(r.get('end_to_end'))} | {n(r.get('loader'))} | {ffcv} "
                     f"| {n(r.get('imagefolder'))} | {n(r.get('usual'))} | {n(r.get('e2e_over_model'), '{:.2f}')} "
                     f"| {n(r.get('e2e_over_on_device'), '{:.2f}')} | {n(r.get('e2e_over_usual'), '{:.1f}x')} |")
    lines.append("")
    for t in rep["targets"]:
        if t["met"] is None:
            lines.append(f"- {t['target']}: {t.get('note')} (goal {t['goal']})")
        else:
            v = f"{t['value']:.1%}" if t.get("kind") == "fraction" else f"{t['value']:.3f}"
            lines.append(f"- {t['target']}: {v} (goal >= {t['goal']}): {'met' if t['met'] else 'MISSED'}")
    missing = [f for f, ok in rep["files"].items() if not ok]
    if missing:
        lines.append(f"- not found: {', '.join(missing)}")
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
