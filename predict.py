"""Evaluate a checkpoint, test it on another database, or diagnose new records with it.

    python predict.py --run data/CPSC/runs/resnet34_all_42             # its validation + test
    python predict.py --run data/CPSC/runs/resnet34_all_42 --external-data-dir data/PTBXL
    python predict.py --run data/CPSC/runs/resnet34_all_42 --record new/A9999.hea

Evaluation scores the validation and test records of the checkpoint's own split (leads, input length
and rate are read from the checkpoint), tunes one threshold per class on validation to maximise F1,
applies them to the test records, and reports precision, recall, F1, AUC and accuracy per class and on
average, each with a bootstrap 95 % CI. Thresholds go beside the checkpoint; metrics (CSV, JSON),
test scores, one confusion matrix per class and a ROC figure go to results/<db>/<run>/.
--external-data-dir scores every labelled record of another preprocessed database (same label set)
with those thresholds, into results/<db>/<run>/external/<other db>/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from models.checkpoint import load_checkpoint
from models.scoring import (EVAL_WORKERS, EvalSettings, evaluate_external, evaluate_run, evaluation_key,
                            results_folder)
from models.inputs import InputSpec, diagnose, pick_device, record_doubts, require_own_records
from models.run import Run, load_thresholds, run_argument
from utils.cache import preprocess_manifest
from utils.errors import PipelineError, script_main
from utils.evaluator import print_metrics
from utils.files import write_csv
from utils.labels import leads_argument
from utils.records import read_records
from utils.results import EvaluationFolder
from utils.cli import MAX_WORKERS, bounded_int, folder_path, refuse_together
from utils.presets import parse_with_preset
from utils.defaults import DEFAULT_RESULTS_DIR


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=run_argument, required=True, help="the run folder written by main.py (or its model.pth)")
    p.add_argument("--data-dir", type=folder_path, default=None, help="preprocess output (default: the checkpoint's)")
    p.add_argument("--external-data-dir", type=folder_path, default=None,
                   help="another preprocessed database to test on (every labelled record)")
    p.add_argument("--leads", type=leads_argument, default=None,
                   help="optional check: the leads the checkpoint must have been trained on")
    p.add_argument("--record", type=Path, nargs="+", default=None, help="diagnose these records instead")
    p.add_argument("--results-dir", type=folder_path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--n-bootstrap", type=bounded_int(0, 100_000), default=1000,
                   help="bootstrap resamples for the 95 %% CIs, %(type)s")
    p.add_argument("--batch-size", type=bounded_int(1, 65_536), default=64, help="%(type)s")
    p.add_argument("--num-workers", type=bounded_int(0, MAX_WORKERS), default=EVAL_WORKERS,
                   help="data-loading processes (default 2, or 1 where this process may use one CPU), %(type)s")
    p.add_argument("--no-figures", action="store_true",
                   help="skip the confusion-matrix and ROC figures (the studies draw their own)")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--calibrate", action="store_true",
                   help="also fit temperature scaling on the validation records and report calibration before/after")
    p.add_argument("--force", action="store_true", help="evaluate again even when the evaluation is current")
    args = parse_with_preset(p, argv, "evaluate")
    refuse_together(p, args, "--record", ["--external-data-dir", "--data-dir"])  # records are diagnosed alone
    refuse_together(p, args, "--external-data-dir", ["--data-dir"])  # tested on every record of that one
    return args


def check_leads(wanted: list[str] | None, ckpt: dict, run: Run) -> None:
    """--leads on predict.py is a check (the leads come from the checkpoint): the run must have them."""
    if wanted is None:
        return
    if wanted != list(ckpt["config"]["leads"]):
        raise PipelineError(f"{run} was trained on leads {','.join(ckpt['config']['leads'])}, "
                            f"not {','.join(wanted)}; pick the checkpoint for those leads")


def diagnose_records(args: argparse.Namespace, model: torch.nn.Module, ckpt: dict) -> pd.DataFrame:
    """Probabilities and labels above the tuned thresholds for new records; bad ones are reported."""
    classes = ckpt["label_set"]["classes"]
    thresholds = load_thresholds(args.run, classes)
    spec = InputSpec.from_checkpoint(ckpt)
    rows = []
    for path, hdr, mv in read_records(args.record):
        for doubt in record_doubts(hdr.sample_rate, mv, spec):
            print(f"warning: {path}: {doubt}", file=sys.stderr)
        probs, labels = diagnose(model, spec, thresholds, mv, classes)
        rows.append({"record": str(path), "labels": ",".join(labels), **dict(zip(classes, probs.round(4)))})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    out = EvaluationFolder(results_folder(args.results_dir, ckpt, args.run)).records
    write_csv(table, out)
    print(f"wrote {out}")
    return table


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    device = pick_device(args.use_gpu)
    model, ckpt = load_checkpoint(args.run.model, map_location=device)
    check_leads(args.leads, ckpt, args.run)
    model.to(device)
    if args.record:
        return diagnose_records(args, model, ckpt)
    settings = EvalSettings(n_bootstrap=args.n_bootstrap, batch_size=args.batch_size, num_workers=args.num_workers,
                            figures=not args.no_figures, calibrate=args.calibrate)
    if args.external_data_dir:
        table, out, computed = evaluate_external(model, ckpt, args.run, args.external_data_dir, args.results_dir,
                                                 device, settings, force=args.force)
        if not computed:  # said current in one line: nothing was written
            return table
    else:
        require_own_records(ckpt)
        preprocess_manifest(args.data_dir or ckpt["config"]["data_dir"])  # the data, before any results folder
        own = EvaluationFolder(results_folder(args.results_dir, ckpt, args.run))
        own_key = evaluation_key(args.run, ckpt, args.n_bootstrap, args.calibrate, args.data_dir)
        if not args.force and args.data_dir is None and own.current(own_key, f"evaluation of this very {args.run.model}"):
            return own.read()["metrics"]
        table, out = evaluate_run(model, ckpt, args.run, args.results_dir, device, args.data_dir, settings)
    print_metrics(table)
    figures = "" if args.no_figures else ", roc.png, confusion_*.png"
    print(f"wrote {out}/metrics.csv, metrics.json, val_scores.csv, test_scores.csv{figures}; "
          f"thresholds {args.run.thresholds}")
    return table


if __name__ == "__main__":
    main()
