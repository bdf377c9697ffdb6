"""One evaluator for every model (the PTB-XL benchmark's design). Whatever produces scores (a `Scorer`: the
ResNet run, any registered architecture, a feature baseline) hands over its validation and test scores per
record (`Scores`); thresholds are tuned on validation, metrics with bootstrap CIs and calibration are
computed on test, and every model gets the same files in its `EvaluationFolder` (utils.results):

    val_scores.csv      validation scores (when given)     metrics.csv      per class + mean, CIs
    test_scores.csv     test scores                        metrics.json     the same, thresholds, info
    roc.png, confusion_<class>.png, reliability.png        calibration.json (with calibration)
    evaluated.json      the manifest, removed first and written last: the outputs are complete and current

`evaluate_scorer` is the one path from a model to its evaluation: reused when current for its key (said in
one line), else scored and evaluated; `Summary` (utils.results) reads the row a table shows of it. It
needs scores, not torch, so any model's scores (or a scores file) can be evaluated.

A scores table is a DataFrame with `patient_id`, one 0/1 column per class and `p_<class>`, the probability
per class (the form of test_scores.csv).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import pandas as pd

from utils.errors import MissingInputError, PipelineError
from utils.files import fingerprint, read_records_csv, save_figure, write_csv, write_json
from utils.manifest import file_sha, write_manifest
from utils.metrics import (ECE_BINS, METRICS, apply_temperature, classification_metrics, ece_scores, fit_temperature,
                           probability_bins, tune_thresholds)
from utils.results import RESERVED, EvaluationFolder, thresholds_json
from utils.tables import format_ci, format_number

__all__ = ["scores_table", "check_scores", "read_scores", "scores_arrays", "Scores", "Scorer", "EvalOptions",
           "evaluate", "evaluate_scorer", "plot_confusion", "plot_roc", "plot_reliability", "print_metrics",
           "prob_columns", "jsonable"]


# ---------------------------------------------------------------------------------------------
# Scores as data
# ---------------------------------------------------------------------------------------------
def prob_columns(classes: Sequence[str]) -> list[str]:
    return [f"p_{c}" for c in classes]


def scores_table(ids: Sequence[str], y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """patient_id, the 0/1 label of each class and p_<class>: what a model hands to the evaluator."""
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
        table = read_records_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path} is not a readable CSV ({type(e).__name__}: {e})") from None
    return check_scores(table, classes, str(path))


def scores_arrays(table: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(labels as bool, probabilities) of a checked scores table, columns in `classes` order."""
    return table[list(classes)].to_numpy().astype(bool), table[prob_columns(classes)].to_numpy(float)


# ---------------------------------------------------------------------------------------------
# What a model hands over, and how an evaluation is set
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scores:
    """One model's scores tables: on the test records, and on the validation records that thresholds are
    tuned and the temperature fitted on (None when the thresholds are given: external evaluation)."""
    test: pd.DataFrame
    val: pd.DataFrame | None = None


class Scorer(Protocol):
    """Whatever produces scores: fitted on the training records (before, or in `score`), it scores the
    validation and test records. The ResNet runs (models.scoring) and the feature baselines
    (baselines.py) are Scorers, so both reach the evaluator the same way."""

    def score(self) -> Scores: ...


@dataclass(frozen=True)
class EvalOptions:
    """Everything one evaluation depends on besides the scores.

    - thresholds: None to tune them on the validation scores, or given (external evaluation: the training
      database's, NaN = untunable); `tuned_on` says where they come from in the outputs;
    - thresholds_file: also write them there (thresholds_json form, with `info` as provenance), listed in
      the manifest;
    - calibrate: fit a temperature on the validation scores, report ECE and Brier before and after in
      calibration.json and reliability.png (metrics.csv and the scores files stay the model's own);
    - info goes into metrics.json and the manifest; key is the manifest's fingerprint (default: a hash of
      the scores files and settings), what `EvaluationFolder.current(key)` compares."""
    folder: EvaluationFolder
    classes: tuple[str, ...]
    n_bootstrap: int = 1000
    seed: int = 0
    figures: bool = True
    calibrate: bool = False
    title: str = "test records"
    info: dict = field(default_factory=dict)
    key: str | None = None
    thresholds: np.ndarray | None = None
    tuned_on: str | None = None
    thresholds_file: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", EvaluationFolder(Path(getattr(self.folder, "folder", self.folder))))
        object.__setattr__(self, "classes", tuple(self.classes))


