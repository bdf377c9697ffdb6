"""The PTB-XL benchmark (Strodthoff, Wagner, Schaeffter, Samek, "Deep Learning for ECG Analysis: Benchmarks
and Insights from PTB-XL", IEEE JBHI 2021): its published leaderboard as data, its way of scoring and the
results table beside the published values, so that numbers computed here are comparable with the paper's.

Scoring as the benchmark does it: macro AUC over every class on all test records (the point estimate), and
100 bootstrap resamples of the test records, a resample lacking a positive record of any class being drawn
again; `mean` is the mean over the resamples, `lower`/`upper` their 5th and 95th percentiles. ICBEB2018
(the `cpsc9` task here) adds F_beta=2 and G_beta=2 at per-class thresholds tuned for G_beta on other records
than the scored ones. The results file has the benchmark's `te_results.csv` layout: rows `point`, `mean`,
`lower`, `upper`; columns `macro_auc` and, with thresholds, `F_beta_macro` and `G_beta_macro` (the names the
benchmark's own table code reads).

The published "0.925(08)" is the point estimate and max(upper - point, point - lower) truncated to
thousandths; `format_result` writes this project's results the same way.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from utils.errors import MissingInputError, PipelineError
from utils.evaluator import read_scores, scores_arrays, scores_table
from utils.files import atomic_write, same_file, write_csv
from utils.labels import PTBXL_TASKS
from utils.tables import Column, markdown_table
from utils.metrics import THRESHOLD_GRID, challenge_scores, macro_auc, predict_at_least_one, tune_gbeta_thresholds

__all__ = ["ICBEB_TASK", "LEADERBOARD_TASKS", "LEADERBOARD_MODELS", "published", "published_table",
           "format_result", "bootstrap_indices", "score_predictions", "write_te_results", "Predictions",
           "check_scorable", "scored_classes", "read_predictions", "read_bootstrap_ids", "read_threshold_array",
           "score_file_classes",
           "resample_aucs", "say_undefined_resamples", "probability_logits", "acceptance_probability",
           "TABLE_COLUMNS", "ENSEMBLE",
           "ensemble_scores", "benchmark_table", "benchmark_markdown", "tuned_gbeta_thresholds",
           "comparable_with_published", "AS_PUBLISHED", "OTHER_DATA", "PUBLISHED_RECORDS"]

ICBEB_TASK = "cpsc9"  # ICBEB2018 = CPSC2018, its nine classes
LEADERBOARD_TASKS = (*PTBXL_TASKS, ICBEB_TASK)  # the leaderboard's columns, in order
LEADERBOARD_MODELS = ("inception1d", "xresnet1d101", "resnet1d_wang", "fcn_wang", "lstm_bidir", "lstm", "Wavelet+NN")

# From README.md of helme/ecg_ptbxl_benchmarking, section "Leaderboard", in the version citing the JBHI
# article (doi 10.1109/jbhi.2020.3022989): tables "1. PTB-XL: all statements" to "6. PTB-XL: Rhythm
# statements" (macro AUC; one column here per table, in PTBXL_TASKS order) and "7. ICBEB: All statements"
# (AUC, F_beta=2, G_beta=2). Its preprint-era version printed a few other CI widths (e.g. form inception1d
# 0.899(21)). The README lists no xresnet1d50 and no ensemble row, so neither is here.
_PTBXL_LEADERBOARD = {
    "inception1d":   "0.925(08) 0.931(09) 0.930(10) 0.921(06) 0.899(22) 0.953(13)",
    "xresnet1d101":  "0.925(07) 0.937(08) 0.929(14) 0.928(05) 0.896(12) 0.957(19)",
    "resnet1d_wang": "0.919(08) 0.936(08) 0.928(10) 0.930(05) 0.880(15) 0.946(10)",
    "fcn_wang":      "0.918(08) 0.926(10) 0.927(11) 0.925(06) 0.869(12) 0.931(08)",
    "lstm_bidir":    "0.914(08) 0.932(07) 0.923(12) 0.921(06) 0.876(15) 0.949(11)",
    "lstm":          "0.907(08) 0.927(08) 0.928(10) 0.927(05) 0.851(15) 0.953(09)",
    "Wavelet+NN":    "0.849(13) 0.855(15) 0.859(16) 0.874(07) 0.757(29) 0.890(24)",
}
_ICBEB_LEADERBOARD = {  # AUC, F_beta=2, G_beta=2
    "xresnet1d101":  "0.974(05) 0.819(30) 0.602(37)",
    "resnet1d_wang": "0.969(06) 0.803(31) 0.586(37)",
    "lstm":          "0.964(06) 0.790(31) 0.561(37)",
    "inception1d":   "0.963(09) 0.807(30) 0.594(41)",
    "lstm_bidir":    "0.959(11) 0.796(31) 0.573(36)",
    "fcn_wang":      "0.957(08) 0.787(31) 0.563(37)",
    "Wavelet+NN":    "0.905(14) 0.665(34) 0.405(36)",
}
METRIC_COLUMNS = {"auc": "macro_auc", "fbeta": "F_beta_macro", "gbeta": "G_beta_macro"}


def _parse_published(text: str) -> tuple[float, float]:
    point, half = text.rstrip(")").split("(")
    return float(point), int(half) / 1000


def published(task: str, model: str, metric: str = "auc") -> tuple[float, float] | None:
    """(point, CI half-width) the leaderboard prints for a model on a task (metric `auc`, or `fbeta` and
    `gbeta` for ICBEB2018); None where it prints none."""
    if task == ICBEB_TASK:
        entry = _ICBEB_LEADERBOARD.get(model)
        return None if entry is None or metric not in METRIC_COLUMNS else \
            _parse_published(entry.split()[list(METRIC_COLUMNS).index(metric)])
    if metric != "auc" or task not in PTBXL_TASKS or model not in _PTBXL_LEADERBOARD:
        return None
    return _parse_published(_PTBXL_LEADERBOARD[model].split()[list(PTBXL_TASKS).index(task)])


def published_table() -> pd.DataFrame:
    """Every published value: task, model, metric, point, half_width."""
    rows = [(task, model, metric, *published(task, model, metric))
            for task in LEADERBOARD_TASKS for model in LEADERBOARD_MODELS
            for metric in (METRIC_COLUMNS if task == ICBEB_TASK else ("auc",))]
    return pd.DataFrame(rows, columns=["task", "model", "metric", "point", "half_width"])


def format_result(point: float, lower: float, upper: float) -> str:
    """The leaderboard's notation: "0.925(08)" = point rounded to 3 decimals and max(upper - point,
    point - lower) truncated to thousandths."""
    if not np.isfinite(point):
        return "n/a"
    half = max(upper - point, point - lower) if np.isfinite(lower) and np.isfinite(upper) else 0.0
    return f"{round(point, 3):.3f}({int(half * 1000 + 1e-9):02d})"


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def bootstrap_indices(y: np.ndarray, n: int = 100, seed: int = 0, source: str = "the labels",
                      max_draws: int | None = None) -> np.ndarray:
    """(n, records) resamples of record indices with replacement, `default_rng(seed).integers(0, records,
    records)` per draw, where a draw lacking a positive record of any class is discarded and drawn again
    (the benchmark's rule: every class's AUC is defined in every resample). Fails rather than loop for
    ever when a class has no positive (or no negative) record, or when `max_draws` (default 1000 per
    resample) draws are spent."""
    y = np.asarray(y, bool)
    if y.ndim != 2 or not len(y):
        raise PipelineError(f"{source}: labels of shape {y.shape}, not records x classes")
    check_scorable(y, source)
    if n * len(y) > MAX_RESAMPLED:
        raise PipelineError(f"{source}: {n:,} resamples of {len(y):,} records are {n * len(y):,} record indices "
                            f"({n * len(y) * 8 / 2 ** 30:.1f} GiB); at most {MAX_RESAMPLED:,} are held (2 GiB): ask "
                            f"for at most {MAX_RESAMPLED // len(y):,} resamples")
    rng = np.random.default_rng(seed)
    max_draws = max_draws or 1000 * n
    check_redraws(y, n, max_draws, source)
    out, draws = [], 0
    while len(out) < n:
        if draws == max_draws:
            rare = int(y.sum(0).argmin())
            raise PipelineError(f"{source}: only {len(out)} of {n} bootstrap resamples had a positive record of "
                                f"every class after {draws} draws (class {rare} has {int(y[:, rare].sum())} "
                                f"positive records of {len(y)})")
        idx = rng.integers(0, len(y), len(y))
        draws += 1
        if y[idx].any(0).all():
            out.append(idx)
    return np.stack(out) if out else np.zeros((0, len(y)), np.int64)


AUC_PART_COUNTS = 4 << 20  # record counts of the resamples whose AUCs are computed at once (memory: a few times 32 MiB)
MAX_RESAMPLED = 2 ** 28  # record indices that one set of resamples may hold (int64: 2 GiB); 100 000 of PTB-XL's 2,163

# What the redraws may cost, in record x class look-ups (about 0.6 ns each on a 2-core machine), a draw
# costing its records x classes plus DRAW_OVERHEAD (about 10 us of drawing): about a minute in all.
DRAW_WORK = 1e11
DRAW_OVERHEAD = 16_000


def acceptance_probability(y: np.ndarray, exact_classes: int = 12) -> float:
    """The chance that a resample (len(y) records drawn with replacement) holds a positive record of every
    class, by inclusion-exclusion: sum over sets S of classes of (-1)^|S| (1 - u(S) / n)^n, u(S) being the
    records positive in some class of S. Only the `exact_classes` classes likeliest to be missed enter the
    sum; leaving a class out can only raise the chance, so the value is an upper bound, and exact where the
    others' chance to be missed is negligible (a class with 20 positives in 1,000 records: 2e-9)."""
    y = np.asarray(y, bool)
    n = len(y)
    miss = (1 - y.sum(0) / n) ** n
    cols = [j for j in np.argsort(-miss, kind="stable")[:exact_classes] if miss[j] > 0]
    k = len(cols)
    codes = (y[:, cols] * (1 << np.arange(k))).sum(1) if k else np.zeros(n, np.int64)
    within = np.bincount(codes, minlength=1 << k).astype(float)  # records positive in exactly the set `code`
    subsets = np.arange(1 << k)
    for b in range(k):  # within[T] := records whose positive classes (of cols) all lie in T
        has = (subsets >> b) & 1 == 1
        within[has] += within[subsets[has] ^ (1 << b)]
    missed = within[~subsets & ((1 << k) - 1)]  # records positive in no class of S
    sign = np.array([-1.0 if bin(s).count("1") % 2 else 1.0 for s in subsets])
    return float(np.clip((sign * (missed / n) ** n).sum(), 0.0, 1.0))


