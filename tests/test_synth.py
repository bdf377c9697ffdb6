"""synth.py: the default output stays byte-identical, the direct WFDB writer reads back exactly (through
wfdb and the project's readers), and the sites differ from the default in what their profiles say."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

import preprocess
import synth
from utils.cache import SignalCache
from utils.labels import CLASSES, LEADS
from utils.records import read_record, resample, to_microvolts

# sha256 over (relative path, bytes) of every file a tiny default run writes, computed with synth.py as it was
# before sites and the direct .dat writer (commit 4f8465a, wfdb.wrsamp): the demo's data must not change.
# PTB-XL's two tables have since gained real statement rows and sinus-rate statements: its hash covers
# the records (records500/, records100/, answer key), still those of 4f8465a.
DEFAULT_HASHES = {
    "wfdb": "ef7c4d4eb7ae9b043379ed67ec499e5d6c5a2f0daef7944d4020c612947b4833",
    "wfdb-dat": "944e6e5efe7d41f266f1b1d09444dacca8181cbf08e165e58031d64c4f45818d",
    "ptbxl": "5b27d5c4c53cc4533a9b74b4c8d1746d13958b0b5905e5d39aeebb76d44d2245",
}
SKIP = {"ptbxl": ("ptbxl_database.csv", "scp_statements.csv")}
TINY = ["--n", "3", "--seed", "2", "--max-seconds", "7"]


def tree_hash(folder: Path, skip: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and q.name not in skip):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def record_signal(seed: int, i: int, seconds: float | None, site: str = "a") -> tuple[list[str], np.ndarray]:
    """Labels and mV signal of record `i`, drawn exactly as generate() draws it."""
    profile = synth.SITES[site]
    rng = np.random.default_rng([seed, i])
    labels = synth.sample_labels(rng, profile.prevalence)
    synth.sample_demographics(rng)
    seconds = seconds or synth.sample_duration(rng, 6.0, 7.0)
    return labels, synth.synthesize(rng, labels, seconds, profile.sample_rate, profile)[0]


@pytest.mark.parametrize("layout", sorted(DEFAULT_HASHES))
def test_default_output_is_unchanged_and_site_a_is_the_default(tmp_path, layout):
    synth.main(["--out", str(tmp_path / "site_a"), *TINY, "--layout", layout, "--site", "a"])
    assert json.loads((tmp_path / "site_a" / "site.json").read_text())["site"] == "a"
    assert tree_hash(tmp_path / "site_a", skip=("site.json", *SKIP.get(layout, ()))) == DEFAULT_HASHES[layout]
    # the same folder rewritten without --site: the stale site.json goes, the rest is the default
    synth.main(["--out", str(tmp_path / "site_a"), *TINY, "--layout", layout, "--force"])
    assert not (tmp_path / "site_a" / "site.json").exists()
    assert tree_hash(tmp_path / "site_a", skip=SKIP.get(layout, ())) == DEFAULT_HASHES[layout]


def test_dat_writer_matches_wrsamp_and_reads_back(tmp_path):
    """The direct format-16 writer gives wfdb.wrsamp's bytes, and wfdb reads any int16 back exactly."""
    rng = np.random.default_rng(0)
    val = rng.integers(-32767, 32768, (12, 777)).astype(np.int16)  # -32768 is WFDB's missing-sample code
    synth.write_wfdb_dat(tmp_path / "own", "r1", val, 500, ["Age: 50", "Dx: 426783006"])
    wfdb.wrsamp("r1", fs=500, units=["mV"] * 12, sig_name=list(LEADS), d_signal=np.ascontiguousarray(val.T),
                fmt=["16"] * 12, adc_gain=[1000] * 12, baseline=[0] * 12, comments=["Age: 50", "Dx: 426783006"],
                write_dir=str(tmp_path))
    for suffix in (".dat", ".hea"):
        assert (tmp_path / "own" / f"r1{suffix}").read_bytes() == (tmp_path / f"r1{suffix}").read_bytes()
    synth.write_wfdb_dat(tmp_path, "r2", val, 257.5, [], units="uV", gain=2.5)  # a float rate and gain
    rec = wfdb.rdrecord(str(tmp_path / "r2"), physical=False)
    assert rec.fs == 257.5 and rec.units == ["uV"] * 12 and rec.adc_gain == [2.5] * 12
    np.testing.assert_array_equal(rec.d_signal.T, val)
    with pytest.raises(synth.PipelineError, match="format 16 stores integers"):
        synth.write_wfdb_dat(tmp_path, "r3", val.astype(float), 500, [])


