"""The one writer of preprocess folders (what utils.cache reads): a database decoded from its records
(`preprocess`, what preprocess.py runs), a label task sharing another folder's signal cache
(`derive_label_task`) and databases pooled for leave-one-database-out training (`pool_databases`).
Each goes through utils.manifest.rebuild_unless_current: current outputs are kept, otherwise the
folder's lock is taken, the check repeated and the outputs rewritten, the manifest last.

Several label tasks of one database can share one signal cache: the task's folder gets its own
labels.csv and manifest and hard links to the decoded signals of another folder of the same records
and rate, so PTB-XL's 21,799 records are decoded once for its six tasks.

A pooled folder is an ordinary preprocess folder whose record ids are prefixed with their database's
name (`georgia_E0001`) so two sources' ids never collide; each record keeps its own fold and its
`clipped` count, and the pooled split is the seeded permutation of folds (no source's fixed split
applies to the mix). Its signals are copied in fixed-size chunks: memory does not grow with the
databases' size. pool.json records which databases (by real path) a pool folder holds; rebuilt from
other databases, the folder's runs/ is removed: those runs were trained on other records (their data
fingerprint would refuse them anyway; removing them lets a new run start instead of an error).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from utils.cache import (LABELS_CSV, MANIFEST_JSON, PREPROCESS_OUTPUTS, REFERENCE_CSV, SIGNALS_INDEX_CSV, SIGNALS_NPY,
                         CacheFile, data_label_set, input_files, preprocess_key, preprocess_manifest,
                         stream_signal_cache, summarise_dataset, write_index, write_span)
from utils.errors import PipelineError, RecordError
from utils.files import atomic_write, check_writable, fingerprint, read_records_csv, write_csv, write_json
from utils.folds import N_FOLDS, benchmark_fold_tokens, benchmark_folds, stratified_folds
from utils.labels import ICBEB_STATEMENTS, LEADS, LabelSet, get_label_set
from utils.layouts import LAYOUTS, PTBXL_SPLIT, Entry, Layout, detect_layout, drop_duplicate_names, read_entry
from utils.manifest import read_manifest, rebuild_unless_current, remove_stale_temporaries, write_manifest
from utils.parallel import parallel_imap
from utils.records import SAMPLE_RATE, clipped_per_lead, resample, to_microvolts

__all__ = ["PreprocessRequest", "preprocess", "derive_label_task", "link_or_copy", "POOL_JSON", "pool_databases"]


@dataclass(frozen=True)
class PreprocessRequest:
    """What preprocess.py's flags ask for (see its help): the records, where the folder goes, the label
    set, the cache's rate, the fold rule and seed, and, with `signals_from`, a folder whose signals to share."""
    data_dir: Path
    out_dir: Path | None = None  # None: beside the records
    labels: str = "cpsc9"
    cache_rate: int | None = None  # None: SAMPLE_RATE, or with signals_from that folder's
    seed: int = 42
    folds: str = "stratified"
    num_workers: int = 1
    force: bool = False
    signals_from: Path | None = None


def preprocess(request: PreprocessRequest) -> Path:
    """The preprocess folder `request` asks for, rebuilt unless current; returns it."""
    out_dir = request.out_dir or request.data_dir
    if request.signals_from is not None:
        return derive_label_task(request.signals_from, out_dir, request.labels, request.data_dir, request.seed,
                                 request.num_workers, request.force, request.cache_rate)
    data_dir = _as_recorded(request.data_dir, out_dir)
    request = replace(request, cache_rate=request.cache_rate or SAMPLE_RATE, data_dir=data_dir)
    layout = detect_layout(request.data_dir)
    entries = layout.list_records(request.data_dir, get_label_set(request.labels), request.num_workers,
                                  request.cache_rate)
    label_set = layout.label_set_for(request.data_dir, get_label_set(request.labels), entries)
    if layout.fixed_split:
        request = replace(request, folds="stratified")  # the database's own folds (PTB-XL's are the benchmark's)
    key = preprocess_key(layout.name, label_set.as_dict(), request.seed, request.cache_rate,
                         input_files(layout, entries, request.data_dir), request.folds)

    def rebuild() -> None:
        if (out_dir / MANIFEST_JSON).exists():
            print(f"{out_dir}: inputs or settings changed since the last run (or --force); rebuilding outputs")
        _build(request, layout, label_set, entries, out_dir, key)

    hint = "use --out DIR to write the outputs elsewhere" if request.out_dir is None else ""
    rebuild_unless_current(out_dir / MANIFEST_JSON, key, rebuild, what=f"{out_dir} (preprocess outputs)",
                           current=_current(out_dir, entries), force=request.force,
                           prepare=lambda: check_writable(out_dir, hint))
    return out_dir


