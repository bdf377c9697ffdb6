"""What every stage after preprocessing reads of a preprocess folder: labels.csv, reference.csv, the
memory-mapped signal cache and the manifest (preprocess.json: label set, layout, split rule, the cache's
sample rate, fingerprint, and a description of each output). A folder is trusted only when its manifest
is there and matches its files. The cache's file format (signals.npy, signals_index.csv) is defined here
beside its reader; utils.preprocessed, the one writer of these folders, builds them with it.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from utils.errors import MissingInputError, PipelineError
from utils.folds import N_FOLDS
from utils.files import (atomic_write, current_umask, file_fingerprint, file_version, fingerprint, read_records_csv,
                         write_csv)
from utils.manifest import manifest_mismatch, read_manifest
from utils.labels import LEADS
from utils.layouts import Entry, Layout
from utils.records import GAIN_ADU_PER_MV, SAMPLE_RATE

__all__ = ["REFERENCE_CSV", "LABELS_CSV", "SIGNALS_NPY", "SIGNALS_INDEX_CSV", "MANIFEST_JSON",
           "PREPROCESS_OUTPUTS", "require", "require_preprocessed", "preprocess_manifest", "data_label_set",
           "data_split_rule", "database_name", "load_labels", "cache_rate", "SignalCache", "fit_length",
           "TRANSPOSE_CHUNK", "CacheFile", "write_span", "write_index", "stream_signal_cache", "CACHE_VERSION",
           "input_files", "preprocess_key", "failure_kind", "summarise_dataset"]

REFERENCE_CSV = "reference.csv"
LABELS_CSV = "labels.csv"
SIGNALS_NPY = "signals.npy"
SIGNALS_INDEX_CSV = "signals_index.csv"
MANIFEST_JSON = "preprocess.json"
PREPROCESS_OUTPUTS = (SIGNALS_NPY, SIGNALS_INDEX_CSV, REFERENCE_CSV, LABELS_CSV)
CACHE_VERSION = 2  # bump when the cache format changes, so old caches are rebuilt


def require(path: Path, stage: str) -> Path:
    """`path`, or a MissingInputError that names the stage to run first."""
    if not Path(path).exists():
        raise MissingInputError(f"{path} not found; run `{stage}` first")
    return Path(path)


def require_preprocessed(data_dir: Path) -> Path:
    """The preprocess folder, refused unless its manifest is there and matches its outputs: preprocess.py
    deletes the manifest before it replaces any output and writes it last, so a folder without one
    holds a half-updated mix, and one whose files differ from the manifest was changed by hand."""
    data_dir = Path(data_dir)
    stage = f"python preprocess.py --data-dir {data_dir}"
    if (data_dir / LABELS_CSV).exists() and not (data_dir / MANIFEST_JSON).exists():
        raise PipelineError(f"{data_dir} has no {MANIFEST_JSON}: preprocessing did not finish there, so its "
                            f"outputs may be half updated; rerun `{stage}`")
    require(data_dir / MANIFEST_JSON, stage)
    why = manifest_mismatch(data_dir / MANIFEST_JSON)
    if why is not None:
        raise PipelineError(f"{data_dir} does not match its {MANIFEST_JSON} ({why}); rerun `{stage} --force`")
    return data_dir


def preprocess_manifest(data_dir: Path) -> dict:
    """The manifest of a checked preprocess folder (see `require_preprocessed`)."""
    return read_manifest(require_preprocessed(data_dir) / MANIFEST_JSON)


def data_label_set(data_dir: Path) -> dict:
    """{"name", "classes"} of the label set a folder was preprocessed with; a manifest without one is
    refused rather than guessed (its labels.csv columns could be any set)."""
    label_set = preprocess_manifest(data_dir).get("label_set")
    if not isinstance(label_set, dict) or "classes" not in label_set:
        raise PipelineError(f"{Path(data_dir) / MANIFEST_JSON} names no label set; rerun "
                            f"`python preprocess.py --data-dir {data_dir} --force`")
    return label_set


def data_split_rule(data_dir: Path) -> dict | None:
    """The database's fixed split ({"train": folds, "val": folds, "test": folds}) or None (seeded permutation)."""
    return preprocess_manifest(data_dir).get("fixed_split")


def database_name(data_dir: Path) -> str:
    """The name results are filed under: the preprocess folder's name (data/CPSC -> CPSC)."""
    return Path(data_dir).resolve().name


