"""Metrics, one definition used by baselines.py, training, predict.py and the studies.

Every per-class metric of a table (precision, recall, F1, AUC, accuracy, ECE, Brier) is computed by one
function of record weights (`_weighted_metrics`): the point estimate weighs every record once, a bootstrap
resample weighs each record by how often it was drawn. So the point estimate and its 1000 resamples are
the same few matrix products, and a rule (which classes count, how ties rank) cannot differ between them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["f1_scores", "auc_scores", "ECE_BINS", "probability_bins", "ece_scores", "brier_scores",
           "apply_temperature", "fit_temperature", "THRESHOLD_GRID", "tune_thresholds", "METRICS",
           "bootstrap_weights", "classification_metrics", "macro_auc", "challenge_scores", "tune_gbeta_thresholds",
           "predict_at_least_one"]


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-column F1 of 0/1 matrices; a column with no positives and no predictions scores 0."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = (y_true & y_pred).sum(0)
    denom = y_true.sum(0) + y_pred.sum(0)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n down each column, tied values sharing their average rank (scipy.stats.rankdata's
    'average', axis 0), in numpy alone: importing scipy.stats costs a training process about 0.6 s."""
    values = np.asarray(values)
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    n = len(values)
    position = np.arange(n).reshape(-1, *([1] * (values.ndim - 1)))
    starts = np.ones(values.shape, bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    ends = np.ones(values.shape, bool)
    ends[:-1] = starts[1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=0)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), 0), axis=0), 0)
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=0)
    if values.dtype.kind == "f":
        ranks[..., np.isnan(values).any(axis=0)] = np.nan  # as rankdata: a column holding NaN has no ranks
    return ranks


