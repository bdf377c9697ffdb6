"""The database layouts preprocess.py reads, as a registry: one small reader per layout, one detection
function. Adding a layout is one `Layout(...)` plus one line in LAYOUTS.

A layout lists its records first (ids, labels over the chosen label set, folds when the database fixes
them, what the listing knows of age, sex and rate, each record's length at the cache's rate) without
decoding any signal, so unlabelled records are never decoded and preprocessing can stream; `read` then
decodes one listed record. A label set whose classes depend on the data (a PTB-XL task) is built from
the listing by the layout's `label_set_for`, which also labels the entries.
"""
from __future__ import annotations

import ast
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from utils.errors import PipelineError, RecordError
from utils.folds import N_FOLDS
from utils.parallel import parallel_map
from utils.labels import LabelSet, ptbxl_task
from utils.records import SAMPLE_RATE, Header, parse_header, read_cpsc_record, read_wfdb_record, resampled_length

__all__ = ["Entry", "Layout", "parse_headers", "refuse_foreign_signals", "WFDB", "read_cpsc_reference", "CPSC2018",
           "PTBXL_DATABASE", "PTBXL_STATEMENTS", "PTBXL_SPLIT", "PTBXL_LOW_RATE", "scp_codes", "read_scp_statements",
           "warn_unknown_statements",
           "PTBXL", "LAYOUTS", "detect_layout", "read_entry", "drop_duplicate_names"]


@dataclass
class Entry:
    """One listed record: what preprocess knows before decoding it."""
    pid: str
    path: Path                                   # what the layout's `read` opens
    labels: np.ndarray | None = None             # 0/1 over the label set's classes
    info: dict = field(default_factory=dict)     # reference.csv fields known from the listing
    fold: int | None = None                      # the database's own fold, when it has one
    error: str | None = None                     # why the record cannot be used (then it is skipped)
    length: int | None = None                    # samples at the cache's rate, when the header tells
    files: tuple[Path, ...] = ()                 # the signal files its header names (fingerprinted, checked)
    codes: tuple[str, ...] = ()                  # PTB-XL: the statements of its scp_codes


def _same_label_set(data_dir: Path, label_set: LabelSet, entries: list[Entry]) -> LabelSet:
    return label_set


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    detect: Callable[[Path], bool]
    list_records: Callable[..., list[Entry]]     # (folder, label set, worker processes, cache rate in Hz)
    read: Callable[[Entry], tuple[Header, np.ndarray]]   # header and mV (12, n) at the record's rate
    input_files: Callable[[Path, list[Entry]], list[Path]]  # what the outputs depend on (fingerprinted)
    fixed_split: dict | None = None              # the database's recommended split, by fold
    # (folder, label set, listed entries) -> the label set with its classes, entries labelled over them
    label_set_for: Callable[[Path, LabelSet, list[Entry]], LabelSet] = _same_label_set


def _header_info(hdr: Header) -> dict:
    return {"sample_rate": hdr.sample_rate, "signal_len": hdr.sig_len, "age": hdr.age, "sex": hdr.sex,
            "dx": ",".join(hdr.dx)}


def _parse_or_error(path: Path) -> Header | str:
    try:
        return parse_header(path)
    except RecordError as e:
        return str(e)


def parse_headers(paths: list[Path], workers: int) -> list[Header | str]:
    """Every header, parsed in parallel: a Header, or the message of why it cannot be read."""
    return parallel_map(_parse_or_error, paths, workers, "headers", chunksize=64)


def _with_header(entry: Entry, hdr: Header | str, rate: float = SAMPLE_RATE) -> Entry:
    """`entry` with its length at the cache's `rate` from the parsed header (or the header's error)."""
    if isinstance(hdr, str):
        entry.error = entry.error or hdr
        return entry
    # the parsed Header (3.4 KB) is not kept: the worker that decodes the record parses it again
    # (0.1 ms), which keeps the listing at ~1.3 KB a record (1 GB for MIMIC-IV-ECG's 800,000)
    entry.length = resampled_length(hdr.sig_len, hdr.sample_rate, rate)
    entry.files = tuple(entry.path.parent / name for name in dict.fromkeys(hdr.files))
    return entry


