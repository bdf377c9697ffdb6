"""Reading records: WFDB headers, signals in any WFDB format and the original CPSC2018 .mat struct (the
registry of database layouts that preprocess.py chooses from is utils/layouts.py).

Every reader returns the signal in mV as (12, samples) with the leads in the standard order (picked by
name, case-insensitively, from records that carry more), at the record's own rate; `resample` brings
it to SAMPLE_RATE. A record that cannot be used raises RecordError naming the file and what is wrong.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.errors import PipelineError, RecordError
from utils.labels import LEADS

__all__ = ["SAMPLE_RATE", "GAIN_ADU_PER_MV", "Header", "normalise_sex", "parse_header", "resample",
           "INVALID_FORMAT_16", "read_wfdb_record", "read_cpsc_record", "read_record", "read_records",
           "resampled_length", "to_microvolts", "clipped_per_lead"]

SAMPLE_RATE = 500          # Hz: the rate every record is stored at in the cache
GAIN_ADU_PER_MV = 1000     # the cache stores int16 microvolts (CPSC2018's own WFDB gain)


@dataclass
class Header:
    record: str
    n_sig: int
    sample_rate: float
    sig_len: int
    files: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)   # WFDB storage format of each signal: 16, 212, 80, …
    format_fields: list[str] = field(default_factory=list)  # as written, with any x samples, :skew, +offset
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
        hdr.formats.append(re.split(r"[x:+]", parts[1])[0] if len(parts) > 1 else "")
        hdr.format_fields.append(parts[1] if len(parts) > 1 else "")
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


def _check_signal(mv: np.ndarray, where: Path, wfdb: bool = True) -> np.ndarray:
    """The standard-order (12, n) signal, refused when empty or not finite anywhere: WFDB's invalid-sample
    value reads as NaN (wfdb.rdrecord for .dat, `_read_mat_signal` for .mat), so such a record is skipped
    the same way whichever file holds it, never cached as a flat line."""
    if mv.ndim != 2 or mv.shape[0] != len(LEADS):
        raise RecordError(f"{where}: expected {len(LEADS)} leads, got shape {mv.shape}")
    if mv.shape[1] == 0:
        raise RecordError(f"{where}: signal is empty")
    bad = ~np.isfinite(mv)
    if bad.any():
        counts = bad.sum(axis=1)
        leads = ", ".join(f"{lead} {k}" for lead, k in zip(LEADS, counts) if k)
        hint = "; WFDB's invalid-sample value reads as NaN" if wfdb else ""
        raise RecordError(f"{where}: signal contains NaN or infinite values (samples of {mv.shape[1]} per lead: "
                          f"{leads}{hint})")
    return mv


def _units_to_mv(hdr: Header, where: Path) -> np.ndarray:
    """Per signal (a column), the factor from the header's units to mV, for a physical signal."""
    try:
        return np.array([_unit_scale_to_mv(u) for u in hdr.units])[:, None]
    except RecordError as e:
        raise RecordError(f"{where}: {e}") from None


def _scale_to_mv(hdr: Header, where: Path) -> np.ndarray:
    """Per signal (a column), the factor from the header's digital units to mV: unit factor / gain."""
    return _units_to_mv(hdr, where) / np.asarray(hdr.gains, dtype=np.float64)[:, None]


INVALID_FORMAT_16 = -32768  # WFDB's invalid-sample value in format 16: wfdb.rdrecord reads it as NaN


def _read_mat_signal(header_path: Path, hdr: Header) -> np.ndarray:
    """The fast path for the PhysioNet/CinC releases (format 16 in a .mat): `val` of the .mat file, scaled
    with the header exactly as wfdb.rdrecord does, WFDB's invalid value -32768 included (NaN)."""
    from scipy.io import loadmat

    mat_path = header_path.parent / hdr.files[0]
    try:
        val = loadmat(mat_path)["val"]
    except Exception as e:  # scipy raises several types for truncated or corrupt files
        raise RecordError(f"{mat_path}: unreadable signal ({type(e).__name__}: {e})") from None
    if val.shape != (hdr.n_sig, hdr.sig_len):
        raise RecordError(f"{mat_path}: signal shape {val.shape} does not match header ({hdr.n_sig}, {hdr.sig_len})")
    mv = (val.astype(np.float64) - np.asarray(hdr.baselines)[:, None]) * _scale_to_mv(hdr, header_path)
    mv[val == INVALID_FORMAT_16] = np.nan
    return mv


