"""PTB-XL at its full size on one machine: every stage of the benchmark on a synthetic PTB-XL of 21,799
records with PTB-XL's own statement table (71 classes), its time and memory.

    python synth.py --out /tmp/ptbxl_full --layout ptbxl --n 21799 --statements scp_statements.csv
    python bench/bench_ptbxl_full.py --data-dir /tmp/ptbxl_full --work /tmp/ptbxl_full_bench --out bench_ptbxl_full.csv

Stages, each a child process of its own (this checkout's commands or library):
- preprocess: `preprocess.py --labels all --sample-rate 100` (the `all` task: decode every record, the cache);
- tasks: the benchmark's preparation, `benchmark.prepare_tasks` for its six tasks (`all` current, the five
  others derived from it, sharing its signal cache);
- train <arch>: `main.py` under the benchmark's protocol for one epoch of --train-records records of the
  `all` task (71 classes), then its validation pass; per training record it projects a full epoch;
- score: `benchmark.py score` of one model's test scores (every test record of the `all` task x 71
  classes, scores drawn around the labels) with 100 bootstrap resamples;
- table: `benchmark_table` and its outputs for 6 tasks x 7 models of such score files (the ensembles, 100
  resamples per task, table.csv/.md, auc.png).

For each: wall time (under whatever else runs on the machine), CPU time (user + system of the stage and
its children: independent of the load), the peak resident set of its largest process (ru_maxrss: it
counts the pages of memory-mapped files it touched) and the peak anonymous memory summed over its
processes (RssAnon: heap and arrays, what cannot be dropped). The budget: every stage under 4 GB.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_preprocess import PeakSampler

REPO = Path(__file__).resolve().parents[1]
ARCHS = "inception1d,xresnet1d101,xresnet1d50,resnet1d_wang,fcn_wang,lstm,lstm_bidir"
TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
BUDGET_MIB = 4096


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="a PTB-XL layout database (synth.py --layout ptbxl)")
    p.add_argument("--work", type=Path, required=True, help="where tasks, runs and score files go")
    p.add_argument("--out", type=Path, default=None, help="the stages' numbers as CSV")
    p.add_argument("--archs", default=ARCHS)
    p.add_argument("--train-records", type=int, default=640, help="--limit of each training (records of all splits)")
    p.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--stages", default="preprocess,tasks,train,score,table")
    return p.parse_args(argv)


def measure(name: str, command: list[str], log: Path) -> dict:
    """Run one stage; its wall and CPU seconds and peak memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        sampler = PeakSampler(proc.pid, interval=0.2)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"stage {name} failed (exit {proc.returncode}); see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = {"stage": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
           "peak_rss_mib": round(usage.ru_maxrss / 1024), "peak_anon_mib": round(sampler.peak_total / 1024)}
    print(f"{name}: wall {row['wall_s']} s, CPU {row['cpu_s']} s, peak RSS {row['peak_rss_mib']} MiB "
          f"(largest process), anonymous {row['peak_anon_mib']} MiB (all processes)", flush=True)
    return row


def python(code: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); {code}"]


def fake_scores(task_dir: Path, out: Path, seed: int) -> Path:
    """A score file of the task's test fold (strat_fold 10): its labels and scores drawn around them."""
    labels = pd.read_csv(task_dir / "labels.csv", dtype={"patient_id": str})
    classes = [c for c in labels.columns if c not in ("patient_id", "fold")]
    test = labels[labels["fold"] == 10] if "fold" in labels else labels
    y = test[classes].to_numpy().astype(int)
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-(rng.normal(-1.0, 1.0, y.shape) + 1.5 * y)))
    table = pd.concat([test[["patient_id"]].reset_index(drop=True), pd.DataFrame(y, columns=classes),
                       pd.DataFrame(p, columns=[f"p_{c}" for c in classes])], axis=1)
    table.to_csv(out, index=False)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    logs = args.work / "logs"
    logs.mkdir(exist_ok=True)
    stages = args.stages.split(",")
    tasks = args.work / "tasks"
    db = args.data_dir.name
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    avx512 = "avx512f" in open("/proc/cpuinfo").read()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, {cpu}, AVX-512 {'yes' if avx512 else 'no'}; "
          f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    rows = []
    if "preprocess" in stages:
        rows.append(measure("preprocess --labels all (100 Hz)", [
            sys.executable, "preprocess.py", "--data-dir", str(args.data_dir), "--out", str(tasks / f"{db}_all"),
            "--labels", "all", "--sample-rate", "100", "--num-workers", str(args.num_workers), "--force"],
            logs / "preprocess.log"))
    if "tasks" in stages:
        rows.append(measure("benchmark preparation (6 tasks, 5 derived)", python(
            "import benchmark; a = benchmark.parse_args(['--data-dir', %r, '--tasks-dir', %r]); "
            "f = benchmark.prepare_tasks(a); print(f)" % (str(args.data_dir), str(tasks))), logs / "tasks.log"))
    if "train" in stages:
        for arch in args.archs.split(","):
            rows.append(measure(f"train {arch} (1 epoch, --limit {args.train_records})", [
                sys.executable, "main.py", "--data-dir", str(tasks / f"{db}_all"), "--arch", arch, "--epochs", "1",
                "--limit", str(args.train_records), "--seconds", "10", "--sample-rate", "100", "--crop-seconds",
                "2.5", "--batch-size", "128", "--num-workers", "0", "--force",
                "--run", str(args.work / "runs" / arch)], logs / f"train_{arch}.log"))
    if "score" in stages or "table" in stages:
        scores = args.work / "scores"
        scores.mkdir(exist_ok=True)
        files = {(t, m): fake_scores(tasks / f"{db}_{t}", scores / f"{t}_{m}.csv", seed=i)
                 for i, (t, m) in enumerate((t, m) for t in TASKS for m in ARCHS.split(","))}
        first = files[("all", ARCHS.split(",")[0])]
        n, k = pd.read_csv(first).shape[0], len([c for c in pd.read_csv(first, nrows=0).columns if c.startswith("p_")])
        print(f"score files: {n} test records x {k} classes (all)", flush=True)
    if "score" in stages:
        rows.append(measure(f"score: 100 bootstrap resamples, {n} records x {k} classes", [
            sys.executable, "benchmark.py", "score", "--scores", str(first), "--n-bootstrap", "100",
            "--out", str(args.work / "te_results.csv")], logs / "score.log"))
    if "table" in stages:
        listing = [{"task": t, "model": m, "scores": str(f)} for (t, m), f in files.items()]
        pd.DataFrame(listing).to_csv(args.work / "rows.csv", index=False)
        rows.append(measure("table: 6 tasks x 7 models + ensembles, 100 resamples", python(
            "import pandas as pd; from utils.ptbxl import benchmark_table, write_benchmark_outputs; "
            "rows = pd.read_csv(%r).to_dict('records'); "
            "t = benchmark_table(rows, %r, n_bootstrap=100); write_benchmark_outputs(t, %r, 100); print(len(t))"
            % (str(args.work / "rows.csv"), str(args.work / "table"), str(args.work / "table"))), logs / "table.log"))
    table = pd.DataFrame(rows)
    table["under_4gb"] = table[["peak_rss_mib", "peak_anon_mib"]].max(axis=1) < BUDGET_MIB
    print(table.to_string(index=False))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