def _outside(name: str) -> bool:
    """A file name that leads out of the folder it is given relative to (absolute, or through `..`)."""
    return Path(name).is_absolute() or ".." in Path(name).parts


def refuse_foreign_signals(entries: list[Entry]) -> None:
    """Mark (entry.error) every record whose header would read another record's ECG as its own, naming
    both, so that no ECG enters the data twice under two records' labels and folds:
    - a signal file named outside the header's folder (absolute, or through `..`);
    - a signal file whose own header (same folder, same stem) is another listed record: A0002.hea naming
      A0001.mat is refused, A0001 is kept;
    - one signal file (the same file through any path or link) read by several of the remaining records:
      all of them are refused, there is no telling whose it is.
    A header naming a signal file of another stem that no other record claims (A0002.hea -> x.mat) is
    kept: WFDB allows it."""
    listed = {os.path.normpath(e.path): e.pid for e in entries}
    for e in entries:
        for f in e.files if e.error is None else ():
            owner = os.path.normpath(f.with_suffix(".hea"))
            if _outside(os.path.relpath(f, e.path.parent)):
                e.error = f"{e.path} (record {e.pid}): signal file {f} is outside the header's folder; refused"
            elif owner != os.path.normpath(e.path) and owner in listed:
                e.error = (f"{e.path} (record {e.pid}): its signal file {f.name} belongs to record {listed[owner]} "
                           f"({owner}); skipped (that ECG would be read twice, under two records' labels)")
            else:
                continue
            break
    claims: dict[str, list[tuple[Entry, Path]]] = {}
    for e in entries:
        for f in e.files if e.error is None else ():
            claims.setdefault(os.path.realpath(f), []).append((e, f))
    for group in claims.values():
        if len({id(e) for e, _ in group}) > 1:
            for e, f in group:
                others = ", ".join(sorted({f"record {o.pid} ({o.path})" for o, _ in group if o is not e}))
                e.error = e.error or (f"{e.path} (record {e.pid}): its signal file {f} is also read by {others}; "
                                      f"skipped (the same ECG under several records' labels)")


# --- WFDB records of the PhysioNet/CinC 2020-2021 releases: `# Dx:` SNOMED-CT codes, any signal format ------
def _wfdb_detect(data_dir: Path) -> bool:
    return next(data_dir.rglob("*.hea"), None) is not None


def _wfdb_list(data_dir: Path, label_set: LabelSet, workers: int = 1, rate: float = SAMPLE_RATE) -> list[Entry]:
    if not label_set.snomed:
        raise PipelineError(f"label set {label_set.name!r} has no SNOMED-CT map, so WFDB records with `# Dx:` "
                            f"codes cannot be labelled with it")
    paths = sorted(data_dir.rglob("*.hea"))
    entries = []
    for path, hdr in zip(paths, parse_headers(paths, workers)):
        entry = Entry(path.stem, path)
        if not isinstance(hdr, str):
            entry.labels, entry.info = label_set.from_snomed(hdr.dx), _header_info(hdr)
        entries.append(_with_header(entry, hdr, rate))
    refuse_foreign_signals(entries)
    return entries + _headerless_signals(data_dir, entries)


def _headerless_signals(data_dir: Path, entries: list[Entry]) -> list[Entry]:
    """A skipped entry for each .mat no header names (e.g. the CPSC2018 release's records, beside WFDB ones in
    one folder): counted and said, not silently left out of the data."""
    named = {os.path.normpath(f) for e in entries for f in (*e.files, e.path.with_suffix(".mat"))}
    return [Entry(p.stem, p, error=f"{p}: a .mat signal that no WFDB header (.hea) names: not read (a CPSC2018 "
                                   f"record? preprocess that release in a folder of its own, REFERENCE.csv beside it)")
            for p in sorted(data_dir.rglob("*.mat")) if os.path.normpath(p) not in named]