def _read_dat16_signal(header_path: Path, hdr: Header) -> np.ndarray | None:
    """The fast path for PTB-XL and most .dat releases: one file of plain format 16 (no samples per frame,
    skew or byte offset) holding exactly the header's frames, read with numpy and scaled with the same
    operations as wfdb.rdrecord (baseline subtracted, divided by the gain, in float64; -32768 is NaN), at a
    fraction of its header parsing. Gains, baselines and units are this module's reading of the header
    (as for the .mat files): where wfdb reads the header alike (its own headers, PTB-XL's), the values are
    its own bit for bit; where it does not (a gain written `1E3`, a baseline `(+5)`), they follow the WFDB
    format. A file longer than its header says is refused, as a .mat is; None for anything else (wfdb
    reads those, and says what is wrong with a short file)."""
    dat = header_path.parent / hdr.files[0]
    expected = 2 * hdr.n_sig * hdr.sig_len  # bytes: two per sample, the signals interleaved frame by frame
    try:
        size = dat.stat().st_size
    except OSError:
        return None
    if size > expected:  # wfdb would read the first frames and say nothing (a .mat: refused)
        raise RecordError(f"{dat}: {size} bytes, more than the {hdr.sig_len} frames of {hdr.n_sig} format-16 "
                          f"signals its header describes ({expected} bytes)")
    if size < expected:
        return None
    try:
        digital = np.fromfile(dat, dtype="<i2").reshape(hdr.sig_len, hdr.n_sig)
    except (OSError, ValueError) as e:  # unreadable: a directory, no permission, an I/O error
        raise RecordError(f"{dat}: unreadable signal ({type(e).__name__}: {e})") from None
    physical = digital.astype(np.float64)
    np.subtract(physical, np.asarray(hdr.baselines, dtype=np.float64), physical)
    np.divide(physical, np.asarray(hdr.gains, dtype=np.float64), physical)
    physical[digital == INVALID_FORMAT_16] = np.nan
    return physical.T * _units_to_mv(hdr, header_path)


def _read_wfdb_signal(header_path: Path, hdr: Header) -> np.ndarray:
    """Any signal format the wfdb package reads (.dat formats 16, 212, 24, 32, 80, …): its physical
    signal (gain and baseline applied) in the header's units, converted to mV."""
    import wfdb

    try:
        rec = wfdb.rdrecord(str(header_path.with_suffix("")), physical=True)
    except Exception as e:  # wfdb raises many types for missing, short or corrupt signal files
        raise RecordError(f"{header_path}: unreadable signal ({type(e).__name__}: {e})") from None
    if rec.p_signal is None or rec.p_signal.shape != (hdr.sig_len, hdr.n_sig):
        shape = None if rec.p_signal is None else rec.p_signal.T.shape
        raise RecordError(f"{header_path}: signal shape {shape} does not match header ({hdr.n_sig}, {hdr.sig_len})")
    return rec.p_signal.T * _units_to_mv(hdr, header_path)


def read_wfdb_record(header_path: Path, hdr: Header | None = None) -> tuple[Header, np.ndarray]:
    """Header and signal in mV, the 12 standard leads in the standard order, at the record's own rate."""
    header_path = Path(header_path)
    hdr = hdr or parse_header(header_path)
    if hdr.n_sig < len(LEADS):
        raise RecordError(f"{header_path}: expected {len(LEADS)} leads, header declares {hdr.n_sig}")
    order = _order_leads(hdr.lead_names, header_path)
    for name in dict.fromkeys(hdr.files):
        if not (header_path.parent / name).exists():
            raise RecordError(f"{header_path}: signal file {name} is missing")
        if not (header_path.parent / name).is_file():  # a pipe would never end, a device never be a record
            raise RecordError(f"{header_path}: signal file {name} is not a regular file (a folder, device or pipe)")
    one_file = len(set(hdr.files)) == 1
    mv = None
    if one_file and hdr.files[0].lower().endswith(".mat") and set(hdr.formats) == {"16"}:
        mv = _read_mat_signal(header_path, hdr)
    elif one_file and hdr.files[0].lower().endswith(".dat") and set(hdr.format_fields) == {"16"}:
        mv = _read_dat16_signal(header_path, hdr)
    if mv is None:
        mv = _read_wfdb_signal(header_path, hdr)
    return hdr, _check_signal(mv[order], header_path.parent / hdr.files[0])


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
    return hdr, _check_signal(data, mat_path, wfdb=False)


def read_record(path: Path) -> tuple[Header, np.ndarray]:
    """Any supported record (a `.hea` path or a path without suffix of a WFDB record in any signal
    format, or a `.mat` of the original CPSC2018 layout) -> header, mV at SAMPLE_RATE.

    Used by the `--record` options of predict.py, shap_values.py and visualize.py."""
    path = Path(path)
    hea = path.with_suffix(".hea") if path.suffix in (".hea", ".mat", ".dat", "") else Path(f"{path}.hea")
    if hea.exists():
        hdr, mv = read_wfdb_record(hea)
    elif path.suffix == ".mat" and path.exists():
        hdr, mv = read_cpsc_record(path)
    elif not path.exists() and not hea.exists():
        raise RecordError(f"{path}: no such record (neither the file nor {hea.name} exists)")
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
        raise PipelineError("none of the records could be read")
    return records


def resampled_length(n: int, from_rate: float, to_rate: float = SAMPLE_RATE) -> int:
    """How many samples `resample` returns for `n` input samples (known before decoding)."""
    if from_rate == to_rate:
        return n
    ratio = Fraction(to_rate / from_rate).limit_denominator(1000)
    return -(-n * ratio.numerator // ratio.denominator)


def to_microvolts(mv: np.ndarray) -> np.ndarray:
    """mV float -> int16 µV, the cache's storage type (±32.7 mV range, 1 µV resolution); samples beyond
    the range are clipped to it (`clipped_per_lead` counts them, so the clipping is never silent)."""
    return np.clip(np.rint(mv * GAIN_ADU_PER_MV), -32768, 32767).astype(np.int16)


def clipped_per_lead(mv: np.ndarray) -> np.ndarray:
    """How many samples of each lead (rows of mV) `to_microvolts` clips to the int16 µV range."""
    uv = np.rint(mv * GAIN_ADU_PER_MV)
    return ((uv < -32768) | (uv > 32767)).sum(axis=-1)
