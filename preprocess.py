"""Read every record once: write reference.csv, labels.csv (folds) and the signal cache.

    python preprocess.py --data-dir data/CPSC                         # outputs beside the records
    python preprocess.py --data-dir ro/records --out data/real
    python preprocess.py --data-dir data/ptbxl --labels superdiagnostic
    python preprocess.py --data-dir data/ptbxl --out data/ptbxl_all --labels all --cache-rate 100
    python preprocess.py --data-dir data/ptbxl --out data/ptbxl_rhythm --labels rhythm --signals-from data/ptbxl_all

Reads any layout of the registry in utils/layouts.py: WFDB records of the PhysioNet/CinC 2020-2021
releases (`A0001.hea` + a .mat or .dat signal in any WFDB format, SNOMED-CT `# Dx:` codes), the original
CPSC2018 layout (`.mat` struct ECG + `REFERENCE.csv`) and PTB-XL (ptbxl_database.csv, records500/, or
records100/ at --cache-rate 100). --labels picks the label set: cpsc9 (the default; any layout) or,
for PTB-XL, one of the benchmark's six tasks, whose classes are the statements (or their
diagnostic_subclass / diagnostic_class) of scp_statements.csv that some record carries: all,
diagnostic, subdiagnostic, superdiagnostic, form, rhythm. Records with none of the set's classes are
counted and left out. Folds are seeded and stratified, except where the database fixes them (PTB-XL's
strat_fold; train 1-8, validation 9, test 10).

--cache-rate is the rate the cache is stored at (recorded in preprocess.json; every later stage reads
it from there; main.py's --sample-rate is the rate the model sees, resampled from the cache's). --signals-from DIR writes a label set's folder over the signal cache of DIR, a folder
preprocessed from the same records at the same rate (hard links, no decoding): prepare PTB-XL once with
--labels all, then each other task from it.

Records are listed first (labels, folds) without decoding any signal; the labelled ones are then
decoded one at a time by worker processes, resampled to the cache's rate and streamed as int16 µV into
`signals.npy` (12 x total samples, memory-mapped by later stages; `signals_index.csv` gives each
record's span), so memory does not grow with the number of records. Outputs are rebuilt only when the
inputs or settings changed (or with --force); each is written to a temporary file and renamed, and the
manifest preprocess.json, written last, says which outputs belong together. One run at a time writes
a folder (the lock file `.lock` in it); a second one stops with an error naming the first's pid.

Never a silently wrong signal: a record whose header names another record's signal file, WFDB's
invalid-sample value (NaN) in one of its leads, or conflicting labels is skipped and reported. Samples
beyond the cache's int16 range (±32.767 mV, e.g. a 40 mV DC offset) are stored clipped, and reported:
a `clipped` count per record in signals_index.csv and the manifest, and a `clipped:` line per record
naming its leads (the record is kept: a few clipped pacing spikes are harmless; a flat lead is the
user's call, not a silent one).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from utils.cache import (LABELS_CSV, MANIFEST_JSON, PREPROCESS_OUTPUTS, REFERENCE_CSV, CacheFile, derive_label_task,
                         input_files, preprocess_key, stream_signal_cache, summarise_dataset, write_index, write_span)
from utils.errors import PipelineError, RecordError, script_main
from utils.folds import FOLD_RULES, N_FOLDS, benchmark_fold_tokens, benchmark_folds, stratified_folds
from utils.cli import seed_int
from utils.files import check_writable, write_csv
from utils.manifest import outputs_current, rebuild_unless_current, remove_stale_temporaries, write_manifest
from utils.parallel import parallel_imap
from utils.labels import ICBEB_STATEMENTS, LABEL_SETS, LEADS, LabelSet, get_label_set
from utils.layouts import PTBXL_SPLIT, Entry, Layout, detect_layout, drop_duplicate_names, read_entry
from utils.records import SAMPLE_RATE, clipped_per_lead, resample, to_microvolts
from utils.cli import MAX_WORKERS, bounded_int, flag_error, folder_path
from utils.defaults import DEFAULT_DATA_DIR


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=folder_path, default=DEFAULT_DATA_DIR, help="folder with the records")
    p.add_argument("--out", dest="out_dir", type=folder_path, default=None,
                   help="where outputs go (default: --data-dir)")
    p.add_argument("--labels", default="cpsc9", choices=sorted(LABEL_SETS),
                   help="label set: cpsc9, or a PTB-XL task (all, diagnostic, subdiagnostic, superdiagnostic, "
                        "form, rhythm)")
    p.add_argument("--cache-rate", type=bounded_int(1, 10_000), default=None,
                   help=f"rate the cache is stored at, Hz, %(type)s (default {SAMPLE_RATE}; with --signals-from, "
                        f"DIR's). PTB-XL at 100 reads records100/ as is")
    p.add_argument("--sample-rate", dest="model_rate", default=None, help=argparse.SUPPRESS)  # main.py's, not ours
    p.add_argument("--signals-from", type=folder_path, default=None, metavar="DIR",
                   help="share the signal cache of DIR, preprocessed from the same records and rate (hard links; "
                        "nothing decoded): this label set gets its own labels.csv and manifest in --out")
    p.add_argument("--seed", type=seed_int, default=42, help="seed of the stratified fold assignment, %(type)s")
    p.add_argument("--folds", choices=FOLD_RULES, default="stratified",
                   help="stratified: seeded, on the labels (the default); benchmark: the PTB-XL benchmark's procedure "
                        "for ICBEB2018 (labels + sex + age bands, one patient a record, no seed) with its split: "
                        "train 1-8, validation 9, test 10. A database with its own folds (PTB-XL) keeps them")
    p.add_argument("--num-workers", type=bounded_int(0, MAX_WORKERS), default=os.cpu_count() or 1,
                   help="processes decoding records (0 or 1: this process), %(type)s")
    p.add_argument("--force", action="store_true", help="rebuild even when outputs are current")
    args = p.parse_args(argv)
    if args.model_rate is not None:
        flag_error(p, "--sample-rate", f"the cache's rate is --cache-rate {args.model_rate} (--sample-rate is the "
                                       f"model's input rate, main.py's)")
    if args.signals_from is not None and args.out_dir is None:
        p.error("--signals-from needs --out (the shared folder itself is DIR)")
    return args


def decode(task: tuple[str, Entry, tuple[str, int] | None, int]) -> tuple[str, dict | str]:
    """One record -> ("ok", {info, length[, signal]}) or ("error", message). With a target (cache file,
    column) the int16 µV signal at the cache's rate is written there by this process and not returned."""
    layout, entry, target, rate = task
    try:
        hdr, mv = read_entry((layout, entry))
        mv = resample(mv, hdr.sample_rate, rate)
        clipped = {lead: int(k) for lead, k in zip(LEADS, clipped_per_lead(mv)) if k}
        signal = to_microvolts(mv)
        if target is not None:
            if signal.shape[1] != entry.length:
                raise RecordError(f"{entry.path}: {signal.shape[1]} samples decoded, header announced {entry.length}")
            write_span(target[0], target[1], signal)
    except RecordError as e:
        return "error", str(e)
    except Exception as e:  # an unexpected failure in one record must not stop the other 6,876
        return "error", f"{entry.path}: {type(e).__name__}: {e}"
    info = {"sample_rate": hdr.sample_rate, "signal_len": hdr.sig_len, "age": hdr.age, "sex": hdr.sex}
    return "ok", {"info": info, "length": signal.shape[1], "clipped": clipped,
                  **({} if target else {"signal": signal})}


