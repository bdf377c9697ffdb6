"""The record reader against independent references, and records it must refuse or report.

References: `wfdb.rdrecord` (physical signal) and `scipy.signal.resample_poly` (rate changes), never the
project's own reader or `resample`; and the analogue signal the test quantised itself. Records are
written with `wfdb.wrsamp` in signal formats 16, 212, 24, 32 and 80, units mV, uV and V, non-zero
baselines, at 250, 500 and 1000 Hz, and as PhysioNet .mat files (baseline given, or taken from the ADC
zero) -- the .mat and format-16 .dat ones are decoded by the project's own fast paths, where a baseline
sign error would go (the .dat ones equal rdrecord's values exactly)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.io import savemat
from scipy.signal import resample_poly

import preprocess
import synth
from utils.cache import SignalCache, load_labels
from utils.preprocessed import pool_databases
from utils.labels import CPSC9, LEADS
from utils.layouts import read_cpsc_reference
from utils.records import RecordError, read_wfdb_record

SNR = "426783006"  # a cpsc9 class, so every record here is labelled and decoded
TO_MV = {"mV": 1.0, "uV": 1e-3, "V": 1e3}


def analogue(fs: int, seed: int, seconds: float = 2.0) -> np.ndarray:
    """A realistic 12-lead ECG in mV at `fs` (about ±1 mV)."""
    return synth.synthesize(np.random.default_rng(seed), ["SNR"], seconds, fs)[0]


def digitise(mv: np.ndarray, units: str, gain: float, baseline: list[int], bits: int) -> np.ndarray:
    digital = np.rint(mv / TO_MV[units] * gain).astype(np.int64) + np.asarray(baseline)[:, None]
    assert digital.min() > -(2 ** (bits - 1)) and digital.max() < 2 ** (bits - 1), "test signal out of range"
    return digital


def write_dat(folder: Path, name: str, fmt: str, units: str, gain: float, baseline: list[int], fs: int,
              mv: np.ndarray, bits: int) -> None:
    digital = digitise(mv, units, gain, baseline, bits)
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=[units] * 12, sig_name=list(LEADS), d_signal=np.ascontiguousarray(digital.T),
                fmt=[fmt] * 12, adc_gain=[gain] * 12, baseline=list(baseline), comments=[f"Dx: {SNR}"],
                write_dir=str(folder))


def write_mat(folder: Path, name: str, digital: np.ndarray, fs: int, units: str, gain: float,
              baseline: list[int] | None, adc_zero: list[int]) -> None:
    """A PhysioNet/CinC-style record: `val` (int16) in a v4 .mat, a format 16+24 header; without a
    baseline the header's ADC zero is the baseline (WFDB's rule)."""
    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / f"{name}.mat", {"val": digital.astype(np.int16)}, format="4")
    lines = [f"{name} 12 {fs} {digital.shape[1]}"]
    for i, lead in enumerate(LEADS):
        b = "" if baseline is None else f"({baseline[i]})"
        lines.append(f"{name}.mat 16+24 {gain:g}{b}/{units} 16 {adc_zero[i]} 0 0 0 {lead}")
    (folder / f"{name}.hea").write_text("\n".join(lines + [f"#Dx: {SNR}"]) + "\n")


# name -> (writer, format, units, gain (adu per unit), baseline per lead, rate, bits); LSB <= 50 µV
RAMP = np.arange(12)
RECORDS = {
    "f16": ("dat", "16", "mV", 1000, -500 + 100 * RAMP, 500, 16),
    "f212": ("dat", "212", "mV", 200, 50 * RAMP - 300, 500, 12),
    "f24": ("dat", "24", "uV", 2, 1000 * RAMP, 500, 24),
    "f32": ("dat", "32", "V", 2e6, -20000 + 7 * RAMP, 500, 32),
    "f80": ("dat", "80", "mV", 50, 3 * RAMP - 15, 500, 8),
    "f16_1000": ("dat", "16", "mV", 1000, 7 * RAMP - 40, 1000, 16),
    "f16_250": ("dat", "16", "uV", 1, -3 * RAMP, 250, 16),
    "m16": ("mat", "16", "mV", 1000, -400 + 70 * RAMP, 500, 16),
    "m16_adc_zero": ("mat", "16", "mV", 500, None, 500, 16),
    "m16_250": ("mat", "16", "uV", 1, 11 * RAMP - 60, 250, 16),
}


def quiet_prep(records: Path, out: Path, *extra: str) -> str:
    """preprocess.py (one worker) -> what it printed on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        preprocess.main(["--data-dir", str(records), "--out", str(out), "--num-workers", "1", *extra])
    return err.getvalue()


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    truth = {}
    for k, (name, (kind, fmt, units, gain, baseline, fs, bits)) in enumerate(RECORDS.items()):
        mv = analogue(fs, k)
        if kind == "dat":
            write_dat(folder, name, fmt, units, gain, list(baseline), fs, mv, bits)
        else:
            zero = list(20 * RAMP - 100)  # the baseline when the header gives none
            digital = digitise(mv, units, gain, zero if baseline is None else list(baseline), bits)
            write_mat(folder, name, digital, fs, units, gain, None if baseline is None else list(baseline), zero)
        truth[name] = mv
    out = tmp_path_factory.mktemp("formats_out")
    quiet_prep(folder, out)
    return folder, out, truth


