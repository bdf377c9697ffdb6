"""Expert-feature baselines: wavelet and signal statistics per lead, then LR, RF, LightGBM and MLP.

    python baselines.py --data-dir data/CPSC --classifier all
    python baselines.py --data-dir data/CPSC --classifier RF --leads I,aVR,V5 --heart-rate

Features per lead, exactly the original's (column order, scale and float64 precision, so its features.csv
and ours are interchangeable): 8 statistics of the signal in the order 5th, 25th, 75th, 95th percentile,
median, mean, std, variance and, for each of the 5 coefficient arrays of a 4-level db10 wavelet
decomposition (cA4, cD4, cD3, cD2, cD1), the Shannon entropy of the coefficients' value counts divided
by 10, then the same 8 statistics: 53 per lead, 636 for 12 leads (+ 8 heart-rate statistics with
--heart-rate). Signals are the cache's int16 µV / 1000 in float64, which equals wfdb's physical signal for
gain-1000 records. Computed once from the signal cache into features.csv, recomputed only when the cache
changes (or --force).

Classifiers as the original configured them (one-vs-rest LogisticRegression(lbfgs, max_iter 1000) on
unscaled features, RandomForest(300 trees, depth 10), LightGBM(100 trees); a native multi-label
MLPClassifier((100, 50), max_iter 500)), seeded with --seed; --standardize scales inputs for LR and MLP.
Classifiers are trained on the training folds and each one's validation and test scores go through the
same evaluator as the deep model (utils.evaluate_scores): one threshold per class tuned on validation,
metrics with bootstrap 95 % CIs, ECE and Brier (and, with --calibrate, temperature scaling) on the test fold
(the same seeded 8/1/1 split as main.py; --test-fold k or --cv for cross-validation as in cross_validate.py).

Outputs, under results/<db>/ (<tag>: leads, then _hr with --heart-rate, _std with --standardize, _seed<N> for
a seed other than 42, so no two variants overwrite each other):
    baselines/<tag>/<classifier>/            the evaluator's files: val/test scores, metrics, figures, manifest
    baselines/<tag>/fold<k>/<classifier>/    the same for test fold k (--test-fold k, or fold k of --cv)
    baselines_<tag>.csv/.json                one row per classifier: F1 per class, mean F1 and AUC with CIs
    baselines_<tag>_fold<k>.csv/.json        the same for --test-fold k
    baselines_<tag>_cv.csv/.md               --cv: a row per fold and classifier; mean ± sd over folds
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pywt
import scipy.stats
from tqdm import tqdm

from utils import (LEADS, N_FOLDS, SAMPLE_RATE, SignalCache, data_label_set, data_split_rule, database_name,
                   evaluate_scores, fingerprint, jsonable, leads_tag, load_labels, nonnegative_int, outputs_current,
                   parallel_map, parse_leads, positive_int, preprocess_manifest, read_evaluation, scores_table, script_main, split_labels,
                   write_csv, write_json, write_manifest, write_text)
from utils.presets import parse_with_preset
from utils.results import results_home
from utils.defaults import DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR

FEATURES_CSV = "features.csv"
FEATURE_VERSION = 2  # 2: the original's statistic order, entropy / 10, float64 signals
STATS = ("p5", "p25", "p75", "p95", "median", "mean", "std", "var")  # the original's order: median fifth
ENTROPY_SCALE = 10  # the original divides each band's entropy by 10 (after the entropy, so it does not cancel)
BANDS = ("cA4", "cD4", "cD3", "cD2", "cD1")  # pywt.wavedec(level=4) order
HR_FEATURES = ("hr_mean", "hr_min", "hr_max", "rr_mean", "rr_sdnn", "rr_rmssd", "rr_pnn50", "rr_cv")
CLASSIFIERS = ("LR", "RF", "LGB", "MLP")
DEFAULT_SEED = 42


def feature_names(heart_rate: bool = False) -> list[str]:
    names = []
    for lead in LEADS:
        names += [f"{lead}_{s}" for s in STATS]
        for band in BANDS:
            names += [f"{lead}_{band}_entropy"] + [f"{lead}_{band}_{s}" for s in STATS]
    return names + (list(HR_FEATURES) if heart_rate else [])


def lead_list(text: str) -> list[str]:
    """--leads: `all`, one lead or a comma list -> lead names (an argparse error otherwise)."""
    try:
        return parse_leads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def classifier_list(text: str) -> list[str]:
    """--classifier: LR, RF, LGB, MLP, a comma list of them, or all."""
    wanted = list(CLASSIFIERS) if text.strip().lower() == "all" else [c.strip().upper() for c in text.split(",")]
    unknown = [c for c in wanted if c not in CLASSIFIERS]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"unknown classifier(s) {unknown}; choose from {', '.join(CLASSIFIERS)} "
                                         f"or all")
    return list(dict.fromkeys(wanted))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="preprocess output folder")
    p.add_argument("--classifier", type=classifier_list, default="all",
                   help="LR, RF, LGB, MLP or all (comma lists work too)")
    p.add_argument("--leads", type=lead_list, default="all", help="restrict the features to these leads")
    p.add_argument("--heart-rate", action="store_true", help="add heart-rate statistics from R-peak detection")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="fold split and classifier seed")
    p.add_argument("--standardize", action="store_true",
                   help="standardise features for LR and MLP (the original fed them unscaled)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--test-fold", type=int, default=None, choices=range(1, N_FOLDS + 1), metavar="K",
                       help="cross-validation: test on fold K, validate on the next (default: the seeded 8/1/1 split)")
    split.add_argument("--cv", action="store_true", help="all ten test folds; writes baselines_<tag>_cv.csv/.md")
    p.add_argument("--n-bootstrap", type=nonnegative_int, default=1000,
                   help="bootstrap resamples for the 95 %% CIs (0: none)")
    p.add_argument("--calibrate", action="store_true",
                   help="also fit a temperature on validation and report ECE / Brier before and after")
    p.add_argument("--no-figures", action="store_true", help="skip ROC, confusion and reliability figures")
    p.add_argument("--num-workers", type=positive_int, default=os.cpu_count() or 1)
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--force", action="store_true", help="recompute features.csv and refit every classifier")
    return parse_with_preset(p, argv, "baselines_cv")


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------
def _stats(x: np.ndarray) -> np.ndarray:
    """The 8 statistics (STATS order) along the last axis -> (..., 8)."""
    q = np.percentile(x, [5, 25, 75, 95, 50], axis=-1)
    return np.concatenate([np.moveaxis(q, 0, -1), x.mean(-1, keepdims=True), x.std(-1, keepdims=True),
                           x.var(-1, keepdims=True)], axis=-1)


def _entropy_of_value_counts(x: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row's value counts, from one sort instead of a Counter per row."""
    s = np.sort(x, axis=-1)
    n = s.shape[-1]
    out = np.empty(s.shape[0])
    for i, row in enumerate(s):
        edges = np.flatnonzero(np.diff(row)) + 1
        counts = np.diff(np.concatenate([[0], edges, [n]]))
        p = counts / n
        out[i] = -(p * np.log(p)).sum()
    return out


