"""The expert features of the baselines: wavelet and signal statistics per lead, exactly the original's.

Features per lead (column order, scale and float64 precision as the original's, so its features.csv and
ours are interchangeable): 8 statistics of the signal in the order 5th, 25th, 75th, 95th percentile,
median, mean, std, variance and, for each of the 5 coefficient arrays of a 4-level db10 wavelet
decomposition (cA4, cD4, cD3, cD2, cD1), the Shannon entropy of the coefficients' value counts divided by
10, then the same 8 statistics: 53 per lead, 636 for 12 leads (+ 8 heart-rate statistics on request).
Signals are the cache's int16 µV / 1000 in float64, which equals wfdb's physical signal for gain-1000
records. Computed once from the signal cache into <data>/features.csv, recomputed only when the cache or
the settings change.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pywt
import scipy.stats

from utils.cache import SignalCache, load_labels, preprocess_manifest
from utils.files import check_writable, fingerprint, read_records_csv, write_csv
from utils.manifest import outputs_current, write_manifest
from utils.parallel import parallel_map
from utils.labels import LEADS
from utils.records import SAMPLE_RATE, resample

__all__ = ["FEATURES_CSV", "FEATURE_VERSION", "STATS", "ENTROPY_SCALE", "BANDS", "HR_FEATURES", "feature_names",
           "feature_columns", "signal_features", "reference_features", "detect_r_peaks", "heart_rate_features",
           "compute_features", "load_or_compute_features", "write_features", "read_features"]

FEATURES_CSV = "features.csv"
FEATURE_VERSION = 2  # 2: the original's statistic order, entropy / 10, float64 signals
STATS = ("p5", "p25", "p75", "p95", "median", "mean", "std", "var")  # the original's order: median fifth
ENTROPY_SCALE = 10  # the original divides each band's entropy by 10 (after the entropy, so it does not cancel)
BANDS = ("cA4", "cD4", "cD3", "cD2", "cD1")  # pywt.wavedec(level=4) order
HR_FEATURES = ("hr_mean", "hr_min", "hr_max", "rr_mean", "rr_sdnn", "rr_rmssd", "rr_pnn50", "rr_cv")


def feature_names(heart_rate: bool = False) -> list[str]:
    names = []
    for lead in LEADS:
        names += [f"{lead}_{s}" for s in STATS]
        for band in BANDS:
            names += [f"{lead}_{band}_entropy"] + [f"{lead}_{band}_{s}" for s in STATS]
    return names + (list(HR_FEATURES) if heart_rate else [])


def feature_columns(leads: list[str], heart_rate: bool) -> list[str]:
    return [c for c in feature_names(heart_rate) if c.split("_")[0] in leads or c in HR_FEATURES]


# ---------------------------------------------------------------------------------------------
_PERCENTILES = np.array([5, 25, 75, 95, 50]) / 100  # STATS' percentiles, as np.percentile divides them


def _stats(x: np.ndarray, ordered: np.ndarray | None = None) -> np.ndarray:
    """The 8 statistics (STATS order) along the last axis -> (..., 8). The percentiles are np.percentile's
    ('linear', bit for bit) read off the sorted values, `ordered` where the caller has sorted them already:
    np.percentile itself partitions each lead along a strided axis, three times slower."""
    ordered = np.sort(x, axis=-1) if ordered is None else ordered
    n = x.shape[-1]
    virtual = (n - 1) * _PERCENTILES  # where each percentile lies between the sorted values, as numpy has it
    below = np.floor(virtual)
    gamma = virtual - below
    a, b = ordered[..., below.astype(np.intp)], ordered[..., np.minimum(below + 1, n - 1).astype(np.intp)]
    step = b - a
    q = np.where(gamma >= 0.5, b - step * (1 - gamma), a + step * gamma)  # numpy's _lerp
    return np.concatenate([q, x.mean(-1, keepdims=True), x.std(-1, keepdims=True), x.var(-1, keepdims=True)],
                          axis=-1)


def _entropy_of_value_counts(ordered: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row's value counts, from its sorted values instead of a Counter."""
    n = ordered.shape[-1]
    out = np.empty(ordered.shape[0])
    for i, row in enumerate(ordered):
        edges = np.flatnonzero(np.diff(row)) + 1
        counts = np.diff(np.concatenate([[0], edges, [n]]))
        p = counts / n
        out[i] = -(p * np.log(p)).sum()
    return out


def signal_features(mv: np.ndarray) -> np.ndarray:
    """(12, n) mV -> 636 features, all leads at once (wavedec and percentiles vectorised over leads)."""
    per_lead = [_stats(mv)]
    for coeffs in pywt.wavedec(mv, "db10", level=4, axis=-1):
        ordered = np.sort(coeffs, axis=-1)
        per_lead += [_entropy_of_value_counts(ordered)[:, None] / ENTROPY_SCALE, _stats(coeffs, ordered)]
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
    cached = _CACHE.record(pid, dtype=np.float64)
    notes = [f"lead {LEADS[i]} is flat" for i in np.flatnonzero(~np.any(cached != cached[:, :1], axis=1))]
    mv = resample(cached, _CACHE.sample_rate, SAMPLE_RATE)  # the rate the features were designed for
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
    # before minutes of extraction, not after; a folder that is only read (current features) is not probed
    check_writable(data_dir, "features.csv is cached beside the preprocess outputs")
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
    """features.csv (pandas' default parser round-trips float64), or None when it cannot be parsed. Copied
    into one block per dtype: the parser gives one per column, and each selection of rows of 637 blocks
    (the baselines' train/val/test of every split) took 25 times as long."""
    try:
        return read_records_csv(path).copy()
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return None
