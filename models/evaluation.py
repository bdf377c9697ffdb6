"""Evaluating a checkpoint: on its own validation and test records, or on every record of another
database (external validation), with one set of metrics, tables and figures.

Thresholds are tuned on the run's validation records only (one per class, maximising F1) and saved
beside the checkpoint; the test records, and any external database, are scored with them. Results go
to results/<db>/<run>/ (<db>: the database the model was trained on), external ones to
results/<db>/<run>/external/<other db>/, so two databases never overwrite or mix each other's results.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from models.inputs import ECGDataset, InputSpec, checkpoint_splits, make_loader, score
from models.run import Run, load_thresholds
from utils import (PipelineError, SignalCache, classification_metrics, data_label_set, data_split_rule, database_name,
                   file_sha, fingerprint, load_labels, manifest_mismatch, outputs_current, read_manifest, save_figure,
                   preprocess_manifest, split_folds, tune_thresholds, write_csv, write_json, write_manifest)
from utils.results import results_home, same_database

EVALUATED_JSON = "evaluated.json"  # the manifest of an evaluation's outputs, written last


def training_data_dir(ckpt: dict) -> Path:
    """The preprocess folder a checkpoint was trained on (its real path when the checkpoint recorded it)."""
    return Path(ckpt["data"].get("identity") or ckpt["data"]["dir"])


def results_folder(results_dir: Path, ckpt: dict, run: Run) -> Path:
    """results/<training database>/<run name>/ (the database's own results folder, utils.results)."""
    return results_home(results_dir, training_data_dir(ckpt)) / run.name


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


def plot_roc(y_true: np.ndarray, y_score: np.ndarray, aucs: np.ndarray, classes: Sequence[str], title: str,
             path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for j, cls in enumerate(classes):
        if np.isfinite(aucs[j]):
            fpr, tpr, _ = roc_curve(y_true[:, j], y_score[:, j])
            ax.plot(fpr, tpr, lw=1.3, label=f"{cls} (AUC {aucs[j]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def score_records(model: torch.nn.Module, cache: SignalCache, part: pd.DataFrame, spec: InputSpec,
                  classes: Sequence[str], device: torch.device, batch_size: int, num_workers: int,
                  desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and 0/1 labels of the given labels.csv rows."""
    loader = make_loader(ECGDataset(cache, part, spec, classes), batch_size, False, num_workers)
    probs, y, _ = score(model, loader, device, amp=device.type == "cuda", progress=desc)
    return probs, y.astype(bool)


def write_results(out: Path, part: pd.DataFrame, y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray,
                  classes: Sequence[str], n_bootstrap: int, seed: int, figures: bool, info: dict,
                  roc_title: str) -> pd.DataFrame:
    """metrics.csv/.json (bootstrap CIs), scores.csv and, with `figures`, confusion_*.png and roc.png."""
    table = classification_metrics(y, probs, thresholds, classes, n_bootstrap=n_bootstrap, seed=seed)
    write_csv(table.reset_index(names="class"), out / "metrics.csv")
    write_json({**info, "classes": list(classes), "metrics": table.to_dict("index")}, out / "metrics.json")
    scores = pd.concat([part[["patient_id"]].reset_index(drop=True), pd.DataFrame(y.astype(int), columns=list(classes)),
                        pd.DataFrame(probs, columns=[f"p_{c}" for c in classes])], axis=1)
    write_csv(scores, out / "test_scores.csv")
    if figures:
        for j, cls in enumerate(classes):
            plot_confusion(y[:, j], probs[:, j] > thresholds[j], cls, out / f"confusion_{cls}.png")
        plot_roc(y, probs, table.loc[list(classes), "auc"].to_numpy(), classes, roc_title, out / "roc.png")
    return table


def evaluation_key(run: Run, ckpt: dict, n_bootstrap: int) -> str:
    """What an evaluation's outputs depend on: the checkpoint's bytes, its data and the bootstrap size."""
    return fingerprint([file_sha(run.model), ckpt["data"]["fingerprint"], n_bootstrap])


def evaluation_current(run: Run, ckpt: dict, results_dir: Path, n_bootstrap: int) -> bool:
    """True when results/<db>/<run>/ holds an evaluation of exactly this checkpoint and settings."""
    out = results_folder(results_dir, ckpt, run)
    return outputs_current(out / EVALUATED_JSON, evaluation_key(run, ckpt, n_bootstrap))


def evaluation_problem(run: Run, ckpt: dict, results_dir: Path) -> str | None:
    """Why results/<db>/<run>/ does not hold an evaluation of this very checkpoint (None when it does):
    what the report checks before it shows a run's metrics."""
    manifest_path = results_folder(results_dir, ckpt, run) / EVALUATED_JSON
    manifest = read_manifest(manifest_path)
    if manifest is None:
        return f"{manifest_path} is missing (evaluation not run, or interrupted)"
    if manifest.get("model_sha") != file_sha(run.model):
        return f"{run.model} changed after it was evaluated"
    return manifest_mismatch(manifest_path)


def evaluate_run(model: torch.nn.Module, ckpt: dict, run: Run, results_dir: Path, device: torch.device,
                 data_dir: Path | None = None, n_bootstrap: int = 1000, batch_size: int = 64, num_workers: int = 2,
                 figures: bool = True) -> tuple[pd.DataFrame, Path]:
    """Tune thresholds on the run's validation records, score its test records; returns the metrics table
    and the results folder."""
    cfg = ckpt["config"]
    classes = ckpt["label_set"]["classes"]
    spec = InputSpec.from_checkpoint(ckpt)
    data_dir = Path(data_dir or cfg["data_dir"])
    cache = SignalCache(data_dir)
    splits = checkpoint_splits(ckpt, data_dir)
    _, val_folds, test_folds = split_folds(int(cfg["seed"]), cfg.get("test_fold"), data_split_rule(data_dir))
    scored = {}
    for name in ("val", "test"):
        if splits[name].empty:
            raise PipelineError(f"no records in the {name} split of {data_dir}")
        scored[name] = score_records(model, cache, splits[name], spec, classes, device, batch_size, num_workers,
                                     f"score {name}")
    thresholds = tune_thresholds(scored["val"][1], scored["val"][0])
    write_json({"classes": list(classes), "thresholds": dict(zip(classes, thresholds.tolist())),
                "tuned_on": f"validation fold(s) {val_folds}: {len(splits['val'])} records",
                "model": str(run.model), "model_sha": file_sha(run.model)}, run.thresholds)
    out = results_folder(results_dir, ckpt, run)
    (out / EVALUATED_JSON).unlink(missing_ok=True)
    probs, y = scored["test"]
    info = {"model": str(run.model), "data_dir": str(data_dir), "database": ckpt["data"]["name"],
            "test_folds": test_folds, "n_test": len(splits["test"]), "leads": list(spec.leads),
            "label_set": ckpt["label_set"]["name"]}
    table = write_results(out, splits["test"], y, probs, thresholds, classes, n_bootstrap, int(cfg["seed"]),
                          figures, info, "ROC, test fold")
    write_manifest(out / EVALUATED_JSON, evaluation_key(run, ckpt, n_bootstrap),
                   [out / "metrics.csv", out / "metrics.json", out / "test_scores.csv", run.thresholds],
                   model_sha=file_sha(run.model), n_bootstrap=n_bootstrap)
    print(f"test fold(s) {test_folds}: {len(splits['test'])} records; thresholds tuned on validation fold(s) "
          f"{val_folds}")
    return table, out


def evaluate_external(model: torch.nn.Module, ckpt: dict, run: Run, external_dir: Path, results_dir: Path,
                      device: torch.device, n_bootstrap: int = 1000, batch_size: int = 64, num_workers: int = 2,
                      figures: bool = True) -> tuple[pd.DataFrame, Path]:
    """Score every labelled record of another preprocessed database with the thresholds tuned on the
    run's own validation records."""
    classes = list(ckpt["label_set"]["classes"])
    theirs = data_label_set(external_dir)
    if list(theirs["classes"]) != classes:
        raise PipelineError(f"{external_dir} was preprocessed with label set {theirs['name']} "
                            f"({', '.join(theirs['classes'])}), the model predicts {ckpt['label_set']['name']} "
                            f"({', '.join(classes)}); rerun preprocess.py there with --labels "
                            f"{ckpt['label_set']['name']}")
    if same_database(external_dir, training_data_dir(ckpt)) or \
            preprocess_manifest(external_dir).get("fingerprint") == ckpt["data"]["fingerprint"]:
        raise PipelineError(f"{external_dir} is the database the model was trained on; evaluate it with "
                            f"`python predict.py --run {run}` (its own test records)")
    thresholds = load_thresholds(run, classes)
    part = load_labels(external_dir)
    trained_on = set(ckpt["split"]["train"]) | set(ckpt["split"]["val"])
    shared = [pid for pid in part["patient_id"] if pid in trained_on]
    if shared:  # the same records under another folder would not be an external test
        print(f"warning: {len(shared)} of the {len(part)} records of {external_dir} have the ids of records this "
              f"model was trained or validated on (e.g. {shared[0]}); if they are the same ECGs this is not an "
              f"external test", file=sys.stderr)
    probs, y = score_records(model, SignalCache(external_dir), part, InputSpec.from_checkpoint(ckpt), classes,
                             device, batch_size, num_workers, "score external")
    out = results_home(results_folder(results_dir, ckpt, run) / "external", external_dir)
    info = {"model": str(run.model), "data_dir": str(external_dir), "database": database_name(external_dir),
            "trained_on": ckpt["data"]["name"], "n_test": len(part), "label_set": ckpt["label_set"]["name"],
            "thresholds": "tuned on the training database's validation records"}
    table = write_results(out, part, y, probs, thresholds, classes, n_bootstrap, int(ckpt["config"]["seed"]),
                          figures, info, f"ROC, external: {database_name(external_dir)}")
    print(f"external validation on {external_dir}: all {len(part)} labelled records; thresholds tuned on "
          f"{ckpt['data']['name']}'s validation records")
    return table, out


def print_metrics(table: pd.DataFrame) -> None:
    shown = table[["precision", "recall", "f1", "auc", "accuracy"]].copy()
    for c in ("f1", "auc"):
        shown[c] = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(v) else "n/a" for v, lo, hi in
                    zip(table[c], table.get(f"{c}_lo", table[c]), table.get(f"{c}_hi", table[c]))]
    print(shown.to_string(float_format=lambda v: f"{v:.3f}"))