def rdrecord_mv(path: Path) -> tuple[np.ndarray, float]:
    """wfdb's physical signal in mV, leads in the standard order, and its rate."""
    rec = wfdb.rdrecord(str(path))
    scale = np.array([TO_MV[u] for u in rec.units])
    rows = [rec.sig_name.index(lead) for lead in LEADS]
    return (rec.p_signal * scale).T[rows], rec.fs


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_reader_equals_wfdb_rdrecord_and_the_analogue_signal(formats, name):
    folder, _, truth = formats
    hdr, got = read_wfdb_record(folder / f"{name}.hea")
    want, fs = rdrecord_mv(folder / name)
    assert hdr.sample_rate == fs and got.shape == want.shape
    if RECORDS[name][0] == "dat":  # format 16 read by numpy, the others by wfdb: rdrecord's values exactly
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    _, _, units, gain, *_ = RECORDS[name]
    lsb_mv = TO_MV[units] / gain
    assert np.abs(got - truth[name]).max() <= lsb_mv / 2 + 1e-9  # quantisation only: no baseline, gain, unit error


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_cache_equals_wfdb_rdrecord_resampled_by_scipy(formats, name):
    """The int16 µV cache at 500 Hz against rdrecord (+ scipy's resample_poly at 250 and 1000 Hz): within
    half a µV, the cache's rounding."""
    folder, out, _ = formats
    want, fs = rdrecord_mv(folder / name)
    if fs != 500:
        ratio = Fraction(500, int(fs))
        want = resample_poly(want, ratio.numerator, ratio.denominator, axis=-1)
    got = SignalCache(out).record(name, dtype=np.float64)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 0.5e-3 + 1e-9


def test_the_cinc_mat_and_plain_format_16_records_take_the_fast_paths(formats, monkeypatch):
    """The PhysioNet/CinC .mat records (format `16+24`: the .mat header's byte offset) and plain format-16
    .dat files are decoded without wfdb, which reads a record about 30 times slower; the other formats by
    wfdb."""
    import utils.records as records

    folder, _, _ = formats
    read_by_wfdb = []
    real = records._read_wfdb_signal
    monkeypatch.setattr(records, "_read_wfdb_signal",
                        lambda path, hdr: read_by_wfdb.append(path.stem) or real(path, hdr))
    for name in sorted(RECORDS):
        read_wfdb_record(folder / f"{name}.hea")
    assert sorted(read_by_wfdb) == sorted(n for n, (_, fmt, *_) in RECORDS.items() if fmt != "16")


def test_wfdb_invalid_value_skips_the_record_in_a_mat_as_in_a_dat(tmp_path):
    """-32768 (WFDB's invalid sample in format 16) on a whole lead: wfdb reads NaN; the record is skipped
    with the same reason whether its signal is a .mat (the project's fast path) or a .dat (wfdb)."""
    mv = analogue(500, 3)
    digital = digitise(mv, "mV", 1000, [0] * 12, 16)
    digital[LEADS.index("V3")] = -32768
    write_mat(tmp_path / "rec", "M1", digital, 500, "mV", 1000, [0] * 12, [0] * 12)
    wfdb.wrsamp("D1", fs=500, units=["mV"] * 12, sig_name=list(LEADS), d_signal=np.ascontiguousarray(digital.T),
                fmt=["16"] * 12, adc_gain=[1000] * 12, baseline=[0] * 12, comments=[f"Dx: {SNR}"],
                write_dir=str(tmp_path / "rec"))
    write_mat(tmp_path / "rec", "OK", digitise(mv, "mV", 1000, [0] * 12, 16), 500, "mV", 1000, [0] * 12, [0] * 12)
    for name in ("M1", "D1"):
        assert np.isnan(wfdb.rdrecord(str(tmp_path / "rec" / name)).p_signal[:, LEADS.index("V3")]).all()
    err = quiet_prep(tmp_path / "rec", tmp_path / "out")
    skipped = [line.split(": ", 2) for line in err.splitlines() if line.startswith("skipped: ")]
    reasons = {where: why for _, where, why in skipped}
    assert set(reasons) == {str(tmp_path / "rec" / "M1.mat"), str(tmp_path / "rec" / "D1.dat")}
    assert len(set(reasons.values())) == 1 and "V3 1000" in reasons.popitem()[1]  # same words for both
    assert load_labels(tmp_path / "out")["patient_id"].tolist() == ["OK"]