def _wfdb_inputs(data_dir: Path, entries: list[Entry]) -> list[Path]:
    """Each header and the signal files it names, whatever their names (for a header that could not be
    read, or a refused record, the .mat/.dat beside it: a file outside the folder is never touched)."""
    files = []
    for e in entries:
        if e.path.suffix == ".mat":  # a signal no header names: said and counted, never read (not the data's)
            continue
        files.append(e.path)
        named = e.files if e.error is None else ()
        files += named or [p for p in (e.path.with_suffix(".mat"), e.path.with_suffix(".dat")) if p.exists()]
    return files


def _read_wfdb_entry(entry: Entry) -> tuple[Header, np.ndarray]:
    return read_wfdb_record(entry.path)


WFDB = Layout("wfdb", "WFDB header + signal (.mat or .dat, any format), `# Dx:` SNOMED-CT codes",
              _wfdb_detect, _wfdb_list, _read_wfdb_entry, _wfdb_inputs)


# --- The original CPSC2018 release: .mat struct ECG + REFERENCE.csv (class numbers 1..9) ------------------
def read_cpsc_reference(path: Path, label_set: LabelSet) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """REFERENCE.csv of the original release: class numbers 1..n in the set's order -> 0/1 vectors per
    record, and, for a record that cannot be labelled, a message naming the file, record and why (that
    record is skipped and reported; the others are kept): a label that is not a class number, or several
    rows of one record with different labels (which one is right cannot be told; rows with the same
    labels are one row)."""
    n = len(label_set.classes)
    try:
        ref = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise RecordError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    rows: dict[str, list[tuple[int, np.ndarray | str]]] = {}
    for i, row in enumerate(ref.itertuples(index=False)):
        pid = str(row[0]).strip()
        y = np.zeros(n, dtype=np.int8)
        for col, value in zip(ref.columns[1:], row[1:]):
            v = str(value).strip()
            if not v:
                continue
            try:
                k = float(v)
            except ValueError:
                k = float("nan")
            if not (1 <= k <= n and k == int(k)):  # also false for nan; inf fails the range
                y = f"{path}: {col} {v!r} of {pid} is not a class number 1-{n}"
                break
            y[int(k) - 1] = 1
        rows.setdefault(pid, []).append((i + 2, y))  # file line: the header is line 1
    labels, errors = {}, {}
    for pid, found in rows.items():
        bad = next((y for _, y in found if isinstance(y, str)), None)
        distinct = {y.tobytes() for _, y in found if not isinstance(y, str)}
        if bad is not None:
            errors[pid] = bad
        elif len(distinct) > 1:
            lines = ", ".join(f"line {line} ({_class_numbers(y)})" for line, y in found)
            errors[pid] = f"{path}: {pid} has rows with different labels: {lines}; skipped"
        else:
            labels[pid] = found[0][1]
    return labels, errors


def _class_numbers(y: np.ndarray) -> str:
    return ",".join(str(k + 1) for k in np.flatnonzero(y)) or "none"


def _cpsc_detect(data_dir: Path) -> bool:
    return (data_dir / "REFERENCE.csv").exists() and next(data_dir.rglob("*.mat"), None) is not None


def _cpsc_list(data_dir: Path, label_set: LabelSet, workers: int = 1, rate: float = SAMPLE_RATE) -> list[Entry]:
    if not label_set.cpsc_numbers:
        raise PipelineError(f"label set {label_set.name!r} cannot be read from the original CPSC2018 layout "
                            f"(its REFERENCE.csv numbers the cpsc9 classes)")
    labels, bad = read_cpsc_reference(data_dir / "REFERENCE.csv", label_set)
    entries = []
    for path in sorted(data_dir.rglob("*.mat")):
        error = bad.get(path.stem) or (None if path.stem in labels else f"{path}: no row in REFERENCE.csv")
        y = labels.get(path.stem)
        entries.append(Entry(path.stem, path, y, {"dx": ",".join(label_set.classes[i] for i in np.flatnonzero(y))}
                             if y is not None else {}, error=error))
    return entries


