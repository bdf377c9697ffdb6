"""Beyond CPSC2018: any WFDB record (formats, extra leads, units, rates), PTB-XL in its own layout with
both label sets, the streaming cache writer, and cross-database evaluation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import predict
import report
import synth
import utils.cache as cache_module
from utils.cache import CacheFile, SignalCache, stream_signal_cache, write_span
from utils.labels import CPSC9, LEADS
from utils.layouts import scp_codes
from utils.records import read_record, resample, to_microvolts


@pytest.fixture(scope="module")
def ptbxl(built_once):
    """120 synthetic records in PTB-XL's own layout; only read."""
    return built_once("databases/PTBXL", lambda out: synth.main(
        ["--out", str(out), "--layout", "ptbxl", "--n", "120", "--seed", "5"]))


def synthetic_mv(seconds=4.0, fs=500, seed=1):
    return synth.synthesize(np.random.default_rng(seed), ["SNR"], seconds, fs)[0]


def test_a_15_lead_1000_hz_format_16_record_by_lead_name(tmp_path):
    """PTB's layout: 15 leads (i, ii, …, v6, vx, vy, vz) at 1000 Hz in a format-16 .dat file."""
    mv = synthetic_mv(fs=1000)
    extra = np.stack([mv[0] * 0.5, mv[1] * 0.5, mv[6] * 0.5])
    lower = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6", "vx", "vy", "vz"]
    order = [lower.index(name) for name in ["vx", "v1", "i", "ii", "iii", "avr", "avl", "avf", "v2", "v3", "v4",
                                            "v5", "v6", "vy", "vz"]]  # stored in another order than the standard
    signals = np.concatenate([mv, extra])[order]
    synth.write_wfdb_dat(tmp_path, "s0010_re", to_microvolts(signals) , 1000, ["age: 81", "sex: female"],
                         tuple(lower[i] for i in order), gain=1000)
    hdr, got = read_record(tmp_path / "s0010_re.hea")
    assert hdr.n_sig == 15 and hdr.sample_rate == 1000
    want = resample(to_microvolts(mv) / 1000.0, 1000, 500)
    assert got.shape == (12, mv.shape[1] // 2)
    np.testing.assert_allclose(got, want, atol=1e-9)


@pytest.mark.parametrize("units,gain,scale", [("uV", 1.0, 1000.0), ("mV", 200.0, 1.0), ("V", 1e6, 1e-3)])
def test_units_and_a_257_hz_record(tmp_path, units, gain, scale):
    """INCART's rate (257 Hz) resampled to 500 Hz; µV, mV and V units all read back in mV."""
    mv = synthetic_mv(seconds=3.0, fs=257)
    digital = np.rint(mv * scale * gain).astype(np.int32)
    synth.write_wfdb_dat(tmp_path, "I01", np.clip(digital, -32768, 32767).astype(np.int16), 257, [], LEADS,
                         units=units, gain=gain)
    hdr, got = read_record(tmp_path / "I01")  # a record path without suffix works too
    expected = resample(np.clip(digital, -32768, 32767) / (gain * scale), 257, 500)
    assert got.shape == (12, int(np.ceil(mv.shape[1] * 500 / 257)))
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_dat_layout_caches_exactly_what_the_mat_layout_does(prep, tmp_path):
    """The same synthetic records as .mat and as format-16 .dat: identical labels and cache."""
    synth.main(["--out", str(tmp_path / "mat"), "--n", "30", "--seed", "4", "--max-seconds", "8"])
    synth.main(["--out", str(tmp_path / "dat"), "--n", "30", "--seed", "4", "--max-seconds", "8", "--layout", "wfdb-dat"])
    assert not list((tmp_path / "dat").glob("*.mat"))
    prep(tmp_path / "mat", tmp_path / "a")
    prep(tmp_path / "dat", tmp_path / "b")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "labels.csv"), pd.read_csv(tmp_path / "b" / "labels.csv"))
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "signals.npy"), np.load(tmp_path / "b" / "signals.npy"))