def check_redraws(y: np.ndarray, n: int, max_draws: int, source: str = "the labels") -> None:
    """Refuse up front resamples whose redraws would not end in reasonable time: when a resample holds a
    positive of every class so rarely that `n` of them would take more than `max_draws` draws, or more
    than about a minute of drawing (a class with one positive record is missed by a third of the
    resamples; several such classes multiply)."""
    p = acceptance_probability(y)
    expected = n / p if p > 0 else math.inf
    if expected <= max_draws and expected * (y.size + DRAW_OVERHEAD) <= DRAW_WORK:
        return
    rare = int(y.sum(0).argmin())
    raise PipelineError(f"{source}: a resample holds a positive record of every class with probability {p:.2g} "
                        f"(class {rare} has {int(y[:, rare].sum())} positive record(s) of {len(y)}), so {n} "
                        f"resamples would take about {expected:,.0f} draws; ask for fewer resamples, score more "
                        "records, or leave the rarest classes out")


def class_label(classes: Sequence[str] | None, j: int) -> str:
    """A class in a message: its name, else its column in the arrays, counted from 0 as records are."""
    return classes[j] if classes else f"column {j}"


def check_scorable(y: np.ndarray, source: str, classes: Sequence[str] | None = None) -> None:
    """Macro AUC over every class needs a positive and a negative record of each: a PipelineError naming
    `source` and the first class without."""
    for kind, missing in (("positive", ~y.any(0)), ("negative", y.all(0))):
        if missing.any():
            j = int(np.flatnonzero(missing)[0])
            raise PipelineError(f"{source}: class {class_label(classes, j)} has no {kind} record, so its AUC and "
                                "the macro AUC over every class are undefined")