def signal_features(mv: np.ndarray) -> np.ndarray:
    """(12, n) mV -> 636 features, all leads at once (wavedec and percentiles vectorised over leads)."""
    per_lead = [_stats(mv)]
    for coeffs in pywt.wavedec(mv, "db10", level=4, axis=-1):
        per_lead += [_entropy_of_value_counts(coeffs)[:, None] / ENTROPY_SCALE, _stats(coeffs)]
    return np.concatenate(per_lead, axis=1).ravel()


def reference_features(mv: np.ndarray) -> np.ndarray:
    """A literal re-statement of the original's per-lead extraction (`cal_statistics` of the lead, then
    `cal_entropy` and `cal_statistics` of each wavelet band): the definition that `signal_features` is
    tested and benchmarked against."""
    def cal_entropy(coeff):
        coeff = pd.Series(coeff).value_counts()
        entropy = scipy.stats.entropy(coeff)
        return entropy / 10

    def cal_statistics(signal):
        n5 = np.percentile(signal, 5)
        n25 = np.percentile(signal, 25)
        n75 = np.percentile(signal, 75)
        n95 = np.percentile(signal, 95)
        median = np.percentile(signal, 50)
        mean = np.mean(signal)
        std = np.std(signal)
        var = np.var(signal)
        return [n5, n25, n75, n95, median, mean, std, var]

    out = []
    for lead in mv:
        out += cal_statistics(lead)
        for coeff in pywt.wavedec(lead, "db10", level=4):
            out += [cal_entropy(coeff)] + cal_statistics(coeff)
    return np.array(out)


