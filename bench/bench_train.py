"""Training speed and model FLOPs utilisation (MFU): the bare training step, and main.py's own loop.

    python bench/bench_train.py --use-gpu --seconds 30            # GPU: the paper's ResNet34, 12 x 15,000, batch 32
    python bench/bench_train.py --preset demo --seconds 20        # CPU: the demo's ResNet10 on 12 x 1,000, about 1 min

What it measures, for one network and input (default: the paper's, ResNet34 on 12 leads x 15,000 samples,
batch 32):

- FLOPs per training record, counted from the network: every Conv1d and Linear of a forward pass at this
  input (forward hooks on a shape-only pass; 2 FLOPs per multiply-accumulate), and a training step as
  3 x the forward (the backward pass computes the gradients of inputs and of weights, twice the forward).
  BatchNorm, ReLU, pooling and Adam are left out (well under 1 % here): the usual MFU convention.
- The bare training step: `models.training.train_one_epoch` itself (augmentation, autocast, BCE, backward,
  Adam -- fused on CUDA -- and no host synchronisation per step) over batches already on the device, so
  only data loading is missing. Samples/s, achieved FLOP/s and the share of the device's dense bf16 peak
  (PEAK_BF16_TFLOPS below; --peak-tflops overrides; on a CPU the peak is unknown unless given). On CUDA:
  fp32, bf16 autocast, and bf16 compiled as main.py runs it (--no-compile leaves that out; --cuda-graphs
  adds torch.compile mode="reduce-overhead").
- Inference as main.py validates: the uncompiled model at the validation batch (8 x the training batch
  on CUDA, 2 x on CPU), bf16 autocast on CUDA.
- main.py's own loop: `models.training.train(cfg)` for 2 epochs on a synthetic preprocess folder (random
  records in the memory-mapped cache, written to a temporary folder), so ECGDataset, the DataLoader with
  main.py's workers, validation and checkpoints all run as in a real run. Epoch 2 as the run's log.csv
  records it (training + validation; epoch 1 holds compilation and warm-up) is compared with the bare
  step of the same precision; the rest of the wall time (setup, checkpoint writes) is printed apart.

--seconds is the timed run time in all, shared among the measurements; warm-up, compilation and writing
the synthetic records come on top. Nothing here needs wfdb, shap, pywavelets or lightgbm.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.inputs import INPUT_SECONDS  # noqa: E402
from models.registry import create_model as build_model, list_models  # noqa: E402
from models.training import RunConfig, Step, train, train_one_epoch  # noqa: E402
from utils.cache import LABELS_CSV, MANIFEST_JSON, SIGNALS_INDEX_CSV, SIGNALS_NPY, write_index
from utils.errors import script_main
from utils.cli import nonnegative_int, positive_float, positive_int
from utils.files import atomic_write, write_csv, write_json
from utils.manifest import write_manifest
from utils.labels import CPSC9, LEADS
from utils.records import SAMPLE_RATE
from utils.presets import PRESETS, preset_defaults  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flop_count import forward_flops  # noqa: E402,F401  (Conv1d, Linear and LSTM FLOPs; tests use it from here)

TRAIN_FACTOR = 3  # training FLOPs per forward FLOP: forward 1, backward 2 (gradients of inputs and of weights)

# Dense (no 2:4 sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' datasheets, whose headline
# figures "with sparsity" are twice these. Matched as whole words against torch.cuda.get_device_name(), in
# this order (more specific names first). They are boost-clock figures: a clock sustained under the power
# limit is lower, which is why the H200 measurements in bench/README.md were first read against 790 TFLOP/s
# (about 80 % of the datasheet's 989); `--peak-tflops 790` reports the share against that instead.
PEAK_BF16_TFLOPS: tuple[tuple[str, float, str], ...] = (
    ("GH200", 989.4, "NVIDIA GH200 datasheet, 1,979 with sparsity"),
    ("H200 NVL", 835.5, "NVIDIA H200 NVL datasheet, 1,671 with sparsity"),
    ("H200", 989.4, "NVIDIA H200 SXM datasheet, 1,979 with sparsity"),
    ("H100 NVL", 835.5, "NVIDIA H100 NVL datasheet, 1,671 with sparsity"),
    ("H100 PCIe", 756.5, "NVIDIA H100 PCIe datasheet, 1,513 with sparsity"),
    ("H100", 989.4, "NVIDIA H100 SXM datasheet, 1,979 with sparsity"),
    ("A100", 312.0, "NVIDIA A100 datasheet, 624 with sparsity"),
    ("L40S", 362.1, "NVIDIA L40S datasheet, 733 with sparsity"),
    ("L4", 121.0, "NVIDIA L4 datasheet, 242 with sparsity"),
    ("A10", 125.0, "NVIDIA A10 datasheet, 250 with sparsity"),
    ("MI300X", 1307.4, "AMD Instinct MI300X datasheet, 2,615 with sparsity"),
)
MAX_SYNTHETIC_BYTES = 2 * 10**9  # cap on the synthetic cache of the main.py-loop measurement
MAX_SYNTHETIC_RECORDS = 5000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the network and input of that preset's training stage (flags below override)")
    p.add_argument("--arch", choices=list_models(), default=None, help="default resnet34")
    p.add_argument("--input-seconds", type=positive_float, default=None,
                   help=f"input length, the last N seconds (default {INPUT_SECONDS:g})")
    p.add_argument("--sample-rate", type=positive_int, default=None, help=f"model input rate (default {SAMPLE_RATE})")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default 32")
    p.add_argument("--seconds", type=positive_float, default=30.0,
                   help="timed run time in all, shared among the measurements (warm-up and compilation on top)")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure the torch.compile'd step (default: on CUDA, as main.py; off on CPU)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="CUDA: also measure torch.compile(mode='reduce-overhead') (CUDA graphs)")
    p.add_argument("--peak-tflops", type=positive_float, default=None,
                   help="the device's dense bf16 peak, TFLOP/s (default: from the table for known GPUs)")
    p.add_argument("--num-workers", type=nonnegative_int, default=None,
                   help="loader workers of the main.py loop (default 4 on CUDA, main.py's default; 0 on CPU)")
    p.add_argument("--no-main-loop", action="store_true", help="skip the main.py-loop measurement")
    p.add_argument("--out", type=Path, default=None, help="also write every number to this JSON file")
    args = p.parse_args(argv)
    preset = preset_defaults(args.preset, "train") if args.preset else {}
    for dest, key, default in (("arch", "arch", "resnet34"), ("input_seconds", "seconds", INPUT_SECONDS),
                               ("sample_rate", "sample_rate", SAMPLE_RATE), ("batch_size", "batch_size", 32)):
        if getattr(args, dest) is None:
            setattr(args, dest, preset.get(key, default))
    args.n_samples = int(round(args.input_seconds * args.sample_rate))
    if args.n_samples < 32:
        p.error(f"--input-seconds {args.input_seconds:g} at {args.sample_rate} Hz is {args.n_samples} samples; "
                f"the network needs at least 32")
    return args


def device_peak(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """(dense bf16 peak in TFLOP/s or None, where it comes from)."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown for a CPU (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, tflops, source in PEAK_BF16_TFLOPS:
        if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", name):
            return tflops, source
    return None, f"{name} is not in the table (pass --peak-tflops)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_batches(batch_size: int, n_samples: int, n_classes: int, device: torch.device, n: int = 2) -> list:
    """A few random (x, y) batches already on the device: the bare step reads no data."""
    gen = torch.Generator().manual_seed(0)
    return [((0.5 * torch.randn(batch_size, len(LEADS), n_samples, generator=gen)).to(device),
             (torch.rand(batch_size, n_classes, generator=gen) < 0.15).float().to(device)) for _ in range(n)]


