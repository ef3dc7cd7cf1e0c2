"""Forward+backward throughput of a vitday model per resolution, eager vs torch.compile.

    python -m bench.model                                   # CUDA: vitday_small_patch16_local, 32..224 px
    python -m bench.model --device cpu                      # CPU quick default: pico/4 at 32, 64 px
    python -m bench.model --variant vitday_small_patch16 --sizes 64,128,224 --batch 256 --repeats 20
    python -m bench.model --config s16_24h --sizes 224,128,64 --batch 1024   # as the trainer builds it

One step = zero_grad, forward under autocast (bf16 on CUDA, fp32 on CPU unless --dtype), cross-entropy,
backward; no optimizer step, no data loading (the batch already sits on the device). Warm-up steps absorb
compilation (reported separately as compile_s); images/s = batch / median step time over --repeats steps,
CUDA steps timed with events. The compiled model is ``torch.compile(net, dynamic=False)``: one static graph
per resolution, as the trainer uses it. MFU (CUDA only) = 3 x model.forward_flops x images/s / peak, the
peak from PEAK_FLOPS below (dense bf16 tensor-core datasheet numbers) or --peak-tflops.
Writes results/model_bench.json (after each size, `complete` false until the last) and prints a table. CPU figures on a shared machine are indicative only.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import model
from bench.timing import time_calls
from pipeline.augment import allow_static_graphs
from pipeline.logs import write_json

# Dense bf16 tensor-core peak (no sparsity), datasheet; matched by substring of the CUDA device name,
# first match wins. DESIGN.md: ~790 TFLOP/s is what an H100 SXM achieves on large matmuls.
PEAK_FLOPS = (
    ('H100 PCIe', 756e12),
    ('H100 NVL', 835e12),  # the datasheets give 1,671 with sparsity
    ('H200 NVL', 835e12),
    ('H100', 989e12),  # SXM
    ('H200', 989e12),
    ('GH200', 989e12),
    ('A100', 312e12),
    ('L40S', 362e12),
    ('A10', 125e12),
    ('L40', 181e12),  # before L4, which its name contains
    ('L4', 121e12),
    ('RTX 4090', 165e12),
    ('RTX 3090', 71e12),
)


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    """(device name, dense bf16 peak FLOP/s or None when unknown / CPU)."""
    if device.type != 'cuda':
        return platform.processor() or platform.machine(), None
    name = torch.cuda.get_device_name(device)
    return name, peak_for(name)


def peak_for(name: str) -> float | None:
    """PEAK_FLOPS' entry for a CUDA device name (its first key the name contains), None when unknown."""
    return next((peak for key, peak in PEAK_FLOPS if key in name), None)