def test_streaming_cache_writers(tmp_path, monkeypatch):
    """Records written one at a time come out lead-major, each at its span: in place at known offsets
    (what worker processes do), or appended and transposed in chunks when lengths are unknown."""
    monkeypatch.setattr(cache_module, "TRANSPOSE_CHUNK", 7)
    rng = np.random.default_rng(0)
    sizes = {"r0": 5, "r1": 17, "bad": 4, "r2": 1, "r3": 30}
    records = {pid: rng.integers(-3000, 3000, (12, n)).astype(np.int16) for pid, n in sizes.items()}
    want = np.concatenate([sig for pid, sig in records.items() if pid != "bad"], axis=1)
    index = stream_signal_cache(tmp_path, ((pid, None if pid == "bad" else sig) for pid, sig in records.items()))
    assert index["patient_id"].tolist() == ["r0", "r1", "r2", "r3"] and index["start"].tolist() == [0, 5, 22, 23]
    np.testing.assert_array_equal(np.load(tmp_path / "signals.npy"), want)
    cache = CacheFile(tmp_path, sum(sizes.values()))
    starts = np.cumsum([0, *sizes.values()])
    for (pid, sig), start in zip(records.items(), starts):
        if pid != "bad":
            write_span(str(cache.tmp), int(start), sig)
    cache.commit()
    got = np.load(tmp_path / "signals.npy")
    for (pid, sig), start in zip(records.items(), starts):
        np.testing.assert_array_equal(got[:, start:start + sig.shape[1]], 0 if pid == "bad" else sig)
    assert not list(tmp_path.glob(".*.tmp"))


def test_scp_codes_count_every_statement_whatever_its_likelihood():
    assert scp_codes("{'AFIB': 0.0, 'SR': 0.0}") == ["AFIB", "SR"]
    assert scp_codes("{'NORM': 100.0, 'SR': 0.0}") == ["NORM", "SR"]
    assert scp_codes("{'1.0AVB': 100.0}") == ["1AVB"]  # a spreadsheet-mangled copy
    assert scp_codes("{'IMI': 15, 'LVH': 50.0}") == ["IMI", "LVH"]
    for cell in ("{'NORM': -100.0}", "{'NORM': 'high'}", "{'NORM': None}", "{'NORM': 101}", "{'NORM': True}",
                 "{'NORM': float('nan')}", "{'NORM': 1e400}"):  # a damaged cell: its row is skipped, said
        with pytest.raises(ValueError, match=r"^scp_codes .*(: a likelihood is not a percentage \('NORM': .*, not a "
                                             r"number in 0\.\.100\)| is not a dict of statements)$"):
            scp_codes(cell)


def test_ptbxl_layout_cpsc9(prep, ptbxl, tmp_path):
    prep(ptbxl, tmp_path / "p")
    db = pd.read_csv(ptbxl / "ptbxl_database.csv", index_col="ecg_id")
    labels = pd.read_csv(tmp_path / "p" / "labels.csv", dtype={"patient_id": str}).set_index("patient_id")
    manifest = json.loads((tmp_path / "p" / "preprocess.json").read_text())
    assert manifest["layout"] == "ptbxl" and manifest["fixed_split"] == {"train": list(range(1, 9)), "val": [9], "test": [10]}
    for pid, row in labels.iterrows():
        codes = scp_codes(db.loc[int(pid), "scp_codes"])
        assert row["fold"] == db.loc[int(pid), "strat_fold"]  # PTB-XL's own folds, ids are ecg_id
        assert {c for c in CPSC9.classes if row[c]} == {CPSC9.scp[s] for s in codes if s in CPSC9.scp}
    af_only = [i for i, c in db["scp_codes"].items() if c == "{'AFIB': 0.0}"]
    assert af_only and all(labels.loc[str(i), "AF"] == 1 for i in af_only)  # likelihood 0 still counts
    key = pd.read_csv(ptbxl / "answer_key.csv", dtype={"Recording": str}).set_index("Recording")
    for pid in labels.index[:20]:
        assert labels.loc[pid, CPSC9.classes[int(key.loc[pid, "First_label"]) - 1]] == 1
    cache = SignalCache(tmp_path / "p")
    assert (cache.length == 5000).all()  # records500: 10 s at 500 Hz
    # PTB-XL's documented sex code (PhysioNet's PTB-XL page: 0 male, 1 female), as the dataset table and the
    # reference's fold tokens read it
    reference = pd.read_csv(tmp_path / "p" / "reference.csv", dtype={"patient_id": str}).set_index("patient_id")
    documented = db["sex"].map({0: "Male", 1: "Female"})
    assert set(documented) == {"Male", "Female"}
    assert (reference["sex"] == documented.rename(index=str).reindex(reference.index)).all()


