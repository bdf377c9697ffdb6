"""The PTB-XL benchmark's architectures side by side: size, FLOPs, CPU throughput, and what the full
benchmark would cost on one H100 (an estimate from FLOPs and stated assumptions, never a measurement).

    python bench/bench_archs.py --out bench_archs.csv                    # every registered architecture
    python bench/bench_archs.py --models xresnet1d101,lstm --steps 5     # some of them
    python bench/bench_archs.py --no-measure                            # counts and the estimate only (seconds)

Per architecture, at 12 leads and --classes classes, under the benchmark's protocol (10-s records at
100 Hz, random 2.5-s = 250-sample training crops, batch 128, 50 epochs; scores = maximum over 7 windows of
250 samples every 125):

- parameters; forward FLOPs of one 250-sample crop (Conv1d, Linear and LSTM multiply-accumulates, 2 FLOPs
  each: bench/flop_count.py); training FLOPs per record (3 x the forward: the backward computes gradients
  of inputs and of weights); evaluation FLOPs per record (7 windows x the forward);
- the operators one training step and one evaluation forward dispatch (counted on the CPU, eager; the
  basis of the kernel-launch floor of the estimate);
- measured CPU throughput: records/s of main.py's own training step (`models.training.train_one_epoch`
  with the run's AdamW, one-cycle schedule and the architecture's clipping: random crop, forward, BCE,
  backward, optimiser step) at --batch-size x 12 x 1,000 samples, the median of --steps single steps
  after --warmup; and inference (the run's model in eval mode, 7 windows a record, max over them).

The estimate of the full benchmark (--tasks tasks x the architectures, run one after another) per run:
50 epochs of --train-records records (3 x forward each) plus a validation pass of --val-records records
every epoch (7 x forward, as main.py monitors fold 9), then the evaluation of validation and test
records (7 x forward). A step takes the longer of two times: its FLOPs at --peak-tflops x --mfu (a range),
and a latency floor: for the convolutional networks, the operators it dispatches x --op-us (eager
PyTorch's host time per operator, an assumption), for the LSTMs, their 250 sequential time steps per layer
x --lstm-step-us forward (backward twice that; a bidirectional layer's two directions side by side at
the low end, one after the other at the high end; an assumption). Each task is given the `all` task's split
and --classes classes: an upper bound.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from flop_count import forward_flops  # noqa: E402
from models.inputs import ECGModel  # noqa: E402
from models.registry import count_parameters, create_model, list_models, model_entry, protocol_settings  # noqa: E402
from models.training import RunConfig, make_step, train_one_epoch  # noqa: E402
from utils.errors import script_main
from utils.cli import bounded_float, bounded_int, positive_int
from utils.files import write_csv
from utils.labels import LEADS
from utils.presets import BENCHMARK_MODELS, BENCHMARK_TASKS, PTBXL_PROTOCOL  # noqa: E402

TRAIN_FACTOR = 3        # training FLOPs per forward FLOP (forward 1, backward 2)
RECORD_SAMPLES = int(round(PTBXL_PROTOCOL["seconds"] * PTBXL_PROTOCOL["sample_rate"]))       # 1,000
CROP_SAMPLES = int(round(PTBXL_PROTOCOL["crop_seconds"] * PTBXL_PROTOCOL["sample_rate"]))    # 250
VAL_BATCH_FACTOR = 8    # main.py validates at 8 x the training batch on CUDA
EVAL_BATCH = 64         # predict.py's / benchmark.py's evaluation batch, records
# PTB-XL's `all` task, strat_fold 1-8 / 9 / 10, as the benchmark's paper counts them on release 1.0.1;
# release 1.0.3 holds 38 records fewer (21,799), and the other tasks leave out records without a label
# of theirs: for every task these bound the records from above.
ALL_SPLIT = (17441, 2193, 2203)
H100_SXM_BF16_TFLOPS = 989.4   # dense (no 2:4 sparsity), NVIDIA H100 SXM datasheet
# This project's ResNet34 on one H200 (bench/README.md, "Measured on the H200"): main.py end to end 7.7 %,
# bench_train.py's bare bf16 step 10.9 % of 989.4 TFLOP/s.
MFU_RANGE = (0.077, 0.109)
OP_US_RANGE = (3.0, 8.0)         # host time per eagerly dispatched operator, microseconds (assumed)
LSTM_STEP_US_RANGE = (5.0, 15.0)  # cuDNN LSTM forward, one layer, one time step, microseconds (assumed)


def float_pair(text: str) -> tuple[float, float]:
    """argparse type: 'LOW,HIGH', two positive numbers, LOW <= HIGH."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH (two numbers)") from None
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 < LOW <= HIGH")
    return lo, hi


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None,
                   help="comma list of registered architectures (default: every one; `python -m models`)")
    p.add_argument("--classes", type=bounded_int(1, 10_000), default=71, help="outputs of the task, %(type)s")
    p.add_argument("--batch-size", type=bounded_int(1, 65_536), default=PTBXL_PROTOCOL["batch_size"],
                   help="training batch, records, %(type)s")
    p.add_argument("--inference-batch", type=bounded_int(1, 65_536), default=32,
                   help="records per inference batch (7 windows each), %(type)s")
    p.add_argument("--steps", type=bounded_int(1, 1000), default=3, help="timed steps (the median is kept), %(type)s")
    p.add_argument("--warmup", type=bounded_int(0, 100), default=1, help="untimed steps first, %(type)s")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--no-measure", action="store_true", help="counts and the estimate only, no timing")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this CSV file")
    est = p.add_argument_group("the estimate of the full benchmark on one GPU (assumptions, not measurements)")
    est.add_argument("--tasks", type=bounded_int(1, 100), default=len(BENCHMARK_TASKS.split(",")),
                     help="label tasks, each trained on every architecture, %(type)s")
    est.add_argument("--train-records", type=positive_int, default=ALL_SPLIT[0], help="per task (default: `all`)")
    est.add_argument("--val-records", type=positive_int, default=ALL_SPLIT[1], help="per task (default: `all`)")
    est.add_argument("--test-records", type=positive_int, default=ALL_SPLIT[2], help="per task (default: `all`)")
    est.add_argument("--epochs", type=bounded_int(1, 10_000), default=PTBXL_PROTOCOL["epochs"], help="%(type)s")
    est.add_argument("--peak-tflops", type=bounded_float(0, 1e6, above=True), default=H100_SXM_BF16_TFLOPS,
                     help="the GPU's dense bf16 peak, TFLOP/s (default: H100 SXM), %(type)s")
    est.add_argument("--mfu", type=float_pair, default=MFU_RANGE,
                     help="LOW,HIGH share of the peak a step sustains (default %(default)s: this project's "
                          "ResNet34 on an H200)")
    est.add_argument("--op-us", type=float_pair, default=OP_US_RANGE,
                     help="LOW,HIGH host microseconds per dispatched operator (default %(default)s, assumed)")
    est.add_argument("--lstm-step-us", type=float_pair, default=LSTM_STEP_US_RANGE,
                     help="LOW,HIGH microseconds of one LSTM layer's forward time step (default %(default)s, assumed)")
    args = p.parse_args(argv)
    known = list_models()
    args.models = known if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in known]
    if unknown or not args.models:
        p.error(f"argument --models: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    return args


def run_config(arch: str, batch_size: int) -> RunConfig:
    """The PTB-XL protocol's run settings for `arch` (its registry entry's own ones over the preset's)."""
    settings = {**PTBXL_PROTOCOL, "batch_size": batch_size, **protocol_settings(arch, "ptbxl")}
    return RunConfig.from_args(argparse.Namespace(**settings), arch=arch)


def build(arch: str, n_classes: int, cfg: RunConfig) -> ECGModel:
    """The network inside the run's input rules (standardisation, 7 scoring windows), as main.py builds it."""
    return ECGModel(create_model(arch, len(LEADS), n_classes), cfg.spec)


class OpCounter(TorchDispatchMode):
    """Counts the operators dispatched (views left out: they launch no kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


def batch(n: int, n_classes: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random whole records (n, 12, 1,000) in mV and random labels: only the shapes matter for timing."""
    return (0.5 * torch.randn(n, len(LEADS), RECORD_SAMPLES, generator=gen),
            (torch.rand(n, n_classes, generator=gen) < 0.1).float())


def train_steps(model: nn.Module, cfg: RunConfig, data: tuple, n: int, fused: bool) -> list[float]:
    """Seconds of each of `n` single training steps, main.py's own (`train_one_epoch` over one batch)."""
    step = make_step(cfg, model, steps_per_epoch=1000, cuda=fused)  # fused: the one-kernel AdamW of CUDA runs
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # train_one_epoch's progress bar
            train_one_epoch(model, [data], step, torch.device("cpu"), gen, "")
        times.append(time.perf_counter() - t0)
    return times


@torch.no_grad()
def infer_times(model: nn.Module, x: torch.Tensor, n: int) -> list[float]:
    model.eval()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    model.train()
    return times


def count_ops(arch: str, n_classes: int, cfg: RunConfig) -> tuple[int, int]:
    """(operators of one training step with a fused AdamW, operators of one evaluation forward), eager,
    at a 2-record batch: the count does not depend on the batch."""
    torch.manual_seed(0)
    model = build(arch, n_classes, cfg)
    data = batch(2, n_classes, torch.Generator().manual_seed(1))
    train_steps(model, cfg, data, 1, fused=True)  # lazily created optimiser state is not a per-step cost
    with OpCounter() as train_ops:
        train_steps(model, cfg, data, 1, fused=True)
    model.eval()
    with OpCounter() as eval_ops, torch.no_grad():
        model(data[0])
    return train_ops.count, eval_ops.count


def lstm_layer_steps(model: nn.Module, n_samples: int) -> tuple[int, int]:
    """(sequential layer-time-steps of one forward, the most directions of a layer) over every nn.LSTM."""
    layers = [m for m in model.modules() if isinstance(m, nn.LSTM)]
    return (sum(m.num_layers for m in layers) * n_samples,
            max((2 if m.bidirectional else 1) for m in layers) if layers else 1)


def estimate_run(row: dict, args: argparse.Namespace) -> tuple[float, float]:
    """(low, high) seconds of one run on the GPU: 50 epochs of training and validation, then evaluation.
    Each step: the longer of its FLOPs at the sustained rate and its latency floor."""
    fwd, rng = row["forward_flops"], []
    for k in (0, 1):  # 0: optimistic (higher MFU, shorter latencies), 1: pessimistic
        rate = args.peak_tflops * 1e12 * args.mfu[1 - k]
        op_s, lstm_s = args.op_us[k] * 1e-6, args.lstm_step_us[k] * 1e-6 * (row["lstm_directions"] if k else 1)

        def step_s(records: int, windows: int, factor: int, ops: int) -> float:
            flop_s = records * windows * factor * fwd / rate
            floor = ops * op_s + factor * row["lstm_layer_steps"] * lstm_s
            return max(flop_s, floor)

        val_batch = args.batch_size * VAL_BATCH_FACTOR
        train_epoch = (args.train_records // args.batch_size) * step_s(args.batch_size, 1, TRAIN_FACTOR,
                                                                       row["ops_train_step"])
        if args.train_records % args.batch_size > 1:  # the loader drops a last batch of one record only
            train_epoch += step_s(args.train_records % args.batch_size, 1, TRAIN_FACTOR, row["ops_train_step"])

        def scoring_s(records: int, per_batch: int) -> float:
            full, rest = divmod(records, per_batch)
            return (full * step_s(per_batch, 7, 1, row["ops_eval_forward"])
                    + (step_s(rest, 7, 1, row["ops_eval_forward"]) if rest else 0.0))

        total = args.epochs * (train_epoch + scoring_s(args.val_records, val_batch))
        total += scoring_s(args.val_records, EVAL_BATCH) + scoring_s(args.test_records, EVAL_BATCH)
        rng.append(total)
    return rng[0], rng[1]


def measure(arch: str, args: argparse.Namespace) -> dict:
    """One architecture's row: counts, the CPU timings (unless --no-measure) and the GPU estimate."""
    cfg = run_config(arch, args.batch_size)
    with torch.device("meta"):
        meta = create_model(arch, len(LEADS), args.classes)
    fwd = forward_flops(meta, len(LEADS), CROP_SAMPLES)
    layer_steps, directions = lstm_layer_steps(meta, CROP_SAMPLES)
    ops_train, ops_eval = count_ops(arch, args.classes, cfg)
    row = {"model": arch, "family": model_entry(arch).family, "params": count_parameters(meta),
           "forward_flops": fwd, "train_flops_per_record": TRAIN_FACTOR * fwd, "eval_flops_per_record": 7 * fwd,
           "ops_train_step": ops_train, "ops_eval_forward": ops_eval, "lstm_layer_steps": layer_steps,
           "lstm_directions": directions}
    if not args.no_measure:
        torch.manual_seed(0)
        model = build(arch, args.classes, cfg)
        gen = torch.Generator().manual_seed(0)
        times = train_steps(model, cfg, batch(args.batch_size, args.classes, gen), args.warmup + args.steps, fused=False)
        step_s = statistics.median(times[args.warmup:])
        x = batch(args.inference_batch, args.classes, gen)[0]
        inf_s = statistics.median(infer_times(model, x, args.warmup + args.steps)[args.warmup:])
        row.update(cpu_train_step_s=step_s, cpu_train_records_per_s=args.batch_size / step_s,
                   cpu_train_gflop_per_s=args.batch_size * TRAIN_FACTOR * fwd / step_s / 1e9,
                   cpu_infer_records_per_s=args.inference_batch / inf_s,
                   cpu_infer_gflop_per_s=args.inference_batch * 7 * fwd / inf_s / 1e9)
    low, high = estimate_run(row, args)
    row.update(gpu_est_run_s_low=low, gpu_est_run_s_high=high,
               gpu_est_tasks_s_low=args.tasks * low, gpu_est_tasks_s_high=args.tasks * high)
    return row


def fmt_s(s: float) -> str:
    return f"{s:,.0f} s" if s < 120 else f"{s / 60:,.1f} min"


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    """The table of bench/README.md: counts, CPU measurements, GPU estimates."""
    measured = not args.no_measure
    head = ["model", "parameters", "forward, MFLOP / crop", "training, GFLOP / record", "evaluation, GFLOP / record",
            "ops / training step"]
    if measured:
        head += ["CPU training, records/s (GFLOP/s)", "CPU inference, records/s"]
    head += ["H100 estimate, one run", f"H100 estimate, {args.tasks} tasks"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for r in rows:
        cells = [r["model"], f"{r['params']:,}", f"{r['forward_flops'] / 1e6:,.1f}",
                 f"{r['train_flops_per_record'] / 1e9:.3f}", f"{r['eval_flops_per_record'] / 1e9:.3f}",
                 f"{r['ops_train_step']:,}"]
        if measured:
            cells += [f"{r['cpu_train_records_per_s']:.1f} ({r['cpu_train_gflop_per_s']:.0f})",
                      f"{r['cpu_infer_records_per_s']:.1f}"]
        cells += [f"{fmt_s(r['gpu_est_run_s_low'])} – {fmt_s(r['gpu_est_run_s_high'])}",
                  f"{fmt_s(r['gpu_est_tasks_s_low'])} – {fmt_s(r['gpu_est_tasks_s_high'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@script_main
def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    print(f"{len(args.models)} architectures, 12 leads, {args.classes} classes; crop {CROP_SAMPLES} samples, "
          f"records of {RECORD_SAMPLES}; training batch {args.batch_size}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}",
          flush=True)
    rows = []
    for arch in args.models:
        t0 = time.perf_counter()
        rows.append(measure(arch, args))
        print(f"  {arch}: {time.perf_counter() - t0:.0f} s", flush=True)
    load1 = os.getloadavg()
    print()
    print(markdown(rows, args))
    print(f"\nload average at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    bench = [r for r in rows if r["model"] in BENCHMARK_MODELS.split(",")]
    if bench:
        low, high = sum(r["gpu_est_tasks_s_low"] for r in bench), sum(r["gpu_est_tasks_s_high"] for r in bench)
        print(f"\nESTIMATE (not measured) of the full benchmark on one H100, runs one after another: "
              f"{args.tasks} tasks x {len(bench)} of its architectures = {fmt_s(low)} – {fmt_s(high)}. "
              f"Each task given the `all` split ({args.train_records:,} / {args.val_records:,} / "
              f"{args.test_records:,} records, an upper bound) and {args.classes} classes; {args.epochs} epochs. "
              f"Step time = max(FLOPs at {args.peak_tflops:g} TFLOP/s x MFU {args.mfu[0]:.1%}–{args.mfu[1]:.1%}, "
              f"operators x {args.op_us[0]:g}–{args.op_us[1]:g} µs + LSTM layer-steps x "
              f"{args.lstm_step_us[0]:g}–{args.lstm_step_us[1]:g} µs forward, 3 x that to train); "
              f"data loading, start-up and compilation left out.")
    if args.out:
        write_csv(pd.DataFrame(rows), args.out)
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
