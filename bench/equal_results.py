"""Do two versions of the code give the same results? Each version, in its own processes, preprocesses the
same synthetic records, trains a ResNet10 under --deterministic, evaluates it and runs the LR baseline;
then the outputs are compared bit for bit.

    python bench/equal_results.py --against a3fd4e2 --work /tmp/equal

Compared: the signal cache and labels, the trained weights (every tensor), the training log without its
seconds column, the test scores, thresholds and metrics of the model and of the LR baseline. The other
version is checked out with `git worktree` inside --work (sharing this checkout's .venv) and removed at the
end. Prints one line per file, `equal` or what differs, and exits 1 if anything differs."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.cli import bounded_int  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--arch", "resnet10", "--seconds", "10", "--sample-rate", "100", "--epochs", "3", "--lr", "1e-3",
         "--batch-size", "32", "--num-workers", "0", "--seed", "42", "--deterministic"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", required=True, help="the other version: a commit, branch or tag")
    p.add_argument("--work", type=Path, required=True, help="a new (or empty) folder for the records, both "
                                                            "versions' outputs and the other version's worktree")
    p.add_argument("--records", type=bounded_int(50, 100_000), default=600, help="synthetic records, %(type)s")
    args = p.parse_args(argv)
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.against}^{{commit}}"], cwd=ROOT,
                           capture_output=True, text=True)
    if found.returncode != 0:
        p.error(f"argument --against: {args.against!r} is no commit of {ROOT}")
    args.commit = found.stdout.strip()
    if args.work.exists() and any(args.work.iterdir()):  # outputs of another comparison are never reused
        p.error(f"argument --work: {args.work} is not empty; give a new folder")
    return args


def run(cmd: list[str], cwd: Path) -> None:
    """One stage in a process of its own; its output shown only when it fails."""
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: exit {proc.returncode} in {cwd}:\n{(proc.stdout + proc.stderr)[-3000:]}")


def stages(tree: Path, records: Path, out: Path) -> None:
    """The pipeline of one version, each stage its own process, from that version's folder."""
    py = sys.executable
    run([py, "preprocess.py", "--data-dir", str(records), "--out", str(out / "prep"), "--num-workers", "1"], tree)
    run([py, "main.py", "--data-dir", str(out / "prep"), *TRAIN, "--run", str(out / "run")], tree)
    run([py, "predict.py", "--run", str(out / "run"), "--results-dir", str(out / "results"), "--n-bootstrap", "100",
         "--num-workers", "0", "--no-figures"], tree)
    run([py, "baselines.py", "--data-dir", str(out / "prep"), "--classifier", "LR", "--results-dir",
         str(out / "results"), "--n-bootstrap", "100", "--num-workers", "1", "--no-figures"], tree)


def compare(a: Path, b: Path) -> list[str]:
    """One line per compared output: 'equal', or what differs."""
    lines = []
    for name in ("prep/signals.npy", "prep/labels.csv"):
        lines.append(f"{name}: " + ("equal" if (a / name).read_bytes() == (b / name).read_bytes() else "DIFFERS"))
    wa, wb = (torch.load(d / "run" / "model.pth", weights_only=True)["model"] for d in (a, b))
    same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    lines.append("run/model.pth weights: " + ("equal" if same else "DIFFERS"))
    logs = [pd.read_csv(d / "run" / "log.csv").drop(columns="seconds") for d in (a, b)]
    lines.append("run/log.csv without seconds: " + ("equal" if logs[0].equals(logs[1]) else "DIFFERS"))
    for pattern in ("results/*/run/test_scores.csv", "results/*/run/metrics.csv",
                    "results/*/baselines/*/LR/test_scores.csv", "results/*/baselines/*/LR/metrics.csv"):
        found = [sorted(d.glob(pattern)) for d in (a, b)]
        if not found[0] or len(found[0]) != len(found[1]):
            lines.append(f"{pattern}: MISSING ({len(found[0])} and {len(found[1])} files)")
            continue
        for fa, fb in zip(*found):
            same = fa.read_bytes() == fb.read_bytes()
            lines.append(f"{fa.relative_to(a)}: " + ("equal" if same else "DIFFERS"))
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    other, records = work / "other", work / "records"
    run([sys.executable, "synth.py", "--out", str(records), "--n", str(args.records), "--seed", "3"], ROOT)
    run(["git", "worktree", "add", "--detach", str(other), args.commit], ROOT)
    try:
        (other / ".venv").symlink_to(ROOT / ".venv")
        for tree, out in ((other, work / "theirs"), (ROOT, work / "ours")):
            stages(tree, records, out)
    finally:  # the worktree's registration never outlives the run (a later run may reuse the folder's name)
        subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, capture_output=True)
    lines = compare(work / "theirs", work / "ours")
    print(f"{args.against} ({args.commit[:7]}) against this code:")
    print("\n".join(lines))
    return 1 if any("equal" not in line for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
