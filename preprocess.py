"""Read every record once: write reference.csv, labels.csv (seeded, stratified folds) and the signal cache.

    python preprocess.py --data-dir data/CPSC            # outputs beside the records
    python preprocess.py --data-dir ro/records --out-dir data/real

Reads the WFDB layout of the PhysioNet/CinC 2020-2021 releases (`A0001.hea` + `.mat`) or the original
CPSC2018 layout (`.mat` struct ECG + `REFERENCE.csv`). Every kept record is decoded once, resampled to
500 Hz and stored as int16 µV in `signals.npy` (12 x total samples, memory-mapped by later stages) with
`signals_index.csv` giving each record's span. Outputs are rebuilt only when the inputs or settings
changed (or with --force), and each is written to a temporary file and renamed.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from utils import (CLASSES, LABELS_CSV, LEADS, MANIFEST_JSON, N_FOLDS, REFERENCE_CSV, SAMPLE_RATE, SIGNALS_INDEX_CSV,
                   SIGNALS_NPY, RecordError, atomic_write, check_writable, dx_to_labels, file_fingerprint, fingerprint,
                   parallel_map, positive_int, read_cpsc_record, read_cpsc_reference, read_wfdb_record, resample,
                   stratified_folds, to_microvolts, write_csv, write_json)

CACHE_VERSION = 1  # bump when the cache format changes, so old caches are rebuilt


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/CPSC"), help="folder with the records")
    p.add_argument("--out-dir", type=Path, default=None, help="where outputs go (default: --data-dir)")
    p.add_argument("--seed", type=int, default=42, help="seed of the stratified fold assignment")
    p.add_argument("--num-workers", type=positive_int, default=os.cpu_count() or 1, help="processes decoding records")
    p.add_argument("--force", action="store_true", help="rebuild even when outputs are current")
    return p.parse_args(argv)


def find_records(data_dir: Path) -> tuple[str, list[Path]]:
    """('wfdb', headers) or ('cpsc2018', .mat files); WFDB wins when both are present."""
    if not data_dir.is_dir():
        raise SystemExit(f"error: data directory {data_dir} does not exist")
    headers = sorted(data_dir.rglob("*.hea"))
    if headers:
        return "wfdb", headers
    mats = sorted(data_dir.rglob("*.mat"))
    if mats and (data_dir / "REFERENCE.csv").exists():
        return "cpsc2018", mats
    if mats:
        raise SystemExit(f"error: {data_dir} has .mat files but neither .hea headers nor REFERENCE.csv")
    raise SystemExit(f"error: no records (*.hea, or *.mat + REFERENCE.csv) found in {data_dir}")


def load_one(task: tuple[str, Path, np.ndarray | str | None]) -> dict:
    """Decode one record -> row for reference.csv, labels and int16 signal; or an error message."""
    layout, path, cpsc_labels = task
    try:
        if isinstance(cpsc_labels, str):  # its REFERENCE.csv row is malformed
            raise RecordError(cpsc_labels)
        if layout == "wfdb":
            hdr, mv = read_wfdb_record(path)
            labels = dx_to_labels(hdr.dx)
            dx = ",".join(hdr.dx)
        else:
            hdr, mv = read_cpsc_record(path)
            if cpsc_labels is None:
                raise RecordError(f"{path}: no row in REFERENCE.csv")
            labels = cpsc_labels
            dx = ",".join(CLASSES[i] for i in np.flatnonzero(labels))
        signal = to_microvolts(resample(mv, hdr.sample_rate, SAMPLE_RATE))
    except RecordError as e:
        return {"error": str(e)}
    except Exception as e:  # an unexpected failure in one record must not stop the other 6,876
        return {"error": f"{path}: {type(e).__name__}: {e}"}
    return {
        "path": path,
        "row": {"patient_id": path.stem, "sample_rate": hdr.sample_rate, "signal_len": hdr.sig_len,
                "age": hdr.age, "sex": hdr.sex, "dx": dx},
        "labels": labels,
        "signal": signal,
    }


def input_fingerprint(layout: str, paths: list[Path], data_dir: Path, seed: int) -> str:
    """Changes when any record file, REFERENCE.csv, the settings or the cache format change."""
    files = []
    for p in paths:
        files.append(file_fingerprint(p))
        if layout == "wfdb":
            mat = p.with_suffix(".mat")
            files.append(file_fingerprint(mat) if mat.exists() else "missing")
    ref = data_dir / "REFERENCE.csv"
    if layout == "cpsc2018":
        files.append(file_fingerprint(ref))
    return fingerprint([CACHE_VERSION, layout, seed, N_FOLDS, SAMPLE_RATE, files])


def is_current(out_dir: Path, key: str) -> bool:
    import json

    manifest = out_dir / MANIFEST_JSON
    outputs = [REFERENCE_CSV, LABELS_CSV, SIGNALS_NPY, SIGNALS_INDEX_CSV]
    if not manifest.exists() or not all((out_dir / f).exists() for f in outputs):
        return False
    try:
        return json.loads(manifest.read_text()).get("fingerprint") == key
    except ValueError:
        return False


def decode_all(layout: str, paths: list[Path], data_dir: Path, workers: int) -> tuple[list[dict], list[str]]:
    cpsc, bad_rows = read_cpsc_reference(data_dir / "REFERENCE.csv") if layout == "cpsc2018" else ({}, {})
    tasks = [(layout, p, bad_rows.get(p.stem, cpsc.get(p.stem))) for p in paths]
    results = parallel_map(load_one, tasks, workers, "decode", chunksize=16)
    good = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    unique, dropped = drop_duplicate_names(good)
    return unique, errors + dropped


def drop_duplicate_names(decoded: list[dict]) -> tuple[list[dict], list[str]]:
    """One copy per record name (ids must be unique). The rule, deterministic: among copies with the
    same name, keep the first, in sorted path order, that carries any of the classes (else the first);
    every other copy is reported with both paths."""
    copies: dict[str, list[dict]] = {}
    for r in decoded:
        copies.setdefault(r["row"]["patient_id"], []).append(r)
    keep, dropped = {}, []
    for pid, group in copies.items():
        group = sorted(group, key=lambda r: str(r["path"]))
        kept = next((r for r in group if r["labels"].any()), group[0])
        keep[pid] = kept
        dropped += [f"{r['path']}: duplicate record name, skipped (kept {kept['path']})"
                    for r in group if r is not kept]
    return [r for r in decoded if keep[r["row"]["patient_id"]] is r], dropped


def write_cache(kept: list[dict], out_dir: Path) -> pd.DataFrame:
    """signals.npy (12, total) int16 µV, filled in place through a memory map, then renamed."""
    lengths = np.array([r["signal"].shape[1] for r in kept], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])

    def fill(tmp: Path) -> None:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(len(LEADS), int(lengths.sum())))
        for r, s, n in zip(kept, starts, lengths):
            arr[:, s:s + n] = r["signal"]
        arr.flush()
        del arr

    atomic_write(out_dir / SIGNALS_NPY, fill)
    index = pd.DataFrame({"patient_id": [r["row"]["patient_id"] for r in kept], "start": starts, "length": lengths})
    write_csv(index, out_dir / SIGNALS_INDEX_CSV)
    return index


def failure_kind(message: str) -> str:
    """A skip message without its file, quoted values and numbers, so like failures count together."""
    reason = message.split(": ", 1)[-1].split(" (")[0]
    return re.sub(r"\s+", " ", re.sub(r"'[^']*'|\S*\d\S*", "", reason)).strip(" ,;")


def report(n_found: int, reference: pd.DataFrame, labels: pd.DataFrame, errors: list[str], n_unlabelled: int) -> dict:
    counts = {c: int(labels[c].sum()) for c in CLASSES}
    per_fold = labels.groupby("fold")[list(CLASSES)].sum().astype(int)
    per_fold.insert(0, "records", labels.groupby("fold").size())
    print(f"records found: {n_found}  read: {len(reference)}  kept (>= 1 of the 9 classes): {len(labels)}  "
          f"skipped: {len(errors) + n_unlabelled}")
    if n_unlabelled:
        print(f"  skipped, none of the nine classes: {n_unlabelled}")
    reasons = Counter(failure_kind(e) for e in errors)
    for reason, k in reasons.most_common():
        print(f"  skipped, {reason}: {k}")
    print("label counts: " + "  ".join(f"{c} {k}" for c, k in counts.items()))
    print("per fold:\n" + per_fold.to_string())
    return {"found": n_found, "read": len(reference), "kept": len(labels), "unlabelled": n_unlabelled,
            "errors": errors, "label_counts": counts, "per_fold": per_fold.reset_index().to_dict("records")}


def main(argv=None) -> None:
    args = parse_args(argv)
    out_dir = args.out_dir or args.data_dir
    layout, paths = find_records(args.data_dir)
    key = input_fingerprint(layout, paths, args.data_dir, args.seed)
    if not args.force and is_current(out_dir, key):
        print(f"{out_dir}: outputs are current for these {len(paths)} records (use --force to rebuild)")
        return
    if (out_dir / MANIFEST_JSON).exists():
        print(f"{out_dir}: inputs or settings changed since the last run (or --force); rebuilding outputs")
    check_writable(out_dir, "use --out-dir DIR to write the outputs elsewhere" if args.out_dir is None else "")
    print(f"reading {len(paths)} {layout} records from {args.data_dir}")
    good, errors = decode_all(layout, paths, args.data_dir, args.num_workers)
    for e in errors:
        print(f"skipped: {e}", file=sys.stderr)
    if not good:
        raise SystemExit(f"error: none of the {len(paths)} records in {args.data_dir} could be used")
    reference = pd.DataFrame([r["row"] for r in good])
    kept = [r for r in good if r["labels"].any()]
    if not kept:
        raise SystemExit(f"error: no record in {args.data_dir} carries any of the classes {', '.join(CLASSES)}")
    y = np.stack([r["labels"] for r in kept])
    labels = pd.DataFrame(y, columns=list(CLASSES))
    labels.insert(0, "patient_id", [r["row"]["patient_id"] for r in kept])
    labels["fold"] = stratified_folds(y, N_FOLDS, args.seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_JSON).unlink(missing_ok=True)  # outputs are incomplete until it is rewritten
    for name in (SIGNALS_NPY, SIGNALS_INDEX_CSV, REFERENCE_CSV, LABELS_CSV, MANIFEST_JSON):
        for stale in out_dir.glob(f".{name}.*.tmp"):  # left by a run that was killed while writing
            stale.unlink(missing_ok=True)
    write_cache(kept, out_dir)
    write_csv(reference, out_dir / REFERENCE_CSV)
    write_csv(labels, out_dir / LABELS_CSV)
    summary = report(len(paths), reference, labels, errors, len(good) - len(kept))
    write_json({"fingerprint": key, "layout": layout, "seed": args.seed, "data_dir": str(args.data_dir),
                "sample_rate": SAMPLE_RATE, **summary}, out_dir / MANIFEST_JSON)  # last: marks outputs complete


if __name__ == "__main__":
    main()