def auc_scores(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-column ROC AUC (Mann-Whitney U from average ranks, so ties count one half); NaN where a
    column has only one class. Vectorised over columns: fast enough to bootstrap."""
    y_true = np.asarray(y_true, bool)
    ranks = average_ranks(y_score)
    n_pos = y_true.sum(0)
    n_neg = len(y_true) - n_pos
    u = (ranks * y_true).sum(0) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


ECE_BINS = 15


def probability_bins(y_score: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Equal-width bin of each probability over [0, 1]: min(floor(n_bins * p), n_bins - 1)."""
    return np.minimum(np.floor(np.asarray(y_score, float) * n_bins), n_bins - 1).astype(int)


def ece_scores(y_true: np.ndarray, y_score: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Per-column expected calibration error: over the non-empty equal-width bins,
    sum (n_bin / n) * |mean label - mean probability| (= |sum of (label - p) in the bin| / n)."""
    y_true, y_score = np.atleast_2d(np.asarray(y_true, float).T).T, np.atleast_2d(np.asarray(y_score, float).T).T
    bins = probability_bins(y_score, n_bins)
    out = np.zeros(y_score.shape[1])
    for j in range(y_score.shape[1]):
        gap = np.bincount(bins[:, j], weights=y_true[:, j] - y_score[:, j], minlength=n_bins)
        out[j] = np.abs(gap).sum() / len(y_score)
    return out


def brier_scores(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-column Brier score: mean (p - y)^2."""
    return ((np.asarray(y_score, float) - np.asarray(y_true, float)) ** 2).mean(0)


_CLIP = 1e-7  # probabilities of float32 models saturate at 0 and 1; their logits are clipped to about ±16


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), _CLIP, 1 - _CLIP)
    return np.log(p) - np.log1p(-p)


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T): T > 1 softens over-confident probabilities, T < 1 sharpens them; the
    ranking (AUC) is unchanged."""
    return 1 / (1 + np.exp(-_logit(p) / temperature))


def fit_temperature(val_probs: np.ndarray, val_y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """One scalar T (temperature scaling, Guo et al. 2017) minimising the binary cross-entropy of
    sigmoid(logit(p) / T) over every record and class of the validation scores; fitted on validation
    so the test records stay unseen."""
    from scipy.optimize import minimize_scalar

    z = _logit(val_probs).ravel()
    y = np.asarray(val_y, float).ravel()
    if z.shape != y.shape or not len(z):
        raise ValueError(f"fit_temperature: {np.shape(val_probs)} probabilities for {np.shape(val_y)} labels")

    def bce(t: float) -> float:
        a = z / t
        return float(np.mean(np.logaddexp(0, a) - y * a))  # -log sigmoid(a) for y=1, -log(1-sigmoid(a)) for y=0

    return float(minimize_scalar(bce, bounds=bounds, method="bounded", options={"xatol": 1e-6}).x)


THRESHOLD_GRID = np.linspace(0, 1, 100)  # the original's grid (0, 1/99, ..., 1)


def tune_thresholds(y_true: np.ndarray, y_score: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """One threshold per class maximising F1 on (validation) data; vectorised over the grid.

    One rule everywhere: a class is predicted when its score is strictly above its threshold, both here
    and when the thresholds are applied (the original tuned with `>` but applied `>=`); ties go to the
    lowest threshold. A class with no positive record cannot be tuned (every threshold scores F1 0; the
    first, 0.0, would predict it for every record): its threshold is NaN, and `score > NaN` is never true,
    so an untunable class is never predicted."""
    y_true = np.asarray(y_true, bool)
    y_score = np.asarray(y_score, float)
    pred = y_score[None, :, :] > grid[:, None, None]              # (grid, n, classes)
    tp = (pred & y_true[None]).sum(1)
    denom = pred.sum(1) + y_true.sum(0)[None]
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)  # (grid, classes)
    return np.where(y_true.any(0), grid[f1.argmax(0)], np.nan)


METRICS = ("precision", "recall", "f1", "auc", "accuracy", "ece", "brier")


def _weighted_metrics(w: np.ndarray, y: np.ndarray, p: np.ndarray, pred: np.ndarray,
                      n_bins: int = ECE_BINS) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every metric for each row of record weights `w` (r, n) at once: (r, classes) arrays, NaN where a
    class has no positive or no negative weight, and that validity mask."""
    n, c = y.shape
    yf, predf = y.astype(float), pred.astype(float)
    total = w.sum(1)[:, None]
    pos, npred = w @ yf, w @ predf
    tp = w @ (yf * predf)
    correct = w @ (y == pred).astype(float)
    valid = (pos > 0) & (total - pos > 0)
    gaps = np.zeros((n, c * n_bins))  # (label - p) of each record in its class's bin column
    gaps[np.arange(n)[:, None], np.arange(c)[None] * n_bins + probability_bins(p, n_bins)] = yf - p
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "precision": np.where(npred > 0, tp / np.maximum(npred, 1), 0.0),
            "recall": tp / np.maximum(pos, 1),
            "f1": 2 * tp / np.maximum(pos + npred, 1),
            "auc": np.stack([_weighted_auc(w, y[:, j], p[:, j]) for j in range(c)], axis=1),
            "accuracy": correct / total,
            "ece": np.abs(w @ gaps).reshape(len(w), c, n_bins).sum(2) / total,
            "brier": w @ (p - yf) ** 2 / total,
        }
    return {m: np.where(valid, v, np.nan) for m, v in values.items()}, valid


