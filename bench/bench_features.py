"""Expert-feature extraction speed: the straightforward per-lead reference versus utils.features.

    python bench/bench_features.py --data-dir data/demo --seconds 15

Times, per record of --seconds (the last ones, so records are comparable with the original's 15 s
figure): the per-lead reference (Counter + nanpercentile per lead, one core), the vectorised version
on one core, and the whole extraction as baselines.py runs it (all cores, progress bar off).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import utils.features as features  # noqa: E402
from utils.errors import script_main
from utils.cache import SignalCache, load_labels
from utils.records import SAMPLE_RATE


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    p.add_argument("--n", type=int, default=100, help="records")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    return p.parse_args(argv)


@script_main
def main(argv=None) -> None:
    args = parse_args(argv)
    cache = SignalCache(args.data_dir)
    ids = load_labels(args.data_dir)["patient_id"].tolist()[: args.n]
    n = int(args.seconds * SAMPLE_RATE)
    signals = [cache.record(pid)[:, -n:].astype(np.float64) for pid in ids]
    t0 = time.perf_counter()
    ref = [features.reference_features(x) for x in signals]
    t_ref = (time.perf_counter() - t0) / len(ids)
    t0 = time.perf_counter()
    fast = [features.signal_features(x) for x in signals]
    t_fast = (time.perf_counter() - t0) / len(ids)
    assert all(np.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(fast, ref)), "values differ"
    t0 = time.perf_counter()
    features.compute_features(args.data_dir, ids, False, args.num_workers)
    t_all = (time.perf_counter() - t0) / len(ids)
    mean_s = np.mean([x.shape[1] for x in signals]) / SAMPLE_RATE
    print(f"{len(ids)} records, {mean_s:.1f} s each (last {args.seconds:g} s), {os.cpu_count()} cores")
    print(f"{'implementation':45s} {'ms/record':>9s} {'speed-up':>8s}")
    print(f"{'per-lead reference, 1 core':45s} {t_ref * 1e3:9.1f} {1:7.1f}x")
    print(f"{'vectorised across leads, 1 core':45s} {t_fast * 1e3:9.1f} {t_ref / t_fast:7.1f}x")
    print(f"{f'baselines.py extraction, {args.num_workers} workers (whole records)':45s} {t_all * 1e3:9.1f} "
          f"{t_ref / t_all:7.1f}x")


if __name__ == "__main__":
    main()
