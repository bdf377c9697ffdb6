"""The numbers of bench/gpu_check.sh, from the files its steps leave: a training run's log.csv, its
time-stamped output, and nvidia-smi's utilisation samples.

    python bench/gpu_check_summary.py main --stdout main.out --log-csv run/log.csv --util util.csv
    python bench/gpu_check_summary.py cv --stdout cv.out --runs-dir cv_runs --util util.csv --wall 170 --single-wall 60

Prints `key: value` lines (gpu_check.sh appends them to its results file), including the verdict on
the targets of bench/README.md. The standard library only, so it runs wherever the training ran.

--stdout is the command's output with each line prefixed by the Unix time it was printed at
("1750000000.123456 epoch   1/2 ..."); the epoch lines main.py prints after each epoch's checkpoints
bound an epoch's wall time, checkpoint writes included, which its log.csv (training + validation) leaves out.
"""
from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path

CPSC_TRAIN_RECORDS = 5504       # CPSC2018's 6,877 records, 8 of 10 folds
TARGET_RECORDS_PER_S = 2500     # main.py end to end on one H200 (bench/README.md, Targets)
TARGET_40_EPOCHS_S = 90         # 40 epochs of 5,504 records on one H200
EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+)\s")
SPLIT_LINE = re.compile(r"train (\d+) val (\d+) test (\d+) records(?: \(test fold (\d+)\))?")


def read_stamped(path: Path) -> list[tuple[float, str]]:
    """(Unix time, line) for each line of a time-stamped output; lines without a stamp are skipped."""
    out = []
    for line in Path(path).read_text(errors="replace").splitlines():
        stamp, _, text = line.partition(" ")
        try:
            out.append((float(stamp.replace(",", ".")), text))
        except ValueError:
            continue
    return out


def epoch_line_times(stamped: list[tuple[float, str]]) -> list[float]:
    """When each "epoch k/N" line was printed (after that epoch's checkpoints were written)."""
    return [t for t, text in stamped if EPOCH_LINE.match(text)]


def split_sizes(stamped: list[tuple[float, str]]) -> list[dict]:
    """The train/val/test record counts each run printed, with its test fold (None: the seeded split)."""
    sizes = []
    for _, text in stamped:
        m = SPLIT_LINE.search(text)
        if m:
            sizes.append({"train": int(m[1]), "val": int(m[2]), "test": int(m[3]),
                          "test_fold": int(m[4]) if m[4] else None})
    return sizes


def logged_epoch_seconds(log_csv: Path) -> list[float]:
    """The `seconds` column of a run's log.csv: each epoch's training + validation."""
    with open(log_csv, newline="") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)]


def read_utilisation(path: Path | None) -> list[tuple[float, float]]:
    """(Unix time, GPU utilisation %) from `nvidia-smi --query-gpu=timestamp,utilization.gpu
    --format=csv,noheader,nounits -lms N` (local time stamps, as the shell's clock)."""
    if path is None or not Path(path).exists():
        return []
    samples = []
    for line in Path(path).read_text(errors="replace").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            continue
        try:
            t = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((t, float(parts[1])))
        except ValueError:
            continue
    return samples


def median_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    inside = [u for t, u in samples if t0 <= t <= t1]
    return statistics.median(inside) if inside else None


