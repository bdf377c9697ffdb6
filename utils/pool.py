"""Several preprocessed databases pooled into one preprocess folder, for leave-one-database-out training.

The pooled folder is an ordinary preprocess folder (signals.npy, signals_index.csv, labels.csv,
reference.csv, preprocess.json), so training, evaluation and SHAP read it like any database. Record
ids are prefixed with their database's name (`georgia_E0001`) so two sources' ids never collide; each
record keeps its own fold, and the pooled split is the seeded permutation of folds (no source's fixed
split applies to the mix). The signals are copied in fixed-size chunks: memory does not grow with the
databases' size. Rebuilt only when a source changed (the manifest's key holds the sources' fingerprints).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from utils.cache import (LABELS_CSV, MANIFEST_JSON, PREPROCESS_OUTPUTS, REFERENCE_CSV, SIGNALS_NPY, data_label_set,
                         preprocess_manifest, write_index)
from utils.errors import PipelineError
from utils.io import atomic_write, exclusive_lock, fingerprint, outputs_current, write_csv, write_manifest
from utils.labels import LEADS
from utils.records import SAMPLE_RATE

__all__ = ["pool_databases"]

CHUNK = 1 << 20  # samples copied per step (24 MB of int16)


def pool_databases(data_dirs: Sequence[Path], out: Path, names: Sequence[str]) -> Path:
    """One preprocess folder holding every record of `data_dirs` (same label set), ids prefixed by `names`."""
    data_dirs = [Path(d) for d in data_dirs]
    label_sets = [data_label_set(d) for d in data_dirs]
    if any(ls != label_sets[0] for ls in label_sets):
        raise PipelineError("databases of different label sets cannot be pooled: "
                            + ", ".join(f"{d} ({ls['name']})" for d, ls in zip(data_dirs, label_sets)))
    rates = [preprocess_manifest(d).get("sample_rate") or SAMPLE_RATE for d in data_dirs]
    if len(set(rates)) > 1:
        raise PipelineError("databases whose signal caches have different rates cannot be pooled: "
                            + ", ".join(f"{d} ({r:g} Hz)" for d, r in zip(data_dirs, rates)))
    key = fingerprint(["pool", 1, [preprocess_manifest(d)["fingerprint"] for d in data_dirs], list(names)])
    out = Path(out)
    if outputs_current(out / MANIFEST_JSON, key):
        print(f"{out}: pooled data of {', '.join(names)} is current")
        return out
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / ".lock", f"pooled database {out}"):
        (out / MANIFEST_JSON).unlink(missing_ok=True)
        labels, reference, index = [], [], []
        offset = 0
        for d, name in zip(data_dirs, names):
            part = pd.read_csv(d / "signals_index.csv", dtype={"patient_id": str})
            part["patient_id"] = name + "_" + part["patient_id"]
            part["start"] += offset
            offset += int(np.load(d / SIGNALS_NPY, mmap_mode="r").shape[1])
            index.append(part)
            for table, file in ((labels, LABELS_CSV), (reference, REFERENCE_CSV)):
                t = pd.read_csv(d / file, dtype={"patient_id": str}, keep_default_na=False)
                t["patient_id"] = name + "_" + t["patient_id"]
                table.append(t)

        def copy_signals(tmp: Path) -> None:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(len(LEADS), offset))
            at = 0
            for d in data_dirs:
                src = np.load(d / SIGNALS_NPY, mmap_mode="r")
                for a in range(0, src.shape[1], CHUNK):
                    n = min(CHUNK, src.shape[1] - a)
                    arr[:, at + a:at + a + n] = src[:, a:a + n]
                at += src.shape[1]
            arr.flush()
            del arr

        atomic_write(out / SIGNALS_NPY, copy_signals)
        index = pd.concat(index, ignore_index=True)
        write_index(out, index["patient_id"], index["start"], index["length"])
        write_csv(pd.concat(labels, ignore_index=True), out / LABELS_CSV)
        write_csv(pd.concat(reference, ignore_index=True), out / REFERENCE_CSV)
        write_manifest(out / MANIFEST_JSON, key, [out / f for f in PREPROCESS_OUTPUTS], layout="pooled",
                       label_set=label_sets[0], fixed_split=None, sources=[str(d) for d in data_dirs],
                       data_dir=str(out), sample_rate=rates[0])
    print(f"{out}: pooled {len(index)} records of {', '.join(names)}")
    return out