def decode_into_cache(layout: Layout, entries: list[Entry], out_dir: Path, workers: int, rate: int = SAMPLE_RATE
                      ) -> tuple[list[Entry], dict[str, dict], list[str], dict[str, str]]:
    """Decode the entries in parallel into the cache; returns the entries kept, their decoded header
    facts, the skip messages and, for records stored clipped, a message each (by id). Memory holds a
    few records, never all of them: when the headers gave
    every length, each worker writes its records in place into the memory-mapped cache file (a record
    that fails leaves its span unused and out of the index); otherwise (the original CPSC2018 layout has
    no headers) the signals are streamed back in order and appended."""
    kept, facts, errors, clipped = [], {}, [], {}
    lengths = [e.length for e in entries]
    in_place = None not in lengths
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64) if in_place else None
    cache, n_clipped = None, {}

    def decoded():
        # strict: zip then also runs the results to their end, so the pool is closed here, in order, and a
        # Ctrl-C during that close is raised, not lost in a generator finalised by the garbage collector
        results = parallel_imap(decode, tasks, workers, "decode", chunksize=16)
        for entry, (status, value) in zip(entries, results, strict=True):
            if status == "error":
                errors.append(value)
                yield entry.pid, None
                continue
            kept.append(entry)
            facts[entry.pid] = value["info"]
            if value["clipped"]:
                clipped[entry.pid] = clipped_message(entry, value["clipped"], value["length"])
                n_clipped[entry.pid] = sum(value["clipped"].values())
            yield entry.pid, value.get("signal")

    try:
        cache = CacheFile(out_dir, int(starts[-1])) if in_place else None
        tasks = [(layout.name, e, (str(cache.tmp), int(starts[i])) if in_place else None, rate)
                 for i, e in enumerate(entries)]
        if in_place:
            slot = {e.pid: i for i, e in enumerate(entries)}
            for _ in decoded():  # the workers write; here only the bookkeeping
                pass
            write_index(out_dir, [e.pid for e in kept], [int(starts[slot[e.pid]]) for e in kept],
                        [e.length for e in kept], [n_clipped.get(e.pid, 0) for e in kept])
            cache.commit()
        else:
            stream_signal_cache(out_dir, decoded(), n_clipped)
    finally:
        if cache is not None and cache.tmp.exists():
            cache.discard()
    return kept, facts, errors, clipped