def _as_recorded(data_dir: Path, out_dir: Path) -> Path:
    """`data_dir` as the outputs' record spells it when both name one folder (data/a and /home/me/data/a):
    the fingerprint holds the records' paths as spelt, so another spelling of the same folder would rebuild
    the outputs and make every run of them "other data"."""
    recorded = (read_manifest(out_dir / MANIFEST_JSON) or {}).get("data_dir")
    if isinstance(recorded, str) and recorded and os.path.realpath(recorded) == os.path.realpath(data_dir):
        return Path(recorded)
    return Path(data_dir)


def _current(out: Path, entries: list[Entry]) -> str:
    return f"{out}: outputs are current for these {len(entries)} records (use --force to rebuild)"


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
    """reference.csv's row of a record: what its listing says (PTB-XL's database row: age, sex, statements),
    completed and corrected by what its decoded header says; a header that does not know a fact (PTB-XL's
    headers carry no age or sex) leaves the listing's."""
    row = {"patient_id": entry.pid, "sample_rate": np.nan, "signal_len": np.nan, "age": np.nan, "sex": "Unknown",
           "dx": "", **entry.info}
    for key, value in (facts or {}).items():
        if not _unknown(value) or key not in row:
            row[key] = value
    return row


def _unknown(value) -> bool:
    return value is None or value == "Unknown" or (isinstance(value, float) and np.isnan(value))



