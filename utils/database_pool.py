"""Several preprocessed databases pooled into one preprocess folder, for leave-one-database-out training.

The pooled folder is an ordinary preprocess folder (signals.npy, signals_index.csv, labels.csv,
reference.csv, preprocess.json), so training, evaluation and SHAP read it like any database. Record
ids are prefixed with their database's name (`georgia_E0001`) so two sources' ids never collide; each
record keeps its own fold, and the pooled split is the seeded permutation of folds (no source's fixed
split applies to the mix). The signals are copied in fixed-size chunks: memory does not grow with the
databases' size. Rebuilt only when a source changed (the manifest's key holds the sources' fingerprints).
Each record keeps its `clipped` count, and the pooled manifest lists the clipped records, so clipping
stays as visible as in each source.

pool.json records which databases (by real path) a pool folder holds. Rebuilt from other databases,
the folder's runs/ is removed: those runs were trained on other records (their data fingerprint would
refuse them anyway; removing them lets a new run start instead of an error).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from utils.cache import (LABELS_CSV, MANIFEST_JSON, PREPROCESS_OUTPUTS, REFERENCE_CSV, SIGNALS_NPY, data_label_set,
                         preprocess_manifest, write_index)
from utils.errors import PipelineError
from utils.files import atomic_write, fingerprint, write_csv, write_json
from utils.manifest import rebuild_unless_current, write_manifest
from utils.labels import LEADS
from utils.records import SAMPLE_RATE

__all__ = ["POOL_JSON", "pool_databases"]

CHUNK = 1 << 20  # samples copied per step (24 MB of int16)
POOL_JSON = "pool.json"


def _drop_runs_of_other_sources(out: Path, sources: list[str]) -> None:
    """Remove out/runs when the folder last pooled other databases (or says nothing of what it pooled)."""
    try:
        before = json.loads((out / POOL_JSON).read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        before = None
    runs = out / "runs"
    if before != sources and runs.is_dir():
        was = ", ".join(before) if before else "unrecorded databases"
        print(f"{out}: rebuilt from {', '.join(sources)} (it pooled {was}); removing its runs of the old data, {runs}")
        shutil.rmtree(runs)


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
    sources = [os.path.realpath(d) for d in data_dirs]

    def build() -> None:
        (out / MANIFEST_JSON).unlink(missing_ok=True)
        _drop_runs_of_other_sources(out, sources)
        write_json({"sources": sources, "names": list(names)}, out / POOL_JSON)
        clipped = {}
        labels, reference, index = [], [], []
        offset = 0
        for d, name in zip(data_dirs, names):
            part = pd.read_csv(d / "signals_index.csv", dtype={"patient_id": str})
            part["patient_id"] = name + "_" + part["patient_id"]
            if "clipped" not in part:  # caches written before clipping was counted
                part["clipped"] = 0
            clipped.update({f"{name}_{pid}": why for pid, why in
                            (preprocess_manifest(d).get("clipped") or {}).items()})
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
        write_index(out, index["patient_id"], index["start"], index["length"], index["clipped"])
        write_csv(pd.concat(labels, ignore_index=True), out / LABELS_CSV)
        write_csv(pd.concat(reference, ignore_index=True), out / REFERENCE_CSV)
        write_manifest(out / MANIFEST_JSON, key, [out / f for f in PREPROCESS_OUTPUTS], layout="pooled",
                       label_set=label_sets[0], fixed_split=None, sources=[str(d) for d in data_dirs],
                       data_dir=str(out), sample_rate=rates[0], clipped=clipped)
        print(f"{out}: pooled {len(index)} records of {', '.join(names)}")

    rebuild_unless_current(out / MANIFEST_JSON, key, build, what=f"pooled database {out}",
                           current=f"{out}: pooled data of {', '.join(names)} is current")
    return out
