"""Evaluate a checkpoint, or diagnose new records with it.

    python predict.py --model-path models/resnet34_CPSC_all_42.pth              # validation + test folds
    python predict.py --model-path models/resnet34_CPSC_all_42.pth --record data/new/A9999.hea

Evaluation scores the validation and test folds of the checkpoint's own split (leads, input length
and rate are read from the checkpoint), tunes one threshold per class on validation to maximise F1,
applies them to the test fold, and reports precision, recall, F1, AUC and accuracy per class and on
average, each with a bootstrap 95 % CI. Thresholds go to JSON beside the checkpoint; metrics (CSV,
JSON), test-fold scores, one confusion matrix per class and a ROC figure go under results/{model}/.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dataset import ECGDataset, InputSpec, checkpoint_splits, make_loader, pick_device, score
from models import load_checkpoint, load_thresholds, thresholds_path
from utils import (CLASSES, SignalCache, classification_metrics, nonnegative_int, parse_leads, positive_int,
                   read_records, save_figure, split_folds, tune_thresholds, write_csv, write_json)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", type=Path, required=True, help="checkpoint written by main.py")
    p.add_argument("--data-dir", type=Path, default=None, help="preprocess output (default: the checkpoint's)")
    p.add_argument("--leads", default=None, help="optional check: the leads the checkpoint must have been trained on")
    p.add_argument("--record", type=Path, nargs="+", default=None, help="diagnose these records instead")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--n-bootstrap", type=nonnegative_int, default=1000, help="bootstrap resamples for the 95 %% CIs")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--num-workers", type=nonnegative_int, default=2)
    p.add_argument("--no-figures", action="store_true",
                   help="skip the confusion-matrix and ROC figures (the studies draw their own)")
    p.add_argument("--use-gpu", action="store_true")
    return p.parse_args(argv)


def check_leads(requested: str | None, ckpt: dict, model_path: Path) -> None:
    if requested is None:
        return
    try:
        wanted = parse_leads(requested)
    except ValueError as e:
        raise SystemExit(f"error: --leads: {e}") from None
    if wanted != list(ckpt["leads"]):
        raise SystemExit(f"error: {model_path} was trained on leads {','.join(ckpt['leads'])}, "
                         f"not {','.join(wanted)}; pick the checkpoint for those leads")


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, cls: str, path: Path) -> None:
    """Row-normalised 2x2 confusion matrix of one class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array([[np.sum(~y_true & ~y_pred), np.sum(~y_true & y_pred)],
                   [np.sum(y_true & ~y_pred), np.sum(y_true & y_pred)]], float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(3.2, 3))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks([0, 1], ["other", cls])
    ax.set_yticks([0, 1], ["other", cls])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(cls)
    save_figure(fig, path)