# ---------------------------------------------------------------------------------------------
# The evaluator, step by step
# ---------------------------------------------------------------------------------------------
def evaluate_scorer(scorer: Scorer, options: EvalOptions, force: bool = False,
                    what: str = "evaluation") -> pd.DataFrame:
    """The one path from a model to its evaluation: when `options.folder` holds a current evaluation for
    `options.key` it is reused (said in one line: "<folder>: <what> is current; ...") unless `force`;
    else the scorer scores and the scores are evaluated. Returns the metrics table."""
    if not force and options.key is not None and options.folder.current(options.key, what):
        return options.folder.read()["metrics"]
    return evaluate(scorer.score(), options)


def evaluate(scores: Scores, options: EvalOptions) -> pd.DataFrame:
    """Evaluate one model's scores into `options.folder`; returns the metrics table (per class and mean).
    Inputs are checked before anything is touched; then the old manifest is removed, and the new one is
    written last, so an interrupted evaluation never looks complete."""
    o, classes = options, list(options.classes)
    test, val, thresholds, tuned_on = _checked_inputs(scores, o)
    _warn_about_classes(o.folder, test, thresholds, classes)
    _start(o, val is not None)
    outputs = _write_scores(o.folder, test, val)
    key = o.key or fingerprint([[file_sha(f) for f in outputs], thresholds, o.n_bootstrap, o.seed, o.calibrate,
                                o.figures])
    y, p = scores_arrays(test, classes)
    table = classification_metrics(y, p, thresholds, classes, n_bootstrap=o.n_bootstrap, seed=o.seed)
    calibration = _calibration(test, val, thresholds, classes, table, o.n_bootstrap, o.seed) if o.calibrate else None
    outputs += _write_metrics(o, table, thresholds, tuned_on, calibration, len(test), val)
    if o.figures:
        outputs += _write_figures(o, y, p, thresholds, table, calibration)
    write_manifest(o.folder.manifest, key, outputs, **jsonable(o.info), n_bootstrap=o.n_bootstrap, seed=o.seed,
                   calibrate=o.calibrate, figures=o.figures)
    return table


def _checked_inputs(scores: Scores, o: EvalOptions) -> tuple[pd.DataFrame, pd.DataFrame | None, np.ndarray, str]:
    """The scores in canonical form, the thresholds and where they come from; a ValueError (a caller's
    mistake) or PipelineError (bad scores) before any file is touched."""
    classes = list(o.classes)
    clash = set(o.info) & set(RESERVED)
    if clash:
        raise ValueError(f"evaluate: info may not set {sorted(clash)} (the evaluator writes them)")
    test = check_scores(scores.test, classes, "test scores")
    val = None if scores.val is None else check_scores(scores.val, classes, "validation scores")
    if o.thresholds is None:
        if val is None:
            raise ValueError("evaluate: give validation scores to tune thresholds on, or the thresholds")
        thresholds = tune_thresholds(*scores_arrays(val, classes))
        tuned_on = o.tuned_on or f"validation scores ({len(val)} records)"
    else:
        thresholds = np.asarray(o.thresholds, float)
        if thresholds.shape != (len(classes),) or ((thresholds < 0) | (thresholds > 1) | np.isinf(thresholds)).any():
            raise ValueError(f"evaluate: thresholds {thresholds.tolist()} for classes {classes} (one per class, "
                             f"in [0, 1], NaN for an untunable class)")
        tuned_on = o.tuned_on or "given by the caller"
    if o.calibrate and val is None:
        raise ValueError("evaluate: calibrate=True fits the temperature on validation scores; give them")
    return test, val, thresholds, tuned_on


def _warn_about_classes(folder: EvaluationFolder, test: pd.DataFrame, thresholds: np.ndarray,
                        classes: list[str]) -> None:
    """An untunable class is never predicted; a class without positives or negatives has no test metrics."""
    for c, t in zip(classes, thresholds):
        if np.isnan(t):
            print(f"warning: {folder}: {c}: no positive record in the validation scores, so its threshold cannot be "
                  f"tuned; it is never predicted (marked untunable in metrics.csv and metrics.json)", file=sys.stderr)
    y = test[classes].to_numpy().astype(bool)
    for j, c in enumerate(classes):
        if y[:, j].all() or not y[:, j].any():
            print(f"warning: {folder}: {c}: {'every' if y[:, j].all() else 'no'} test record is positive: no metrics "
                  f"for it (n/a); the mean row averages the other classes", file=sys.stderr)


def _start(o: EvalOptions, has_val: bool) -> None:
    """Remove the manifest first, and any earlier file this evaluation will not rewrite (it would describe
    that earlier one)."""
    f = o.folder
    f.folder.mkdir(parents=True, exist_ok=True)
    f.manifest.unlink(missing_ok=True)
    stale = (([] if has_val else [f.val_scores]) + ([] if o.calibrate else [f.calibration])
             + ([] if o.figures else f.figures(o.classes)))
    for path in stale:
        path.unlink(missing_ok=True)