def resample_aucs(y: np.ndarray, p: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The macro AUC of each resample `indices` (resamples x records) of the records, one value per
    resample: each resample as record counts, so one sort per class serves all of them, a bounded number
    of resamples at a time."""
    n, k = len(y), len(indices)
    step = max(1, AUC_PART_COUNTS // max(n, 1))  # each resample's AUC is its row's alone
    aucs = []
    for start in range(0, k, step):
        part = np.asarray(indices[start:start + step])
        counts = np.bincount((part + n * np.arange(len(part))[:, None]).ravel(), minlength=len(part) * n)
        aucs.append(macro_auc(y, p, counts.reshape(len(part), n)))
    return np.concatenate(aucs) if aucs else np.zeros(0)


def score_predictions(y: np.ndarray, p: np.ndarray, indices: np.ndarray,
                      thresholds: np.ndarray | None = None, beta: float = 2.0, source: str = "the labels"
                      ) -> pd.DataFrame:
    """The benchmark's results for scores `p` of records with labels `y`: rows point (all records), mean,
    lower (5th percentile), upper (95th) over the resamples `indices` (resamples x records); column
    macro_auc, and with per-class `thresholds` (tuned elsewhere) F_beta_macro and G_beta_macro of the
    predictions `p > threshold`, a record above none getting its top class. A resample where a metric is
    undefined (a class without negatives) is left out of that metric's mean and percentiles
    (`say_undefined_resamples` tells the user). `source` names the labels in errors."""
    y, p = np.asarray(y, bool), np.asarray(p, float)
    indices = np.asarray(indices)
    if y.shape != p.shape or y.ndim != 2:
        raise PipelineError(f"{source}: labels of shape {y.shape} for scores of shape {p.shape}")
    if indices.ndim != 2 or (indices.size and (indices.min() < 0 or indices.max() >= len(y))):
        raise PipelineError(f"bootstrap indices of shape {indices.shape} do not index {len(y)} records")
    pred = None
    if thresholds is not None:
        thresholds = np.asarray(thresholds, float)
        if thresholds.shape != (y.shape[1],):
            raise PipelineError(f"{thresholds.shape[0] if thresholds.ndim else 1} thresholds for {y.shape[1]} classes")
        pred = predict_at_least_one(p, thresholds)
        unlabelled = np.flatnonzero(~y.any(1))
        if len(unlabelled):
            raise PipelineError(f"{source}: record {unlabelled[0]} has no label; F_beta and G_beta weigh each "
                                "record by 1 / its number of labels")

    columns = ["macro_auc"] + (["F_beta_macro", "G_beta_macro"] if pred is not None else [])
    point = [macro_auc(y, p)]
    draws = [resample_aucs(y, p, indices)]
    if pred is not None:
        point += [np.mean(v) for v in challenge_scores(y, pred, beta)]
        fg = np.array([[np.mean(v) for v in challenge_scores(y[rows], pred[rows], beta)] for rows in indices])
        draws += list(fg.reshape(len(indices), 2).T)
    draws = np.column_stack(draws)
    if not len(draws):
        return pd.DataFrame([point] + [[np.nan] * len(columns)] * 3, index=["point", "mean", "lower", "upper"],
                            columns=columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric undefined in every resample stays NaN
        table = [point, np.nanmean(draws, 0), np.nanpercentile(draws, 5, axis=0), np.nanpercentile(draws, 95, axis=0)]
    return pd.DataFrame(table, index=["point", "mean", "lower", "upper"], columns=columns)


def say_undefined_resamples(y: np.ndarray, indices: np.ndarray, source: str,
                            classes: Sequence[str] | None = None) -> None:
    """A note when some resamples (resamples x records) have no macro AUC: a class without a negative record
    in them (the reference redraws only for a missing positive, and its roc_auc_score would stop there), or
    without a positive (indices given rather than drawn). Such resamples are left out of the AUC's mean and
    interval, which then rest on fewer resamples than asked for. Read from the labels alone: whether an
    AUC is defined does not depend on the scores."""
    y, n_classes = np.asarray(y, bool), np.asarray(y).shape[1]
    undefined = np.zeros(len(indices), bool)
    lacking = {"negative": np.zeros(n_classes, bool), "positive": np.zeros(n_classes, bool)}
    step = max(1, AUC_PART_COUNTS // max(len(y), 1))  # bounded memory, as resample_aucs
    for start in range(0, len(indices), step):
        part = np.asarray(indices[start:start + step])
        for j in range(n_classes):
            drawn = y[part, j]
            for kind, missing in (("positive", ~drawn.any(1)), ("negative", drawn.all(1))):
                undefined[start:start + step] |= missing
                lacking[kind][j] |= missing.any()
    if not undefined.any():
        return
    why = "; ".join(f"no {kind} record of class(es) {', '.join(class_label(classes, j) for j in np.flatnonzero(m))}"
                    for kind, m in lacking.items() if m.any())
    print(f"note: {source}: {int(undefined.sum())} of {len(indices)} resamples have no macro AUC ({why}): the AUC's "
          f"mean and 5-95 % interval are over the other {int((~undefined).sum())}", file=sys.stderr)


def write_te_results(results: pd.DataFrame, path: Path) -> Path:
    """The results in the benchmark's te_results.csv layout (the row names as the first, unnamed column)."""
    return atomic_write(path, lambda tmp: results.to_csv(tmp))


# ---------------------------------------------------------------------------------------------
# Reading anyone's predictions: .npy arrays (records x classes) or this project's score CSV
# ---------------------------------------------------------------------------------------------
@dataclass
class Predictions:
    """Labels and scores of the same records; ids and classes when a score CSV named them."""
    y: np.ndarray
    p: np.ndarray
    ids: list[str] | None
    classes: list[str] | None


def score_file_classes(path: Path) -> list[str]:
    """The classes of a score CSV: every `p_<class>` column beside a `<class>` label column."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"scores file {path} not found")
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])  # as written: pandas renames a repeated column (A, A.1)
        columns = list(pd.read_csv(path, nrows=0).columns)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, csv.Error) as e:
        raise PipelineError(f"{path} is not a readable CSV ({type(e).__name__})") from None
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:  # which of two label columns would count is the reader's accident
        raise PipelineError(f"{path}: column(s) {', '.join(repeated)} appear more than once in its header")
    classes = [c[2:] for c in columns if c.startswith("p_") and c[2:] in columns]
    orphans = [c for c in columns if c.startswith("p_") and c[2:] not in columns]
    if orphans:  # a misspelt or missing label column would drop that class from the macro AUC unseen
        raise PipelineError(f"{path}: score column(s) {', '.join(orphans)} have no 0/1 label column "
                            f"{', '.join(c[2:] for c in orphans)} beside them (label columns found: "
                            f"{', '.join(classes) or 'none'}); every p_<class> needs its <class> column")
    if not classes:
        raise PipelineError(f"{path} has no class (a score CSV has patient_id, a 0/1 column per class and "
                            "p_<class> beside it)")
    known = {"patient_id", *classes, *(f"p_{k}" for k in classes)}
    strays = [c for c in columns if c not in known]
    if strays:  # a label column whose p_<class> is misspelt (pB for p_B) would leave its class out unseen
        index = "; an unnamed column is a saved pandas index: write the CSV with index=False" \
            if any(c.startswith("Unnamed:") for c in strays) else ""
        raise PipelineError(f"{path}: column(s) {', '.join(strays)} are neither a class with its p_<class> column "
                            f"nor a score (classes found: {', '.join(classes)}); a score CSV has patient_id, a 0/1 "
                            f"column per class and p_<class> beside it, and nothing else{index}")
    return classes


def _read_npy(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} not found")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise PipelineError(f"{path} is a pickled array (numpy's .dump), which can run code when loaded; if "
                                "you trust it, save it as .npy: np.save(out, np.load(path, allow_pickle=True))"
                                ) from None
        raise PipelineError(f"{path} is not a .npy array ({e})") from None
    except (OSError, EOFError) as e:
        raise PipelineError(f"{path} is not a .npy array ({e})") from None


def _matrix(a: np.ndarray, path: Path, what: str) -> np.ndarray:
    if a.ndim != 2 or not a.size:
        raise PipelineError(f"{path}: {what} of shape {a.shape}, not records x classes")
    if a.dtype.kind not in "biuf":
        raise PipelineError(f"{path}: {what} of type {a.dtype}, not numbers")
    return a


def _read_labels_npy(path: Path) -> np.ndarray:
    y = _matrix(_read_npy(path), path, "labels")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise PipelineError(f"{path}: label {y[i, j].item()!r} of record {i}, class {j} is not 0/1")
    return y.astype(bool)


def _read_scores_npy(path: Path, logits: bool = False) -> np.ndarray:
    """Probabilities in [0, 1], or with `logits` finite numbers not all in [0, 1] (the thresholds then move
    to the logit scale, see `probability_logits`; probabilities taken for logits would be thresholded as
    their sigmoid). Scores outside [0, 1] taken as they are would be thresholded on a
    0..1 grid that does not span them: F_beta and G_beta would be wrong while the AUC looked right."""
    p = _matrix(_read_npy(path), path, "scores").astype(float)
    bad = ~np.isfinite(p)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise PipelineError(f"{path}: score {p[i, j]} of record {i}, class {j} is not a finite number")
    outside = (p < 0) | (p > 1)
    if not logits and outside.any():
        i, j = np.argwhere(outside)[0]
        raise PipelineError(f"{path}: score {p[i, j]:g} of record {i}, class {j} is outside [0, 1] (the scores "
                            f"range from {p.min():g} to {p.max():g}); scores are probabilities, whose thresholds "
                            "are tuned on a 0..1 grid: pass --logits if these are logits (the sigmoid is applied), "
                            "or save sigmoid(scores)")
    if logits and not outside.any():  # a model's logits are negative wherever a class is unlikely
        raise PipelineError(f"{path}: --logits, but every score is in [0, 1] (from {p.min():g} to {p.max():g}): "
                            "these look like probabilities, and their sigmoid would be thresholded instead; "
                            "leave out --logits (for logits that really lie in [0, 1], save sigmoid(scores))")
    return p


def probability_logits(t: np.ndarray) -> np.ndarray:
    """logit(t) of probability thresholds, exactly: sigmoid(z) > t holds when z > logit(t), with logit(0) =
    -inf and logit(1) = +inf (NaN stays NaN: never predicted). Comparing logits with these gives the
    predictions of their sigmoid without rounding the logits (sigmoid(40) == 1.0 in float64)."""
    t = np.asarray(t, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(t) - np.log1p(-t)


def read_predictions(scores: Path, labels: Path | None = None, logits: bool = False) -> Predictions:
    """Labels and scores from `scores` (.npy or score CSV) and `labels` (.npy or score CSV; may be left out
    when `scores` is a score CSV, which holds both). A score CSV given for labels must hold the same
    records in the same order and the same classes (matched by name); arrays must have the same shape. .npy scores are
    probabilities in [0, 1], or logits with `logits`."""
    scores, labels = Path(scores), (Path(labels) if labels is not None else None)
    ids = classes = y = None
    if scores.suffix == ".csv":
        classes = score_file_classes(scores)
        table = read_scores(scores, classes)
        y, p = scores_arrays(table, classes)
        ids = list(table["patient_id"])
    else:
        p = _read_scores_npy(scores, logits)
    if labels is not None and not (scores.suffix == ".csv" and same_file(labels, scores)):
        if labels.suffix == ".csv":
            label_classes = score_file_classes(labels)
            table = read_scores(labels, label_classes)
            if classes is not None and sorted(label_classes) == sorted(classes):
                label_classes = classes  # the same classes in another column order: matched by name
            if classes is not None and label_classes != classes:
                raise PipelineError(f"{labels} has classes {', '.join(label_classes)}; {scores} has "
                                    f"{', '.join(classes)}")
            if ids is not None and list(table["patient_id"]) != ids:
                raise PipelineError(f"{labels} and {scores} do not hold the same records in the same order")
            label_y, classes = table[label_classes].to_numpy().astype(bool), label_classes
            ids = list(table["patient_id"])
        else:
            label_y = _read_labels_npy(labels)
        if y is not None and label_y.shape == y.shape and not np.array_equal(label_y, y):  # a score CSV's own
            row = int(np.flatnonzero((label_y != y).any(axis=1))[0])
            raise PipelineError(f"{labels} disagrees with the 0/1 columns of {scores} (first at record {row}, "
                                f"{ids[row]}): give the labels of those records, or leave --labels out to use the "
                                "CSV's own")
        y = label_y
    if y is None:
        raise PipelineError(f"{scores} holds scores only; give the labels of its records")
    if y.shape != p.shape:
        raise PipelineError(f"{labels or scores}: labels of shape {y.shape} for scores of shape {p.shape} in {scores}")
    return Predictions(y, p, ids, classes)


def read_bootstrap_ids(path: Path, y: np.ndarray) -> np.ndarray:
    """A (resamples x records) integer index array, such as the benchmark's test_bootstrap_ids saved as .npy,
    checked against the labels: every index a record, every resample with a positive of every class."""
    ids = _read_npy(path)
    y = np.asarray(y, bool)
    if ids.ndim != 2 or ids.shape[1] != len(y) or not len(ids):
        raise PipelineError(f"{path}: bootstrap ids of shape {ids.shape}, not resamples x {len(y)} records")
    if ids.dtype.kind not in "iu":
        raise PipelineError(f"{path}: bootstrap ids of type {ids.dtype}, not integers")
    bad = (ids < 0) | (ids >= len(y))
    if bad.any():
        k, i = np.argwhere(bad)[0]
        raise PipelineError(f"{path}: index {ids[k, i]} in resample {k} is outside the {len(y)} records")
    never = np.ones(y.shape[1], bool)  # classes no resample has a negative of
    for k, rows in enumerate(ids):
        drawn = y[rows]
        lacking = ~drawn.any(0)
        if lacking.any():
            raise PipelineError(f"{path}: resample {k} has no positive record of class "
                                f"{int(np.flatnonzero(lacking)[0])} (the benchmark draws such a resample again)")
        never &= drawn.all(0)
    if never.any():  # the scorer leaves a resample without negatives out of that class; with none left, no interval
        raise PipelineError(f"{path}: no resample has a negative record of class {int(np.flatnonzero(never)[0])}: "
                            f"its AUC has no interval")
    return ids.astype(np.int64)


def read_threshold_array(path: Path, n_classes: int) -> np.ndarray:
    """Per-class thresholds: probabilities (.npy vector). NaN is a class never predicted (a threshold tuned
    on a validation set without its positives), said in one warning line: as a mistake it lowers F_beta
    and G_beta."""
    t = _read_npy(path)
    if t.shape != (n_classes,) or t.dtype.kind not in "iuf":
        raise PipelineError(f"{path}: thresholds of shape {t.shape} and type {t.dtype}, not {n_classes} numbers")
    t = t.astype(float)
    outside = (t < 0) | (t > 1) | np.isinf(t)
    if outside.any():
        j = int(np.flatnonzero(outside)[0])
        raise PipelineError(f"{path}: threshold {t[j]:g} of class {j} is not a probability in [0, 1]")
    never = np.flatnonzero(np.isnan(t))
    if len(never):
        print(f"warning: {path}: the threshold of class(es) {', '.join(map(str, never))} (0-based) is NaN: never "
              f"predicted, and scored so", file=sys.stderr)
    return t


# ---------------------------------------------------------------------------------------------
# The benchmark's results table: one row per (task, model) from its test score file, an ensemble per task
# ---------------------------------------------------------------------------------------------
TABLE_COLUMNS = ("task", "model", "seed", "params", "records", "classes", "auc", "auc_lo", "auc_hi",
                 "published_auc", "published_lo", "published_hi", "scores", "setup")
CHALLENGE_COLUMNS = ("fbeta", "fbeta_lo", "fbeta_hi", "gbeta", "gbeta_lo", "gbeta_hi", "thresholds")
AS_PUBLISHED = "as published"  # the `setup` of a row run as the reference ran it
OTHER_DATA = "data: "  # how a `setup` part that is about the data begins: then no published value is comparable
# the records of the databases behind the published values: PTB-XL's releases 1.0.1 (the benchmark's) and 1.0.3
PUBLISHED_RECORDS = {"PTB-XL": (21_837, 21_799), "CPSC2018": (6_877,)}
CHALLENGE_TASKS = ("cpsc9",)  # the ICBEB2018 experiment: F_beta=2 and G_beta=2 beside the AUC
ENSEMBLE = "ensemble"


def _task_scores(paths: Sequence[Path]) -> tuple[list[str], list[str], np.ndarray, list[np.ndarray]]:
    """(ids, classes, labels, scores per file) of score files of the same records: refused unless every
    file has the same classes, the same record ids in the same order and the same labels."""
    ids = classes = y = None
    probs = []
    for path in paths:
        cls = score_file_classes(path)
        table = read_scores(path, cls)
        y_i, p_i = scores_arrays(table, cls)
        if classes is None:
            ids, classes, y = list(table["patient_id"]), cls, y_i
        elif cls != classes:
            raise PipelineError(f"{path} has classes {', '.join(cls)}, {paths[0]} has {', '.join(classes)}")
        elif list(table["patient_id"]) != ids:
            raise PipelineError(f"{path} does not hold the records of {paths[0]} in the same order")
        elif not np.array_equal(y_i, y):
            i, j = np.argwhere(y_i != y)[0]
            raise PipelineError(f"{path}: label {classes[j]} of record {ids[i]} differs from {paths[0]}")
        probs.append(p_i)
    return ids, classes, y, probs


def ensemble_scores(paths: Sequence[Path], out: Path) -> Path:
    """The benchmark's ensemble: the mean of the models' scores per record and class, written as a score
    file of the same records in the same order (files that disagree on records or labels are refused)."""
    ids, classes, y, probs = _task_scores(paths)
    write_csv(scores_table(ids, y, np.mean(probs, axis=0), classes), out)
    return out


def assessable_classes(y: np.ndarray) -> np.ndarray:
    """Columns with a positive and a negative record: the only ones whose AUC is defined."""
    return np.flatnonzero(y.any(0) & ~y.all(0))


def benchmark_table(rows: Sequence[Mapping], out: Path, n_bootstrap: int = 100, seed: int = 0,
                    ensemble: bool = True) -> pd.DataFrame:
    """The results table from rows of `task`, `model`, `seed` (optional: the training seed, one row per
    seed), `params` (may be None), `records` (optional: checked) and `scores` (a test score file): `records`
    and auc / auc_lo / auc_hi (point, 5th and 95th percentile of `n_bootstrap` resamples drawn with `seed`
    from the labels, so every model and training seed of a task tested on the same records is scored on the
    same resamples) from each score file, the published value beside it, and with `ensemble` an `ensemble`
    row per task and training seed of two or more models, whose scores (the mean of that seed's models')
    are written to out/ensemble/<task>[_seed<seed>]_test_scores.csv (those of an earlier table removed). Rows
    are ordered by task, model (as given, the ensemble last) and seed.

    A class without a positive (or a negative) test record has no AUC: it is left out of the task's macro
    AUC and of its resamples, and `classes` says how many of the task's classes were scored ("4/5"); on
    PTB-XL's test fold every class of the six tasks is scorable, so the published numbers count them all.
    For the tasks in CHALLENGE_TASKS, rows with `val_scores` also get F_beta=2 and G_beta=2 with the
    benchmark's per-class G_beta thresholds, tuned on those scores (never on the test records): the
    validation records', or with `thresholds_from` "train" the training records' (the reference's).

    `setup` (optional) says how a row was run: AS_PUBLISHED, or what differs from the reference's run;
    a challenge task's row (ICBEB2018) is set beside its published values only when run as published
    (an ensemble when all its members were)."""
    out = Path(out)
    _check_rows(rows, ensemble)
    table, warned, noted, written = [], set(), set(), []
    groups = dict.fromkeys((r["task"], r.get("seed")) for r in rows)
    for task, run_seed in groups:
        members = [r for r in rows if r["task"] == task and r.get("seed") == run_seed]
        paths = [Path(r["scores"]) for r in members]
        ids, classes, y, probs = _task_scores(paths)
        for r, path in zip(members, paths):
            if r.get("records") is not None and r["records"] != len(ids):
                raise PipelineError(f"{path} holds {len(ids)} records; its row says {r['records']}")
        keep = scored_classes(f"task {task}", y, classes, str(paths[0]), warned)
        indices = bootstrap_indices(y[:, keep], n_bootstrap, seed, str(paths[0]))
        vals = [r.get("val_scores") for r in members] if task in CHALLENGE_TASKS else [None] * len(members)
        entries = [(r["model"], r.get("params"), p, path, v, r.get("setup"))
                   for r, p, path, v in zip(members, probs, paths, vals)]
        if ensemble and len(members) > 1:
            name = task if run_seed is None else f"{task}_seed{run_seed}"
            entries.append(_ensemble_entry(members, paths, probs, vals, out / ENSEMBLE, name))
            written += [p for p in entries[-1][3:5] if p is not None]
        tuned_on = next((r.get("thresholds_from") for r in members if r.get("thresholds_from")), "val")
        if task not in noted:  # every seed's models of a task are scored on the same records and resamples
            noted.add(task)
            say_undefined_resamples(y[:, keep], indices, f"task {task} ({paths[0]} and its other runs)",
                                    [classes[j] for j in keep])
        table += [_table_row(task, run_seed, entry, y, classes, keep, indices, tuned_on) for entry in entries]
    for stale in sorted(set((out / ENSEMBLE).glob("*_scores.csv")) - {Path(p) for p in written}):
        stale.unlink()  # an ensemble of an earlier table (other models or tasks): not this table's
    tasks = list(dict.fromkeys(task for task, _ in groups))
    models = list(dict.fromkeys((r["task"], r["model"]) for r in table))  # the ensemble after its task's models
    seeds = list(groups)
    table.sort(key=lambda r: (tasks.index(r["task"]), models.index((r["task"], r["model"])),
                              seeds.index((r["task"], r["seed"]))))
    challenge = any("fbeta" in r for r in table)
    frame = pd.DataFrame(table, columns=list(TABLE_COLUMNS) + (list(CHALLENGE_COLUMNS) if challenge else []))
    frame["params"] = frame["params"].astype("Int64")
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def _check_rows(rows: Sequence[Mapping], ensemble: bool) -> None:
    """One row per (task, model, seed), and no model named like the table's own ensemble row."""
    seen = set()
    for row in rows:
        key = (row["task"], row["model"], row.get("seed"))
        if key in seen:
            raise PipelineError(f"task {key[0]}: model {key[1]}{_seed_text(key[2])} appears twice")
        if ensemble and row["model"] == ENSEMBLE:
            raise PipelineError(f"task {key[0]}: the model name {ENSEMBLE!r} is the table's own ensemble row")
        seen.add(key)


def scored_classes(what: str, y: np.ndarray, classes: Sequence[str] | None, source: str,
                   warned: set | None = None) -> np.ndarray:
    """The classes of `what` (a task, a score file) with an AUC (`assessable_classes`), as the benchmark
    table scores them: the others are left out and said, once per `what` and left-out set (`warned`); a
    PipelineError naming `source` when no class has one."""
    keep = assessable_classes(y)
    if not len(keep):
        check_scorable(y, source, classes)
    left = [class_label(classes, j) for j in range(y.shape[1]) if j not in set(keep)]
    warned = set() if warned is None else warned
    if left and (what, tuple(left)) not in warned:
        warned.add((what, tuple(left)))
        print(f"warning: {what}: class(es) {', '.join(left)} lack a positive or a negative test record: "
              f"left out of its macro AUC ({len(keep)} of {y.shape[1]} classes scored)", file=sys.stderr)
    return keep


def _ensemble_entry(members: Sequence[Mapping], paths: Sequence[Path], probs: Sequence[np.ndarray], vals: Sequence,
                    folder: Path, name: str) -> tuple:
    """The ensemble's (model, params, probabilities, scores file, validation scores file, setup): its
    scores written to folder/<name>_test_scores.csv (and _val_scores.csv when every member has them),
    its parameters the members' total, its setup what any member's differs in."""
    path = ensemble_scores(paths, folder / f"{name}_test_scores.csv")
    params = [r.get("params") for r in members]
    total = sum(params) if all(v is not None and np.isfinite(v) for v in params) else None
    val = None
    if all(v is not None for v in vals):
        val = ensemble_scores(vals, folder / f"{name}_val_scores.csv")
    setups = [r.get("setup") for r in members]
    differs = list(dict.fromkeys(d for s in setups if s and s != AS_PUBLISHED for d in s.split("; ")))
    return (ENSEMBLE, total, np.mean(probs, axis=0), path, val,
            None if None in setups else "; ".join(differs) or AS_PUBLISHED)


def _table_row(task: str, run_seed: int | None, entry: tuple, y: np.ndarray, classes: Sequence[str],
               keep: np.ndarray, indices: np.ndarray, tuned_on: str) -> dict:
    """One model's row: macro AUC on the scored classes with its resampled interval, the published value
    when comparable, and for a challenge task with validation scores F_beta / G_beta at thresholds tuned
    on them."""
    model, params, p, path, val, setup = entry
    thresholds = None
    if val is not None:
        _, val_classes, y_val, (p_val,) = _task_scores([Path(val)])
        if val_classes != classes:
            raise PipelineError(f"{val} has classes {', '.join(val_classes)}, {path} has {', '.join(classes)}")
        thresholds = tuned_gbeta_thresholds(y_val[:, keep], p_val[:, keep], str(val), [classes[j] for j in keep])
    result = score_predictions(y[:, keep], p[:, keep], indices, thresholds, source=str(path))
    comparable = comparable_with_published(task, setup)
    pub = published(task, model) if comparable else None
    row = {"task": task, "model": model, "seed": run_seed, "params": params, "records": len(y),
           "classes": f"{len(keep)}/{len(classes)}", "auc": result.loc["point", "macro_auc"],
           "auc_lo": result.loc["lower", "macro_auc"], "auc_hi": result.loc["upper", "macro_auc"],
           "published_auc": pub[0] if pub else np.nan,
           "published_lo": pub[0] - pub[1] if pub else np.nan,
           "published_hi": pub[0] + pub[1] if pub else np.nan, "scores": os.path.abspath(path), "setup": setup}
    if thresholds is not None:
        row["thresholds"] = tuned_on
        for name, column in (("fbeta", "F_beta_macro"), ("gbeta", "G_beta_macro")):
            row.update({name: result.loc["point", column], f"{name}_lo": result.loc["lower", column],
                        f"{name}_hi": result.loc["upper", column]})
    return row


def tuned_gbeta_thresholds(y: np.ndarray, p: np.ndarray, source: str, classes: Sequence[str] | None = None,
                           grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """`tune_gbeta_thresholds` on the scores of `source`, with a warning naming each class it holds no
    positive of: its threshold cannot be tuned (the reference's tuner divides by zero there), so the class
    is predicted only where the at-least-one rule gives it (`predict_at_least_one`)."""
    thresholds = tune_gbeta_thresholds(y, p, grid=grid)
    for j in np.flatnonzero(np.isnan(thresholds)):
        print(f"warning: {source}: class {class_label(classes, j)} has no positive record, so its F_beta/G_beta "
              f"threshold cannot be tuned; it is predicted only for a record above no other class's threshold where "
              f"it scores highest", file=sys.stderr)
    return thresholds


def comparable_with_published(task: str, setup: str | None) -> bool:
    """Whether a row is set beside the published value: never on other data than the published results'
    (synthetic, partial); a challenge task's (ICBEB2018) only when run as published; a PTB-XL task's
    also when settings differ (a variant beside the reference, its `setup` saying how)."""
    if setup is None or setup == AS_PUBLISHED:
        return True
    if any(part.startswith(OTHER_DATA) for part in setup.split("; ")):
        return False
    return task not in CHALLENGE_TASKS


def _seed_text(seed: int | None) -> str:
    return "" if seed is None or pd.isna(seed) else f" (seed {seed})"


def _published_cell(row: Mapping) -> str:
    pub = published(row["task"], row["model"]) if pd.notna(row["published_auc"]) else None
    return f"{pub[0]:.3f}({round(pub[1] * 1000):02d})" if pub else "-"


def table_columns(challenge: bool = False, seeds: bool = False) -> list[Column]:
    """The markdown view of one task's rows (the CSV keeps every column of TABLE_COLUMNS); the training
    seed shown when the task has several."""
    columns = [Column("model", "model", align="left")] + ([Column("seed", "seed")] if seeds else [])
    columns += [Column("params", "params", lambda r: f"{int(r['params']):,}" if pd.notna(r["params"]) else "-"),
                Column("records", "records", lambda r: f"{int(r['records']):,}"),
                Column("classes", "classes"),
                Column("auc", "AUC", lambda r: format_result(r["auc"], r["auc_lo"], r["auc_hi"]), align="left"),
                Column(None, "90 % interval", lambda r: f"[{r['auc_lo']:.3f}, {r['auc_hi']:.3f}]", align="left"),
                Column(None, "published", _published_cell, align="left")]
    if challenge:
        def published_fg(r: Mapping) -> str:
            f, g = published(r["task"], r["model"], "fbeta"), published(r["task"], r["model"], "gbeta")
            return f"{f[0]:.3f} / {g[0]:.3f}" if f and g and pd.notna(r["published_auc"]) else "-"

        columns += [Column("fbeta", "F_beta=2", lambda r: format_result(r["fbeta"], r["fbeta_lo"], r["fbeta_hi"]),
                           align="left"),
                    Column("gbeta", "G_beta=2", lambda r: format_result(r["gbeta"], r["gbeta_lo"], r["gbeta_hi"]),
                           align="left"),
                    Column(None, "published F / G", published_fg, align="left")]
    return columns


def benchmark_markdown(table: pd.DataFrame, n_bootstrap: int, sections: Mapping[str, str] | None = None) -> str:
    """table.md: per task its rows beside the published values, then `sections[task]` (markdown) if given."""
    lines = [f"Macro AUC on the test records: point (all records) and, in brackets, the 5th-95th percentiles of "
             f"{n_bootstrap} bootstrap resamples; `0.925(08)` is the leaderboard's notation (point, largest distance "
             "to a percentile in thousandths). Published: the PTB-XL benchmark's leaderboard (Strodthoff et al., "
             "IEEE JBHI 2021).", ""]
    for task, rows in table.groupby("task", sort=False):
        challenge = "fbeta" in rows and rows["fbeta"].notna().any()
        lines += [f"### {task}", "", markdown_table(rows, table_columns(challenge, rows["seed"].nunique() > 1))]
        if challenge:
            lines += ["", f"F_beta / G_beta thresholds tuned on the {'training' if rows['thresholds'].iloc[0] == 'train' else 'validation'} "
                          "records' scores (the reference: the training records')."]
        differ = list(dict.fromkeys((r["model"], r["setup"]) for _, r in rows.iterrows()  # once, whatever the seeds
                                    if isinstance(r.get("setup"), str) and r["setup"] != AS_PUBLISHED))
        if differ:
            apart = not all(comparable_with_published(task, setup) for _, setup in differ)
            lines += ["", "Run otherwise than published" + (" (so not set beside the published values)"
                                                            if apart else "") + ":", ""]
            lines += [f"- {model}: {setup}" for model, setup in differ]
        if sections and sections.get(task):
            lines += ["", sections[task]]  # a blank line: else it would continue the list above it
    return "\n".join(lines)
