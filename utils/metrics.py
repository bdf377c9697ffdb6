"""Metrics, one definition used by baselines.py, training, predict.py and the studies."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-column F1 of 0/1 matrices; a column with no positives and no predictions scores 0."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = (y_true & y_pred).sum(0)
    denom = y_true.sum(0) + y_pred.sum(0)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def auc_scores(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-column ROC AUC (Mann-Whitney U from average ranks, so ties count one half); NaN where a
    column has only one class. Vectorised over columns: fast enough to bootstrap."""
    from scipy.stats import rankdata

    y_true = np.asarray(y_true, bool)
    ranks = rankdata(y_score, axis=0)
    n_pos = y_true.sum(0)
    n_neg = len(y_true) - n_pos
    u = (ranks * y_true).sum(0) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


THRESHOLD_GRID = np.linspace(0, 1, 100)  # the original's grid (0, 1/99, ..., 1)


def tune_thresholds(y_true: np.ndarray, y_score: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """One threshold per class maximising F1 on (validation) data; vectorised over the grid.

    One rule everywhere: a class is predicted when its score is strictly above its threshold, both here
    and when the thresholds are applied (the original tuned with `>` but applied `>=`); ties go to the
    lowest threshold."""
    y_true = np.asarray(y_true, bool)
    pred = y_score[None, :, :] > grid[:, None, None]              # (grid, n, classes)
    tp = (pred & y_true[None]).sum(1)
    denom = pred.sum(1) + y_true.sum(0)[None]
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)  # (grid, classes)
    return grid[f1.argmax(0)]


METRICS = ("precision", "recall", "f1", "auc", "accuracy")


def metric_arrays(y_true: np.ndarray, y_score: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1, AUC and accuracy at the given thresholds."""
    y_true = np.asarray(y_true, bool)
    y_pred = y_score > np.asarray(thresholds)[None]
    tp = (y_true & y_pred).sum(0)
    fp = (~y_true & y_pred).sum(0)
    fn = (y_true & ~y_pred).sum(0)
    return {
        "precision": np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0),
        "recall": np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0),
        "f1": f1_scores(y_true, y_pred),
        "auc": auc_scores(y_true, y_score),
        "accuracy": (y_true == y_pred).mean(0),
    }


def classification_metrics(y_true: np.ndarray, y_score: np.ndarray, thresholds: np.ndarray, classes: Sequence[str],
                           n_bootstrap: int = 0, seed: int = 0) -> pd.DataFrame:
    """Per-class metrics plus a mean row; with `n_bootstrap`, percentile 95 % CIs (`{metric}_lo/_hi`)
    from resampling records with replacement."""
    values = metric_arrays(y_true, y_score, thresholds)
    table = pd.DataFrame(values, index=list(classes))
    table.loc["mean"] = {m: np.nanmean(v) for m, v in values.items()}
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        n = len(y_true)
        draws = {m: [] for m in METRICS}
        for _ in range(n_bootstrap):
            idx = rng.integers(0, n, n)
            for m, v in metric_arrays(y_true[idx], y_score[idx], thresholds).items():
                with np.errstate(all="ignore"):
                    draws[m].append(np.append(v, np.nanmean(v) if np.isfinite(v).any() else np.nan))
        for m in METRICS:
            with warnings.catch_warnings():  # a class without positives has no AUC in any resample
                warnings.simplefilter("ignore", RuntimeWarning)
                lo, hi = np.nanpercentile(np.array(draws[m]), [2.5, 97.5], axis=0)
            table[f"{m}_lo"], table[f"{m}_hi"] = lo, hi
    table["threshold"] = list(np.asarray(thresholds, float)) + [np.nan]
    table["support"] = list(np.asarray(y_true, bool).sum(0)) + [int(np.asarray(y_true, bool).sum())]
    return table