def _write_scores(f: EvaluationFolder, test: pd.DataFrame, val: pd.DataFrame | None) -> list[Path]:
    return [write_csv(test, f.test_scores)] + ([] if val is None else [write_csv(val, f.val_scores)])


def _write_metrics(o: EvalOptions, table: pd.DataFrame, thresholds: np.ndarray, tuned_on: str,
                   calibration: dict | None, n_test: int, val: pd.DataFrame | None) -> list[Path]:
    """calibration.json, the thresholds file, metrics.csv and metrics.json."""
    f, classes = o.folder, list(o.classes)
    outputs = []
    if calibration is not None:
        outputs.append(write_json(jsonable(calibration), f.calibration))
    if o.thresholds_file is not None:
        outputs.append(write_json(jsonable(thresholds_json(classes, thresholds, tuned_on, **o.info)),
                                  o.thresholds_file))
    write_csv(table.reset_index(names="class"), f.metrics_csv)
    saved = {**o.info, "n_test": n_test, "n_val": None if val is None else len(val), "classes": classes,
             **{k: v for k, v in thresholds_json(classes, thresholds, tuned_on).items() if k != "classes"},
             "n_bootstrap": o.n_bootstrap, "seed": o.seed,
             "calibration": None if calibration is None else {"temperature": calibration["temperature"]},
             "metrics": table.to_dict("index")}
    write_json(jsonable(saved), f.metrics_json)
    return outputs + [f.metrics_csv, f.metrics_json]


def _write_figures(o: EvalOptions, y: np.ndarray, p: np.ndarray, thresholds: np.ndarray, table: pd.DataFrame,
                   calibration: dict | None) -> list[Path]:
    """A confusion matrix per class, the ROC curves, the reliability diagram (before and after scaling)."""
    f, classes = o.folder, list(o.classes)
    outputs = [plot_confusion(y[:, j], p[:, j] > thresholds[j], c, f.confusion(c)) for j, c in enumerate(classes)]
    outputs.append(plot_roc(y, p, table.loc[classes, "auc"].to_numpy(), classes, f"ROC, {o.title}", f.roc))
    temperature = None if calibration is None else calibration["temperature"]
    after = None if temperature is None else apply_temperature(p, temperature)
    outputs.append(plot_reliability(y, p, classes, f"Reliability, {o.title}", f.reliability, after, temperature))
    return outputs


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
    fig, ax = plt.subplots(figsize=(3.6, 3))
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
    fig.subplots_adjust(left=0.3, right=0.95, bottom=0.17, top=0.9)  # fixed: a tight crop draws it twice
    return save_figure(fig, path, tight=False)


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
    fig.subplots_adjust(left=0.13, right=0.96, bottom=0.11, top=0.93)  # fixed: a tight crop draws it twice
    return save_figure(fig, path, tight=False)


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
        # three ticks an axis: with matplotlib's six, the ten panels' tick labels took half the drawing time
        ax.set(xlim=(0, 1), ylim=(0, 1), xticks=(0, 0.5, 1), yticks=(0, 0.5, 1))
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("mean probability", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction positive", fontsize=8)
    fig.suptitle(title, fontsize=10)
    # fixed margins and spacing: tight_layout or a tight crop would draw the ten panels twice
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.1, top=0.88, wspace=0.3, hspace=0.45)
    return save_figure(fig, path, tight=False)


def print_metrics(table: pd.DataFrame) -> None:
    """The metrics table as text: F1 and AUC with their 95 % CI in brackets when it was bootstrapped, n/a
    for a class that cannot be assessed, the threshold (or "untunable")."""
    shown = pd.DataFrame(index=table.index)
    for m in (m for m in METRICS if m in table):
        if m in ("f1", "auc") and f"{m}_lo" in table:
            shown[m] = [format_ci(v, lo, hi) for v, lo, hi in zip(table[m], table[f"{m}_lo"], table[f"{m}_hi"])]
        else:
            shown[m] = [format_number(float(v)) for v in table[m]]
    if "threshold" in table:
        untunable = table["untunable"] if "untunable" in table else pd.Series(False, index=table.index)
        shown["threshold"] = ["untunable" if isinstance(u, (bool, np.bool_)) and u else "" if not np.isfinite(t)
                              else f"{t:.2f}" for t, u in zip(table["threshold"], untunable)]
    if "support" in table:
        shown["n positive"] = [str(int(s)) for s in table["support"]]
    print(shown.to_string())