def test_an_unreadable_format_16_file_is_a_record_error_naming_it(tmp_path, monkeypatch):
    """The numpy fast path's read failing (an I/O error, no permission) is the record's error, as wfdb's
    failures are: one `skipped:` line, never a traceback; so is a file longer than its header says (as a
    .mat is), and a signal file that is a pipe is refused before anything reads it."""
    mv = analogue(500, 4)
    wfdb.wrsamp("D2", fs=500, units=["mV"] * 12, sig_name=list(LEADS), d_signal=np.ascontiguousarray(
                digitise(mv, "mV", 1000, [0] * 12, 16).T), fmt=["16"] * 12, adc_gain=[1000] * 12,
                baseline=[0] * 12, comments=[f"Dx: {SNR}"], write_dir=str(tmp_path))

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(np, "fromfile", failing)
    with pytest.raises(RecordError, match=r"D2\.dat: unreadable signal \(OSError: \[Errno 5\] Input/output error"):
        read_wfdb_record(tmp_path / "D2.hea")
    monkeypatch.undo()
    with open(tmp_path / "D2.dat", "ab") as f:  # one frame more than the header says: wfdb would drop it unsaid
        f.write(bytes(24))
    with pytest.raises(RecordError, match=r"D2\.dat: 24024 bytes, more than the 1000 frames of 12 format-16 signals"):
        read_wfdb_record(tmp_path / "D2.hea")
    (tmp_path / "D2.dat").unlink()
    os.mkfifo(tmp_path / "D2.dat")  # wfdb would wait on it for ever
    with pytest.raises(RecordError, match=r"D2\.hea: signal file D2\.dat is not a regular file"):
        read_wfdb_record(tmp_path / "D2.hea")


