"""Shared pieces of the pipeline: the one source of truth for leads, classes, SNOMED codes, sample
rate, input length and fold split, plus record I/O, the signal cache, atomic writes and metrics.

Every stage imports from here; nothing below is redefined anywhere else.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

# ---------------------------------------------------------------------------------------------
# Constants (SPEC.md, section Data)
# ---------------------------------------------------------------------------------------------
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CLASSES = ("SNR", "AF", "IAVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
SNOMED_TO_CLASS = {
    "426783006": "SNR",
    "164889003": "AF",
    "270492004": "IAVB",
    "164909002": "LBBB",
    "713427006": "RBBB",
    "59118001": "RBBB",
    "284470004": "PAC",
    "63593006": "PAC",
    "164884008": "PVC",
    "427172004": "PVC",
    "17338001": "PVC",
    "429622005": "STD",
    "164931005": "STE",
}
# The code the synthetic generator writes for each class (the first one listed above).
CLASS_TO_SNOMED = {c: next(k for k, v in SNOMED_TO_CLASS.items() if v == c) for c in CLASSES}
SAMPLE_RATE = 500          # Hz: the rate every record is stored at in the cache
INPUT_SECONDS = 30         # the model sees the last 30 s (15,000 samples), zero-padded in front
GAIN_ADU_PER_MV = 1000     # WFDB gain of CPSC2018; the cache stores int16 microvolts
N_FOLDS = 10
TRAIN_FOLDS, VAL_FOLDS, TEST_FOLDS = 8, 1, 1

# Files written by preprocess.py into its output directory and read by every later stage.
REFERENCE_CSV = "reference.csv"
LABELS_CSV = "labels.csv"
SIGNALS_NPY = "signals.npy"
SIGNALS_INDEX_CSV = "signals_index.csv"
MANIFEST_JSON = "preprocess.json"


class RecordError(ValueError):
    """A record that cannot be used; the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------------
