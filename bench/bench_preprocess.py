"""Preprocessing throughput and memory: records per second, and peak resident memory outside the
memory-mapped output, for N synthetic 10-s records.

    python bench/bench_preprocess.py --n 20000 --records /tmp/bench_records        # generated once, reused
    python bench/bench_preprocess.py --n 20000 --records /tmp/bench_records --repo /path/to/other/checkout

preprocess.py runs as a child process (of this checkout, or of --repo, to compare versions on the same
records); a sampler thread reads /proc every 50 ms and sums RssAnon (anonymous resident memory: the
heap, numpy arrays, pickled results -- not the file-backed pages of the memory-mapped cache, which the
kernel can drop at any time) over preprocess.py and all of its worker processes. It reports the peak
of that sum, the peak of the main process alone, wall time and records/s. The output folder is deleted
before every run (--keep-output leaves the last one).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="records (10 s at 500 Hz each)")
    p.add_argument("--records", type=Path, default=Path("/tmp/bench_preprocess_records"),
                   help="where the synthetic records are (generated there once when missing)")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_preprocess_out"))
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose preprocess.py is measured")
    p.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--keep-output", action="store_true")
    return p.parse_args(argv)


def ensure_records(folder: Path, n: int) -> None:
    """N 10-s synthetic WFDB records (one seed: the same records every time)."""
    if len(list(folder.glob("*.hea"))) == n:
        return
    shutil.rmtree(folder, ignore_errors=True)
    print(f"generating {n} synthetic records in {folder} (once)...", flush=True)
    subprocess.run([sys.executable, str(REPO / "synth.py"), "--out", str(folder), "--n", str(n), "--seed", "0",
                    "--min-seconds", "10", "--max-seconds", "10"], check=True, stdout=subprocess.DEVNULL)


def rss_anon_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


class PeakSampler(threading.Thread):
    """Peak RssAnon of a process tree (sum over processes) and of its root alone, in MiB."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_total = self.peak_main = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            main = rss_anon_kib(self.pid)
            total = main + sum(rss_anon_kib(p) for p in descendants(self.pid))
            self.peak_main, self.peak_total = max(self.peak_main, main), max(self.peak_total, total)
            time.sleep(self.interval)


def run_once(args: argparse.Namespace) -> dict:
    shutil.rmtree(args.out, ignore_errors=True)
    cmd = [sys.executable, str(args.repo / "preprocess.py"), "--data-dir", str(args.records), "--out",
           str(args.out), "--num-workers", str(args.num_workers), "--force"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=args.repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"preprocess.py failed:\n{err[-2000:]}")
    cache = (args.out / "signals.npy").stat().st_size
    return {"seconds": seconds, "rate": args.n / seconds, "peak_total_mib": sampler.peak_total / 1024,
            "peak_main_mib": sampler.peak_main / 1024, "cache_gib": cache / 2**30}


def main(argv=None) -> None:
    args = parse_args(argv)
    ensure_records(args.records, args.n)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"preprocess.py of {args.repo}; {args.n} records x 10 s; {args.num_workers} workers; "
          f"{os.cpu_count()} CPUs ({cpu})")
    for i in range(args.repeats):
        r = run_once(args)
        print(f"run {i + 1}: {r['seconds']:.1f} s = {r['rate']:.0f} records/s; cache {r['cache_gib']:.2f} GiB; peak "
              f"anonymous memory {r['peak_total_mib']:.0f} MiB (all processes), {r['peak_main_mib']:.0f} MiB (main)",
              flush=True)
    if not args.keep_output:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