def test_ptbxl_superdiagnostic_and_a_set_a_layout_cannot_provide(prep, ptbxl, synth_records, tmp_path, capsys):
    prep(ptbxl, tmp_path / "s", "--labels", "superdiagnostic")
    labels = pd.read_csv(tmp_path / "s" / "labels.csv")
    assert list(labels.columns) == ["patient_id", "CD", "HYP", "MI", "NORM", "STTC", "fold"]
    out = capsys.readouterr().out
    n_listed = len(pd.read_csv(ptbxl / "ptbxl_database.csv"))
    assert f"none of the 5 classes: {n_listed - len(labels)}" in out  # records without one are counted
    with pytest.raises(SystemExit, match="superdiagnostic.*SNOMED"):
        prep(synth_records, tmp_path / "x", "--labels", "superdiagnostic")


def test_cross_database_evaluation(prep, trained, prepared, synth_records, ptbxl, tmp_path, capsys):
    """A model trained on one database tested on every labelled record of another, with its own
    validation thresholds; a database with another label set is refused; the report lists it."""
    prep(ptbxl, tmp_path / "PTBXL")
    model = tmp_path / "m"
    model.mkdir()
    shutil.copy(trained["model_path"], model / "model.pth")
    results = tmp_path / "results"
    common = ["--run", str(model), "--results-dir", str(results), "--n-bootstrap", "20", "--num-workers", "0"]
    with pytest.raises(SystemExit, match="thresholds.*run `python predict.py"):
        predict.main([*common, "--external-data-dir", str(tmp_path / "PTBXL")])
    predict.main([*common, "--no-figures"])  # the thresholds; the external evaluation below draws its figures
    thresholds = json.loads((model / "thresholds.json").read_text())["thresholds"]
    table = predict.main([*common, "--external-data-dir", str(tmp_path / "PTBXL")])
    out = results / prepared.name / "m" / "external" / "PTBXL"
    saved = json.loads((out / "metrics.json").read_text())
    n_labelled = len(pd.read_csv(tmp_path / "PTBXL" / "labels.csv"))
    assert saved["n_test"] == n_labelled and saved["trained_on"] == prepared.name
    assert table["threshold"].dropna().tolist() == list(thresholds.values())
    assert (out / "roc.png").exists() and len(pd.read_csv(out / "test_scores.csv")) == n_labelled
    capsys.readouterr()
    again = predict.main([*common, "--external-data-dir", str(tmp_path / "PTBXL")])  # current: said, not rewritten
    said = capsys.readouterr().out
    assert "is current; nothing to do" in said and "wrote" not in said and again.equals(table)
    prep(ptbxl, tmp_path / "SUPER", "--labels", "superdiagnostic")
    with pytest.raises(SystemExit, match="label set superdiagnostic"):
        predict.main([*common, "--external-data-dir", str(tmp_path / "SUPER")])
    with pytest.raises(SystemExit, match="the database the model was trained on"):
        predict.main([*common, "--external-data-dir", str(prepared)])
    shutil.copytree(prepared, tmp_path / "COPY")  # the training database under another name: the same database
    with pytest.raises(SystemExit, match="the database the model was trained on"):
        predict.main([*common, "--external-data-dir", str(tmp_path / "COPY")])
    shutil.copytree(synth_records, tmp_path / "more")  # other data sharing record ids with the training data
    shutil.copy(synth_records / "A0001.hea", tmp_path / "more" / "Z0001.hea")
    shutil.copy(synth_records / "A0001.mat", tmp_path / "more" / "Z0001.mat")
    (tmp_path / "more" / "Z0001.hea").write_text((tmp_path / "more" / "Z0001.hea").read_text().replace("A0001", "Z0001"))
    prep(tmp_path / "more", tmp_path / "MORE")
    capsys.readouterr()
    predict.main([*common, "--external-data-dir", str(tmp_path / "MORE"), "--no-figures"])
    assert "have the ids of records this model was trained or validated on" in capsys.readouterr().err
    mv = synthetic_mv(seconds=6.0, fs=1000)  # --record on a PTB-like record: 15 leads, 1000 Hz, .dat
    lower = ("i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6", "vx", "vy", "vz")
    synth.write_wfdb_dat(tmp_path / "ptb", "s0010_re", to_microvolts(np.concatenate([mv, mv[:3]])), 1000,
                         ["age: 81"], lower)
    diagnosed = predict.main(["--run", str(model), "--record", str(tmp_path / "ptb" / "s0010_re.hea"),
                              "--results-dir", str(results)])
    assert len(diagnosed) == 1 and np.isfinite(diagnosed[list(CPSC9.classes)].to_numpy(float)).all()
    text = report.main(["--data-dir", str(prepared), "--run", str(model), "--results-dir", str(results)]).read_text()
    external = text.split("## External validation")[1]
    assert "| PTBXL |" in external and "(own test fold)" in external