# Command-line value types: a bad count or size is an argparse error (exit 2, one line), not a traceback
# ---------------------------------------------------------------------------------------------
def _checked(kind: type, test: Callable, wanted: str) -> Callable[[str], float]:
    def parse(text: str):
        import argparse

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if not (np.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value

    parse.__name__ = wanted  # argparse names the type in its message
    return parse


positive_int = _checked(int, lambda v: v > 0, "a positive integer")
nonnegative_int = _checked(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _checked(float, lambda v: v > 0, "a positive number")


# ---------------------------------------------------------------------------------------------
# Leads
# ---------------------------------------------------------------------------------------------
def parse_leads(spec: str) -> list[str]:
    """`all`, one lead or a comma list (case-insensitive) -> lead names in the standard order."""
    if spec.strip().lower() == "all":
        return list(LEADS)
    by_lower = {lead.lower(): lead for lead in LEADS}
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown or not names:
        raise ValueError(f"unknown lead(s) {unknown or [spec]}; valid: all or a comma list of {', '.join(LEADS)}")
    chosen = {by_lower[n.lower()] for n in names}
    return [lead for lead in LEADS if lead in chosen]


def leads_tag(leads: Sequence[str]) -> str:
    """Short name for a lead selection, used in file names: `all`, `I`, `I-aVR-V5`."""
    return "all" if list(leads) == list(LEADS) else "-".join(leads)


def lead_indices(leads: Sequence[str]) -> list[int]:
    return [LEADS.index(lead) for lead in leads]


# ---------------------------------------------------------------------------------------------
# Reading records (WFDB layout of the PhysioNet/CinC 2020-2021 releases, and the original
# CPSC2018 layout: .mat struct ECG + REFERENCE.csv)
# ---------------------------------------------------------------------------------------------
@dataclass
class Header:
    record: str
    n_sig: int
    sample_rate: float
    sig_len: int
    files: list[str] = field(default_factory=list)
    gains: list[float] = field(default_factory=list)
    baselines: list[int] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    lead_names: list[str] = field(default_factory=list)
    age: float = float("nan")
    sex: str = "Unknown"
    dx: list[str] = field(default_factory=list)


_GAIN_RE = re.compile(r"^([^(/]+)(?:\(([^)]*)\))?(?:/(\S+))?$")  # gain[(baseline)][/units]


def _number(text: str, kind: type, path: Path, field: str, line: str):
    """`kind(text)` (int or float) that must be finite, or a RecordError naming the file and field."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise RecordError(f"{path}: malformed {field} {text!r} in header line {line!r}") from None
    if kind is float and not np.isfinite(value):
        raise RecordError(f"{path}: {field} {text!r} is not a finite number (header line {line!r})")
    return value


def _parse_age(text: str) -> float:
    try:
        age = float(text)
    except ValueError:
        return float("nan")
    return age if 0 <= age < 130 else float("nan")


def normalise_sex(text: str) -> str:
    t = str(text).strip().lower()
    if t in ("male", "m"):
        return "Male"
    if t in ("female", "f"):
        return "Female"
    return "Unknown"


def parse_header(path: Path) -> Header:
    """Parse a WFDB header, tolerating the variants seen in PhysioNet 2020-2021 data."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines()]
    except OSError as e:
        raise RecordError(f"{path}: cannot read header ({e.strerror})") from None
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    comments = [ln.lstrip("#").strip() for ln in lines if ln.startswith("#")]
    if not body:
        raise RecordError(f"{path}: empty header")
    first = body[0].split()
    if len(first) < 4:
        raise RecordError(f"{path}: malformed record line {body[0]!r} (want: name, signals, rate, length)")
    n_sig = _number(first[1], int, path, "number of signals", body[0])
    fs = _number(first[2].split("/")[0].split("(")[0], float, path, "sampling rate", body[0])
    sig_len = _number(first[3], int, path, "signal length", body[0])
    if fs <= 0 or sig_len <= 0 or n_sig <= 0:
        raise RecordError(f"{path}: sampling rate {fs:g}, length {sig_len} and number of signals {n_sig} "
                          f"must be positive")
    hdr = Header(record=first[0], n_sig=n_sig, sample_rate=fs, sig_len=sig_len)
    if len(body) - 1 < n_sig:
        raise RecordError(f"{path}: header declares {n_sig} signals but describes {len(body) - 1}")
    for ln in body[1:1 + n_sig]:
        parts = ln.split()
        m = _GAIN_RE.match(parts[2]) if len(parts) > 2 else None
        if m is None:
            raise RecordError(f"{path}: malformed signal line {ln!r}")
        gain = _number(m.group(1), float, path, "gain", ln) or 200.0  # WFDB: gain 0 means the default 200
        if m.group(2) is not None:
            baseline = _number(m.group(2), int, path, "baseline", ln)
        else:  # no baseline given: WFDB takes the ADC zero (5th field)
            baseline = _number(parts[4], int, path, "ADC zero", ln) if len(parts) > 4 else 0
        hdr.files.append(parts[0])
        hdr.gains.append(gain)
        hdr.baselines.append(baseline)
        hdr.units.append((m.group(3) or "mV"))
        hdr.lead_names.append(parts[8] if len(parts) > 8 else "")
    for c in comments:
        key, _, value = c.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "age":
            hdr.age = _parse_age(value)
        elif key == "sex":
            hdr.sex = normalise_sex(value)
        elif key == "dx":
            hdr.dx = [code.strip() for code in value.split(",") if code.strip()]
    return hdr


def dx_to_labels(codes: Iterable[str]) -> np.ndarray:
    """SNOMED-CT codes -> 0/1 vector over CLASSES; unknown codes are ignored."""
    y = np.zeros(len(CLASSES), dtype=np.int8)
    for code in codes:
        cls = SNOMED_TO_CLASS.get(str(code).strip())
        if cls is not None:
            y[CLASSES.index(cls)] = 1
    return y


def _unit_scale_to_mv(unit: str) -> float:
    u = unit.strip().lower()
    if u in ("mv", ""):
        return 1.0
    if u in ("uv", "µv", "μv"):
        return 1e-3
    if u == "v":
        return 1e3
    raise RecordError(f"unsupported unit {unit!r}")


def _order_leads(names: Sequence[str], where: Path) -> list[int]:
    """Row index of each standard lead in a record, so records with another lead order still work."""
    by_lower = {n.strip().lower(): i for i, n in enumerate(names)}
    missing = [lead for lead in LEADS if lead.lower() not in by_lower]
    if missing:
        raise RecordError(f"{where}: missing lead(s) {', '.join(missing)} (found {', '.join(names)})")
    return [by_lower[lead.lower()] for lead in LEADS]


def resample(signal: np.ndarray, from_rate: float, to_rate: float = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased); a no-op at equal rates."""
    if from_rate == to_rate:
        return signal
    from scipy.signal import resample_poly

    ratio = Fraction(to_rate / from_rate).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)


def _check_signal(mv: np.ndarray, where: Path) -> np.ndarray:
    if mv.ndim != 2 or mv.shape[0] != len(LEADS):
        raise RecordError(f"{where}: expected {len(LEADS)} leads, got shape {mv.shape}")
    if mv.shape[1] == 0:
        raise RecordError(f"{where}: signal is empty")
    if not np.all(np.isfinite(mv)):
        raise RecordError(f"{where}: signal contains NaN or infinite values")
    return mv


def read_wfdb_record(header_path: Path, hdr: Header | None = None) -> tuple[Header, np.ndarray]:
    """Header and signal in mV, leads in the standard order, at the record's own rate."""
    from scipy.io import loadmat

    header_path = Path(header_path)
    hdr = hdr or parse_header(header_path)
    if hdr.n_sig != len(LEADS):
        raise RecordError(f"{header_path}: expected {len(LEADS)} leads, header declares {hdr.n_sig}")
    mat_path = header_path.parent / hdr.files[0]
    if not mat_path.exists():
        raise RecordError(f"{header_path}: signal file {mat_path.name} is missing")
    if mat_path.suffix.lower() != ".mat":
        raise RecordError(f"{header_path}: signal file {mat_path.name} is not a .mat file")
    try:
        val = loadmat(mat_path)["val"]
    except Exception as e:  # scipy raises several types for truncated or corrupt files
        raise RecordError(f"{mat_path}: unreadable signal ({type(e).__name__}: {e})") from None
    if val.shape != (hdr.n_sig, hdr.sig_len):
        raise RecordError(f"{mat_path}: signal shape {val.shape} does not match header ({hdr.n_sig}, {hdr.sig_len})")
    order = _order_leads(hdr.lead_names, header_path)
    try:
        scale = np.array([_unit_scale_to_mv(u) / g for u, g in zip(hdr.units, hdr.gains)])[:, None]
    except RecordError as e:
        raise RecordError(f"{header_path}: {e}") from None
    mv = (val.astype(np.float64) - np.asarray(hdr.baselines)[:, None]) * scale
    return hdr, _check_signal(mv[order], mat_path)


def read_cpsc_record(mat_path: Path) -> tuple[Header, np.ndarray]:
    """A record of the original CPSC2018 release: struct ECG with sex, age, data (mV, 12 x N, 500 Hz)."""
    from scipy.io import loadmat

    mat_path = Path(mat_path)
    try:
        ecg = loadmat(mat_path, squeeze_me=True, struct_as_record=False)["ECG"]
        data = np.asarray(ecg.data, dtype=np.float64)
    except Exception as e:
        raise RecordError(f"{mat_path}: unreadable CPSC2018 struct ({type(e).__name__}: {e})") from None
    age = _parse_age(str(getattr(ecg, "age", "nan")))
    hdr = Header(record=mat_path.stem, n_sig=data.shape[0] if data.ndim == 2 else 0,
                 sample_rate=SAMPLE_RATE, sig_len=data.shape[-1] if data.ndim else 0,
                 lead_names=list(LEADS), age=age, sex=normalise_sex(str(getattr(ecg, "sex", ""))))
    return hdr, _check_signal(data, mat_path)


def read_cpsc_reference(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """REFERENCE.csv of the original release: labels 1-9 in CLASSES order -> 0/1 vectors per record,
    and, for rows with a label that is not a class number, a message naming the file, record and label
    (that record is skipped and reported; the others are kept)."""
    try:
        ref = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise RecordError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    labels, errors = {}, {}
    for _, row in ref.iterrows():
        pid = str(row.iloc[0]).strip()
        y = np.zeros(len(CLASSES), dtype=np.int8)
        for col in ref.columns[1:]:
            v = str(row[col]).strip()
            if not v:
                continue
            try:
                k = float(v)
            except ValueError:
                k = float("nan")
            if not (1 <= k <= len(CLASSES) and k == int(k)):  # also false for nan; inf fails the range
                errors[pid] = f"{path}: {col} {v!r} of {pid} is not a class number 1-{len(CLASSES)}"
                break
            y[int(k) - 1] = 1
        else:
            labels[pid] = y
    return labels, errors


def read_record(path: Path) -> tuple[Header, np.ndarray]:
    """Any supported record (a `.hea` path, or a `.mat` of either layout) -> header, mV at SAMPLE_RATE.

    Used by the `--record` options of predict.py, shap_values.py and visualize.py.
    """
    path = Path(path)
    hea = path.with_suffix(".hea")
    if path.suffix == ".hea" or hea.exists():
        hdr, mv = read_wfdb_record(hea)
    elif path.suffix == ".mat":
        hdr, mv = read_cpsc_record(path)
    else:
        raise RecordError(f"{path}: not a WFDB header or .mat record")
    return hdr, resample(mv, hdr.sample_rate)


def read_records(paths: Sequence[Path]) -> list[tuple[Path, Header, np.ndarray]]:
    """`read_record` over user-given paths: unreadable ones are reported on stderr and skipped;
    none readable at all is an error (used by every `--record` option)."""
    records = []
    for path in map(Path, paths):
        try:
            records.append((path, *read_record(path)))
        except RecordError as e:
            print(f"skipped: {e}", file=sys.stderr)
    if not records:
        raise SystemExit("error: none of the records could be read")
    return records


def _ignore_sigint(initializer: Callable | None, initargs: tuple) -> None:
    """Pool workers leave Ctrl-C to the parent: a worker killed by it mid-task hangs Pool.imap."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def parallel_map(fn: Callable, tasks: Sequence, workers: int, desc: str, chunksize: int = 8,
                 initializer: Callable | None = None, initargs: tuple = ()) -> list:
    """`[fn(t) for t in tasks]` in order, with a progress bar, over `workers` processes when it pays.

    Ctrl-C stops promptly: the workers ignore SIGINT, the parent terminates the pool and re-raises
    KeyboardInterrupt (temporary files are removed by the atomic writers on the way out)."""
    from multiprocessing import Pool

    from tqdm import tqdm

    bar = dict(total=len(tasks), desc=desc, unit="rec", file=sys.stdout, mininterval=1.0)
    if workers <= 1 or len(tasks) <= 50:
        if initializer is not None:
            initializer(*initargs)
        return [fn(t) for t in tqdm(tasks, **bar)]
    pool = Pool(workers, initializer=_ignore_sigint, initargs=(initializer, initargs))
    try:
        results = list(tqdm(pool.imap(fn, tasks, chunksize=chunksize), **bar))
        pool.close()
        return results
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def output_names(paths: Sequence[Path]) -> list[str]:
    """A distinct file-name stem per user-given record: its own stem, or, where stems of different files
    collide (d1/A0001, d2/A0001), the stem prefixed with as many parent folders as it takes; the same
    file given twice gets _1, _2. No figure overwrites another."""
    resolved = [Path(p).resolve() for p in paths]
    names = []
    for path in resolved:
        others = {q for q in resolved if q.stem == path.stem and q != path}
        depth = 0
        while others and depth < len(path.parent.parts):
            depth += 1
            mine = path.parent.parts[-depth:]
            others = {q for q in others if q.parent.parts[-depth:] == mine}
        names.append("_".join([*path.parent.parts[len(path.parent.parts) - depth:], path.stem]).lstrip("/_"))
    return [n if names.count(n) == 1 else f"{n}_{names[:i].count(n) + 1}" for i, n in enumerate(names)]


def to_microvolts(mv: np.ndarray) -> np.ndarray:
    """mV float -> int16 µV, the cache's storage type (±32.7 mV range, 1 µV resolution)."""
    return np.clip(np.rint(mv * GAIN_ADU_PER_MV), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# Folds
# ---------------------------------------------------------------------------------------------
def stratified_folds(y: np.ndarray, n_folds: int = N_FOLDS, seed: int = 42) -> np.ndarray:
    """Iterative stratification for multi-label data (Sechidis et al., ECML 2011); folds 1..n_folds.

    Rarest labels are placed first, each example into the fold (not yet full) that still wants that
    label most, ties broken by fold size and then by a generator seeded with `seed` -- a pure function
    of (y, n_folds, seed).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=bool)
    n, n_labels = y.shape
    want_total = np.full(n_folds, n / n_folds)
    want_label = np.tile(y.sum(0) / n_folds, (n_folds, 1))  # (folds, labels)
    fold = np.zeros(n, dtype=np.int64)
    remaining = np.ones(n, dtype=bool)
    order_noise = rng.random(n)

    def place(i: int, scores: np.ndarray) -> None:
        scores[want_total <= 0] = -np.inf  # a full fold takes no more while another still has room
        if np.isinf(scores).all():
            scores = want_total.copy()
        best = np.flatnonzero(scores == scores.max())
        if len(best) > 1:
            sizes = want_total[best]
            best = best[sizes == sizes.max()]
        f = best[rng.integers(len(best))] if len(best) > 1 else best[0]
        fold[i] = f + 1
        remaining[i] = False
        want_total[f] -= 1
        want_label[f] -= y[i]

    while remaining.any():
        counts = y[remaining].sum(0)
        if counts.sum() == 0:
            for i in np.flatnonzero(remaining)[np.argsort(order_noise[remaining])]:
                place(i, want_total.copy())
            break
        label = np.flatnonzero(counts == counts[counts > 0].min())[0]
        members = np.flatnonzero(remaining & y[:, label])
        for i in members[np.argsort(order_noise[members])]:
            place(i, want_label[:, label].copy())
    return fold


def split_folds(seed: int, test_fold: int | None = None) -> tuple[list[int], list[int], list[int]]:
    """Train/validation/test folds, 8/1/1. By default exactly the original's single split,
    `np.random.RandomState(seed).permutation(range(1, 11))`: first 8 folds train, 9th validation, 10th
    test (seed 42: train 9,2,6,1,8,3,10,5; validation 4; test 7), so the original's labels.csv gives the
    original's split. For cross-validation, `test_fold` k tests on fold k and validates on the next fold
    (k % 10 + 1), so the ten values of k test every record exactly once."""
    if test_fold is None:
        perm = [int(f) for f in np.random.RandomState(seed).permutation(range(1, N_FOLDS + 1))]
        return perm[:TRAIN_FOLDS], perm[TRAIN_FOLDS:TRAIN_FOLDS + VAL_FOLDS], perm[TRAIN_FOLDS + VAL_FOLDS:]
    if not 1 <= test_fold <= N_FOLDS:
        raise ValueError(f"test fold must be 1..{N_FOLDS}, got {test_fold}")
    val = test_fold % N_FOLDS + 1
    return [f for f in range(1, N_FOLDS + 1) if f not in (test_fold, val)], [val], [test_fold]


def split_labels(labels: pd.DataFrame, seed: int, limit: int | None = None,
                 test_fold: int | None = None) -> dict[str, pd.DataFrame]:
    """labels.csv rows of the train/val/test folds (see `split_folds`); `limit` keeps a seeded random
    subset first."""
    if limit and limit < len(labels):
        labels = labels.sample(n=limit, random_state=seed).sort_index()
    train, val, test = split_folds(seed, test_fold)
    return {name: labels[labels["fold"].isin(folds)].reset_index(drop=True)
            for name, folds in (("train", train), ("val", val), ("test", test))}


# ---------------------------------------------------------------------------------------------
# Preprocessed data: labels + signal cache
# ---------------------------------------------------------------------------------------------
def require(path: Path, stage: str) -> Path:
    """Fail with a message that names the stage to run first when an input is missing."""
    if not Path(path).exists():
        raise SystemExit(f"error: {path} not found; run `{stage}` first")
    return Path(path)


def require_preprocessed(data_dir: Path) -> Path:
    """The preprocess folder, refused unless its manifest is there: preprocess.py deletes the manifest
    before it replaces any output and writes it last, so a folder without one holds a half-updated mix."""
    data_dir = Path(data_dir)
    stage = f"python preprocess.py --data-dir {data_dir}"
    if (data_dir / LABELS_CSV).exists() and not (data_dir / MANIFEST_JSON).exists():
        raise SystemExit(f"error: {data_dir} has no {MANIFEST_JSON}: preprocessing did not finish there, so its "
                         f"outputs may be half updated; rerun `{stage}`")
    require(data_dir / MANIFEST_JSON, stage)
    return data_dir


def load_labels(data_dir: Path) -> pd.DataFrame:
    """labels.csv as preprocess.py wrote it; an empty or damaged file is an error naming the fix."""
    path = require(require_preprocessed(data_dir) / LABELS_CSV, f"python preprocess.py --data-dir {data_dir}")
    stage = f"python preprocess.py --data-dir {data_dir} --force"
    try:
        labels = pd.read_csv(path, dtype={"patient_id": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: {path} is empty or unreadable ({type(e).__name__}); rerun `{stage}`") from None
    missing = [c for c in ("patient_id", *CLASSES, "fold") if c not in labels.columns]
    if missing:
        raise SystemExit(f"error: {path} lacks column(s) {', '.join(missing)}; rerun `{stage}`")
    if labels.empty:
        raise SystemExit(f"error: {path} has no records; rerun `{stage}`")
    return labels


class SignalCache:
    """The preprocess cache: int16 µV, shape (12, total samples), memory-mapped, one span a record."""

    def __init__(self, data_dir: Path):
        data_dir = Path(data_dir)
        stage = f"python preprocess.py --data-dir {require_preprocessed(data_dir)}"
        self.signals = np.load(require(data_dir / SIGNALS_NPY, stage), mmap_mode="r")
        index = pd.read_csv(require(data_dir / SIGNALS_INDEX_CSV, stage), dtype={"patient_id": str})
        self.ids = index["patient_id"].tolist()
        self.row = {pid: i for i, pid in enumerate(self.ids)}
        self.start = index["start"].to_numpy(np.int64)
        self.length = index["length"].to_numpy(np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def record(self, pid: str, leads: Sequence[int] | None = None, dtype=np.float32) -> np.ndarray:
        """Whole record in mV, (leads, samples). In float64 the value is exactly int16 µV / 1000, which
        equals wfdb's physical signal of a gain-1000 record (the expert features need that precision)."""
        i = self.row[pid]
        rows = slice(None) if leads is None else list(leads)
        x = self.signals[rows, self.start[i]:self.start[i] + self.length[i]]
        return x.astype(dtype) / dtype(GAIN_ADU_PER_MV)

    def window(self, pid: str, leads: Sequence[int], n_samples: int) -> np.ndarray:
        """The last `n_samples` of a record in mV (leads, n_samples), zero-padded in front."""
        i = self.row[pid]
        end = self.start[i] + self.length[i]
        take = min(n_samples, int(self.length[i]))
        out = np.zeros((len(leads), n_samples), dtype=np.float32)
        out[:, n_samples - take:] = self.signals[list(leads), end - take:end]
        out *= 1.0 / GAIN_ADU_PER_MV
        return out


def fit_length(x: np.ndarray, n_samples: int) -> np.ndarray:
    """Keep the last `n_samples` along the last axis, zero-padding in front (the model's input rule)."""
    if x.shape[-1] >= n_samples:
        return np.ascontiguousarray(x[..., x.shape[-1] - n_samples:])
    pad = np.zeros(x.shape[:-1] + (n_samples - x.shape[-1],), dtype=x.dtype)
    return np.concatenate([pad, x], axis=-1)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    A crash leaves either the old file or the new one, never half of either.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give outputs the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_writable(folder: Path, hint: str = "") -> None:
    """Fail before any work when outputs could not be written to `folder` (read-only mount, no
    permission): creating and removing a probe file is the only test that also holds for root."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SystemExit(f"error: cannot write to {folder} ({e.strerror or e}); the folder is read-only"
                         f"{f'; {hint}' if hint else ''}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(df: pd.DataFrame, path: Path, **kwargs) -> Path:
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, **kwargs))


def write_text(text: str, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(obj, path: Path) -> Path:
    return write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_npy(arr: np.ndarray, path: Path) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            np.save(f, arr)

    return atomic_write(path, write)


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def fingerprint(parts: Iterable) -> str:
    """Stable short hash of anything JSON-serialisable, for 'are these outputs still current?'."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=_json_default).encode())
    return h.hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    st = Path(path).stat()
    return fingerprint([str(path), st.st_size, st.st_mtime_ns])


# ---------------------------------------------------------------------------------------------
# Metrics (one definition, used by baselines.py, main.py and predict.py)
# ---------------------------------------------------------------------------------------------
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


def classification_metrics(y_true: np.ndarray, y_score: np.ndarray, thresholds: np.ndarray,
                           n_bootstrap: int = 0, seed: int = 0) -> pd.DataFrame:
    """Per-class metrics plus a mean row; with `n_bootstrap`, percentile 95 % CIs (`{metric}_lo/_hi`)
    from resampling records with replacement."""
    values = metric_arrays(y_true, y_score, thresholds)
    table = pd.DataFrame(values, index=list(CLASSES))
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