def _weighted_auc(w: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of one class for each row of weights: with the records sorted once by score, each
    positive beats the negative weight below its group of tied scores and half of that within it."""
    order = np.argsort(s, kind="stable")
    ss, ys = s[order], y[order]
    neg_below = np.zeros((len(w), len(s) + 1))  # [:, k]: negative weight among the k lowest scores
    np.cumsum(w[:, order] * ~ys, axis=1, out=neg_below[:, 1:])
    pos = np.flatnonzero(ys)
    first = np.searchsorted(ss, ss[pos], "left")   # each positive's group of tied scores: [first, last)
    last = np.searchsorted(ss, ss[pos], "right")
    wins = neg_below[:, first] + 0.5 * (neg_below[:, last] - neg_below[:, first])
    wp = w[:, order[pos]]
    return (wp * wins).sum(1) / (wp.sum(1) * neg_below[:, -1])


def bootstrap_weights(n: int, n_bootstrap: int, seed: int, chunk: int | None = None):
    """Resamples of n records with replacement as record counts, `chunk` resamples at a time (about 4 M
    counts, so memory stays bounded on 20 000-record test sets). The draws are
    `default_rng(seed).integers(0, n, n)` once per resample, in order, whatever the chunk size."""
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, min(n_bootstrap, (4 << 20) // max(n, 1)))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, (b, n))
        yield np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(float)


def classification_metrics(y_true: np.ndarray, y_score: np.ndarray, thresholds: np.ndarray, classes: Sequence[str],
                           n_bootstrap: int = 0, seed: int = 0, chunk: int | None = None) -> pd.DataFrame:
    """Per-class metrics plus a mean row; with `n_bootstrap`, percentile 95 % CIs (`{metric}_lo/_hi`)
    from resampling records with replacement, and `n_resamples`, how many resamples each row's CI uses.

    A class without a positive or a negative record cannot be assessed: in the data, every metric of it
    is NaN and the mean row averages the other classes; in a resample, it is left out of that resample
    for every metric (an F1 of 0 from a resample that drew none of 3 positives says nothing about the
    model) and of that resample's mean. A NaN threshold (an untunable class) is never predicted."""
    y_true, y_score = np.asarray(y_true, bool), np.asarray(y_score, float)
    thresholds = np.asarray(thresholds, float)
    if y_true.shape != y_score.shape or thresholds.shape != (y_true.shape[1],) or len(classes) != len(thresholds):
        raise ValueError(f"classification_metrics: labels {y_true.shape}, scores {y_score.shape}, "
                         f"{thresholds.shape} thresholds, {len(classes)} classes")
    pred = y_score > thresholds[None]
    values, _ = _weighted_metrics(np.ones((1, len(y_true))), y_true, y_score, pred)
    table = pd.DataFrame({m: v[0] for m, v in values.items()}, index=list(classes))
    table.loc["mean"] = {m: _row_mean(v)[0] for m, v in values.items()}
    if n_bootstrap:
        draws = {m: [] for m in METRICS}
        kept = []
        for w in bootstrap_weights(len(y_true), n_bootstrap, seed, chunk):
            chunk_values, valid = _weighted_metrics(w, y_true, y_score, pred)
            for m, v in chunk_values.items():
                draws[m].append(np.column_stack([v, _row_mean(v)]))
            kept.append(np.column_stack([valid, valid.any(1)]))
        for m in METRICS:
            lo, hi = _percentiles(np.concatenate(draws[m]))
            table[f"{m}_lo"], table[f"{m}_hi"] = lo, hi
        table["n_resamples"] = np.concatenate(kept).sum(0)
    table["threshold"] = list(thresholds) + [np.nan]
    table["untunable"] = [bool(u) for u in np.isnan(thresholds)] + [None]
    table["support"] = list(y_true.sum(0)) + [int(y_true.sum())]
    return table


def _row_mean(v: np.ndarray) -> np.ndarray:
    """Mean over the classes that are not NaN, per row; NaN for a row without any."""
    ok = np.isfinite(v)
    return np.where(ok.any(1), np.where(ok, v, 0).sum(1) / np.maximum(ok.sum(1), 1), np.nan)


def _percentiles(draws: np.ndarray, q: tuple[float, float] = (2.5, 97.5)) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the percentiles of its non-NaN draws (numpy's linear interpolation); NaN without any."""
    lo, hi = np.full(draws.shape[1], np.nan), np.full(draws.shape[1], np.nan)
    for j in range(draws.shape[1]):
        d = draws[:, j][np.isfinite(draws[:, j])]
        if len(d):
            lo[j], hi[j] = np.percentile(d, q)
    return lo, hi


# ---------------------------------------------------------------------------------------------
# The PTB-XL benchmark's metrics (Strodthoff et al. 2021): macro AUC over every class, and for ICBEB2018
# the PhysioNet/CinC-style F_beta and G_beta with thresholds tuned per class for G_beta
# ---------------------------------------------------------------------------------------------
def macro_auc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray | None = None) -> float | np.ndarray:
    """Mean of the per-class AUCs over every class (the benchmark's score); NaN when a class has only one
    kind of record, since the benchmark drops no class. With `weights` (resamples x records: how often
    each resample drew each record), one value per resample, equal to the macro AUC of the resampled
    records, for the price of one sort per class however many resamples."""
    y_true, y_score = np.asarray(y_true, bool), np.asarray(y_score, float)
    w = np.ones((1, len(y_true))) if weights is None else np.asarray(weights, float).reshape(-1, len(y_true))
    with np.errstate(invalid="ignore", divide="ignore"):
        aucs = np.stack([_weighted_auc(w, y_true[:, j], y_score[:, j]) for j in range(y_true.shape[1])], axis=1)
    return float(aucs.mean(1)[0]) if weights is None else aucs.mean(1)


def challenge_scores(y_true: np.ndarray, y_pred: np.ndarray, beta: float = 2.0,
                     record_weights: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F_beta = (1+b^2)TP / ((1+b^2)TP + FP + b^2 FN) and G_beta = TP / (TP + FP + b FN), where
    every count weighs each record by 1 / its number of labels (so a record with many labels does not
    dominate), or by 1 with `record_weights=False` (how the benchmark scores one class while tuning its
    threshold). NaN for a class with no positive and no predicted record. A record without any label
    has no weight: refused (ValueError)."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"challenge_scores: labels {y_true.shape}, predictions {y_pred.shape}")
    n_labels = y_true.sum(1)
    if record_weights and (n_labels == 0).any():
        raise ValueError(f"challenge_scores: record {int(np.flatnonzero(n_labels == 0)[0])} has no label, "
                         "and each record weighs 1 / its number of labels")
    w = 1.0 / n_labels if record_weights else np.ones(len(y_true))
    tp = w @ (y_true & y_pred)
    fp = w @ (~y_true & y_pred)
    fn = w @ (y_true & ~y_pred)
    b2 = beta ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        f_beta = (1 + b2) * tp / ((1 + b2) * tp + fp + b2 * fn)
        g_beta = tp / (tp + fp + beta * fn)
    return f_beta, g_beta


def tune_gbeta_thresholds(y_true: np.ndarray, y_score: np.ndarray, beta: float = 2.0,
                          grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """One threshold per class maximising that class's unweighted G_beta (predicted when the score is
    strictly above it) over `grid`, ties to the lowest: the benchmark's rule for ICBEB2018. Call it on
    validation (or training) scores, never on the records being scored. A class without a positive
    record cannot be tuned: NaN (never predicted above a threshold)."""
    y_true, y_score = np.asarray(y_true, bool), np.asarray(y_score, float)
    pred = y_score[None, :, :] > grid[:, None, None]               # (grid, n, classes)
    tp = (pred & y_true[None]).sum(1)
    fp = (pred & ~y_true[None]).sum(1)
    fn = (~pred & y_true[None]).sum(1)
    denom = tp + fp + beta * fn
    g = np.where(denom > 0, tp / np.where(denom > 0, denom, 1), 0.0)
    return np.where(y_true.any(0), grid[g.argmax(0)], np.nan)


def predict_at_least_one(y_score: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0/1 predictions `score > threshold` (a NaN threshold never fires), where a record above no threshold
    is given its highest-scoring class: the benchmark's rule, since every ICBEB record has a label."""
    y_score = np.asarray(y_score, float)
    pred = y_score > np.asarray(thresholds, float)[None]
    none = ~pred.any(1)
    pred[np.flatnonzero(none), y_score[none].argmax(1)] = True
    return pred