def test_training_and_evaluation_on_superdiagnostic(tiny, prep, ptbxl, tmp_path):
    """Five classes from the data: training, the fixed PTB-XL split, evaluation."""
    import main
    prep(ptbxl, tmp_path / "S", "--labels", "superdiagnostic")
    out = main.main(["--data-dir", str(tmp_path / "S"), *tiny, "--epochs", "1", "--run", str(tmp_path / "s")])
    table = predict.main(["--run", str(out["model_path"]), "--results-dir", str(tmp_path / "r"),
                          "--n-bootstrap", "0", "--num-workers", "0", "--no-figures"])
    assert list(table.index) == ["CD", "HYP", "MI", "NORM", "STTC", "mean"]
    text = report.main(["--data-dir", str(tmp_path / "S"), "--run", str(out["model_path"]),
                        "--results-dir", str(tmp_path / "r")]).read_text()
    for model, auc in (("resnet1d_wang", "0.930"), ("xresnet1d101", "0.928"), ("inception1d", "0.921")):
        assert f"| *{model} (benchmark)* | *{auc}* |" in text  # the published superdiagnostic macro AUCs
    labels = pd.read_csv(tmp_path / "S" / "labels.csv")
    assert table.loc["mean", "support"] == labels.loc[labels["fold"] == 10, ["NORM", "MI", "STTC", "CD", "HYP"]].to_numpy().sum()


@pytest.mark.parametrize("real", [False, True])
def test_mat_fast_path_equals_the_wfdb_package(request, synth_records, real):
    """The direct .mat reader kept for speed gives what wfdb.rdrecord gives (real records when present)."""
    from utils import records as rec
    folder = request.getfixturevalue("real_dir") if real else synth_records
    headers = sorted(folder.glob("*.hea"))[:12]
    assert headers
    for hea in headers:
        hdr = rec.parse_header(hea)
        np.testing.assert_allclose(rec._read_mat_signal(hea, hdr), rec._read_wfdb_signal(hea, hdr), rtol=0, atol=1e-12)