def summarise_main(stdout: Path, log_csv: Path, util: Path | None = None) -> dict:
    """One main.py run of 2 or more epochs: the last epoch's rate as logged and as wall time, the
    projection to the paper's 40 epochs of 5,504 records, and the median GPU utilisation in that epoch."""
    stamped = read_stamped(stdout)
    sizes = split_sizes(stamped)
    if not sizes:
        raise ValueError(f"{stdout}: no 'train N val M test K records' line (did main.py start training?)")
    n_train = sizes[0]["train"]
    logged = logged_epoch_seconds(log_csv)
    ends = epoch_line_times(stamped)
    if len(logged) < 2 or len(ends) < 2:
        raise ValueError(f"{log_csv}: fewer than 2 epochs finished ({len(logged)} logged, {len(ends)} printed)")
    wall_last = ends[-1] - ends[-2]
    rate_logged, rate_wall = n_train / logged[-1], n_train / wall_last
    warmup_excess = max(0.0, (ends[0] - stamped[0][0]) - wall_last)  # start-up and compilation, once per run
    projected = warmup_excess + 40 * CPSC_TRAIN_RECORDS / rate_wall
    out = {"train_records": n_train, "val_records": sizes[0]["val"], "epochs": len(logged),
           "epoch1_logged_s": logged[0], "last_epoch_logged_s": logged[-1], "last_epoch_wall_s": wall_last,
           "records_per_s_logged": rate_logged, "records_per_s_wall": rate_wall,
           "startup_and_compile_s": warmup_excess, "projected_40_epochs_of_5504_s": projected,
           "gpu_util_median_last_epoch": median_between(read_utilisation(util), ends[-2], ends[-1]),
           "target_records_per_s": TARGET_RECORDS_PER_S, "target_40_epochs_s": TARGET_40_EPOCHS_S}
    out["meets_records_per_s"] = rate_wall >= TARGET_RECORDS_PER_S
    out["meets_40_epochs"] = projected <= TARGET_40_EPOCHS_S
    return out


def summarise_cv(stdout: Path, runs_dir: Path, util: Path | None = None, wall: float | None = None,
                 single_wall: float | None = None) -> dict:
    """cross_validate.py with --jobs: each run's last logged epoch, their summed rate while they share
    the device, and the whole command's wall time against running them one after another."""
    stamped = read_stamped(stdout)
    by_fold = {s["test_fold"]: s for s in split_sizes(stamped)}
    runs = {}
    for log in sorted(Path(runs_dir).glob("*/log.csv")):
        m = re.search(r"fold(\d+)$", log.parent.name)
        fold = int(m[1]) if m else None
        if fold not in by_fold:
            continue
        seconds = logged_epoch_seconds(log)
        n_train = by_fold[fold]["train"]
        runs[fold] = {"train": n_train, "epoch1_logged_s": seconds[0], "last_epoch_logged_s": seconds[-1],
                      "records_per_s": n_train / seconds[-1]}
    if not runs:
        raise ValueError(f"{runs_dir}: no run with a log.csv and a printed split")
    ends = epoch_line_times(stamped)
    out = {"runs": len(runs), "per_fold": runs, "summed_records_per_s": sum(r["records_per_s"] for r in runs.values()),
           "gpu_util_median_training": median_between(read_utilisation(util), ends[0], ends[-1]) if ends else None,
           "wall_s": wall}
    if wall and single_wall:
        out["sequential_estimate_s"] = len(runs) * single_wall
        out["speedup_vs_sequential"] = len(runs) * single_wall / wall
    return out


def print_flat(prefix: str, d: dict) -> None:
    for key, value in d.items():
        if isinstance(value, dict):
            print_flat(f"{prefix}{key}.", value)
        elif isinstance(value, float):
            print(f"{prefix}{key}: {value:.2f}")
        else:
            print(f"{prefix}{key}: {value}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("main", help="one main.py run", allow_abbrev=False)
    m.add_argument("--stdout", type=Path, required=True)
    m.add_argument("--log-csv", type=Path, required=True)
    m.add_argument("--util", type=Path, default=None)
    c = sub.add_parser("cv", help="cross_validate.py --jobs N", allow_abbrev=False)
    c.add_argument("--stdout", type=Path, required=True)
    c.add_argument("--runs-dir", type=Path, required=True)
    c.add_argument("--util", type=Path, default=None)
    c.add_argument("--wall", type=float, default=None, help="the command's wall time, s")
    c.add_argument("--single-wall", type=float, default=None, help="one run's wall time alone (main.py), s")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        if args.what == "main":
            d = summarise_main(args.stdout, args.log_csv, args.util)
        else:
            d = summarise_cv(args.stdout, args.runs_dir, args.util, args.wall, args.single_wall)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"error: {e}") from None
    print_flat(f"{args.what}.", d)
    return d


if __name__ == "__main__":
    main(sys.argv[1:])