def load_labels(data_dir: Path) -> pd.DataFrame:
    """labels.csv as preprocess.py wrote it, columns patient_id, the label set's classes, fold; an empty
    or damaged file is an error naming the fix."""
    classes = data_label_set(data_dir)["classes"]
    path = require(Path(data_dir) / LABELS_CSV, f"python preprocess.py --data-dir {data_dir}")
    stage = f"python preprocess.py --data-dir {data_dir} --force"
    try:
        labels = read_records_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path} is empty or unreadable ({type(e).__name__}); rerun `{stage}`") from None
    missing = [c for c in ("patient_id", *classes, "fold") if c not in labels.columns]
    if missing:
        raise PipelineError(f"{path} lacks column(s) {', '.join(missing)}; rerun `{stage}`")
    if labels.empty:
        raise PipelineError(f"{path} has no records; rerun `{stage}`")
    return labels


def cache_rate(data_dir: Path) -> float:
    """The rate a preprocess folder's signal cache is stored at (the manifest's; 500 for folders written
    before the rate was recorded)."""
    return float(read_manifest(Path(data_dir) / MANIFEST_JSON).get("sample_rate") or SAMPLE_RATE)


class SignalCache:
    """The preprocess cache: int16 µV, shape (12, total samples), memory-mapped, one span a record, at
    `sample_rate` Hz (the manifest's; 500 for folders written before the rate was recorded)."""

    def __init__(self, data_dir: Path):
        data_dir = Path(data_dir)
        stage = f"python preprocess.py --data-dir {require_preprocessed(data_dir)}"
        self.sample_rate = cache_rate(data_dir)
        self.signals = np.load(require(data_dir / SIGNALS_NPY, stage), mmap_mode="r")
        self.key = file_version(data_dir / SIGNALS_NPY)  # another after a preprocess writes it again
        index = read_records_csv(require(data_dir / SIGNALS_INDEX_CSV, stage))
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


TRANSPOSE_CHUNK = 1 << 20  # samples per step when the lengths were not known in advance: 24 MB of int16
_OPEN_CACHES: dict[str, np.memmap] = {}  # per process: the cache files this process writes into


class CacheFile:
    """signals.npy being built at a temporary path beside its destination; renamed into place by
    `commit` (atomic), removed by `discard`."""

    def __init__(self, out_dir: Path, n_samples: int):
        self.path = Path(out_dir) / SIGNALS_NPY
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{SIGNALS_NPY}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        try:
            np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.int16, shape=(len(LEADS), int(n_samples))).flush()
        except BaseException:  # Ctrl-C included: never leave the temporary file behind
            self.tmp.unlink(missing_ok=True)
            raise

    def commit(self) -> None:
        _OPEN_CACHES.pop(str(self.tmp), None)
        os.chmod(self.tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        _OPEN_CACHES.pop(str(self.tmp), None)
        self.tmp.unlink(missing_ok=True)


def _check_cache_signal(signal: np.ndarray, pid: str = "") -> None:
    if signal.dtype != np.int16 or signal.ndim != 2 or signal.shape[0] != len(LEADS):
        raise ValueError(f"{pid}: the cache takes (12, n) int16, got {signal.dtype} {signal.shape}")


def write_span(cache_path: str, start: int, signal: np.ndarray) -> None:
    """Write one record (12, n) int16 at column `start` of a cache file being built. Called in worker
    processes: each maps the file once (shared, file-backed pages), so decoded signals never travel
    between processes and no process holds more than the record it decodes."""
    _check_cache_signal(signal)
    arr = _OPEN_CACHES.get(cache_path)
    if arr is None:
        arr = _OPEN_CACHES[cache_path] = np.load(cache_path, mmap_mode="r+")
    arr[:, start:start + signal.shape[1]] = signal


def write_index(out_dir: Path, ids: Sequence[str], starts: Sequence[int], lengths: Sequence[int],
                clipped: Sequence[int] | None = None) -> pd.DataFrame:
    """signals_index.csv: each record's span in the cache, and `clipped`, how many of its samples (all
    leads) lay beyond the int16 µV range (±32.767 mV) and were stored clipped (0 for a faithful copy)."""
    clipped = np.zeros(len(ids), np.int64) if clipped is None else np.asarray(clipped, np.int64)
    index = pd.DataFrame({"patient_id": list(ids), "start": np.asarray(starts, dtype=np.int64),
                          "length": np.asarray(lengths, dtype=np.int64), "clipped": clipped})
    write_csv(index, Path(out_dir) / SIGNALS_INDEX_CSV)
    return index


def stream_signal_cache(out_dir: Path, records: Iterable[tuple[str, np.ndarray | None]],
                        clipped: Mapping[str, int] | None = None) -> pd.DataFrame:
    """signals.npy from records whose lengths are not known in advance, one (id, (12, n) int16) at a time
    ((id, None) for a record that failed): appended time-major to a raw temporary file, then transposed
    in fixed-size chunks into the lead-major cache (each lead contiguous, what SignalCache reads).
    Memory stays at one record and one chunk whatever the number of records. `clipped` (id -> clipped
    samples, for the index) is read after the records are consumed, so their generator may fill it."""
    ids, starts, lengths = [], [], []
    fd, raw_name = tempfile.mkstemp(dir=out_dir, prefix=f".{SIGNALS_NPY}.", suffix=".raw.tmp")
    raw_path = Path(raw_name)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 22) as raw:
            total = 0
            for pid, signal in records:
                if signal is None:
                    continue
                _check_cache_signal(signal, pid)
                ids.append(pid)
                starts.append(total)
                lengths.append(signal.shape[1])
                total += signal.shape[1]
                raw.write(np.ascontiguousarray(signal.T).tobytes())

        def transpose(tmp: Path) -> None:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(len(LEADS), total))
            if total:
                time_major = np.memmap(raw_path, dtype=np.int16, mode="r", shape=(total, len(LEADS)))
                for a in range(0, total, TRANSPOSE_CHUNK):
                    arr[:, a:a + TRANSPOSE_CHUNK] = time_major[a:a + TRANSPOSE_CHUNK].T
                del time_major
            arr.flush()
            del arr

        atomic_write(Path(out_dir) / SIGNALS_NPY, transpose)
    finally:
        raw_path.unlink(missing_ok=True)
    return write_index(out_dir, ids, starts, lengths, [(clipped or {}).get(pid, 0) for pid in ids])