def time_steps(step, device: torch.device, warmup: int, repeats: int, inner: int = 1) -> tuple[float, list[float]]:
    """(seconds spent in warm-up, milliseconds per step of each timed window of `inner` steps)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    warm_s = time.perf_counter() - t0
    return warm_s, time_calls(step, device, repeats, inner)


def bench_size(net, fn, size: int, batch: int, num_classes: int, device, dtype, warmup: int, repeats: int,
               prepare=lambda x: x, inner: int = 1) -> dict:
    x = prepare(torch.randn(batch, 3, size, size, device=device))
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step():
        net.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = F.cross_entropy(fn(x), y)
        loss.backward()

    warm_s, times = time_steps(step, device, warmup, repeats, inner)
    ms = statistics.median(times)
    return {'warmup_s': round(warm_s, 3), 'step_ms_median': round(ms, 4),
            'step_ms_min': round(min(times), 3), 'images_per_s': round(batch / ms * 1e3, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--variant', default=None, help='default: vitday_small_patch16_local (CUDA), '
                   'vitday_pico_patch4_local (CPU)')
    p.add_argument('--sizes', default=None, help='comma-separated px; default 32..224 step 32 (CUDA), 32,64 (CPU)')
    p.add_argument('--batch', type=int, default=None, help='default 256 (CUDA), 16 (CPU)')
    p.add_argument('--repeats', type=int, default=None, help='timed steps; default 20 (CUDA), 5 (CPU)')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps; the first compiles')
    p.add_argument('--inner', type=int, default=None,
                   help='steps per timed window (default 5 on CUDA: the host queues each next step while the '
                        'device runs, as in training; 1 on the CPU); --repeats windows are timed')
    p.add_argument('--modes', default='eager,compiled')
    p.add_argument('--dtype', choices=('bf16', 'fp32'), default=None, help='autocast dtype; default bf16 on CUDA')
    p.add_argument('--num-classes', type=int, default=1000)
    p.add_argument('--peak-tflops', type=float, default=None, help='override the peak used for MFU')
    p.add_argument('--config', default=None,
                   help="build and compile the model as the trainer does for this config (its model, drop path, "
                        "channels_last, precision, pipeline.train.compiled_forward), so the compiled graphs are "
                        "the trainer's and inductor's cache serves those bench.train compiled; "
                        "--section.key=value overrides follow")
    p.add_argument('--out', default='results/model_bench.json')
    args, rest = p.parse_known_args(argv)
    if rest and not args.config:
        p.error(f"unrecognized arguments: {' '.join(rest)} (config overrides need --config)")

    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    cfg = rt = None
    if args.config:
        from pipeline import config as C
        from pipeline import train as T
        cfg = C.parse_args(['--config', args.config, f'--train.device={device.type}', *rest]).cfg
        rt = T.Runtime.from_config(cfg, device)
        if args.dtype is None:
            args.dtype = 'bf16' if rt.amp_dtype == torch.bfloat16 else 'fp32'
    variant = cfg.model.name if cfg else args.variant or (
        'vitday_small_patch16_local' if cuda else 'vitday_pico_patch4_local')
    sizes = [int(s) for s in args.sizes.split(',')] if args.sizes else (
        list(range(32, 225, 32)) if cuda else [32, 64])
    batch = args.batch or (256 if cuda else 16)
    repeats = args.repeats or (20 if cuda else 5)
    inner = args.inner if args.inner is not None else (5 if cuda else 1)
    if inner < 1 or repeats < 1:
        p.error(f"--inner and --repeats must be >= 1, not {inner} and {repeats}")
    dtype = {'bf16': torch.bfloat16, 'fp32': torch.float32}[args.dtype or ('bf16' if cuda else 'fp32')]
    modes = args.modes.split(',')
    if cuda and cfg is None:
        from pipeline.train import use_fast_cuda_paths
        use_fast_cuda_paths()  # as the trainer does (with a config, Runtime.from_config does it)
    # One static graph per resolution: allow a recompile for each size.
    allow_static_graphs(len(sizes) + 2)

    torch.manual_seed(0)
    prepare = lambda x: x  # noqa: E731
    if cfg is not None:  # as the trainer builds it, at the run's final size
        net = T.build_net(cfg, args.num_classes, cfg.curriculum.resolutions[-1], device, rt)
        compiled = T.compiled_forward(net, dataclasses.replace(rt, compile=True)) if 'compiled' in modes else None
        prepare = rt.prepare
    else:
        net = timm.create_model(variant, num_classes=args.num_classes).to(device).train()
        compiled = torch.compile(net, dynamic=False) if 'compiled' in modes else None
    device_name, peak = peak_flops(device)
    if args.peak_tflops:
        peak = args.peak_tflops * 1e12

    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def result(complete: bool) -> dict:
        return {
            'variant': variant, 'params': model.count_params(net), 'batch': batch, 'dtype': str(dtype),
            'repeats': repeats, 'inner': inner, 'warmup': args.warmup, 'device': device_name, 'peak_flops': peak,
            'cpu_threads': torch.get_num_threads(), 'torch': torch.__version__, 'timm': timm.__version__,
            'python': platform.python_version(), 'config': args.config, 'complete': complete, 'rows': rows,
        }

    for size in sizes:
        flops = model.train_flops(net, size)
        row = {'size': size, 'tokens': net.num_prefix_tokens + (size // net.patch_size[0]) ** 2,
               'train_gflop_per_image': round(flops / 1e9, 4)}
        for mode in modes:
            r = bench_size(net, compiled if mode == 'compiled' else net, size, batch, args.num_classes,
                           device, dtype, args.warmup, repeats, prepare, inner)
            if peak:  # from the step time (0.1 us), not the rounded images/s: MFU to 6 decimals
                r['mfu'] = round(flops * batch / (r['step_ms_median'] / 1e3) / peak, 6)
            row[mode] = r
        rows.append(row)
        write_json(out, result(complete=False))  # a run stopped at its time limit keeps the sizes done
        print(f"{size:>4} px done", flush=True)
    res = result(complete=True)
    write_json(out, res)

    print(f"\n{variant} ({res['params'] / 1e6:.2f} M params), batch {batch}, {dtype}, {device_name}, "
          f"torch {torch.__version__}; median of {repeats} steps, fwd+bwd")
    head = f"{'px':>4} {'tokens':>6} {'GFLOP/img':>10}"
    for mode in modes:
        head += f" {mode + ' img/s':>16}" + (f" {'MFU':>6}" if peak else '') + \
            (f" {'compile s':>10}" if mode == 'compiled' else '')
    if len(modes) == 2:
        head += f" {'speedup':>8}"
    print(head)
    for row in rows:
        line = f"{row['size']:>4} {row['tokens']:>6} {row['train_gflop_per_image']:>10.3f}"
        for mode in modes:
            r = row[mode]
            line += f" {r['images_per_s']:>16.1f}" + (f" {100 * r['mfu']:>5.1f}%" if peak else '') + \
                (f" {r['warmup_s']:>10.1f}" if mode == 'compiled' else '')
        if len(modes) == 2:
            line += f" {row[modes[1]]['images_per_s'] / row[modes[0]]['images_per_s']:>7.2f}x"
        print(line)
    print(f"wrote {out}")
    return res


if __name__ == '__main__':
    main()