def test_samples_beyond_the_int16_range_are_reported_per_record(tmp_path):
    """A 40 mV DC offset on lead II (a whole lead clipped) and three 33 mV spikes on V1 of a .mat record:
    kept, but never silently -- a `clipped` count per record in signals_index.csv and the manifest, and a
    `clipped:` line naming the record and its leads."""
    mv = analogue(500, 4)
    offset = mv.copy()
    offset[LEADS.index("II")] += 40.0
    write_dat(tmp_path / "rec", "C1", "16", "mV", 200, [0] * 12, 500, offset, 16)
    spikes = mv.copy()
    spikes[LEADS.index("V1"), [100, 500, 900]] = 33.0
    write_mat(tmp_path / "rec", "C2", digitise(spikes, "mV", 500, [0] * 12, 16), 500, "mV", 500, [0] * 12, [0] * 12)
    write_dat(tmp_path / "rec", "C3", "16", "mV", 1000, [0] * 12, 500, mv, 16)
    err = quiet_prep(tmp_path / "rec", tmp_path / "out")
    index = pd.read_csv(tmp_path / "out" / "signals_index.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert index["clipped"].to_dict() == {"C1": 1000, "C2": 3, "C3": 0}
    assert f"clipped: {tmp_path / 'rec' / 'C1.hea'}: " in err and "(of 1000 per lead: II 1000)" in err
    assert f"clipped: {tmp_path / 'rec' / 'C2.hea'}: " in err and "(of 1000 per lead: V1 3)" in err
    manifest = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert sorted(manifest["clipped"]) == ["C1", "C2"] and manifest["kept"] == 3
    cache = SignalCache(tmp_path / "out")
    assert (cache.record("C1", [1], np.float64) == 32.767).all()  # what "clipped" means in the cache
    cpsc = tmp_path / "cpsc"  # the original CPSC2018 layout: no headers, the cache is streamed
    cpsc.mkdir()
    synth.write_cpsc(cpsc, "A1", offset, 60.0, "Male")
    synth.write_cpsc(cpsc, "A2", mv, 61.0, "Female")
    (cpsc / "REFERENCE.csv").write_text("Recording,First_label\nA1,1\nA2,2\n")
    err = quiet_prep(cpsc, tmp_path / "out_cpsc")
    index = pd.read_csv(tmp_path / "out_cpsc" / "signals_index.csv", dtype={"patient_id": str})
    assert index.set_index("patient_id")["clipped"].to_dict() == {"A1": 1000, "A2": 0}
    assert f"clipped: {cpsc / 'A1.mat'}: " in err and "II 1000" in err


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """Headers that would read another record's ECG: A0002.hea naming A0001.mat; A0003.hea naming a
    real record outside the folder; B1 and B2 both naming Z.mat (no Z.hea). A0004.hea naming sig4.mat
    (another stem that no other record claims) is a WFDB record like any other."""
    root = tmp_path_factory.mktemp("foreign")
    folder = root / "rec"
    for k, name in enumerate(["A0001", "A0004", "Z", "X"]):
        write_mat(root / ("outside" if name == "X" else "rec"), name,
                  digitise(analogue(500, 10 + k), "mV", 1000, [0] * 12, 16), 500, "mV", 1000, [0] * 12, [0] * 12)
    (folder / "Z.hea").unlink()
    os.replace(folder / "A0004.mat", folder / "sig4.mat")
    text = (folder / "A0001.hea").read_text()
    (folder / "A0002.hea").write_text(text.replace("A0001 12", "A0002 12", 1))
    (folder / "A0003.hea").write_text(text.replace("A0001 12", "A0003 12", 1).replace("A0001.mat", "../outside/X.mat"))
    (folder / "A0004.hea").write_text((folder / "A0004.hea").read_text().replace("A0004.mat", "sig4.mat"))
    z = text.replace("A0001.mat", "Z.mat")
    (folder / "B1.hea").write_text(z.replace("A0001 12", "B1 12", 1))
    (folder / "B2.hea").write_text(z.replace("A0001 12", "B2 12", 1))
    out = root / "out"
    return folder, out, quiet_prep(folder, out)


def test_a_header_naming_another_records_signal_is_refused(foreign):
    folder, out, err = foreign
    assert load_labels(out)["patient_id"].tolist() == ["A0001", "A0004"]
    assert (f"{folder / 'A0002.hea'} (record A0002): its signal file A0001.mat belongs to record A0001 "
            f"({folder / 'A0001.hea'})") in err
    assert f"{folder / 'A0003.hea'} (record A0003): signal file {folder / '../outside/X.mat'} is outside" in err
    assert f"{folder / 'B1.hea'} (record B1): its signal file {folder / 'Z.mat'} is also read by record B2" in err
    assert f"{folder / 'B2.hea'} (record B2): its signal file {folder / 'Z.mat'} is also read by record B1" in err


def test_a_signal_file_named_unlike_its_header_is_part_of_the_fingerprint(foreign, tmp_path, capsys):
    """A0004.hea reads sig4.mat: changing sig4.mat must rebuild the outputs (it was not fingerprinted)."""
    folder, out, _ = foreign
    shutil.copytree(folder, tmp_path / "rec", symlinks=True)
    shutil.copytree(folder.parent / "outside", tmp_path / "outside")
    preprocess.main(["--data-dir", str(tmp_path / "rec"), "--out", str(tmp_path / "out"), "--num-workers", "1"])
    capsys.readouterr()
    new = digitise(analogue(500, 99), "mV", 1000, [0] * 12, 16)
    savemat(tmp_path / "rec" / "sig4.mat", {"val": new.astype(np.int16)}, format="4")
    preprocess.main(["--data-dir", str(tmp_path / "rec"), "--out", str(tmp_path / "out"), "--num-workers", "1"])
    assert "inputs or settings changed" in capsys.readouterr().out
    np.testing.assert_array_equal(SignalCache(tmp_path / "out").record("A0004", dtype=np.float64), new / 1000)


def test_a_dangling_header_link_is_skipped_with_one_line(foreign, tmp_path, capsys):
    folder, _, _ = foreign
    shutil.copytree(folder, tmp_path / "rec", symlinks=True)
    (tmp_path / "rec" / "A0009.hea").symlink_to(tmp_path / "nowhere.hea")
    preprocess.main(["--data-dir", str(tmp_path / "rec"), "--out", str(tmp_path / "out"), "--num-workers", "1"])
    assert f"skipped: {tmp_path / 'rec' / 'A0009.hea'}: cannot read header" in capsys.readouterr().err
    assert load_labels(tmp_path / "out")["patient_id"].tolist() == ["A0001", "A0004"]


def test_conflicting_reference_rows_skip_the_record_identical_ones_are_one(tmp_path, capsys):
    ref = tmp_path / "REFERENCE.csv"
    ref.write_text("Recording,First_label,Second_label,Third_label\n"
                   "A1,1,,\nA2,2,3,\nA1,1,,\nA3,4,,\nA2,3,2,\nA3,5,,\nA4,6,,\n")
    labels, errors = read_cpsc_reference(ref, CPSC9)
    assert sorted(labels) == ["A1", "A2", "A4"] and labels["A2"].tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert errors == {"A3": f"{ref}: A3 has rows with different labels: line 5 (4), line 7 (5); skipped"}
    records = tmp_path / "cpsc"  # end to end: the record is left out and reported
    synth.main(["--out", str(records), "--n", "6", "--seed", "2", "--max-seconds", "7", "--layout", "cpsc2018"])
    table = pd.read_csv(records / "REFERENCE.csv", dtype=str)
    other = table.iloc[[2]].assign(First_label=str(int(table.loc[2, "First_label"]) % 9 + 1),
                                   Second_label=None, Third_label=None)
    pd.concat([table, other]).to_csv(records / "REFERENCE.csv", index=False)
    err = quiet_prep(records, tmp_path / "out")
    assert "A0003 has rows with different labels: line 4" in err and "line 8" in err
    assert "A0003" not in set(load_labels(tmp_path / "out")["patient_id"]) and len(load_labels(tmp_path / "out")) == 5


def test_signals_no_header_names_are_said_and_counted_not_left_out_silently(tmp_path):
    """WFDB records and the CPSC2018 release's headerless .mat files in one folder: the folder reads as WFDB,
    and each .mat no header names is a skipped record, said with its path, not silently missing."""
    both = tmp_path / "both"
    synth.main(["--out", str(both), "--n", "6", "--seed", "2", "--max-seconds", "7"])
    synth.main(["--out", str(tmp_path / "cpsc"), "--n", "3", "--seed", "5", "--max-seconds", "7", "--layout",
                "cpsc2018"])
    (both / "release").mkdir()
    for i, mat in enumerate(sorted((tmp_path / "cpsc").glob("*.mat"))):
        shutil.copy(mat, both / "release" / f"B{i}.mat")
    err = quiet_prep(both, tmp_path / "out")
    said = [line for line in err.splitlines() if "a .mat signal that no WFDB header (.hea) names: not read" in line]
    assert [line.split(": ")[1] for line in said] == [str(both / "release" / f"B{i}.mat") for i in range(3)]
    summary = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert (summary["found"], summary["read"], len(summary["errors"])) == (9, 6, 3)
    assert len(load_labels(tmp_path / "out")) == 6
    shutil.rmtree(both / "release")  # never read, so not the data's: the folder without them is the same data
    quiet_prep(both, tmp_path / "out", "--force")
    assert json.loads((tmp_path / "out" / "preprocess.json").read_text())["fingerprint"] == summary["fingerprint"]


def test_a_pool_keeps_clipping_counts_and_drops_runs_of_other_sources(tmp_path, capsys):
    from utils.labels import LEADS as ALL

    dbs = []
    for name, offset in (("X", 40.0), ("Y", 0.0), ("Z", 0.0)):
        mv = analogue(500, len(dbs))
        clipped = mv.copy()
        clipped[ALL.index("II")] += offset
        write_dat(tmp_path / "rec" / name, "C1", "16", "mV", 200, [0] * 12, 500, clipped, 16)
        write_dat(tmp_path / "rec" / name, "C2", "16", "mV", 1000, [0] * 12, 500, mv, 16)
        quiet_prep(tmp_path / "rec" / name, tmp_path / name)
        dbs.append(tmp_path / name)
    out = tmp_path / "pool"
    pool_databases(dbs[:2], out, ["X", "Y"])
    index = pd.read_csv(out / "signals_index.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert index["clipped"].to_dict() == {"X_C1": 1000, "X_C2": 0, "Y_C1": 0, "Y_C2": 0}
    manifest = json.loads((out / "preprocess.json").read_text())
    assert list(manifest["clipped"]) == ["X_C1"] and "II 1000" in manifest["clipped"]["X_C1"]
    (out / "runs" / "xdb").mkdir(parents=True)
    pool_databases(dbs[:2], out, ["X", "Y"])  # current: kept as it is
    assert (out / "runs" / "xdb").is_dir()
    pool_databases([dbs[0], dbs[2]], out, ["X", "Z"])
    assert not (out / "runs").exists() and "removing its runs of the old data" in capsys.readouterr().out
    assert json.loads((out / "pool.json").read_text())["sources"] == [os.path.realpath(d) for d in (dbs[0], dbs[2])]


def test_the_cache_gives_each_record_its_own_signal_whatever_the_order_of_its_ids(tmp_path):
    """PTB-XL's ids are numbers ("1", "2", ..., "10"): not in the order of their text. Each id's record in
    the cache is still its own WFDB record (wfdb.rdrecord of the file ptbxl_database.csv names), within
    the cache's half-µV rounding; its last samples, zero-padded in front, are the model's window."""
    from utils.cache import fit_length

    synth.main(["--out", str(tmp_path / "px"), "--layout", "ptbxl", "--n", "12", "--seed", "1"])
    quiet_prep(tmp_path / "px", tmp_path / "out")
    cache = SignalCache(tmp_path / "out")
    assert list(cache.ids) != sorted(cache.ids)
    files = pd.read_csv(tmp_path / "px" / "ptbxl_database.csv", dtype={"ecg_id": str}).set_index("ecg_id")
    for pid in cache.ids:
        rec = wfdb.rdrecord(str(tmp_path / "px" / files.loc[pid, "filename_hr"]))  # PTB-XL writes AVR, AVL, AVF
        names = [name.lower() for name in rec.sig_name]
        want = (rec.p_signal * [TO_MV[u] for u in rec.units]).T[[names.index(lead.lower()) for lead in LEADS]]
        got = cache.record(pid, dtype=np.float64)
        assert rec.fs == cache.sample_rate and got.shape == want.shape, pid
        assert np.abs(got - want).max() <= 0.5e-3 + 1e-9, pid
        n = got.shape[1]
        np.testing.assert_allclose(cache.window(pid, range(12), n - 7), want[:, 7:], atol=0.5e-3 + 1e-9)
        np.testing.assert_allclose(cache.window(pid, [1], n + 3), np.pad(want[[1]], ((0, 0), (3, 0))),
                                   atol=0.5e-3 + 1e-9)
    np.testing.assert_array_equal(fit_length(np.arange(10.0)[None], 4), [[6, 7, 8, 9]])  # the last ones
    np.testing.assert_array_equal(fit_length(np.arange(3.0)[None], 5), [[0, 0, 0, 1, 2]])  # padded in front


def test_the_resampled_length_known_before_decoding_is_scipys():
    """preprocess.py sizes the cache before it decodes: the length it computes is the length scipy's
    resample_poly returns, for lengths and rates that do not divide evenly."""
    from utils.records import resampled_length

    for n in (1, 2, 3, 7, 1001, 4999):
        for from_rate, to_rate in ((250, 500), (1000, 500), (257, 500), (333.333, 500), (500, 100), (360, 500)):
            ratio = Fraction(to_rate / from_rate).limit_denominator(1000)
            expected = resample_poly(np.zeros(n), ratio.numerator, ratio.denominator).shape[0]
            assert resampled_length(n, from_rate, to_rate) == expected, (n, from_rate, to_rate)


def test_a_gain_of_0_is_wfdbs_default_200_and_clipping_is_the_int16_range(tmp_path):
    """WFDB's header specification: an ADC gain of 0 means the default, 200 units per mV. The cache stores
    µV in int16: -32768 and 32767 µV fit exactly, only values beyond them are clipped (worked by hand)."""
    from utils.records import clipped_per_lead, parse_header

    lines = ["r 12 500 1000"] + [f"r.mat 16 {'0' if k == 1 else '1000'}/mV 16 0 0 0 0 {lead}"
                                 for k, lead in enumerate(LEADS)]
    (tmp_path / "r.hea").write_text("\n".join(lines) + "\n")
    hdr = parse_header(tmp_path / "r.hea")
    assert hdr.gains[1] == 200.0 and hdr.gains[0] == 1000.0
    # -32.7685 mV rounds (to even) to -32768 µV, which fits; 32.768 and -40 mV do not
    assert clipped_per_lead(np.array([[-32.768, 32.767, -32.7685, 32.768, -40.0]])).tolist() == [2]