def clipped_message(entry: Entry, per_lead: dict[str, int], length: int) -> str:
    leads = ", ".join(f"{lead} {k}" for lead, k in per_lead.items())
    return (f"{entry.path}: samples beyond the cache's range ±32.767 mV stored clipped (of {length} per lead: "
            f"{leads}); kept, counted in signals_index.csv")


def reference_row(entry: Entry, facts: dict | None) -> dict:
    return {"patient_id": entry.pid, "sample_rate": np.nan, "signal_len": np.nan, "age": np.nan, "sex": "Unknown",
            "dx": "", **entry.info, **(facts or {})}


@script_main
def main(argv=None) -> None:
    args = parse_args(argv)
    out_dir = args.out_dir or args.data_dir
    if args.signals_from is not None:
        derive_label_task(args.signals_from, out_dir, args.labels, args.data_dir, args.seed, args.num_workers,
                          args.force, args.cache_rate)
        return
    args.cache_rate = args.cache_rate or SAMPLE_RATE
    layout = detect_layout(args.data_dir)
    entries = layout.list_records(args.data_dir, get_label_set(args.labels), args.num_workers, args.cache_rate)
    label_set = layout.label_set_for(args.data_dir, get_label_set(args.labels), entries)
    if layout.fixed_split:
        args.folds = "stratified"  # the database's own folds (PTB-XL's strat_fold are the benchmark's)
    key = preprocess_key(layout.name, label_set.as_dict(), args.seed, args.cache_rate,
                         input_files(layout, entries, args.data_dir), args.folds)
    current = f"{out_dir}: outputs are current for these {len(entries)} records (use --force to rebuild)"
    if not args.force and outputs_current(out_dir / MANIFEST_JSON, key):
        print(current)
        return
    check_writable(out_dir, "use --out DIR to write the outputs elsewhere" if args.out_dir is None else "")

    def rebuild() -> None:
        if (out_dir / MANIFEST_JSON).exists():
            print(f"{out_dir}: inputs or settings changed since the last run (or --force); rebuilding outputs")
        build(args, layout, label_set, entries, out_dir, key)

    rebuild_unless_current(out_dir / MANIFEST_JSON, key, rebuild, what=f"{out_dir} (preprocess outputs)",
                           current=current, force=args.force)