def test_ptbxl_layout_holds_the_synthesised_signal(tmp_path):
    synth.main(["--out", str(tmp_path), "--n", "2", "--seed", "4", "--layout", "ptbxl"])
    db = pd.read_csv(tmp_path / "ptbxl_database.csv", index_col="ecg_id")
    for i in (1, 2):
        _, mv = record_signal(4, i, 10.0)
        want = np.clip(np.rint(mv * 1000), -32768, 32767)
        hr = wfdb.rdrecord(str(tmp_path / db.loc[i, "filename_hr"]), physical=False)
        assert hr.fs == 500 and hr.sig_name[3:6] == ["AVR", "AVL", "AVF"] and hr.units == ["mV"] * 12
        np.testing.assert_array_equal(hr.d_signal.T, want)
        physical = wfdb.rdrecord(str(tmp_path / db.loc[i, "filename_hr"])).p_signal
        np.testing.assert_allclose(physical.T, want / 1000, atol=1e-12)
        lr = wfdb.rdrecord(str(tmp_path / db.loc[i, "filename_lr"]), physical=False)
        assert lr.fs == 100
        np.testing.assert_array_equal(lr.d_signal.T, np.clip(np.rint(resample(mv, 500, 100) * 1000), -32768, 32767))


@pytest.mark.parametrize("site,layout", [("b", "wfdb"), ("c", "wfdb-dat"), ("c", "ptbxl")])
def test_site_records_carry_their_rate_gain_and_units_and_read_back(tmp_path, site, layout):
    profile = synth.SITES[site]
    synth.main(["--out", str(tmp_path), *TINY, "--layout", layout, "--site", site])
    saved = json.loads((tmp_path / "site.json").read_text())
    assert saved["site"] == site and saved["sample_rate"] == profile.sample_rate and saved["layout"] == layout
    assert saved["lead_gain"] == profile.lead_gain and saved["default"]["sample_rate"] == 500
    if layout == "ptbxl":
        header = tmp_path / pd.read_csv(tmp_path / "ptbxl_database.csv")["filename_hr"][0]
        assert header.parent.parent.name == f"records{profile.sample_rate}"
        seconds = 10.0
    else:
        header, seconds = tmp_path / "A0001", None
    _, mv = record_signal(2, 1, seconds, site)
    adu_per_mv = profile.adc_gain * synth.ADU_UNITS[profile.units]
    hdr, got = read_record(header.with_suffix(".hea"))  # the project's reader: mV at 500 Hz
    assert hdr.sample_rate == profile.sample_rate != 500 and hdr.sig_len == mv.shape[1]
    assert hdr.gains == [profile.adc_gain] * 12 and hdr.units == [profile.units] * 12
    want = resample(np.clip(np.rint(mv * adu_per_mv), -32768, 32767) / adu_per_mv, profile.sample_rate, 500)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_preprocess_reads_a_site_b_ptbxl_database(tmp_path):
    """250 Hz, 200 ADU/mV records in PTB-XL's layout: cached at 500 Hz in µV, as the reader gives them."""
    synth.main(["--out", str(tmp_path / "b"), "--n", "12", "--seed", "6", "--layout", "ptbxl", "--site", "b"])
    preprocess.main(["--data-dir", str(tmp_path / "b"), "--out", str(tmp_path / "out"), "--num-workers", "1"])
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", dtype={"patient_id": str})
    assert len(labels) == 12
    cache = SignalCache(tmp_path / "out")
    db = pd.read_csv(tmp_path / "b" / "ptbxl_database.csv", index_col="ecg_id")
    for pid in ("1", "12"):
        _, mv = read_record(tmp_path / "b" / f"{db.loc[int(pid), 'filename_hr']}.hea")
        assert mv.shape == (12, 5000)
        np.testing.assert_array_equal(cache.record(pid, dtype=np.float64), to_microvolts(mv) / 1000)


def test_site_class_mix_follows_its_prevalence():
    """First labels over 4000 draws: CPSC2018's mix for a, the site's own for b and c."""
    for site in ("a", "b", "c"):
        prevalence = synth.SITES[site].prevalence
        rng = np.random.default_rng(1)
        first = pd.Series([synth.sample_labels(rng, prevalence)[0] for _ in range(4000)])
        share = first.value_counts(normalize=True).reindex(CLASSES, fill_value=0)
        want = pd.Series(prevalence).reindex(CLASSES) / sum(prevalence.values())
        assert (share - want).abs().max() < 0.03, (site, share.round(3).to_dict())
    assert synth.SITES["b"].prevalence["SNR"] > 2 * synth.PREVALENCE["SNR"]  # the sites do differ
    assert synth.SITES["c"].prevalence["STE"] > 2 * synth.PREVALENCE["STE"]