def _build(args: PreprocessRequest, layout: Layout, label_set: LabelSet, entries: list[Entry], out_dir: Path,
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
    info = [reference_row(kept[i], facts.get(kept[i].pid)) for i in order]
    tokens = benchmark_fold_tokens([[names[k] for k in np.flatnonzero(kept[i].labels)] for i in order],
                                   [f.get("sex", "Unknown") for f in info],
                                   [float(f.get("age")) if f.get("age") is not None else float("nan") for f in info])
    folds = np.zeros(len(kept), dtype=np.int64)
    folds[order] = benchmark_folds(tokens, N_FOLDS)
    return folds.tolist()



def link_or_copy(src: Path, dst: Path) -> str:
    """`dst` becomes a hard link to `src` (a copy where the file system cannot link), put in place by a
    rename so a reader never sees half a file; returns "linked" or "copied". Outputs are only ever
    replaced by renames, never written in place, so a link never changes under the folder holding it."""
    tmp = Path(dst).parent / f".{Path(dst).name}.{os.getpid()}.link.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        atomic_write(dst, lambda t: shutil.copyfile(src, t))
        return "copied"
    try:
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return "linked"


def _decoded_as(manifest: dict) -> dict:
    """What a folder's signals were decoded for (label set, seed, fingerprint): its own manifest's, or,
    for a folder that shares another's signals, the one it took them from."""
    return manifest.get("decoded_as") or {k: manifest.get(k) for k in ("label_set", "seed", "fingerprint")}


def derive_label_task(src: Path, out: Path, labels: str, data_dir: Path | None = None, seed: int | None = None,
                      workers: int = 1, force: bool = False, sample_rate: float | None = None) -> Path:
    """A preprocess folder for label set `labels` at `out` that shares the signal cache of `src`, a
    preprocessed folder of the same records and rate: signals.npy, signals_index.csv and reference.csv
    are hard links to src's (copies where linking fails), labels.csv and preprocess.json its own. The
    records are listed again (no signal decoded) and checked to be exactly the ones src decoded, at
    src's rate; a record the task labels that src never decoded (src's label set left it out) is an
    error: give `src` the widest task (`all` for PTB-XL). Records the task leaves out stay in the shared
    signals but never enter labels.csv. Current outputs are kept (the fingerprint holds the task, the
    records and src's), unless `force`. `sample_rate`, when given, must be src's."""
    src, out = Path(src), Path(out)
    manifest = preprocess_manifest(src)
    if manifest.get("layout") not in LAYOUTS:
        raise PipelineError(f"{src} holds {manifest.get('layout')!r} data, not records preprocessed from one "
                            f"database; share the signals of a folder written by preprocess.py")
    if out.exists() and src.resolve() == out.resolve():
        raise PipelineError(f"--signals-from {src} is the output folder itself; give another --out")
    layout, rate = LAYOUTS[manifest["layout"]], manifest.get("sample_rate") or SAMPLE_RATE
    if sample_rate is not None and sample_rate != rate:
        raise PipelineError(f"{src}'s signal cache is at {rate:g} Hz, not {sample_rate:g} Hz; share a folder "
                            f"preprocessed at that rate")
    recorded = Path(manifest["data_dir"])
    if data_dir is None or (recorded.exists() and Path(data_dir).exists() and os.path.samefile(recorded, data_dir)):
        data_dir = recorded  # the folder as src spelled it: the same paths, the same file fingerprints
    label_set = get_label_set(labels)
    entries = layout.list_records(Path(data_dir), label_set, workers, rate)
    label_set = layout.label_set_for(Path(data_dir), label_set, entries)
    files = input_files(layout, entries, Path(data_dir))
    decoded = _decoded_as(manifest)
    if preprocess_key(layout.name, decoded["label_set"], decoded["seed"], rate, files) != decoded["fingerprint"]:
        origin = manifest.get("signals_from") or src
        raise PipelineError(f"{src} holds signals of other records than those now in {data_dir} at {rate:g} Hz "
                            f"(changed since, or another folder's); rerun `python preprocess.py --data-dir "
                            f"{data_dir} --out {origin}` first")
    seed = decoded["seed"] if seed is None else seed
    key = fingerprint([preprocess_key(layout.name, label_set.as_dict(), seed, rate, files), "signals",
                       decoded["fingerprint"]])

    def writable() -> None:
        out.mkdir(parents=True, exist_ok=True)
        check_writable(out)

    shared = _SharedSignals(src, manifest, layout, rate, Path(data_dir))
    rebuild_unless_current(out / MANIFEST_JSON, key, lambda: _write_task(shared, out, label_set, entries, seed, key),
                           what=f"{out} (preprocess outputs)", current=_current(out, entries), force=force,
                           prepare=writable)
    return out


class _SharedSignals(NamedTuple):
    """The folder whose signal cache a label task shares, with its manifest, layout, rate and records' folder."""
    src: Path
    manifest: dict
    layout: Layout
    rate: float
    data_dir: Path


def _write_task(shared: _SharedSignals, out: Path, label_set: LabelSet, entries: list[Entry], seed: int,
                key: str) -> None:
    src, manifest, layout, rate, data_dir = shared
    listed = [e for e in entries if e.error is None]
    unique, _ = drop_duplicate_names(listed)
    labelled = [e for e in unique if e.labels is not None and e.labels.any()]
    n_unlabelled = len(unique) - len(labelled)
    cached = set(read_records_csv(src / SIGNALS_INDEX_CSV, usecols=["patient_id"])["patient_id"])
    reference = pd.read_csv(src / REFERENCE_CSV, dtype={"patient_id": str}, keep_default_na=False)
    never = [e.pid for e in labelled if e.pid not in cached and e.pid in set(reference["patient_id"])]
    if never:
        raise PipelineError(f"{len(never)} record(s) labelled by {label_set.name} (e.g. {never[0]}) were never "
                            f"decoded into {src}: its label set {manifest['label_set']['name']} left them out; "
                            f"share the signals of a folder preprocessed with a label set covering them")
    kept = [e for e in labelled if e.pid in cached]  # the others failed to decode there (src's errors say why)
    if not kept:
        raise PipelineError(f"no record of {src}'s signal cache carries any of the classes of {label_set.name}")
    print(f"{out}: label set {label_set.name} ({len(label_set.classes)} classes) over the signals of {src} "
          f"({rate:g} Hz)")
    (out / MANIFEST_JSON).unlink(missing_ok=True)  # outputs are incomplete until it is rewritten
    remove_stale_temporaries(out, [*PREPROCESS_OUTPUTS, MANIFEST_JSON])
    how = {name: link_or_copy(src / name, out / name) for name in (SIGNALS_NPY, SIGNALS_INDEX_CSV, REFERENCE_CSV)}
    y = np.stack([e.labels for e in kept])
    table = pd.DataFrame(y, columns=list(label_set.classes))
    table.insert(0, "patient_id", [e.pid for e in kept])
    table["fold"] = [e.fold for e in kept] if layout.fixed_split else stratified_folds(y, N_FOLDS, seed)
    write_csv(table, out / LABELS_CSV)
    errors = list(manifest.get("errors", []))
    for e in errors:
        print(f"skipped: {e}", file=sys.stderr)
    clipped = {pid: m for pid, m in (manifest.get("clipped") or {}).items() if pid in set(table["patient_id"])}
    summary = summarise_dataset(len(entries), list(label_set.classes), reference, table, errors, n_unlabelled, clipped)
    write_manifest(out / MANIFEST_JSON, key, [out / f for f in PREPROCESS_OUTPUTS], layout=layout.name,
                   label_set=label_set.as_dict(), fixed_split=layout.fixed_split, seed=seed, data_dir=str(data_dir),
                   sample_rate=rate, signals_from=str(src), signals_shared=how[SIGNALS_NPY],
                   decoded_as=_decoded_as(manifest), **summary)

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


def _copy_signals(data_dirs: list[Path], total: int, tmp: Path) -> None:
    """The sources' signal caches one after another into a new cache at `tmp`, CHUNK samples at a time."""
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(len(LEADS), total))
    at = 0
    for d in data_dirs:
        src = np.load(d / SIGNALS_NPY, mmap_mode="r")
        for a in range(0, src.shape[1], CHUNK):
            n = min(CHUNK, src.shape[1] - a)
            arr[:, at + a:at + a + n] = src[:, a:a + n]
        at += src.shape[1]
    arr.flush()
    del arr


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
            part = read_records_csv(d / SIGNALS_INDEX_CSV)
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
        atomic_write(out / SIGNALS_NPY, lambda tmp: _copy_signals(data_dirs, offset, tmp))
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