# ---------------------------------------------------------------------------------------------
# The preprocess fingerprint and the summary
# ---------------------------------------------------------------------------------------------
def input_files(layout: Layout, entries: list[Entry], data_dir: Path) -> list[str]:
    """The fingerprints of every file the listed records' outputs depend on (records, label files)."""
    return [file_fingerprint(p) for p in layout.input_files(Path(data_dir), entries)]


def preprocess_key(layout: str, label_set: dict, seed: int, rate: float, files: list[str],
                   folds: str = "stratified") -> str:
    """A preprocess folder's fingerprint: changes when any input file, the label set, the seed, the
    cache's rate, the fold rule or the cache format change (the default rule adds nothing, so folders
    written before there was a choice stay current)."""
    return fingerprint([CACHE_VERSION, layout, label_set, seed, N_FOLDS, rate, files]
                       + ([folds] if folds != "stratified" else []))


def failure_kind(message: str) -> str:
    """A skip message without its file, quoted values and numbers, so like failures count together."""
    import re

    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "", message.split(": ", 1)[-1]).split(" (")[0]
    reason = reason.split(": ")[-1]  # after a location within the file (line 4, ecg_id 3: ...)
    reason = reason.removesuffix("; row skipped")  # the summary's line says so already
    return re.sub(r"\s+", " ", re.sub(r"\S*\d\S*", "", reason)).strip(" ,;")


def summarise_dataset(n_found: int, classes: list[str], reference: pd.DataFrame, labels: pd.DataFrame,
                      errors: list[str], n_unlabelled: int, clipped: dict[str, str]) -> dict:
    """Print what was kept and why the rest was not; the manifest's summary fields."""
    counts = {c: int(labels[c].sum()) for c in classes}
    per_fold = labels.groupby("fold")[list(classes)].sum().astype(int)
    per_fold.insert(0, "records", labels.groupby("fold").size())
    print(f"records found: {n_found}  read: {len(reference)}  kept (>= 1 of the {len(classes)} classes): "
          f"{len(labels)}  skipped: {len(errors) + n_unlabelled}")
    if n_unlabelled:
        print(f"  skipped, none of the {len(classes)} classes: {n_unlabelled}")
    for reason, k in Counter(failure_kind(e) for e in errors).most_common():
        print(f"  skipped, {reason}: {k}")
    if clipped:
        print(f"  kept but stored clipped at ±32.767 mV: {len(clipped)} (see the `clipped:` lines and "
              f"signals_index.csv)")
    print("label counts: " + "  ".join(f"{c} {k}" for c, k in counts.items()))
    print("per fold:\n" + per_fold.to_string())
    return {"found": n_found, "read": len(reference), "kept": len(labels), "unlabelled": n_unlabelled,
            "errors": errors, "clipped": clipped, "label_counts": counts,
            "per_fold": per_fold.reset_index().to_dict("records")}