def detect_r_peaks(lead: np.ndarray, fs: int = SAMPLE_RATE) -> np.ndarray:
    """R-peak sample indices: 5-15 Hz band-pass, derivative, squaring, 150 ms integration (Pan-Tompkins),
    peaks at least 250 ms apart above 30 % of the 98th percentile, refined to the largest |signal|."""
    from scipy.signal import butter, find_peaks, sosfiltfilt

    if len(lead) < fs or not np.any(lead):
        return np.array([], dtype=int)
    band = sosfiltfilt(butter(2, [5, 15], btype="band", fs=fs, output="sos"), lead)
    energy = np.convolve(np.gradient(band) ** 2, np.ones(int(0.15 * fs)) / (0.15 * fs), mode="same")
    peaks, _ = find_peaks(energy, distance=int(0.25 * fs), height=0.3 * np.percentile(energy, 98))
    half = int(0.075 * fs)
    return np.array([max(p - half, 0) + int(np.argmax(np.abs(band[max(p - half, 0):p + half]))) for p in peaks],
                    dtype=int)


def heart_rate_features(mv: np.ndarray, fs: int = SAMPLE_RATE) -> np.ndarray:
    """8 statistics of RR intervals from lead II; NaN when fewer than 3 beats are found."""
    peaks = detect_r_peaks(mv[LEADS.index("II")], fs)
    if len(peaks) < 3:
        return np.full(len(HR_FEATURES), np.nan)
    rr = np.diff(peaks) / fs
    hr = 60 / rr
    d = np.diff(rr)
    return np.array([hr.mean(), hr.min(), hr.max(), rr.mean(), rr.std(), np.sqrt(np.mean(d ** 2)) if len(d) else 0.0,
                     np.mean(np.abs(d) > 0.05) if len(d) else 0.0, rr.std() / rr.mean()])


_CACHE: SignalCache | None = None


def _init_worker(data_dir: Path) -> None:
    global _CACHE
    _CACHE = SignalCache(data_dir)


def _record_features(task: tuple[str, bool]) -> tuple[str, np.ndarray, list[str]]:
    """Features of one record, with notes on anything that made a value unusable (then set to 0)."""
    pid, heart_rate = task
    mv = _CACHE.record(pid, dtype=np.float64)
    notes = [f"lead {LEADS[i]} is flat" for i in np.flatnonzero(~np.any(mv != mv[:, :1], axis=1))]
    feats = signal_features(mv)
    if heart_rate:
        hr = heart_rate_features(mv)
        if np.isnan(hr).any():
            notes.append("fewer than 3 R peaks found in lead II, heart-rate features set to 0")
        feats = np.concatenate([feats, hr])
    bad = ~np.isfinite(feats)
    if bad.any():
        if not heart_rate or bad[:-len(HR_FEATURES)].any():
            notes.append(f"{int(bad.sum())} non-finite feature(s) set to 0")
        feats = np.where(bad, 0.0, feats)
    return pid, feats, notes


def compute_features(data_dir: Path, ids: list[str], heart_rate: bool, workers: int) -> tuple[pd.DataFrame, list[str]]:
    tasks = [(pid, heart_rate) for pid in ids]
    results = parallel_map(_record_features, tasks, workers, "features", initializer=_init_worker,
                           initargs=(data_dir,))
    table = pd.DataFrame(np.stack([f for _, f, _ in results]), columns=feature_names(heart_rate))
    table.insert(0, "patient_id", [pid for pid, _, _ in results])
    notes = [f"{pid}: {'; '.join(n)}" for pid, _, n in results if n]
    return table, notes