def test_lead_gain_scales_the_heart_consistently_across_the_12_leads():
    """Site b's electrode pattern on an otherwise default site (noise and wander off): each measured lead
    scales by its factor and III, aVR, aVL, aVF follow I and II (so they stay consistent)."""
    quiet = dataclasses.replace(synth.SITES["a"], noise=0.0, wander=0.0)
    shifted = dataclasses.replace(quiet, lead_gain=synth.SITES["b"].lead_gain)
    base = synth.synthesize(np.random.default_rng(3), ["SNR"], 8.0, 500, quiet)[0]
    moved = synth.synthesize(np.random.default_rng(3), ["SNR"], 8.0, 500, shifted)[0]
    g = shifted.lead_gain
    want = np.array([g["I"], g["II"], g["II"], g["I"], g["I"], g["II"], *(g[f"V{k}"] for k in range(1, 7))])
    np.testing.assert_allclose(np.ptp(moved, axis=1) / np.ptp(base, axis=1), want, rtol=0.05)
    np.testing.assert_allclose(moved[2], moved[1] - moved[0], atol=1e-12)  # III = II - I


def test_site_c_filter_removes_wander_and_high_frequencies():
    unfiltered = dataclasses.replace(synth.SITES["c"], bandpass=None)
    raw = synth.synthesize(np.random.default_rng(5), ["STD"], 20.0, 1000, unfiltered)[0]
    out = synth.synthesize(np.random.default_rng(5), ["STD"], 20.0, 1000, synth.SITES["c"])[0]
    freqs = np.fft.rfftfreq(raw.shape[1], 1 / 1000)
    power = lambda x, lo, hi: (np.abs(np.fft.rfft(x, axis=1)) ** 2)[:, (freqs >= lo) & (freqs < hi)].sum()  # noqa
    assert power(out, 0.01, 0.2) < 0.05 * power(raw, 0.01, 0.2)
    assert power(out, 60, 200) < 0.05 * power(raw, 60, 200)
    assert 0.7 < power(out, 5, 20) / power(raw, 5, 20) < 1.05  # the QRS and T band passes


def test_sites_refuse_what_they_cannot_write(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        synth.main(["--out", str(tmp_path / "x"), *TINY, "--layout", "cpsc2018", "--site", "b"])
    assert e.value.code == 2 and "argument --layout: cpsc2018 has no sampling-rate field" in capsys.readouterr().err
    with pytest.raises(synth.PipelineError, match="original CPSC2018 layout has no sampling-rate field"):
        synth.generate(tmp_path / "x", 1, 0, layout="cpsc2018", site="b")
    with pytest.raises(SystemExit) as e:
        synth.main(["--out", str(tmp_path / "x"), *TINY, "--site", "z"])
    assert e.value.code == 2
    bad = dataclasses.replace(synth.SITES["a"], lead_gain={"aVR": 2.0}, units="mmHg")
    with pytest.raises(synth.PipelineError, match="units 'mmHg'.*lead_gain for 'aVR'"):
        bad.check("x", 500)


REAL_STATEMENTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl" / "scp_statements.csv"


@pytest.mark.skipif(not REAL_STATEMENTS.is_file(), reason=f"PTB-XL's statement table not present at {REAL_STATEMENTS}")
def test_statements_writes_ptbxl_s_table_and_one_more_of_its_statements_per_record(tmp_path, capsys):
    import ast

    plain, full = tmp_path / "plain", tmp_path / "full"
    synth.main(["--out", str(plain), "--layout", "ptbxl", "--n", "40", "--seed", "3"])
    synth.main(["--out", str(full), "--layout", "ptbxl", "--n", "40", "--seed", "3", "--statements", str(REAL_STATEMENTS)])
    table = pd.read_csv(full / "scp_statements.csv", index_col=0)
    pd.testing.assert_frame_equal(table, pd.read_csv(REAL_STATEMENTS, index_col=0))
    a, b = (pd.read_csv(d / "ptbxl_database.csv") for d in (plain, full))
    assert tree_hash(plain, skip=("ptbxl_database.csv", "scp_statements.csv")) == \
        tree_hash(full, skip=("ptbxl_database.csv", "scp_statements.csv"))  # the same records
    added = 0
    for mine, more in zip(a["scp_codes"].map(ast.literal_eval), b["scp_codes"].map(ast.literal_eval)):
        assert set(more) >= set(mine) and len(more) - len(mine) <= 1 and set(more) <= set(table.index)
        for name in set(more) - set(mine):
            added += 1
            assert more[name] == (100.0 if table.loc[name, "diagnostic"] == 1 else 0.0)
    assert added >= 30  # one per record unless it drew a statement the record already has
    for argv in (["--layout", "wfdb", "--statements", str(REAL_STATEMENTS)],
                 ["--layout", "ptbxl", "--statements", str(tmp_path / "none.csv")]):
        with pytest.raises(SystemExit) as e:
            synth.main(["--out", str(tmp_path / "x"), *argv])
        assert e.value.code == 2 and "argument --statements" in capsys.readouterr().err
