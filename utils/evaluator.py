"""One evaluator for every model (the PTB-XL benchmark's design): a model, the ResNet or a baseline, hands
over its validation and test scores per record; thresholds are tuned on validation, metrics with bootstrap
CIs and calibration are computed on test, and every model gets the same files:

    out/val_scores.csv     validation scores (when given)      out/metrics.csv    per class + mean, CIs
    out/test_scores.csv    test scores                         out/metrics.json   the same, thresholds, info
    out/roc.png, confusion_<class>.png, reliability.png        out/calibration.json  (calibrate=True)
    out/evaluated.json     the manifest, removed first and written last: the outputs are complete and current

It needs scores, not torch, so any model's scores (or a scores file) can be evaluated, and the four
readers of metrics.json read it through `read_evaluation`.

A scores table is a DataFrame with `patient_id`, one 0/1 column per class and `p_<class>`, the probability
per class (the form of test_scores.csv).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from utils.errors import MissingInputError, PipelineError
from utils.io import (file_sha, fingerprint, manifest_mismatch, read_manifest, save_figure, write_csv, write_json,
                      write_manifest)
from utils.metrics import (ECE_BINS, METRICS, apply_temperature, classification_metrics, ece_scores, fit_temperature,
                           probability_bins, tune_thresholds)

__all__ = ["EVALUATED_JSON", "scores_table", "check_scores", "read_scores", "scores_arrays", "thresholds_json",
           "parse_thresholds", "read_thresholds", "evaluate_scores", "read_evaluation", "plot_confusion", "plot_roc",
           "plot_reliability", "print_metrics", "prob_columns", "jsonable"]

EVALUATED_JSON = "evaluated.json"  # the manifest of an evaluation's outputs, written last
# metrics.json keys the evaluator writes itself; `info` may not use them (n_test is always the test rows)
RESERVED = ("classes", "metrics", "thresholds", "untunable", "tuned_on", "n_val", "n_bootstrap", "seed", "calibration",
            "calibrate", "figures", "fingerprint", "files")


# ---------------------------------------------------------------------------------------------
# Scores as data
# ---------------------------------------------------------------------------------------------
def prob_columns(classes: Sequence[str]) -> list[str]:
    return [f"p_{c}" for c in classes]


def scores_table(ids: Sequence[str], y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """patient_id, the 0/1 label of each class and p_<class>: what a model hands to `evaluate_scores`."""
    y, probs = np.asarray(y), np.asarray(probs, float)
    if y.shape != probs.shape or y.shape != (len(ids), len(classes)):
        raise ValueError(f"scores_table: {len(ids)} ids, labels {y.shape}, probabilities {probs.shape}, "
                         f"{len(classes)} classes")
    return pd.concat([pd.DataFrame({"patient_id": [str(i) for i in ids]}),
                      pd.DataFrame(y.astype(int), columns=list(classes)),
                      pd.DataFrame(probs, columns=prob_columns(classes))], axis=1)


def check_scores(table: pd.DataFrame, classes: Sequence[str], source: str) -> pd.DataFrame:
    """The scores table in canonical form (patient_id str, labels int 0/1, probabilities float in [0, 1]),
    or a PipelineError naming `source` (a file, or "validation scores") and the first bad value."""
    wanted = ["patient_id", *classes, *prob_columns(classes)]
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise PipelineError(f"{source} lacks column(s) {', '.join(missing)} (a scores table has patient_id, one 0/1 "
                            f"column per class and p_<class> per class)")
    if table.empty:
        raise PipelineError(f"{source} holds no records")
    ids = table["patient_id"]
    if ids.isna().any():
        raise PipelineError(f"{source}: patient_id is empty in row {int(np.flatnonzero(ids.isna())[0]) + 1}")
    ids = ids.astype(str)
    if ids.duplicated().any():
        raise PipelineError(f"{source}: record {ids[ids.duplicated()].iloc[0]} appears more than once")

    def bad(column: str, ok: np.ndarray, what: str) -> None:
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            value = table[column].iloc[i]
            shown = "empty" if pd.isna(value) else repr(value.item() if isinstance(value, np.generic) else value)
            raise PipelineError(f"{source}: {column} of record {ids.iloc[i]} is {shown}, {what}")

    out = {"patient_id": ids.reset_index(drop=True)}
    for c in classes:
        v = pd.to_numeric(table[c], errors="coerce").to_numpy(float)
        bad(c, np.isin(v, (0, 1)), "not a 0/1 label")
        out[c] = v.astype(int)
    for c in prob_columns(classes):
        v = pd.to_numeric(table[c], errors="coerce").to_numpy(float)
        bad(c, np.isfinite(v), "not a number")
        bad(c, (v >= 0) & (v <= 1), "not a probability in [0, 1]")
        out[c] = v
    return pd.DataFrame(out)


def read_scores(path: Path, classes: Sequence[str]) -> pd.DataFrame:
    """A scores CSV (val_scores.csv, test_scores.csv, or any model's), checked by `check_scores`."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"scores file {path} not found")
    try:
        table = pd.read_csv(path, dtype={"patient_id": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path} is not a readable CSV ({type(e).__name__}: {e})") from None
    return check_scores(table, classes, str(path))


def scores_arrays(table: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(labels as bool, probabilities) of a checked scores table, columns in `classes` order."""
    return table[list(classes)].to_numpy().astype(bool), table[prob_columns(classes)].to_numpy(float)


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------
def thresholds_json(classes: Sequence[str], thresholds: np.ndarray, tuned_on: str, **provenance) -> dict:
    """The thresholds file's content: a number in [0, 1] per class, or null for an untunable class (no
    positive record to tune on: never predicted), which is also listed under "untunable"."""
    thresholds = np.asarray(thresholds, float)
    if thresholds.shape != (len(classes),) or ((thresholds < 0) | (thresholds > 1)).any():
        raise ValueError(f"thresholds_json: {thresholds.tolist()} for classes {list(classes)}")
    clash = set(provenance) & {"classes", "thresholds", "untunable", "tuned_on"}
    if clash:
        raise ValueError(f"thresholds_json: provenance may not set {sorted(clash)}")
    return {"classes": list(classes),
            "thresholds": {c: None if np.isnan(t) else float(t) for c, t in zip(classes, thresholds)},
            "untunable": [c for c, t in zip(classes, thresholds) if np.isnan(t)],
            "tuned_on": tuned_on, **provenance}


def parse_thresholds(obj: dict, classes: Sequence[str], path: Path | str) -> np.ndarray:
    """Thresholds in `classes` order from a thresholds_json object, NaN for an untunable class. Refuses
    (PipelineError naming `path`) another class list, a missing class, a non-number, NaN, inf, or a
    number outside [0, 1]; null is accepted only for a class listed under "untunable"."""
    saved = obj.get("thresholds") if isinstance(obj, dict) else None
    if not isinstance(saved, dict):
        raise PipelineError(f"{path} holds no \"thresholds\" object (class -> threshold)")
    untunable = obj.get("untunable", [])
    if not isinstance(untunable, list) or not all(isinstance(c, str) for c in untunable):
        raise PipelineError(f"{path}: \"untunable\" is {untunable!r}, not a list of class names")
    listed = obj.get("classes", list(saved))
    others = sorted(set(listed) ^ set(classes)) + sorted(set(saved) - set(classes))
    missing = [c for c in classes if c not in saved]
    if others or missing:
        raise PipelineError(f"{path} holds thresholds for {', '.join(map(str, listed))}; expected one per class "
                            f"{', '.join(classes)}" + (f" (missing: {', '.join(missing)})" if missing else ""))
    out = []
    for c in classes:
        v = saved[c]
        if v is None:
            if c not in untunable:
                raise PipelineError(f"{path}: the threshold of {c} is null, but {c} is not listed under "
                                    f"\"untunable\"")
            out.append(np.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise PipelineError(f"{path}: the threshold of {c} is {v!r}, not a number")
        if not (math.isfinite(v) and 0 <= v <= 1):
            raise PipelineError(f"{path}: the threshold of {c} is {v}, not a number in [0, 1]")
        if c in untunable:
            raise PipelineError(f"{path}: {c} is listed under \"untunable\" but has the threshold {v}")
        out.append(float(v))
    return np.array(out)


def read_thresholds(path: Path, classes: Sequence[str]) -> np.ndarray:
    """`parse_thresholds` of a thresholds file."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"thresholds file {path} not found")
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path} is not readable JSON ({e})") from None
    return parse_thresholds(obj, classes, path)


def _given_thresholds(thresholds: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    thresholds = np.asarray(thresholds, float)
    if thresholds.shape != (len(classes),) or ((thresholds < 0) | (thresholds > 1) | np.isinf(thresholds)).any():
        raise ValueError(f"evaluate_scores: thresholds {thresholds.tolist()} for classes {list(classes)} (one per "
                         f"class, in [0, 1], NaN for an untunable class)")
    return thresholds


# ---------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------
def evaluate_scores(out: Path, classes: Sequence[str], test: pd.DataFrame, val: pd.DataFrame | None = None,
                    thresholds: np.ndarray | None = None, n_bootstrap: int = 1000, seed: int = 0, figures: bool = True,
                    info: dict | None = None, title: str = "test records", calibrate: bool = False,
                    key: str | None = None, extra_outputs: Sequence[Path] = (), tuned_on: str | None = None,
                    thresholds_file: Path | None = None) -> pd.DataFrame:
    """Evaluate one model's test scores into `out`; returns the metrics table (per class and mean).

    - thresholds: tuned on `val` (F1-optimal, `tune_thresholds`), or given (external evaluation: the
      training database's, NaN = untunable); `tuned_on` says where they come from in the outputs;
    - `thresholds_file`: also write them there (thresholds_json form, with `info` as provenance), listed
      in the manifest like `extra_outputs` (files the caller wrote that belong to this evaluation);
    - `calibrate`: fit a temperature on `val`, report ECE and Brier before and after in calibration.json
      and reliability.png (metrics.csv and the scores files stay those of the model's own probabilities);
    - `info` goes into metrics.json and the manifest; `key` is the manifest's fingerprint (default: a hash
      of the scores files and settings), what `read_evaluation(out, key)` compares.
    Inputs are checked before anything is touched; then the old manifest is removed, and the new one is
    written last, so an interrupted evaluation never looks complete."""
    out, info = Path(out), dict(info or {})
    classes = list(classes)
    clash = set(info) & set(RESERVED)
    if clash:
        raise ValueError(f"evaluate_scores: info may not set {sorted(clash)} (the evaluator writes them)")
    test = check_scores(test, classes, "test scores")
    val = None if val is None else check_scores(val, classes, "validation scores")
    y, p = scores_arrays(test, classes)
    if thresholds is None:
        if val is None:
            raise ValueError("evaluate_scores: give validation scores to tune thresholds on, or the thresholds")
        thresholds = tune_thresholds(*scores_arrays(val, classes))
        tuned_on = tuned_on or f"validation scores ({len(val)} records)"
    else:
        thresholds = _given_thresholds(thresholds, classes)
        tuned_on = tuned_on or "given by the caller"
    if calibrate and val is None:
        raise ValueError("evaluate_scores: calibrate=True fits the temperature on validation scores; give `val`")
    untunable = [c for c, t in zip(classes, thresholds) if np.isnan(t)]
    for c in untunable:
        print(f"warning: {out}: {c}: no positive record in the validation scores, so its threshold cannot be tuned; "
              f"it is never predicted (marked untunable in metrics.csv and metrics.json)", file=sys.stderr)
    for j, c in enumerate(classes):
        if y[:, j].all() or not y[:, j].any():
            print(f"warning: {out}: {c}: {'every' if y[:, j].all() else 'no'} test record is positive: no metrics "
                  f"for it (n/a); the mean row averages the other classes", file=sys.stderr)

    out.mkdir(parents=True, exist_ok=True)
    manifest = out / EVALUATED_JSON
    manifest.unlink(missing_ok=True)
    figure_names = ["roc.png", "reliability.png", *[f"confusion_{c}.png" for c in classes]]
    stale = (([] if val is not None else ["val_scores.csv"]) + ([] if calibrate else ["calibration.json"])
             + ([] if figures else figure_names))
    for name in stale:  # an earlier evaluation's files that this one does not rewrite would describe that one
        (out / name).unlink(missing_ok=True)

    outputs = [write_csv(test, out / "test_scores.csv")]
    if val is not None:
        outputs.append(write_csv(val, out / "val_scores.csv"))
    scores_shas = [file_sha(o) for o in outputs]
    table = classification_metrics(y, p, thresholds, classes, n_bootstrap=n_bootstrap, seed=seed)
    calibration = None
    if calibrate:
        calibration = _calibration(test, val, thresholds, classes, table, n_bootstrap, seed)
        outputs.append(write_json(jsonable(calibration), out / "calibration.json"))
    if thresholds_file is not None:
        outputs.append(write_json(jsonable(thresholds_json(classes, thresholds, tuned_on, **info)), thresholds_file))
    write_csv(table.reset_index(names="class"), out / "metrics.csv")
    saved = {**info, "n_test": len(test), "n_val": None if val is None else len(val), "classes": classes,
             **{k: v for k, v in thresholds_json(classes, thresholds, tuned_on).items() if k != "classes"},
             "n_bootstrap": n_bootstrap, "seed": seed,
             "calibration": None if calibration is None else {"temperature": calibration["temperature"]},
             "metrics": table.to_dict("index")}
    write_json(jsonable(saved), out / "metrics.json")
    outputs += [out / "metrics.csv", out / "metrics.json"]
    if figures:
        for j, cls in enumerate(classes):
            outputs.append(plot_confusion(y[:, j], p[:, j] > thresholds[j], cls, out / f"confusion_{cls}.png"))
        outputs.append(plot_roc(y, p, table.loc[classes, "auc"].to_numpy(), classes, f"ROC, {title}", out / "roc.png"))
        after = None if calibration is None else apply_temperature(p, calibration["temperature"])
        outputs.append(plot_reliability(y, p, classes, f"Reliability, {title}", out / "reliability.png", after,
                                        None if calibration is None else calibration["temperature"]))
    outputs += [Path(o) for o in extra_outputs]
    if key is None:
        key = fingerprint([scores_shas, thresholds, n_bootstrap, seed, calibrate, figures])
    write_manifest(manifest, key, outputs, **jsonable(info), n_bootstrap=n_bootstrap, seed=seed, calibrate=calibrate,
                   figures=figures)
    return table


def _calibration(test: pd.DataFrame, val: pd.DataFrame, thresholds: np.ndarray, classes: list[str],
                 before: pd.DataFrame, n_bootstrap: int, seed: int) -> dict:
    """Temperature fitted on validation; ECE and Brier of the test scores before and after (same resamples,
    same seed, so the CIs are paired)."""
    val_y, val_p = scores_arrays(val, classes)
    y, p = scores_arrays(test, classes)
    temperature = fit_temperature(val_p, val_y)
    after = classification_metrics(y, apply_temperature(p, temperature), thresholds, classes,
                                   n_bootstrap=n_bootstrap, seed=seed)
    columns = [c for c in after.columns if c.split("_")[0] in ("ece", "brier")]
    return {"method": "temperature scaling: p' = sigmoid(logit(p) / T), one T for all classes",
            "temperature": temperature, "fitted_on": f"validation scores ({len(val)} records)",
            "ece_bins": ECE_BINS, "before": before[columns].to_dict("index"), "after": after[columns].to_dict("index")}


def jsonable(obj: object) -> object:
    """JSON-ready: numpy scalars as Python numbers, NaN and missing as null (strict JSON, not `NaN`)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_evaluation(out: Path, key: str | None = None) -> dict:
    """The one reader of an evaluation folder. Returns a dict:

    folder, classes, metrics (DataFrame: per class + "mean", NaN for n/a), thresholds (array, NaN =
    untunable), untunable, tuned_on, n_test, n_val, n_bootstrap, seed, calibration (calibration.json's
    content or None), info (the caller's fields: model, database, ...), manifest (dict or None), and
    problem: why the outputs are not a complete, unchanged evaluation (for `key`, when given), None when
    they are; current = problem is None.
    Raises MissingInputError when metrics.json is absent, PipelineError when it is not an evaluation."""
    out = Path(out)
    path = out / "metrics.json"
    if not path.exists():
        raise MissingInputError(f"{path} not found (no evaluation in {out})")
    try:
        saved = json.loads(path.read_text())
        classes = list(saved["classes"])
        table = pd.DataFrame.from_dict(saved["metrics"], orient="index")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{path} is not an evaluation's metrics.json ({type(e).__name__}: {e})") from None
    if list(table.index) != [*classes, "mean"]:
        raise PipelineError(f"{path}: metrics rows {list(table.index)}, expected {[*classes, 'mean']}")
    numeric = [c for c in table.columns if c != "untunable"]
    table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")  # null -> NaN
    thresholds = parse_thresholds(saved, classes, path)
    calibration = None
    if (out / "calibration.json").exists():
        try:
            calibration = json.loads((out / "calibration.json").read_text())
        except (OSError, ValueError) as e:
            raise PipelineError(f"{out / 'calibration.json'} is not readable JSON ({e})") from None
    manifest_path = out / EVALUATED_JSON
    manifest = read_manifest(manifest_path)
    if manifest is None:
        problem = f"{manifest_path} is missing or unreadable (evaluation not run to the end, or interrupted)"
    elif key is not None and manifest.get("fingerprint") != key:
        problem = f"{manifest_path} describes an evaluation of other scores or settings"
    else:
        problem = manifest_mismatch(manifest_path)
    return {"folder": out, "classes": classes, "metrics": table, "thresholds": thresholds,
            "untunable": [c for c, t in zip(classes, thresholds) if np.isnan(t)], "tuned_on": saved.get("tuned_on"),
            "n_test": saved.get("n_test"), "n_val": saved.get("n_val"), "n_bootstrap": saved.get("n_bootstrap"),
            "seed": saved.get("seed"), "calibration": calibration,
            "info": {k: v for k, v in saved.items() if k not in RESERVED and k != "n_test"},
            "manifest": manifest, "problem": problem, "current": problem is None}


# ---------------------------------------------------------------------------------------------
# Figures and the printed table
# ---------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, cls: str, path: Path) -> Path:
    """Row-normalised 2x2 confusion matrix of one class."""
    plt = _pyplot()
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
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
    return save_figure(fig, path)


def plot_roc(y_true: np.ndarray, y_score: np.ndarray, aucs: np.ndarray, classes: Sequence[str], title: str,
             path: Path) -> Path:
    """One ROC curve per class that has both positive and negative records."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
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
    return save_figure(fig, path)


def _reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean probability, fraction positive and count of each non-empty bin."""
    b = probability_bins(p, n_bins)
    count = np.bincount(b, minlength=n_bins)
    keep = count > 0
    mean_p = np.bincount(b, weights=p, minlength=n_bins)[keep] / count[keep]
    frac = np.bincount(b, weights=y.astype(float), minlength=n_bins)[keep] / count[keep]
    return mean_p, frac, count[keep]


def plot_reliability(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str], title: str, path: Path,
                     calibrated: np.ndarray | None = None, temperature: float | None = None,
                     n_bins: int = ECE_BINS) -> Path:
    """Reliability diagram: all classes pooled, then one small panel per class; observed fraction positive
    against mean probability per bin (marker area ~ records), with the ECE; with `calibrated`, the
    temperature-scaled probabilities beside the model's own."""
    plt = _pyplot()
    y_true = np.asarray(y_true, bool)
    panels = [("all classes", y_true.ravel(), np.asarray(y_score).ravel(),
               None if calibrated is None else np.asarray(calibrated).ravel())]
    panels += [(c, y_true[:, j], y_score[:, j], None if calibrated is None else calibrated[:, j])
               for j, c in enumerate(classes)]
    ncols = min(5, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (name, y, p, q) in zip(axes.ravel(), panels):
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        scaled = f"scaled, T = {temperature:.2f}" if temperature else "scaled"
        for probs, label, color in ((p, "model", "C0"), (q, scaled, "C1")):
            if probs is None:
                continue
            mean_p, frac, count = _reliability_curve(y, probs, n_bins)
            ece = ece_scores(y[:, None], probs[:, None], n_bins)[0]
            ax.plot(mean_p, frac, "-", color=color, lw=1, label=f"{label}: ECE {ece:.3f}")
            ax.scatter(mean_p, frac, s=8 + 60 * count / count.max(), color=color, alpha=0.7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("mean probability", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction positive", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.3, hspace=0.45)  # fixed spacing: tight_layout would draw the figure twice
    return save_figure(fig, path)


def print_metrics(table: pd.DataFrame) -> None:
    """The metrics table as text: F1 and AUC with their 95 % CI in brackets when it was bootstrapped, n/a
    for a class that cannot be assessed, the threshold (or "untunable")."""
    shown = pd.DataFrame(index=table.index)
    for m in (m for m in METRICS if m in table):
        if m in ("f1", "auc") and f"{m}_lo" in table:
            shown[m] = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{v:.3f}" if np.isfinite(v)
                        else "n/a" for v, lo, hi in zip(table[m], table[f"{m}_lo"], table[f"{m}_hi"])]
        else:
            shown[m] = [f"{v:.3f}" if np.isfinite(v) else "n/a" for v in table[m]]
    if "threshold" in table:
        untunable = table["untunable"] if "untunable" in table else pd.Series(False, index=table.index)
        shown["threshold"] = ["untunable" if isinstance(u, (bool, np.bool_)) and u else "" if not np.isfinite(t)
                              else f"{t:.2f}" for t, u in zip(table["threshold"], untunable)]
    if "support" in table:
        shown["n positive"] = [str(int(s)) for s in table["support"]]
    print(shown.to_string())
