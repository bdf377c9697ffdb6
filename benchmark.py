"""The PTB-XL benchmark (Strodthoff et al., IEEE JBHI 2021), scored the benchmark's way.

    python benchmark.py score --scores results/PTBXL/paper/test_scores.csv --out te_results.csv
    python benchmark.py score --labels y_test.npy --scores y_test_pred.npy --bootstrap-ids test_ids.npy --out te.csv
    python benchmark.py score --scores test_scores.csv --val-scores val_scores.csv --out te_results.csv

`score` scores anyone's predictions: labels and scores as .npy arrays (records x classes) or one of this
project's score CSVs (patient_id, a 0/1 column per class, p_<class>; it holds both). Macro AUC over every
class on all records (point) and over 100 bootstrap resamples (a resample lacking a positive of any class is
drawn again): their mean and 5th / 95th percentiles. --bootstrap-ids takes the resamples themselves (an
integer array, resamples x records, such as the benchmark's test_bootstrap_ids saved as .npy), so that a
published interval is reproduced exactly. With --val-scores (thresholds tuned per class for G_beta=2 on
those records, never on the scored ones) or --thresholds, also F_beta=2 and G_beta=2 as the benchmark
reports them for ICBEB2018. --out is written in the benchmark's te_results.csv layout (rows point, mean,
lower, upper; columns macro_auc, F_beta_macro, G_beta_macro).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from utils import (PipelineError, bootstrap_indices, check_scorable, bounded_int, check_writable, read_bootstrap_ids,
                   read_predictions, read_threshold_array, score_predictions, script_main, seed_int,
                   tune_gbeta_thresholds, write_te_results)

MODES = ("score",)
N_BOOTSTRAP = 100  # the benchmark's number of resamples


def score_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmark.py score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scores", type=Path, required=True, help="scores: .npy (records x classes) or a score CSV")
    p.add_argument("--labels", type=Path, help="0/1 labels: .npy or a score CSV (default: the --scores CSV)")
    p.add_argument("--bootstrap-ids", type=Path, help="resamples x records integer indices (.npy) to use as they are")
    p.add_argument("--n-bootstrap", type=bounded_int(1, 100_000), help=f"resamples to draw (default {N_BOOTSTRAP}), %(type)s")
    p.add_argument("--seed", type=seed_int, help="seed of the resamples (default 0), %(type)s")
    p.add_argument("--val-scores", type=Path, help="validation scores to tune G_beta thresholds on (.npy or score CSV)")
    p.add_argument("--val-labels", type=Path, help="validation labels (default: the --val-scores CSV)")
    p.add_argument("--thresholds", type=Path, help="per-class thresholds (.npy vector) for F_beta and G_beta")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="results file in the te_results.csv layout")
    return p


def check_score_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Argument errors (exit 2, naming the flag) before any file is read."""
    for flag in ("scores", "labels", "val_scores", "val_labels"):
        path = getattr(args, flag)
        if path is not None and path.suffix not in (".npy", ".csv"):
            p.error(f"--{flag.replace('_', '-')}: {path} is neither a .npy array nor a score .csv")
    for flag in ("bootstrap_ids", "thresholds"):
        path = getattr(args, flag)
        if path is not None and path.suffix != ".npy":
            p.error(f"--{flag.replace('_', '-')}: {path} is not a .npy array")
    if args.scores.suffix == ".npy" and args.labels is None:
        p.error("--labels: required when --scores is a .npy array (it holds no labels)")
    if args.bootstrap_ids is not None and (args.n_bootstrap is not None or args.seed is not None):
        p.error(f"--{'n-bootstrap' if args.n_bootstrap is not None else 'seed'}: the resamples are the ones "
                "--bootstrap-ids gives")
    if args.thresholds is not None and args.val_scores is not None:
        p.error("--thresholds: give thresholds or --val-scores to tune them on, not both")
    if args.val_labels is not None and args.val_scores is None:
        p.error("--val-labels: give --val-scores too")
    if args.val_scores is not None and args.val_scores.suffix == ".npy" and args.val_labels is None:
        p.error("--val-labels: required when --val-scores is a .npy array")
    if args.val_scores is not None and args.val_scores.resolve() == args.scores.resolve():
        p.error("--val-scores: thresholds tuned on the scored records would flatter F_beta and G_beta; "
                "give other records' scores (validation)")
    args.n_bootstrap = N_BOOTSTRAP if args.n_bootstrap is None else args.n_bootstrap
    args.seed = 0 if args.seed is None else args.seed
    return args


def parse_args(argv=None) -> argparse.Namespace:
    """`score` and its flags; the first word names the mode."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["score"]:
        p = score_parser()
        args = check_score_args(p, p.parse_args(argv[1:]))
        args.mode = "score"
        return args
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=MODES, help="score: score predictions the benchmark's way")
    p.parse_args(argv[:1])  # no mode, or an unknown one: argparse's exit 2
    raise AssertionError("unreachable: every mode is handled above")


def score(args: argparse.Namespace) -> pd.DataFrame:
    """te_results.csv for one model's predictions."""
    check_writable(args.out.parent)
    test = read_predictions(args.scores, args.labels)
    check_scorable(test.y, str(args.labels or args.scores), test.classes)
    if args.bootstrap_ids is not None:
        indices = read_bootstrap_ids(args.bootstrap_ids, test.y)
    else:
        indices = bootstrap_indices(test.y, args.n_bootstrap, args.seed)
    thresholds = None
    if args.thresholds is not None:
        thresholds = read_threshold_array(args.thresholds, test.y.shape[1])
    elif args.val_scores is not None:
        val = read_predictions(args.val_scores, args.val_labels)
        if val.y.shape[1] != test.y.shape[1] or (val.classes and test.classes and val.classes != test.classes):
            raise PipelineError(f"{args.val_scores} has classes {val.classes or val.y.shape[1]}, {args.scores} has "
                                f"{test.classes or test.y.shape[1]}")
        shared = set(val.ids or ()) & set(test.ids or ())
        if shared:
            raise PipelineError(f"{args.val_scores} shares {len(shared)} record(s) with {args.scores} (e.g. "
                                f"{sorted(shared)[0]}); thresholds must be tuned on other records")
        thresholds = tune_gbeta_thresholds(val.y, val.p)
    results = score_predictions(test.y, test.p, indices, thresholds, source=str(args.labels or args.scores))
    write_te_results(results, args.out)
    print(results.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"{test.y.shape[0]} records, {test.y.shape[1]} classes, {len(indices)} resamples; wrote {args.out}")
    return results


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    return score(args)


if __name__ == "__main__":
    main()
