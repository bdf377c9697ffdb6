"""How much faster is reading a record from the preprocess cache than decoding its WFDB files?

    python bench/bench_cache.py --data-dir data/demo

Times, per record, (a) what the original code did per training item: parse the header and load the
.mat (here through wfdb.rdrecord, and through this project's own reader), convert to mV, take the
last 30 s; (b) the same window from the memory-mapped cache.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import wfdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.inputs import INPUT_SECONDS  # noqa: E402
from utils.cache import SignalCache, fit_length, load_labels
from utils.errors import script_main
from utils.labels import LEADS
from utils.records import SAMPLE_RATE, read_wfdb_record


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    p.add_argument("--n", type=int, default=300, help="records to read")
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args(argv)


def per_record_seconds(read, ids, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for pid in ids:
            read(pid)
        best = min(best, (time.perf_counter() - t0) / len(ids))
    return best


@script_main
def main(argv=None) -> None:
    args = parse_args(argv)
    ids = load_labels(args.data_dir)["patient_id"].tolist()[: args.n]
    cache = SignalCache(args.data_dir)
    n = int(round(INPUT_SECONDS * SAMPLE_RATE))
    leads = list(range(len(LEADS)))
    timings = {
        "wfdb.rdrecord + last 30 s": lambda pid: fit_length(wfdb.rdrecord(str(args.data_dir / pid)).p_signal.T, n),
        "own WFDB reader + last 30 s": lambda pid: fit_length(read_wfdb_record(args.data_dir / f"{pid}.hea")[1], n),
        "cache window (memmap)": lambda pid: cache.window(pid, leads, n),
    }
    results = {name: per_record_seconds(f, ids, args.repeats) for name, f in timings.items()}
    base = results["cache window (memmap)"]
    print(f"{len(ids)} records from {args.data_dir}, best of {args.repeats}")
    print(f"{'method':32s} {'ms/record':>10s} {'vs cache':>9s}")
    for name, s in results.items():
        print(f"{name:32s} {s * 1e3:10.3f} {s / base:8.1f}x")


if __name__ == "__main__":
    main()
