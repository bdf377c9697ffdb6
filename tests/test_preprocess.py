"""preprocess.py: round trip, header variants, bad input, folds, cache, staleness, real records."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

import preprocess
import synth
from utils.cache import SignalCache
from utils.errors import PipelineError
from utils.folds import split_folds, stratified_folds
from utils.files import atomic_write
from utils.labels import CLASSES, CPSC9, LEADS, SNOMED_TO_CLASS
from utils.layouts import read_cpsc_reference
from utils.records import parse_header


def run(data_dir: Path, out_dir: Path | None = None, *extra: str) -> None:
    args = ["--data-dir", str(data_dir), "--num-workers", "1", *extra]
    preprocess.main(args + (["--out", str(out_dir)] if out_dir else []))


def answer_key(records: Path) -> pd.DataFrame:
    truth, bad = read_cpsc_reference(records / "REFERENCE.csv", CPSC9)
    assert not bad
    return pd.DataFrame.from_dict(truth, orient="index", columns=list(CLASSES)).sort_index()


def test_round_trip_recovers_generator_labels(synth_records, prepared):
    labels = pd.read_csv(prepared / "labels.csv", dtype={"patient_id": str}).set_index("patient_id").sort_index()
    expected = answer_key(synth_records)
    assert len(labels) == len(expected) == 200
    pd.testing.assert_frame_equal(labels[list(CLASSES)], expected, check_dtype=False, check_names=False)
    ref = pd.read_csv(prepared / "reference.csv")
    assert list(ref.columns) == ["patient_id", "sample_rate", "signal_len", "age", "sex", "dx"]
    assert set(ref["sex"]) <= {"Male", "Female", "Unknown"}


def test_original_cpsc2018_layout(tmp_path):
    records = tmp_path / "cpsc"
    synth.main(["--out", str(records), "--n", "30", "--seed", "3", "--max-seconds", "8", "--layout", "cpsc2018"])
    assert not list(records.glob("*.hea"))
    run(records, tmp_path / "out")
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", dtype={"patient_id": str}).set_index("patient_id")
    pd.testing.assert_frame_equal(labels[list(CLASSES)].sort_index(), answer_key(records), check_dtype=False,
                                  check_names=False)


def test_cache_equals_direct_wfdb_decode(synth_records, prepared):
    cache = SignalCache(prepared)
    for pid in ["A0001", "A0077", "A0200"]:
        rec = wfdb.rdrecord(str(synth_records / pid))
        assert rec.sig_name == list(LEADS)
        i = cache.row[pid]  # gain 1000/mV, baseline 0: the stored µV are exactly the digital samples
        stored = cache.signals[:, cache.start[i]:cache.start[i] + cache.length[i]]
        np.testing.assert_array_equal(stored, wfdb.rdrecord(str(synth_records / pid), physical=False).d_signal.T)
        window = cache.window(pid, [0, 6], 15000)
        n = rec.p_signal.shape[0]
        assert window.shape == (2, 15000) and not window[:, :15000 - n].any()
        np.testing.assert_allclose(window[:, -n:], rec.p_signal.T[[0, 6]], atol=1e-6)


def test_records_named_like_missing_values_keep_their_names_and_signals(tmp_path):
    """WFDB records named NA, None, nan or 007, which pandas reads as missing or as a number: every table of
    records (labels, the cache's index, the features, a scores file) gives their names back as written, and
    each name its own record's signal (that of the same record preprocessed under its first name)."""
    from utils.evaluator import read_scores
    from utils.features import load_or_compute_features
    from utils.cache import load_labels

    raw, renamed = tmp_path / "raw", tmp_path / "renamed"
    synth.main(["--out", str(raw), "--n", "20", "--seed", "5", "--max-seconds", "6"])
    shutil.copytree(raw, renamed)
    names = {"A0001": "NA", "A0002": "None", "A0003": "nan", "A0004": "007"}
    reference = (renamed / "REFERENCE.csv").read_text()
    for old, new in names.items():
        (renamed / f"{new}.hea").write_text((renamed / f"{old}.hea").read_text().replace(old, new))
        (renamed / f"{old}.hea").unlink()
        (renamed / f"{old}.mat").rename(renamed / f"{new}.mat")
        reference = reference.replace(f"\n{old},", f"\n{new},")
    (renamed / "REFERENCE.csv").write_text(reference)
    for folder in (raw, renamed):
        preprocess.main(["--data-dir", str(folder), "--num-workers", "1"])

    labels = load_labels(renamed)
    assert set(names.values()) <= set(labels["patient_id"]) and labels["patient_id"].notna().all()
    before, after = SignalCache(raw), SignalCache(renamed)
    for old, new in names.items():
        np.testing.assert_array_equal(after.record(new), before.record(old))
        row = labels.set_index("patient_id").loc[new, list(CLASSES)].to_numpy()
        assert (row == load_labels(raw).set_index("patient_id").loc[old, list(CLASSES)].to_numpy()).all()
    features = load_or_compute_features(renamed, False, 1, False)
    assert features["patient_id"].tolist() == labels["patient_id"].tolist()
    scores = labels[["patient_id", *CLASSES]].assign(**{f"p_{c}": 0.5 for c in CLASSES})
    scores.to_csv(tmp_path / "scores.csv", index=False)
    assert read_scores(tmp_path / "scores.csv", CLASSES)["patient_id"].tolist() == labels["patient_id"].tolist()


HEADER = """{name} 12 500 5000
""" + "".join(f"{{name}}.mat 16x1+24 1000.0(0)/{{unit}} 16 0 0 0 0 {lead}\n" for lead in LEADS)


@pytest.mark.parametrize("comments, age, sex, classes", [
    ("#Age: 74\n#Sex: Male\n#Dx: 59118001", 74, "Male", ["RBBB"]),
    ("# Age: 74\n# Sex: Female\n# Dx: 426783006,55930002", 74, "Female", ["SNR"]),
    ("#Age: NaN\n#Sex: Unknown\n#Dx: 164889003,270492004", np.nan, "Unknown", ["AF", "IAVB"]),
    ("#Sex: M\n#Dx: 999999,17338001", np.nan, "Male", ["PVC"]),
    ("# Age:\n# Dx: 251146004", np.nan, "Unknown", []),
])
def test_header_variants(tmp_path, comments, age, sex, classes):
    path = tmp_path / "X1.hea"
    path.write_text(HEADER.format(name="X1", unit="mv") + comments + "\n")
    hdr = parse_header(path)
    assert hdr.n_sig == 12 and hdr.sample_rate == 500 and hdr.sig_len == 5000
    assert hdr.gains == [1000.0] * 12 and hdr.baselines == [0] * 12 and hdr.units == ["mv"] * 12
    assert hdr.lead_names == list(LEADS)
    assert (np.isnan(hdr.age) and np.isnan(age)) or hdr.age == age
    assert hdr.sex == sex
    assert sorted({SNOMED_TO_CLASS[c] for c in hdr.dx if c in SNOMED_TO_CLASS}) == sorted(classes)


def test_header_variants_end_to_end(records_copy, tmp_path):
    """Rewrite headers in the real-world variants; labels and signals must come out unchanged."""
    for i, hea in enumerate(sorted(records_copy.glob("*.hea"))[:20]):
        text = hea.read_text()
        text = text.replace("#Age:", "# Age:").replace("#Sex:", "# Sex:").replace("#Dx: ", "# Dx: 999,")
        text = text.replace(" 16+24 1000/mV", " 16x1+24 1000.0(0)/mv" if i % 2 else " 16+24 1000/uV")
        if i % 2 == 0:  # same signal declared in µV at gain 1: identical millivolts
            text = text.replace(" 16+24 1000/uV", " 16+24 1/uV")
        hea.write_text(text)
    run(records_copy, tmp_path / "out")
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", dtype={"patient_id": str}).set_index("patient_id")
    pd.testing.assert_frame_equal(labels[list(CLASSES)].sort_index(), answer_key(records_copy),
                                  check_dtype=False, check_names=False)
    cache = SignalCache(tmp_path / "out")
    rec = wfdb.rdrecord(str(records_copy / "A0003"))  # 1/uV: wfdb gives µV
    np.testing.assert_allclose(cache.record("A0003"), rec.p_signal.T / 1000, atol=1e-6)


def test_resampled_to_500_hz(tmp_path):
    records = tmp_path / "r250"
    synth.main(["--out", str(records), "--n", "12", "--seed", "5", "--max-seconds", "8", "--sample-rate", "250"])
    run(records, tmp_path / "out")
    ref = pd.read_csv(tmp_path / "out" / "reference.csv", dtype={"patient_id": str})
    index = pd.read_csv(tmp_path / "out" / "signals_index.csv", dtype={"patient_id": str})
    assert (ref["sample_rate"] == 250).all()
    np.testing.assert_array_equal(index["length"].to_numpy(), 2 * ref["signal_len"].to_numpy())


def test_bad_records_are_skipped_and_reported(records_copy, tmp_path, capsys):
    (records_copy / "A0001.mat").unlink()                                     # header without signal
    mat = records_copy / "A0002.mat"
    mat.write_bytes(mat.read_bytes()[:300])                                    # truncated signal
    hea = records_copy / "A0003.hea"                                           # wrong lead count
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join([lines[0].replace(" 12 ", " 11 ", 1)] + lines[1:12] + lines[13:]) + "\n")
    (records_copy / "A0004.hea").write_text("")                                # empty header
    run(records_copy, tmp_path / "out")
    err = capsys.readouterr().err
    assert "A0001.hea: signal file A0001.mat is missing" in err
    assert "A0002.mat: unreadable signal" in err
    assert "A0003.hea: expected 12 leads, header declares 11" in err
    assert "A0004.hea: empty header" in err
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", dtype={"patient_id": str})
    assert len(labels) == 196 and not {"A0001", "A0002", "A0003", "A0004"} & set(labels["patient_id"])
    import json
    manifest = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert len(manifest["errors"]) == 4 and manifest["kept"] == 196