CPSC2018 = Layout("cpsc2018", "original CPSC2018 release: .mat struct ECG + REFERENCE.csv", _cpsc_detect, _cpsc_list,
                  lambda e: read_cpsc_record(e.path),
                  lambda d, entries: [d / "REFERENCE.csv", *(e.path for e in entries)])


# --- PTB-XL in its own layout: ptbxl_database.csv, scp_statements.csv, records500/ and records100/ ----------
PTBXL_DATABASE, PTBXL_STATEMENTS = "ptbxl_database.csv", "scp_statements.csv"
PTBXL_SPLIT = {"train": list(range(1, 9)), "val": [9], "test": [10]}  # the PTB-XL benchmark's split
PTBXL_LOW_RATE = 100  # records100/ (filename_lr) holds every record at this rate: read as is, never resampled


def scp_codes(text: str) -> list[str]:
    """The statements of one `scp_codes` cell (a Python-literal dict {statement: likelihood in 0..100}); every
    key applies whatever its likelihood (rhythm and form statements carry 0). Spreadsheet-mangled codes
    such as 1.0AVB are read as 1AVB; a key with spaces around it is another statement, as in the
    benchmark (reported as missing from scp_statements.csv). ValueError quoting the cell when it is not
    such a dict; an empty cell is a damaged row too (PTB-XL writes {} for a record without statements)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("scp_codes is empty, not a dict of statements")
    try:
        codes = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        codes = None
    if not isinstance(codes, dict):
        raise ValueError(f"scp_codes {text!r} is not a dict of statements")
    for key, likelihood in codes.items():  # not read, as in the benchmark, but a damaged cell is no row to trust
        if isinstance(likelihood, bool) or not isinstance(likelihood, (int, float)) or not 0 <= likelihood <= 100:
            raise ValueError(f"scp_codes {text!r}: a likelihood is not a percentage ({key!r}: {likelihood!r}, not a "
                             f"number in 0..100)")
    return [re.sub(r"^(\d+)\.0(?=[A-Z])", r"\1", str(k)) for k in codes]  # unstripped: ' NORM ' is not NORM


def _ptbxl_detect(data_dir: Path) -> bool:
    return (data_dir / PTBXL_DATABASE).exists()


_TASK_COLUMNS = {"all": (), "diagnostic": ("diagnostic",), "form": ("form",), "rhythm": ("rhythm",),
                 "subdiagnostic": ("diagnostic", "diagnostic_subclass"),
                 "superdiagnostic": ("diagnostic", "diagnostic_class")}


def read_scp_statements(path: Path, task: str) -> pd.DataFrame:
    """scp_statements.csv (first column: the statement), checked for the columns `task` needs: a
    PipelineError naming the file and what is missing or malformed."""
    if not Path(path).exists():
        raise PipelineError(f"{path} not found: the PTB-XL task {task!r} takes its statements from it")
    try:
        statements = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    missing = [c for c in _TASK_COLUMNS[task] if c not in statements.columns]
    if missing:
        raise PipelineError(f"{path} has no {', '.join(missing)} column (the {task} task needs it)")
    statements = statements[statements.index.notna()]  # rows without a statement (a spreadsheet's empty rows)
    names = pd.Series([str(code) for code in statements.index])
    twice = names[names.duplicated()]
    if len(twice):  # which row a statement's class comes from would be an accident of the file's order
        raise PipelineError(f"{path}: statement {twice.iloc[0]} is listed {int((names == twice.iloc[0]).sum())} "
                            f"times; each statement must have one row")
    for flag in {"diagnostic", "form", "rhythm"} & set(_TASK_COLUMNS[task]):
        values = statements[flag]
        bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
        if bad.any():
            raise PipelineError(f"{path}: column {flag} holds {values[bad].iloc[0]!r} for statement "
                                f"{values[bad].index[0]}; it must be 1 or empty")
    return statements


def warn_unknown_statements(path: Path, statements: pd.DataFrame, records: list[tuple[str, ...]], task: str) -> None:
    """A warning naming the scp_codes statements that `path` lacks (and how many records carry each): a
    class of `all`, as in the benchmark, and left out of the other tasks, never silently. For sub- and
    superdiagnostic, another naming the diagnostic statements that `path` gives no subclass or class
    (they map to no class there, as in the benchmark)."""
    known = {str(code) for code in statements.index}
    carried = _carried(records, lambda code: code not in known)
    if carried:
        fate = "each is a class of `all`, as in the benchmark" if task == "all" else \
            f"left out of the {task} task (a class of `all` only, as in the benchmark)"
        print(f"warning: {path} lacks statement(s) carried in scp_codes: {carried}; {fate}", file=sys.stderr)
    if task in ("subdiagnostic", "superdiagnostic"):
        column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
        diagnostic = pd.to_numeric(statements["diagnostic"], errors="coerce").to_numpy() == 1
        unclassed = {str(code) for code, on, cls in zip(statements.index, diagnostic, statements[column])
                     if on and not (isinstance(cls, str) and cls.strip())}
        carried = _carried(records, lambda code: code in unclassed)
        if carried:
            print(f"warning: {path} gives diagnostic statement(s) no {column}: {carried}; left out of the {task} "
                  f"task, as in the benchmark", file=sys.stderr)


def _carried(records: list[tuple[str, ...]], chosen: Callable[[str], bool]) -> str:
    """The statements `chosen` picks among those the records carry, each with its number of records (a
    statement with surrounding spaces quoted, so that they show)."""
    counts: dict[str, int] = {}
    for codes in records:
        for code in {c for c in codes if chosen(c)}:
            counts[code] = counts.get(code, 0) + 1
    return ", ".join(f"{code if code == code.strip() else repr(code)} ({k} record{'s' * (k > 1)})"
                     for code, k in sorted(counts.items()))


def _ptbxl_task_labels(data_dir: Path, label_set: LabelSet, entries: list[Entry]) -> LabelSet:
    """A PTB-XL task's LabelSet from scp_statements.csv and the statements of the usable listed records;
    each entry labelled over its classes (a record with none of them stays unlabelled: left out)."""
    if not label_set.ptbxl_task:
        return label_set
    statements = read_scp_statements(data_dir / PTBXL_STATEMENTS, label_set.ptbxl_task)
    usable = [e for e in entries if e.error is None]
    warn_unknown_statements(data_dir / PTBXL_STATEMENTS, statements, [e.codes for e in usable], label_set.ptbxl_task)
    task = ptbxl_task(label_set.ptbxl_task, statements, (e.codes for e in usable))
    for e in usable:
        e.labels = task.vector(task.scp.get(code) for code in e.codes)
    return task


def _integer(value, what: str) -> int:
    """A table cell that must hold a whole number (1, 1.0, "1"); ValueError quoting it otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and number == int(number)):
        raise ValueError(f"{what} {value!r} is not a whole number")
    return int(number)