def time_bare_steps(model: nn.Module, batches: list, device: torch.device, amp: bool, seconds: float,
                    warmup: int, chunks: int = 3) -> dict:
    """Samples/s of main.py's training step (train_one_epoch over batches already on the device), timed
    over about `seconds` after `warmup` steps (compilation, cuDNN autotuning, CUDA-graph recording). The
    timed steps run in `chunks` parts; the median part's rate is reported, and the slowest and fastest
    with it, since a shared machine's load changes from second to second."""
    step = Step(torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None), amp=amp)
    gen = torch.Generator().manual_seed(0)
    batch = len(batches[0][0])

    def run(n: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # train_one_epoch's progress bar, once per part
            train_one_epoch(model, [batches[i % len(batches)] for i in range(n)], step, device, gen, "")
        sync(device)  # train_one_epoch reads its loss back at the end; this makes the end explicit
        return time.perf_counter() - t0

    warm_s = run(warmup)
    probe_s = run(3) / 3
    steps = max(2, int(seconds / chunks / probe_s))
    rates = sorted(steps * batch / run(steps) for _ in range(chunks))
    rate = rates[len(rates) // 2]
    return {"samples_per_s": rate, "step_ms": 1e3 * batch / rate, "steps": steps * chunks,
            "chunk_rates": rates, "warmup_s": warm_s}


@torch.no_grad()
def time_inference(model: nn.Module, batch_size: int, n_samples: int, device: torch.device, amp: bool,
                   seconds: float) -> dict:
    """Samples/s of the uncompiled model in eval mode at `batch_size`, as main.py's validation runs it."""
    model.eval()
    x = torch.randn(batch_size, len(LEADS), n_samples, device=device)

    def run(n: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for _ in range(n):
                model(x)
        sync(device)
        return time.perf_counter() - t0

    run(1)
    probe = run(2) / 2
    repeats = max(2, int(seconds / probe))
    elapsed = run(repeats)
    model.train()
    return {"samples_per_s": repeats * batch_size / elapsed, "batch_size": batch_size, "repeats": repeats}


def write_synthetic_folder(folder: Path, n_records: int, n_samples: int, seed: int = 0) -> Path:
    """A preprocess folder as preprocess.py writes it, of `n_records` random records of `n_samples` at
    500 Hz: the int16 memory-mapped cache, its index, labels.csv (random cpsc9 labels, at least one per
    record, folds 1-10 in turn so the seeded split is exactly 8/1/1) and a manifest that matches. For
    timing, only the shapes and the layout matter, not the values."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = rng.normal(0, 300, size=(len(LEADS), min(n_records, 16) * n_samples)).astype(np.int16)
    total = n_records * n_samples

    def fill(tmp: Path) -> None:  # chunk by chunk: the cache may be larger than the memory we want to use
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(len(LEADS), total))
        for a in range(0, total, block.shape[1]):
            arr[:, a:a + block.shape[1]] = block[:, :min(block.shape[1], total - a)]
        arr.flush()
        del arr

    atomic_write(folder / SIGNALS_NPY, fill)
    ids = [f"BENCH{i:05d}" for i in range(n_records)]
    write_index(folder, ids, np.arange(n_records) * n_samples, [n_samples] * n_records)
    y = rng.random((n_records, len(CPSC9.classes))) < 0.15
    y[np.arange(n_records), rng.integers(0, len(CPSC9.classes), n_records)] = True
    labels = pd.DataFrame(y.astype(int), columns=list(CPSC9.classes))
    labels.insert(0, "patient_id", ids)
    labels["fold"] = np.arange(n_records) % 10 + 1
    write_csv(labels, folder / LABELS_CSV)
    write_manifest(folder / MANIFEST_JSON, f"bench-synthetic-{n_records}x{n_samples}-{seed}",
                   [folder / SIGNALS_NPY, folder / SIGNALS_INDEX_CSV, folder / LABELS_CSV],
                   layout="synthetic (bench/bench_train.py)", label_set=CPSC9.as_dict(), fixed_split=None,
                   seed=seed, sample_rate=SAMPLE_RATE)
    return folder


def time_main_loop(args: argparse.Namespace, device: torch.device, amp: bool, compiled: bool,
                   bare_rate: float, seconds: float) -> dict:
    """main.py's loop, `train(cfg)`, for 2 epochs on synthetic records sized so that an epoch's training
    takes about `seconds` at the bare step's rate; epoch 2 as logged, and the wall time around it."""
    n_cached = int(round(args.input_seconds * SAMPLE_RATE))
    cap = min(MAX_SYNTHETIC_RECORDS, MAX_SYNTHETIC_BYTES // (len(LEADS) * 2 * n_cached))
    n_train = int(min(max(bare_rate * seconds, 4 * args.batch_size), 0.8 * cap))
    n_records = 10 * math.ceil(n_train / 8)  # folds 1-10 in turn: 8 train, 1 validation, 1 test
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        t0 = time.perf_counter()
        folder = write_synthetic_folder(Path(tmp) / "synthetic", n_records, n_cached)
        write_s = time.perf_counter() - t0
        cfg = RunConfig(data_dir=str(folder), arch=args.arch, seconds=float(args.input_seconds),
                        sample_rate=int(args.sample_rate), epochs=2, lr=1e-4, batch_size=args.batch_size,
                        num_workers=args.num_workers, use_gpu=device.type == "cuda", amp=amp, compile=compiled,
                        run_dir=str(Path(tmp) / "run"))
        t0 = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - t0
    history = result["history"]
    n_train = 8 * n_records // 10
    epoch2 = history[1]["seconds"]
    return {"records": n_records, "train_records": n_train, "val_records": n_records // 10,
            "num_workers": args.num_workers, "epoch1_s": history[0]["seconds"], "epoch2_s": epoch2,
            "train_records_per_s": n_train / epoch2, "of_bare_step": n_train / epoch2 / bare_rate,
            "outside_epochs_s": wall - history[0]["seconds"] - epoch2, "wall_s": wall,
            "write_synthetic_s": write_s, "config": dataclasses.asdict(cfg)}


def fmt_flops(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:8.2f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:8.1f} GFLOP/s"


def print_row(label: str, rate: float, flops_per_record: float, peak: float | None, extra: str = "") -> None:
    """One line of the table: samples/s, achieved FLOP/s and, when the peak is known, the MFU."""
    achieved = rate * flops_per_record
    mfu = f"{100 * achieved / (peak * 1e12):5.1f} %" if peak else "    n/a"
    print(f"{label:38s} {rate:10.1f}  {fmt_flops(achieved)}  {mfu}  {extra}")


def bare_step_configs(cuda: bool, compiled: bool, cuda_graphs: bool) -> list[tuple[str, bool, str | None]]:
    """(label, bf16 autocast, torch.compile mode or None) of each bare-step measurement on this device."""
    configs = [("fp32, eager", False, None)]
    if cuda:
        configs.append(("bf16, eager", True, None))
    if compiled:
        configs.append(("bf16, compiled (main.py)" if cuda else "fp32, compiled", cuda, "default"))
    if cuda and cuda_graphs:
        configs.append(("bf16, compiled, CUDA graphs", True, "reduce-overhead"))
    return configs


def measure_bare_steps(args: argparse.Namespace, device: torch.device, configs: list, share: float,
                       step_flops: float, peak: float | None) -> dict:
    """Each configuration's bare training step on batches already on the device; a configuration that
    fails (a compiler missing on this machine) is recorded as its error, the others still run."""
    cuda, n_classes = device.type == "cuda", len(CPSC9.classes)
    batches = device_batches(args.batch_size, args.n_samples, n_classes, device)
    out = {}
    for label, amp, mode in configs:
        torch.manual_seed(0)
        model = build_model(args.arch, len(LEADS), n_classes).to(device)
        train_model = model
        try:
            if mode is not None:
                train_model = torch.compile(model, mode=mode)
            r = time_bare_steps(train_model, batches, device, amp, share, warmup=5 if mode else 2)
        except Exception as e:  # a compiler missing on this machine must not lose the other numbers
            print(f"{label:38s} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            out[label] = {"error": f"{type(e).__name__}: {e}"}
            continue
        r["achieved_flops_per_s"] = r["samples_per_s"] * step_flops
        r["mfu"] = r["achieved_flops_per_s"] / (peak * 1e12) if peak else None
        out[label] = r
        print_row(f"train, {label}", r["samples_per_s"], step_flops, peak,
                  f"{r['step_ms']:.1f} ms/step; {r['steps']} steps in {len(r['chunk_rates'])} parts, "
                  f"{r['chunk_rates'][0]:.1f}-{r['chunk_rates'][-1]:.1f} samples/s; warm-up {r['warmup_s']:.1f} s")
        del model, train_model
        if cuda:
            torch.cuda.empty_cache()
    return out


def measure_inference(args: argparse.Namespace, device: torch.device, seconds: float, fwd: float,
                      peak: float | None) -> dict:
    """Inference as main.py validates: uncompiled, eval mode, at the validation batch."""
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(args.arch, len(LEADS), len(CPSC9.classes)).to(device)
    inf = time_inference(model, args.batch_size * (8 if cuda else 2), args.n_samples, device, cuda, seconds)
    inf["achieved_flops_per_s"] = inf["samples_per_s"] * fwd
    print_row(f"inference, {'bf16' if cuda else 'fp32'}, batch {inf['batch_size']}", inf["samples_per_s"], fwd, peak,
              "eval mode, uncompiled (main.py's validation)")
    return inf


def measure_main_loop(args: argparse.Namespace, device: torch.device, compiled: bool, train_results: dict,
                      share: float, step_flops: float, peak: float | None) -> dict:
    """main.py's loop in main.py's settings (bf16 and compiled on CUDA, eager when compiling failed in the
    bare step; fp32 eager on CPU), compared with the bare step of the same settings."""
    cuda = device.type == "cuda"
    main_compiles = cuda and compiled and "samples_per_s" in train_results.get("bf16, compiled (main.py)", {})
    candidates = (["bf16, compiled (main.py)"] if main_compiles else []) + ["bf16, eager", "fp32, eager"]
    ref = next((c for c in candidates if "samples_per_s" in train_results.get(c, {})), None)
    print(f"\nmain.py's loop: train(cfg), 2 epochs on synthetic records ({ref or 'no bare step to compare'}; "
          f"{args.num_workers} loader workers)", flush=True)
    try:
        bare = train_results[ref]["samples_per_s"] if ref else 1.0
        m = time_main_loop(args, device, cuda, main_compiles, bare, share)
    except Exception as e:  # keep the numbers measured before
        print(f"main.py loop failed: {type(e).__name__}: {e}")
        return {"error": f"{type(e).__name__}: {e}"}
    print_row("main.py loop, epoch 2 (train records)", m["train_records_per_s"], step_flops, peak,
              f"{100 * m['of_bare_step']:.0f} % of the bare step")
    print(f"  {m['train_records']} training + {m['val_records']} validation records: epoch 2 "
          f"{m['epoch2_s']:.2f} s as logged (training + validation), epoch 1 {m['epoch1_s']:.2f} s (warm-up, "
          f"compilation); outside the logged epochs (setup, checkpoint writes) {m['outside_epochs_s']:.2f} s; "
          f"bare step for as many records {m['train_records'] / bare:.2f} s")
    print(f"  at this rate an epoch of 5,504 training records (CPSC2018's 8 folds) takes "
          f"{5504 / m['train_records_per_s']:.1f} s; 40 epochs {40 * 5504 / m['train_records_per_s']:.0f} s")
    return {**m, "bare_reference": ref, "bare_samples_per_s": bare}


@script_main
def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda" if args.use_gpu and torch.cuda.is_available() else "cpu")
    if args.use_gpu and device.type == "cpu":
        print("--use-gpu given but no CUDA device is available; running on CPU")
    cuda = device.type == "cuda"
    compiled = cuda if args.compile is None else args.compile
    if args.num_workers is None:
        args.num_workers = 4 if cuda else 0
    with torch.device("meta"):
        fwd = forward_flops(build_model(args.arch, len(LEADS), len(CPSC9.classes)), len(LEADS), args.n_samples)
    step_flops = TRAIN_FACTOR * fwd
    peak, peak_source = device_peak(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.arch}, input {len(LEADS)} x {args.n_samples} ({args.input_seconds:g} s at {args.sample_rate} Hz), "
          f"batch {args.batch_size}, {name}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
    print(f"FLOPs per record: forward {fwd / 1e9:.2f} GFLOP (Conv1d + Linear, 2 per multiply-accumulate), "
          f"training step {step_flops / 1e9:.2f} GFLOP ({TRAIN_FACTOR} x forward)")
    print(f"peak (dense bf16): {f'{peak:g} TFLOP/s' if peak else 'unknown'} ({peak_source})")

    configs = bare_step_configs(cuda, compiled, args.cuda_graphs)
    share = args.seconds / (len(configs) + 0.5 + (0 if args.no_main_loop else 1))  # of the timed run time
    if cuda:
        torch.backends.cudnn.benchmark = True  # as main.py (outside --deterministic)
    results = {"arch": args.arch, "n_leads": len(LEADS), "n_samples": args.n_samples, "batch_size": args.batch_size,
               "device": name, "torch": torch.__version__, "forward_flops": fwd, "train_flops_per_record": step_flops,
               "peak_tflops": peak, "peak_source": peak_source, "load_average_start": os.getloadavg()[0]}
    print(f"\n{'measurement':38s} {'samples/s':>10s}  {'achieved':>15s}  {'MFU':>7s}")
    results["train"] = measure_bare_steps(args, device, configs, share, step_flops, peak)
    results["inference"] = measure_inference(args, device, share / 2, fwd, peak)
    if not args.no_main_loop:
        results["main_loop"] = measure_main_loop(args, device, compiled, results["train"], share, step_flops, peak)
    results["load_average_end"] = os.getloadavg()[0]
    print(f"\nload average (1 min) at start {results['load_average_start']:.2f}, "
          f"at end {results['load_average_end']:.2f}")
    if args.out:
        write_json(results, args.out)
        print(f"wrote {args.out}")
    return results

if __name__ == "__main__":
    main()