def plot_roc(y_true: np.ndarray, y_score: np.ndarray, aucs: np.ndarray, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for j, cls in enumerate(CLASSES):
        if np.isfinite(aucs[j]):
            fpr, tpr, _ = roc_curve(y_true[:, j], y_score[:, j])
            ax.plot(fpr, tpr, lw=1.3, label=f"{cls} (AUC {aucs[j]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, test fold")
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def evaluate(args: argparse.Namespace, model: torch.nn.Module, ckpt: dict, device: torch.device) -> pd.DataFrame:
    spec = InputSpec.from_checkpoint(ckpt)
    run = ckpt["args"]
    data_dir = args.data_dir or Path(run["data_dir"])
    cache = SignalCache(data_dir)
    splits = checkpoint_splits(ckpt, data_dir)
    _, val_folds, test_folds = split_folds(int(run["seed"]), run.get("test_fold"))  # folds as at training time
    out = {}
    for name in ("val", "test"):
        part = splits[name]
        if part.empty:
            raise SystemExit(f"error: no records in the {name} split of {data_dir}")
        loader = make_loader(ECGDataset(cache, part, spec), args.batch_size, False, args.num_workers)
        probs, y, _ = score(model, loader, device, amp=device.type == "cuda", progress=f"score {name}")
        out[name] = (part, probs, y.astype(bool))
    thresholds = tune_thresholds(out["val"][2], out["val"][1])
    part, probs, y = out["test"]
    table = classification_metrics(y, probs, thresholds, n_bootstrap=args.n_bootstrap, seed=int(run["seed"]))

    results = args.results_dir / args.model_path.stem
    write_json({"classes": list(CLASSES), "thresholds": dict(zip(CLASSES, thresholds.tolist())),
                "tuned_on": f"validation fold(s) {val_folds}", "model": str(args.model_path)},
               thresholds_path(args.model_path))
    write_csv(table.reset_index(names="class"), results / "metrics.csv")
    write_json({"model": str(args.model_path), "data_dir": str(data_dir), "test_folds": test_folds,
                "n_test": len(part), "leads": list(spec.leads), "metrics": table.to_dict("index")},
               results / "metrics.json")
    scores = pd.concat([part[["patient_id"]], pd.DataFrame(y.astype(int), columns=list(CLASSES)),
                        pd.DataFrame(probs, columns=[f"p_{c}" for c in CLASSES])], axis=1)
    write_csv(scores, results / "test_scores.csv")
    if not args.no_figures:
        for j, cls in enumerate(CLASSES):
            plot_confusion(y[:, j], probs[:, j] > thresholds[j], cls, results / f"confusion_{cls}.png")
        plot_roc(y, probs, table.loc[list(CLASSES), "auc"].to_numpy(), results / "roc.png")

    print(f"test fold(s) {test_folds}: {len(part)} records; thresholds tuned on validation fold(s) {val_folds}")
    cols = ["precision", "recall", "f1", "auc", "accuracy"]
    shown = table[cols].copy()
    for c in ("f1", "auc"):
        shown[c] = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(v) else "n/a" for v, lo, hi in
                    zip(table[c], table.get(f"{c}_lo", table[c]), table.get(f"{c}_hi", table[c]))]
    print(shown.to_string(float_format=lambda v: f"{v:.3f}"))
    figures = "" if args.no_figures else ", roc.png, confusion_*.png"
    print(f"wrote {results}/metrics.csv, metrics.json, test_scores.csv{figures}; "
          f"thresholds {thresholds_path(args.model_path)}")
    return table


def diagnose(args: argparse.Namespace, model: torch.nn.Module, ckpt: dict, device: torch.device) -> pd.DataFrame:
    """Probabilities and labels above the tuned thresholds for new records; bad ones are reported."""
    thresholds = load_thresholds(args.model_path)
    if thresholds is None:
        raise SystemExit(f"error: {thresholds_path(args.model_path)} not found; run `python predict.py --model-path "
                         f"{args.model_path}` once to tune the thresholds on the validation fold")
    spec = InputSpec.from_checkpoint(ckpt)
    rows = []
    for path, _, mv in read_records(args.record):
        with torch.no_grad():
            x = torch.from_numpy(spec.from_signal(mv))[None].to(device)
            p = torch.sigmoid(model(x).float())[0].cpu().numpy()
        labels = [c for c, v, t in zip(CLASSES, p, thresholds) if v > t]
        rows.append({"record": str(path), "labels": ",".join(labels), **dict(zip(CLASSES, p.round(4)))})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    out = args.results_dir / args.model_path.stem / "records.csv"
    write_csv(table, out)
    print(f"wrote {out}")
    return table


def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    device = pick_device(args.use_gpu)
    model, ckpt = load_checkpoint(args.model_path, map_location=device)
    check_leads(args.leads, ckpt, args.model_path)
    model.to(device)
    if args.record:
        return diagnose(args, model, ckpt, device)
    return evaluate(args, model, ckpt, device)


if __name__ == "__main__":
    main()