def _optional_number(value, what: str) -> float:
    """A table cell that may be empty (NaN, or no such column) but, when given, must be a number."""
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not a number") from None


def _ptbxl_row(data_dir: Path, row: pd.Series, label_set: LabelSet, pid: str, column: str) -> Entry:
    """One row of ptbxl_database.csv -> Entry; ValueError naming the field for a row that cannot be used."""
    name = row[column]
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{column} is empty ({name!r})")
    if _outside(name.strip()):
        raise ValueError(f"{column} {name!r} points outside {data_dir}; refused, not read")
    codes = scp_codes(row["scp_codes"])
    fold = _integer(row["strat_fold"], "strat_fold")
    if not 1 <= fold <= N_FOLDS:
        raise ValueError(f"strat_fold {row['strat_fold']!r} is not a fold 1-{N_FOLDS}")
    sex_code = _optional_number(row.get("sex"), "sex")  # PTB-XL: 0 male, 1 female
    sex = {0.0: "Male", 1.0: "Female"}.get(sex_code, "Unknown")
    age = _optional_number(row.get("age"), "age")  # PTB-XL writes 300 for patients over 89: unknown here
    info = {"sample_rate": float("nan"), "age": age if 0 <= age < 130 else float("nan"), "sex": sex, "dx": ",".join(codes)}
    labels = None if label_set.ptbxl_task else label_set.vector(label_set.scp.get(c) for c in codes)
    return Entry(pid, data_dir / f"{name.strip()}.hea", labels, info, fold, codes=tuple(codes))


