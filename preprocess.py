"""Read every record once: write reference.csv, labels.csv (folds) and the signal cache.

    python preprocess.py --data-dir data/CPSC                         # outputs beside the records
    python preprocess.py --data-dir ro/records --out data/real
    python preprocess.py --data-dir data/ptbxl --labels superdiagnostic

Reads any layout of the registry in utils/layouts.py: WFDB records of the PhysioNet/CinC 2020-2021
releases (`A0001.hea` + a .mat or .dat signal in any WFDB format, SNOMED-CT `# Dx:` codes), the original
CPSC2018 layout (`.mat` struct ECG + `REFERENCE.csv`) and PTB-XL (ptbxl_database.csv, records500/).
--labels picks the label set (cpsc9, the default, or superdiagnostic for PTB-XL); records with none
of its classes are counted and left out. Folds are seeded and stratified, except where the database
fixes them (PTB-XL's strat_fold; train 1-8, validation 9, test 10).

Records are listed first (labels, folds) without decoding any signal; the labelled ones are then
decoded one at a time by worker processes, resampled to 500 Hz and streamed as int16 µV into
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
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from utils import (LABEL_SETS, LABELS_CSV, LEADS, MANIFEST_JSON, N_FOLDS, PREPROCESS_OUTPUTS, REFERENCE_CSV,
                   SAMPLE_RATE, CacheFile, Entry, LabelSet, Layout, PipelineError, RecordError, check_writable,
                   clipped_per_lead, detect_layout, exclusive_lock, file_fingerprint, fingerprint, get_label_set,
                   outputs_current, parallel_imap, positive_int, read_entry, remove_stale_temporaries, resample,
                   script_main, seed_int, stratified_folds, stream_signal_cache, to_microvolts, write_csv,
                   write_index, write_manifest, write_span)
from utils.defaults import DEFAULT_DATA_DIR

CACHE_VERSION = 2  # bump when the cache format changes, so old caches are rebuilt


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with the records")
    p.add_argument("--out", dest="out_dir", type=Path, default=None,
                   help="where outputs go (default: --data-dir)")
    p.add_argument("--labels", default="cpsc9", choices=sorted(LABEL_SETS), help="label set")
    p.add_argument("--seed", type=seed_int, default=42, help="seed of the stratified fold assignment (0 to 2**32-1)")
    p.add_argument("--num-workers", type=positive_int, default=os.cpu_count() or 1, help="processes decoding records")
    p.add_argument("--force", action="store_true", help="rebuild even when outputs are current")
    return p.parse_args(argv)


def decode(task: tuple[str, Entry, tuple[str, int] | None]) -> tuple[str, dict | str]:
    """One record -> ("ok", {info, length[, signal]}) or ("error", message). With a target (cache file,
    column) the int16 µV signal at 500 Hz is written there by this process and not returned."""
    layout, entry, target = task
    try:
        hdr, mv = read_entry((layout, entry))
        mv = resample(mv, hdr.sample_rate, SAMPLE_RATE)
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


def input_fingerprint(layout: Layout, entries: list[Entry], data_dir: Path, label_set: LabelSet, seed: int) -> str:
    """Changes when any record file, label file, the settings or the cache format change."""
    files = [file_fingerprint(p) for p in layout.input_files(data_dir, entries)]
    return fingerprint([CACHE_VERSION, layout.name, label_set.as_dict(), seed, N_FOLDS, SAMPLE_RATE, files])


def drop_duplicate_names(entries: list[Entry]) -> tuple[list[Entry], list[str]]:
    """One copy per record name (ids must be unique). The rule, deterministic: among copies with the
    same name, keep the first, in sorted path order, that carries any of the classes (else the first);
    every other copy is reported with both paths."""
    copies: dict[str, list[Entry]] = {}
    for e in entries:
        copies.setdefault(e.pid, []).append(e)
    keep, dropped = {}, []
    for pid, group in copies.items():
        group = sorted(group, key=lambda e: str(e.path))
        kept = next((e for e in group if e.labels is not None and e.labels.any()), group[0])
        keep[pid] = kept
        dropped += [f"{e.path}: duplicate record name, skipped (kept {kept.path})" for e in group if e is not kept]
    return [e for e in entries if keep[e.pid] is e], dropped


def failure_kind(message: str) -> str:
    """A skip message without its file, quoted values and numbers, so like failures count together."""
    reason = message.split(": ", 1)[-1].split(" (")[0]
    return re.sub(r"\s+", " ", re.sub(r"'[^']*'|\S*\d\S*", "", reason)).strip(" ,;")


def decode_into_cache(layout: Layout, entries: list[Entry], out_dir: Path, workers: int
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
        tasks = [(layout.name, e, (str(cache.tmp), int(starts[i])) if in_place else None)
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


def summarise_dataset(n_found: int, classes: list[str], reference: pd.DataFrame, labels: pd.DataFrame, errors: list[str],
           n_unlabelled: int, clipped: dict[str, str]) -> dict:
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


def reference_row(entry: Entry, facts: dict | None) -> dict:
    return {"patient_id": entry.pid, "sample_rate": np.nan, "signal_len": np.nan, "age": np.nan, "sex": "Unknown",
            "dx": "", **entry.info, **(facts or {})}


@script_main
def main(argv=None) -> None:
    args = parse_args(argv)
    out_dir = args.out_dir or args.data_dir
    label_set = get_label_set(args.labels)
    layout = detect_layout(args.data_dir)
    entries = layout.list_records(args.data_dir, label_set, args.num_workers)
    key = input_fingerprint(layout, entries, args.data_dir, label_set, args.seed)
    if not args.force and outputs_current(out_dir / MANIFEST_JSON, key):
        print(f"{out_dir}: outputs are current for these {len(entries)} records (use --force to rebuild)")
        return
    check_writable(out_dir, "use --out DIR to write the outputs elsewhere" if args.out_dir is None else "")
    with exclusive_lock(out_dir / ".lock", f"{out_dir} (preprocess outputs)"):
        if not args.force and outputs_current(out_dir / MANIFEST_JSON, key):  # another run just wrote them
            print(f"{out_dir}: outputs are current for these {len(entries)} records (use --force to rebuild)")
            return
        if (out_dir / MANIFEST_JSON).exists():
            print(f"{out_dir}: inputs or settings changed since the last run (or --force); rebuilding outputs")
        build(args, layout, label_set, entries, out_dir, key)


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
          f"({len(entries)} listed, label set {label_set.name})")

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_JSON).unlink(missing_ok=True)  # outputs are incomplete until it is rewritten
    remove_stale_temporaries(out_dir, [*PREPROCESS_OUTPUTS, MANIFEST_JSON])  # left by a killed run
    kept, facts, decode_errors, clipped = decode_into_cache(layout, labelled, out_dir, args.num_workers)
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
    labels["fold"] = ([e.fold for e in kept] if layout.fixed_split else stratified_folds(y, N_FOLDS, args.seed))
    write_csv(reference, out_dir / REFERENCE_CSV)
    write_csv(labels, out_dir / LABELS_CSV)
    summary = summarise_dataset(len(entries), list(label_set.classes), reference, labels, errors, len(unlabelled), clipped)
    write_manifest(out_dir / MANIFEST_JSON, key, [out_dir / f for f in PREPROCESS_OUTPUTS],
                   layout=layout.name, label_set=label_set.as_dict(), fixed_split=layout.fixed_split,
                   seed=args.seed, data_dir=str(args.data_dir), sample_rate=SAMPLE_RATE, **summary)


if __name__ == "__main__":
    main()