def build(args: argparse.Namespace, layout: Layout, label_set: LabelSet, entries: list[Entry], out_dir: Path,
          key: str) -> None:
    """Decode, fold and write every output, the manifest last (the caller holds the folder's lock)."""
    listed, errors = [e for e in entries if e.error is None], [e.error for e in entries if e.error is not None]
    if not listed:
        for e in errors:
            print(f"skipped: {e}", file=sys.stderr)
        raise PipelineError(f"none of the {len(entries)} records in {args.data_dir} could be used")
    unique, dropped = drop_duplicate_names(listed)
    errors += dropped
    labelled = [e for e in unique if e.labels is not None and e.labels.any()]
    unlabelled = [e for e in unique if e.labels is None or not e.labels.any()]
    if not labelled:
        raise PipelineError(f"no record in {args.data_dir} carries any of the classes {', '.join(label_set.classes)}"
                            f" (label set {label_set.name}; {len(errors)} record(s) could not be read)")
    print(f"reading {len(labelled)} labelled {layout.name} records from {args.data_dir} "
          f"({len(entries)} listed, label set {label_set.name}, {len(label_set.classes)} classes, "
          f"cache at {args.cache_rate} Hz)")

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_JSON).unlink(missing_ok=True)  # outputs are incomplete until it is rewritten
    remove_stale_temporaries(out_dir, [*PREPROCESS_OUTPUTS, MANIFEST_JSON])  # left by a killed run
    kept, facts, decode_errors, clipped = decode_into_cache(layout, labelled, out_dir, args.num_workers,
                                                            args.cache_rate)
    errors += decode_errors
    for e in errors:
        print(f"skipped: {e}", file=sys.stderr)
    for message in clipped.values():
        print(f"clipped: {message}", file=sys.stderr)
    if not kept:
        raise PipelineError(f"none of the {len(labelled)} labelled records in {args.data_dir} could be decoded")
    reference = pd.DataFrame([reference_row(e, facts.get(e.pid)) for e in sorted(kept + unlabelled,
                                                                                   key=lambda e: str(e.path))])
    y = np.stack([e.labels for e in kept])
    labels = pd.DataFrame(y, columns=list(label_set.classes))
    labels.insert(0, "patient_id", [e.pid for e in kept])
    if layout.fixed_split:
        labels["fold"] = [e.fold for e in kept]
    elif args.folds == "benchmark":
        labels["fold"] = reference_folds(kept, facts, label_set)
    else:
        labels["fold"] = stratified_folds(y, N_FOLDS, args.seed)
    split = layout.fixed_split or (PTBXL_SPLIT if args.folds == "benchmark" else None)
    write_csv(reference, out_dir / REFERENCE_CSV)
    write_csv(labels, out_dir / LABELS_CSV)
    summary = summarise_dataset(len(entries), list(label_set.classes), reference, labels, errors, len(unlabelled), clipped)
    write_manifest(out_dir / MANIFEST_JSON, key, [out_dir / f for f in PREPROCESS_OUTPUTS],
                   layout=layout.name, label_set=label_set.as_dict(), fixed_split=split, folds=args.folds,
                   seed=args.seed, data_dir=str(args.data_dir), sample_rate=args.cache_rate, **summary)


def reference_folds(kept: list[Entry], facts: dict[str, dict], label_set: LabelSet) -> list[int]:
    """The PTB-XL benchmark's folds of the kept records (utils.folds.benchmark_folds), the records numbered
    in sorted name order (the reference numbers them in its directory listing's order, unpublished), each
    record's classes as the reference's ICBEB2018 statements, with its sex and age."""
    order = sorted(range(len(kept)), key=lambda i: kept[i].pid)
    names = [ICBEB_STATEMENTS.get(c, c) for c in label_set.classes]
    info = [facts.get(kept[i].pid, {}) for i in order]
    tokens = benchmark_fold_tokens([[names[k] for k in np.flatnonzero(kept[i].labels)] for i in order],
                                   [f.get("sex", "Unknown") for f in info],
                                   [float(f.get("age")) if f.get("age") is not None else float("nan") for f in info])
    folds = np.zeros(len(kept), dtype=np.int64)
    folds[order] = benchmark_folds(tokens, N_FOLDS)
    return folds.tolist()


if __name__ == "__main__":
    main()