def _ptbxl_list(data_dir: Path, label_set: LabelSet, workers: int = 1, rate: float = SAMPLE_RATE) -> list[Entry]:
    """One entry per row of ptbxl_database.csv; a row that cannot be used (its ecg_id, filename_hr,
    scp_codes, strat_fold, age or sex malformed, its header missing) is skipped with a message naming
    the row and the field, and the others are kept. At 100 Hz the records are records100/'s
    (filename_lr), read as they are; at any other rate records500/'s (filename_hr), resampled if need be."""
    path = data_dir / PTBXL_DATABASE
    column = "filename_lr" if rate == PTBXL_LOW_RATE else "filename_hr"
    try:
        db = pd.read_csv(path)
        missing = {"ecg_id", "scp_codes", "strat_fold", column} - set(db.columns)
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if missing:
        raise PipelineError(f"{path} lacks column(s) {', '.join(sorted(missing))}")
    if not label_set.scp and not label_set.ptbxl_task:
        raise PipelineError(f"label set {label_set.name!r} has no map from PTB-XL's SCP statements")
    entries = []
    for line, (_, row) in enumerate(db.iterrows(), start=2):  # file line: the header is line 1
        pid = str(row["ecg_id"])
        try:
            pid = str(_integer(row["ecg_id"], "ecg_id"))
            entries.append(_ptbxl_row(data_dir, row, label_set, pid, column))
        except ValueError as e:
            entries.append(Entry(pid, path, error=f"{path}: line {line}, ecg_id {pid}: {e}; row skipped"))
    listed = [e for e in entries if e.error is None]
    for entry, hdr in zip(listed, parse_headers([e.path for e in listed], workers)):
        _with_header(entry, hdr, rate)
        if not isinstance(hdr, str):  # the rate is the header's (records500/ is 500 Hz, but not every copy)
            entry.info["sample_rate"] = hdr.sample_rate
    refuse_foreign_signals(entries)
    return entries


PTBXL = Layout("ptbxl", "PTB-XL: ptbxl_database.csv + scp_statements.csv + records500/ (records100/ at 100 Hz)",
               _ptbxl_detect, _ptbxl_list, _read_wfdb_entry,
               lambda d, entries: [d / PTBXL_DATABASE, *([d / PTBXL_STATEMENTS] if (d / PTBXL_STATEMENTS).exists()
                                                         else []), *_wfdb_inputs(d, entries)],
               fixed_split=PTBXL_SPLIT, label_set_for=_ptbxl_task_labels)

LAYOUTS = {layout.name: layout for layout in (PTBXL, WFDB, CPSC2018)}  # detection order: first match wins


def detect_layout(data_dir: Path) -> Layout:
    """The layout of a records folder; a clear error when it holds none."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PipelineError(f"data directory {data_dir} does not exist")
    for layout in LAYOUTS.values():
        if layout.detect(data_dir):
            return layout
    if next(data_dir.rglob("*.mat"), None) is not None:
        raise PipelineError(f"{data_dir} has .mat files but neither .hea headers nor REFERENCE.csv")
    raise PipelineError(f"no records (*.hea, *.mat + REFERENCE.csv, or {PTBXL_DATABASE}) found in {data_dir}")


def read_entry(task: tuple[str, Entry]) -> tuple[Header, np.ndarray]:
    """Decode one listed record (a picklable task for worker processes)."""
    layout, entry = task
    return LAYOUTS[layout].read(entry)


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