def load_or_compute_features(data_dir: Path, heart_rate: bool, workers: int, force: bool) -> pd.DataFrame:
    """features.csv, rebuilt when the preprocess outputs or the feature settings changed (or it was damaged)."""
    labels = load_labels(data_dir)
    path, manifest = data_dir / FEATURES_CSV, data_dir / "features.json"
    key = fingerprint([FEATURE_VERSION, heart_rate, preprocess_manifest(data_dir)["fingerprint"],
                       labels["patient_id"].tolist()])
    if not force and manifest.exists() and not outputs_current(manifest, key) and path.exists():
        print(f"warning: {path} was written for other preprocess outputs or settings, or changed since; "
              f"recomputing it", file=sys.stderr)
    if not force and outputs_current(manifest, key):
        table = read_features(path)
        damaged = table is None or list(table.columns) != ["patient_id", *feature_names(heart_rate)] \
            or table["patient_id"].tolist() != labels["patient_id"].tolist()
        if not damaged:
            print(f"{path}: current, reusing it (--force to recompute)")
            return table
        print(f"warning: {path} does not hold the expected records and columns; recomputing it", file=sys.stderr)
    table, notes = compute_features(data_dir, labels["patient_id"].tolist(), heart_rate, workers)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    manifest.unlink(missing_ok=True)
    write_features(table, path)
    write_manifest(manifest, key, [path], heart_rate=heart_rate, n_features=table.shape[1] - 1, notes=notes)
    print(f"wrote {path}: {len(table)} records x {table.shape[1] - 1} features"
          f"{f'; {len(notes)} record(s) with warnings' if notes else ''}")
    return table


def write_features(table: pd.DataFrame, path: Path) -> None:
    write_csv(table, path, float_format="%.17g")  # 17 significant digits: every float64 round-trips