def test_nan_signal_is_skipped(tmp_path, capsys):
    records = tmp_path / "cpsc"
    synth.main(["--out", str(records), "--n", "6", "--seed", "1", "--max-seconds", "7", "--layout", "cpsc2018"])
    from scipy.io import loadmat, savemat
    ecg = loadmat(records / "A0002.mat", squeeze_me=True, struct_as_record=False)["ECG"]
    data = ecg.data.copy()
    data[3, 100] = np.nan
    savemat(records / "A0002.mat", {"ECG": {"sex": ecg.sex, "age": ecg.age, "data": data}})
    run(records, tmp_path / "out")
    assert "A0002.mat: signal contains NaN" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "out" / "labels.csv")) == 5


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "no records"),
    (lambda d: (d.mkdir(), (d / "A1.hea").write_text("A1 12 500")), "could be used"),
])
def test_unusable_data_dir_is_a_clear_error(tmp_path, setup, message):
    data_dir = tmp_path / "data"
    setup(data_dir)
    with pytest.raises(SystemExit) as exc:
        run(data_dir)
    assert message in str(exc.value) and str(data_dir) in str(exc.value)


def test_folds_are_seeded_and_stratified(prepared):
    labels = pd.read_csv(prepared / "labels.csv")
    y = labels[list(CLASSES)].to_numpy()
    a, b, c = stratified_folds(y, 10, 1), stratified_folds(y, 10, 1), stratified_folds(y, 10, 2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    np.testing.assert_array_equal(labels["fold"], stratified_folds(y, 10, 42))  # preprocess's default seed
    sizes = np.bincount(a, minlength=11)[1:]
    assert sizes.max() - sizes.min() <= 3
    for j, cls in enumerate(CLASSES):
        if y[:, j].sum() >= 10:
            per_fold = np.bincount(a[y[:, j] == 1], minlength=11)[1:]
            assert per_fold.min() >= 1, f"{cls} missing from a fold: {per_fold}"


def test_the_snomed_codes_of_the_nine_classes_are_the_challenges_equivalences():
    """The CinC 2020/2021 scoring's equivalent codes: complete LBBB is LBBB, complete RBBB RBBB, a
    supraventricular premature beat (SVPB) PAC, ventricular premature beats and ectopics PVC."""
    assert SNOMED_TO_CLASS == {
        "426783006": "SNR", "164889003": "AF", "270492004": "IAVB", "164909002": "LBBB", "733534002": "LBBB",
        "713427006": "RBBB", "59118001": "RBBB", "284470004": "PAC", "63593006": "PAC", "164884008": "PVC",
        "427172004": "PVC", "17338001": "PVC", "429622005": "STD", "164931005": "STE"}


def test_the_seed_draws_the_folds_the_limit_and_the_cache_rate_rebuilds(tmp_path):
    """preprocess.py --seed 9 folds are stratified_folds(..., 9), not the default seed's, and so are those of
    a folder sharing its cache (--signals-from) with its own --seed; a --limit subset is the seed's own
    sample; another --cache-rate is another cache (rebuilt, not "current")."""
    from utils.cache import load_labels
    from utils.folds import split_labels

    synth.main(["--out", str(tmp_path / "raw"), "--n", "60", "--seed", "4", "--max-seconds", "6"])
    preprocess.main(["--data-dir", str(tmp_path / "raw"), "--out", str(tmp_path / "d"), "--seed", "9",
                     "--num-workers", "1"])
    labels = load_labels(tmp_path / "d")
    y = labels[list(CLASSES)].to_numpy()
    np.testing.assert_array_equal(labels["fold"], stratified_folds(y, 10, 9))
    assert (stratified_folds(y, 10, 9) != stratified_folds(y, 10, 42)).any()
    drawn = {}
    for seed in (1, 2):
        parts = split_labels(labels, seed, limit=30)
        drawn[seed] = set(pd.concat(parts.values())["patient_id"])
        assert drawn[seed] == set(labels.sample(n=30, random_state=seed)["patient_id"])
    assert drawn[1] != drawn[2]
    assert SignalCache(tmp_path / "d").length.max() > 6 * 100  # 500 Hz
    # a folder sharing that cache (--signals-from), its folds drawn with its own seed
    preprocess.main(["--data-dir", str(tmp_path / "raw"), "--out", str(tmp_path / "d3"), "--signals-from",
                     str(tmp_path / "d"), "--seed", "3", "--num-workers", "1"])
    shared = load_labels(tmp_path / "d3")
    assert shared["patient_id"].tolist() == labels["patient_id"].tolist()
    np.testing.assert_array_equal(shared["fold"], stratified_folds(y, 10, 3))
    preprocess.main(["--data-dir", str(tmp_path / "raw"), "--out", str(tmp_path / "d"), "--seed", "9",
                     "--cache-rate", "100", "--num-workers", "1"])
    cache = SignalCache(tmp_path / "d")
    assert cache.sample_rate == 100 and cache.length.max() <= 6 * 100  # records of 6 s at most


def test_splits_single_seeded_and_cross_validation():
    train, val, test = split_folds(42)
    assert (train, val, test) == split_folds(42) and (train, val, test) != split_folds(43)
    assert len(train) == 8 and sorted(train + val + test) == list(range(1, 11))
    # the original's split: np.random.RandomState(seed).permutation(range(1, 11)), 8 / 1 / 1
    assert (train, val, test) == ([9, 2, 6, 1, 8, 3, 10, 5], [4], [7])
    for seed in (0, 1, 7, 123):
        perm = np.random.RandomState(seed).permutation(range(1, 11)).tolist()
        assert split_folds(seed) == (perm[:8], perm[8:9], perm[9:])
    tested = []
    for k in range(1, 11):
        train, val, test = split_folds(42, test_fold=k)
        assert test == [k] and val == [k % 10 + 1] and sorted(train + val + test) == list(range(1, 11))
        tested += test
    assert sorted(tested) == list(range(1, 11))  # cross-validation tests every fold exactly once
    with pytest.raises(ValueError, match="1..10"):
        split_folds(42, test_fold=11)


def test_outputs_rebuilt_only_when_inputs_change(records_copy, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    run(records_copy, out)
    first = (out / "signals.npy").stat().st_mtime_ns
    run(records_copy, out)
    assert "outputs are current" in capsys.readouterr().out
    assert (out / "signals.npy").stat().st_mtime_ns == first
    fingerprint = json.loads((out / "preprocess.json").read_text())["fingerprint"]
    monkeypatch.chdir(records_copy.parent)  # the same folder spelt another way: the same data, not a rebuild
    run(Path(records_copy.name), out)
    run(Path(".") / ".." / records_copy.parent.name / records_copy.name, out)
    assert capsys.readouterr().out.count("outputs are current") == 2
    assert json.loads((out / "preprocess.json").read_text())["fingerprint"] == fingerprint
    shutil.copy(records_copy / "A0001.hea", records_copy / "A0001.hea.bak")
    (records_copy / "A0005.hea").write_text((records_copy / "A0005.hea").read_text().replace(
        "#Dx: ", "#Dx: 164931005,"))  # A0005 now also has STE
    run(records_copy, out)
    assert "inputs or settings changed" in capsys.readouterr().out
    labels = pd.read_csv(out / "labels.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert labels.loc["A0005", "STE"] == 1
    run(records_copy, out, "--seed", "9")
    assert "changed" in capsys.readouterr().out
    run(records_copy, out, "--seed", "9", "--force")
    assert "rebuilding" in capsys.readouterr().out


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.csv"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_every_writer_of_outputs_writes_atomically(tmp_path, monkeypatch):
    """write_csv, write_text, write_json, write_npy and save_figure all go through atomic_write: when the
    last step (the rename over the old file) fails, the old file is whole and no temporary is left."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import utils.files as files

    def refused(*_):
        raise OSError("disk full")

    writers = {"t.csv": lambda p: files.write_csv(pd.DataFrame({"a": [1]}), p),
               "t.md": lambda p: files.write_text("new", p), "t.json": lambda p: files.write_json({"a": 1}, p),
               "t.npy": lambda p: files.write_npy(np.zeros(3), p),
               "t.png": lambda p: files.save_figure(plt.figure(), p)}
    for name in writers:
        (tmp_path / name).write_text("old")
    monkeypatch.setattr(files.os, "replace", refused)
    for name, write in writers.items():
        with pytest.raises(OSError, match="disk full"):
            write(tmp_path / name)
        assert (tmp_path / name).read_text() == "old", name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(writers)


def test_atomic_write_gives_usual_permissions(tmp_path):
    import os
    import stat
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "y.csv", lambda tmp: tmp.write_text("new"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's private 0600


def test_atomic_write_goes_through_a_link_and_never_replaces_a_device_pipe_or_folder(tmp_path):
    """A rename over /dev/null would make it a regular file: such a path is refused and left as it was;
    a symbolic link stays a link, its target gets the output."""
    import os
    (tmp_path / "target.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to(tmp_path / "target.csv")
    atomic_write(tmp_path / "link.csv", lambda tmp: tmp.write_text("new"))
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "target.csv").read_text() == "new"
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "to_pipe.csv").symlink_to(tmp_path / "pipe.csv")
    for name in ("pipe.csv", "folder.csv", "to_pipe.csv"):
        with pytest.raises(PipelineError, match=f"{name} is there and is not a regular file"):
            atomic_write(tmp_path / name, lambda tmp: tmp.write_text("new"))
    assert (tmp_path / "pipe.csv").is_fifo() and (tmp_path / "folder.csv").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.real_data
def test_real_records_labels_match_headers(real_dir, tmp_path):
    run(real_dir, tmp_path / "out")  # outputs elsewhere: the shared folder stays read-only
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", dtype={"patient_id": str}).set_index("patient_id")
    headers = sorted(real_dir.glob("*.hea"))
    expected_kept = 0
    for hea in headers:
        codes = [ln.split(":", 1)[1] for ln in hea.read_text().splitlines() if ln.lstrip("# ").startswith("Dx")][0]
        expected = {SNOMED_TO_CLASS[c.strip()] for c in codes.split(",") if c.strip() in SNOMED_TO_CLASS}
        if expected:
            expected_kept += 1
            got = {c for c in CLASSES if labels.loc[hea.stem, c] == 1}
            assert got == expected, hea.stem
    assert len(labels) == expected_kept > 0
    cache = SignalCache(tmp_path / "out")
    rec = wfdb.rdrecord(str(real_dir / "JS20000"))
    np.testing.assert_allclose(cache.record("JS20000"), rec.p_signal.T, atol=1e-6)


def test_half_updated_outputs_are_refused_and_stale_temporaries_removed(prepared, records_copy, tmp_path):
    """A run killed right after signals.npy was renamed leaves new signals beside old labels and no
    manifest: every later stage must refuse the folder; the next run removes a killed fill's temporary."""
    import baselines
    import main
    data = tmp_path / "d"
    shutil.copytree(prepared, data)
    (data / "preprocess.json").unlink()
    with pytest.raises(SystemExit, match="preprocessing did not finish"):
        baselines.main(["--data-dir", str(data), "--results-dir", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="preprocessing did not finish"):
        main.main(["--data-dir", str(data), "--run", str(tmp_path / "m")])
    with pytest.raises(PipelineError, match="preprocessing did not finish"):  # the library raises; scripts exit
        SignalCache(data)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".signals.npy.k1ll3d.tmp"
    stale.write_bytes(b"\0" * 1000)
    run(records_copy, out)
    assert not stale.exists() and (out / "preprocess.json").exists()


def test_iterative_stratification_spreads_every_label_within_one_of_its_share():
    """Sechidis et al.'s rarest-label-first placement: on multi-label matrices of CPSC-like prevalences
    (3-40 %), each label's positives per fold lie within one record of a tenth of them, for every label
    (placing the commonest label first leaves rare ones up to 5 records off: whole folds without one)."""
    prevalence = np.array([0.3, 0.15, 0.1, 0.05, 0.03, 0.02, 0.1, 0.2, 0.4])
    for trial in range(5):
        y = np.random.default_rng(trial).random((600, 9)) < prevalence
        folds = stratified_folds(y, 10, 42)
        for j in range(9):
            per_fold = np.bincount(folds[y[:, j]], minlength=11)[1:]
            assert np.abs(per_fold - y[:, j].sum() / 10).max() < 1, (trial, j, per_fold)