def read_features(path: Path) -> pd.DataFrame | None:
    """features.csv (pandas' default parser round-trips float64), or None when it cannot be parsed."""
    try:
        return pd.read_csv(path, dtype={"patient_id": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------------------------
# Classifiers
# ---------------------------------------------------------------------------------------------
def make_classifier(name: str, seed: int, standardize: bool = False):
    """The original's classifiers and settings, seeded (the original set no seeds): one-vs-rest where the
    estimator is single-label, the MLP natively multi-label. `standardize` puts a StandardScaler in
    front of LR and MLP (the original fed them unscaled features)."""
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "LR":
        clf = OneVsRestClassifier(LogisticRegression(solver="lbfgs", max_iter=1000, random_state=seed))
    elif name == "RF":
        return OneVsRestClassifier(RandomForestClassifier(n_estimators=300, max_depth=10, random_state=seed, n_jobs=-1))
    elif name == "LGB":
        return OneVsRestClassifier(LGBMClassifier(n_estimators=100, random_state=seed, verbose=-1, n_jobs=2))
    elif name == "MLP":
        clf = MLPClassifier(hidden_layer_sizes=(100, 50), max_iter=500, random_state=seed)
    else:
        raise ValueError(name)
    return make_pipeline(StandardScaler(), clf) if standardize else clf


def feature_columns(leads: list[str], heart_rate: bool) -> list[str]:
    return [c for c in feature_names(heart_rate) if c.split("_")[0] in leads or c in HR_FEATURES]


@dataclasses.dataclass(frozen=True)
class BaselineRun:
    """What one baselines.py run evaluates and where it files it (the settings the classifiers, the
    evaluator and the output names depend on)."""
    data_dir: Path
    results_dir: Path
    classes: tuple[str, ...]
    classifiers: tuple[str, ...]
    leads: tuple[str, ...]
    heart_rate: bool = False
    standardize: bool = False
    seed: int = DEFAULT_SEED
    fixed_split: dict | None = None  # the database's own split (utils.data_split_rule), else the seeded one
    n_bootstrap: int = 1000
    calibrate: bool = False
    figures: bool = True
    force: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BaselineRun":
        return cls(data_dir=args.data_dir, results_dir=args.results_dir,
                   classes=tuple(data_label_set(args.data_dir)["classes"]), classifiers=tuple(args.classifier),
                   leads=tuple(args.leads), heart_rate=args.heart_rate, standardize=args.standardize, seed=args.seed,
                   fixed_split=data_split_rule(args.data_dir), n_bootstrap=args.n_bootstrap, calibrate=args.calibrate,
                   figures=not args.no_figures, force=args.force)

    @property
    def tag(self) -> str:
        """leads, _hr, _std, _seed<N>: one name per variant, so variants never overwrite each other."""
        return (f"{leads_tag(self.leads)}{'_hr' if self.heart_rate else ''}{'_std' if self.standardize else ''}"
                f"{f'_seed{self.seed}' if self.seed != DEFAULT_SEED else ''}")

    @property
    def db_dir(self) -> Path:
        return results_home(self.results_dir, self.data_dir)

    def summary_path(self, suffix: str = "") -> Path:
        """results/<db>/baselines_<tag><suffix> (add .csv / .json / .md)."""
        return self.db_dir / f"baselines_{self.tag}{suffix}"

    def folder(self, classifier: str, test_fold: int | None) -> Path:
        """The evaluator's folder of one classifier on one split."""
        split = [f"fold{test_fold}"] if test_fold else []
        return self.db_dir.joinpath("baselines", self.tag, *split, classifier)


def fit_and_score(name: str, X: dict[str, np.ndarray], Y: dict[str, np.ndarray], seed: int,
                  standardize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Train one classifier on the training records; its probabilities on the validation and test records."""
    import warnings

    clf = make_classifier(name, seed, standardize)
    with warnings.catch_warnings():  # a class absent from a small training fold; MLP iteration limits
        warnings.simplefilter("ignore")
        clf.fit(X["train"], Y["train"])
        return clf.predict_proba(X["val"]), clf.predict_proba(X["test"])


def summary_row(name: str, table: pd.DataFrame, classes: Sequence[str], folder: Path, db_dir: Path) -> dict:
    """One classifier's line of the summary: test F1 per class (the paper's table), mean F1 and AUC with
    their CIs (when bootstrapped), AUC per class, mean ECE and Brier, thresholds, and where its files are."""
    mean = table.loc["mean"]

    def ci(m: str) -> dict:
        return {f"mean_{m}_{e}": float(mean[f"{m}_{e}"]) for e in ("lo", "hi") if f"{m}_{e}" in table}

    thresholds = table.loc[list(classes), "threshold"]
    return {"classifier": name, **{c: float(table.loc[c, "f1"]) for c in classes},
            "mean_f1": float(mean["f1"]), **ci("f1"), "mean_auc": float(mean["auc"]), **ci("auc"),
            **{f"auc_{c}": float(table.loc[c, "auc"]) for c in classes},
            "mean_ece": float(mean["ece"]), "mean_brier": float(mean["brier"]),
            "untunable": ",".join(c for c in classes if table.loc[c, "untunable"]),
            "results": os.path.relpath(folder, db_dir),
            "thresholds": {c: None if np.isnan(t) else float(t) for c, t in thresholds.items()}}


def evaluate_split(data: pd.DataFrame, cols: list[str], run: BaselineRun,
                   test_fold: int | None) -> tuple[list[dict], int]:
    """Every chosen classifier on one train/val/test split (see utils.split_folds), each through the
    evaluator into its own folder; summary rows and test size."""
    splits = split_labels(data, run.seed, test_fold=test_fold, fixed=run.fixed_split)
    X = {k: v[cols].to_numpy() for k, v in splits.items()}
    Y = {k: v[list(run.classes)].to_numpy().astype(int) for k, v in splits.items()}
    desc = f"test fold {test_fold}" if test_fold else "classifiers"
    rows = []
    data_key = preprocess_manifest(run.data_dir)["fingerprint"]
    for name in tqdm(run.classifiers, desc=desc, file=sys.stdout):
        folder = run.folder(name, test_fold)
        key = fingerprint([data_key, FEATURE_VERSION, name, run.tag, run.seed, test_fold, run.n_bootstrap,
                           run.calibrate, run.figures, len(cols)])
        if not run.force and (folder / "metrics.json").exists():
            saved = read_evaluation(folder, key)
            if saved["current"]:  # the same classifier on the same features, split and settings
                print(f"{folder}: current; not refitted (--force refits)")
                rows.append(summary_row(name, saved["metrics"], run.classes, folder, run.db_dir))
                continue
        val, test = fit_and_score(name, X, Y, run.seed, run.standardize)
        info = {"classifier": name, "data_dir": str(run.data_dir), "database": database_name(run.data_dir),
                "test_fold": test_fold, "leads": list(run.leads), "heart_rate": run.heart_rate,
                "standardize": run.standardize, "features": len(cols)}
        table = evaluate_scores(folder, run.classes,
                                scores_table(splits["test"]["patient_id"], Y["test"], test, run.classes),
                                scores_table(splits["val"]["patient_id"], Y["val"], val, run.classes),
                                n_bootstrap=run.n_bootstrap, seed=run.seed, figures=run.figures, info=info,
                                title=f"{name}, {desc if test_fold else 'test fold'}", calibrate=run.calibrate,
                                key=key)
        rows.append(summary_row(name, table, run.classes, folder, run.db_dir))
    return rows, len(X["test"])


def cross_validate_classifiers(data: pd.DataFrame, cols: list[str], run: BaselineRun) -> pd.DataFrame:
    """All ten test folds: per-fold rows (CSV) and per classifier mean ± sd over folds (markdown)."""
    rows = []
    for k in range(1, N_FOLDS + 1):
        rows += [{"fold": k, **r} for r in evaluate_split(data, cols, run, k)[0]]
    folds = pd.DataFrame(rows).drop(columns="thresholds")
    out = run.summary_path("_cv")
    write_csv(folds, out.with_suffix(".csv"))
    shown = [*run.classes, "mean_f1", "mean_auc"]
    stats = folds.groupby("classifier", sort=False)[shown].agg(["mean", "std"])
    md = [f"Test-fold F1 per class, mean F1 and mean AUC: mean ± sd over {N_FOLDS} folds.", "",
          "| classifier | " + " | ".join(shown) + " |", "| --- |" + " ---: |" * len(shown)]
    md += [f"| {name} | " + " | ".join(f"{r[(c, 'mean')]:.3f} ± {r[(c, 'std')]:.3f}" for c in shown) + " |"
           for name, r in stats.iterrows()]
    write_text("\n".join(md) + "\n", out.with_suffix(".md"))
    print("\n".join(md))
    print(f"wrote {out}.csv and .md; each fold's evaluation in {run.db_dir / 'baselines' / run.tag}/fold<k>/")
    return stats


def with_ci(table: pd.DataFrame, m: str) -> list[str]:
    """`0.812 [0.790, 0.830]`, or the bare value without a bootstrap."""
    if f"{m}_lo" not in table:
        return [f"{v:.3f}" for v in table[m]]
    return [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in zip(table[m], table[f"{m}_lo"], table[f"{m}_hi"])]


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    run = BaselineRun.from_args(args)
    features = load_or_compute_features(run.data_dir, run.heart_rate, args.num_workers, args.force)
    labels = load_labels(run.data_dir)
    cols = feature_columns(list(run.leads), run.heart_rate)
    data = labels.merge(features, on="patient_id", how="left", validate="one_to_one")
    print(f"{len(cols)} features ({','.join(run.leads)}{' + heart rate' if run.heart_rate else ''}); "
          f"{len(data)} records")
    if args.cv:
        return cross_validate_classifiers(data, cols, run)
    rows, n_test = evaluate_split(data, cols, run, args.test_fold)
    out = run.summary_path(f"_fold{args.test_fold}" if args.test_fold else "")
    table = pd.DataFrame(rows)
    write_csv(table.drop(columns="thresholds"), out.with_suffix(".csv"))
    write_json(jsonable({"data_dir": str(run.data_dir), "seed": run.seed, "test_fold": args.test_fold,
                         "leads": list(run.leads), "heart_rate": run.heart_rate, "standardize": run.standardize,
                         "n_test": n_test, "n_bootstrap": run.n_bootstrap, "results": rows}),
               out.with_suffix(".json"))
    shown = table.set_index("classifier")[list(run.classes)].map(lambda v: f"{v:.3f}" if np.isfinite(v) else "n/a")
    shown["mean F1"], shown["mean AUC"] = with_ci(table, "mean_f1"), with_ci(table, "mean_auc")
    print(f"test-fold F1 per class ({n_test} records; thresholds tuned on validation), as in the paper's table"
          f"{'; mean F1 and AUC with 95 % bootstrap CIs' if run.n_bootstrap else ''}:")
    print(shown.to_string())
    print(f"wrote {out}.csv and .json; each classifier's evaluation in {run.folder('<classifier>', args.test_fold)}/")
    return table


if __name__ == "__main__":
    main()
