"""baselines.py and utils.features: feature definition, speed-up kept exact, cache round trip, classifiers,
bad input."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import pywt
import wfdb.processing

import baselines
import utils.features as features
from utils.cache import PREPROCESS_OUTPUTS, SignalCache, load_labels
from utils.evaluator import read_scores
from utils.features import feature_columns, load_or_compute_features
from utils.folds import split_labels
from utils.labels import CLASSES, LEADS
from utils.manifest import read_manifest, write_manifest
from utils.results import read_evaluation


def test_feature_count_and_names():
    names = features.feature_names()
    assert len(names) == 636 == len(set(names))
    # the original's order: median fifth, then mean, std, var; each band's entropy before its statistics
    assert names[:8] == ["I_p5", "I_p25", "I_p75", "I_p95", "I_median", "I_mean", "I_std", "I_var"]
    assert names[8] == "I_cA4_entropy" and names[9] == "I_cA4_p5" and names[-1] == "V6_cD1_var"
    assert len(features.feature_names(heart_rate=True)) == 644
    assert len(features.feature_columns(["I", "aVR"], False)) == 106


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_features_equal_the_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3000, 9000))
    mv = rng.standard_normal((12, n)).cumsum(1) * 0.01
    mv[3] = np.round(mv[3], 2)  # repeated values: entropy of value counts is not just log(n)
    mv[5] = 0.0                 # a flat lead
    mv[7] = np.tile(rng.integers(-50, 50, 32) / 100, n // 32 + 1)[:n]  # periodic: its wavelet coefficients repeat
    fast, ref = features.signal_features(mv), features.reference_features(mv)
    assert fast.shape == (636,) and np.isfinite(fast).all()
    np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-12)


def test_the_statistics_percentiles_are_numpys_bit_for_bit():
    """Read off the sorted values rather than by np.percentile: the same numbers to the last bit, for any
    length (one value, two, ties, a flat lead), so a features.csv stays what it was."""
    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 20, 21, 1001):
        x = rng.standard_normal((12, n)) * 37.0
        x[1], x[2] = np.round(x[1], 0), 0.0
        want = np.moveaxis(np.percentile(x, [5, 25, 75, 95, 50], axis=-1), 0, -1)
        np.testing.assert_array_equal(features._stats(x)[:, :5], want)


def test_reference_is_the_originals_definition():
    """Hand-computed: median fifth, entropy of value counts divided by 10 (not cancelled)."""
    lead = np.array([0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 3.0, 5.0] * 8)
    ref = features.reference_features(np.tile(lead, (12, 1)))
    expected_stats = [np.percentile(lead, 5), np.percentile(lead, 25), np.percentile(lead, 75),
                      np.percentile(lead, 95), np.median(lead), lead.mean(), lead.std(), lead.var()]
    np.testing.assert_array_equal(ref[:8], expected_stats)
    cA4 = pywt.wavedec(lead, "db10", level=4)[0]
    _, counts = np.unique(cA4, return_counts=True)
    p = counts / counts.sum()
    assert ref[8] == pytest.approx(-(p * np.log(p)).sum() / 10, rel=1e-12)


@pytest.mark.real_data
def test_features_csv_equals_the_original_extraction_on_real_records(real_dir, tmp_path):
    """features.csv from the cache equals the original's per-lead extraction on wfdb's physical
    signal (float64) of real 500 Hz records; in float32 the finest band's entropy would differ."""
    import preprocess
    preprocess.main(["--data-dir", str(real_dir), "--out", str(tmp_path), "--num-workers", "1"])
    table = features.load_or_compute_features(tmp_path, False, 1, False).set_index("patient_id")
    assert len(table) >= 5
    for pid in table.index[:6]:
        physical = wfdb.rdrecord(str(real_dir / pid)).p_signal.T
        ref = features.reference_features(physical)
        np.testing.assert_allclose(table.loc[pid].to_numpy(), ref, rtol=1e-12, atol=1e-15)


def test_features_cache_round_trips_exactly_and_is_reused(hospitals, tmp_path, capsys):
    import shutil
    data = tmp_path / "d"
    shutil.copytree(hospitals[0], data)
    for name in ("features.csv", "features.json"):  # computed here, not copied (another test may have run baselines)
        (data / name).unlink(missing_ok=True)
    table = features.load_or_compute_features(data, False, 1, False)
    assert "wrote" in capsys.readouterr().out and table.shape == (40, 637)
    again = features.read_features(data / "features.csv")
    pd.testing.assert_frame_equal(table, again, check_exact=True)
    features.load_or_compute_features(data, False, 1, False)
    assert "current, reusing" in capsys.readouterr().out
    (data / "signals.npy").touch()  # touched, not changed: still current
    features.load_or_compute_features(data, False, 1, False)
    assert "current, reusing" in capsys.readouterr().out
    manifest = read_manifest(data / "preprocess.json")  # the preprocess outputs changed: recompute
    write_manifest(data / "preprocess.json", "another", [data / f for f in PREPROCESS_OUTPUTS],
                   **{k: v for k, v in manifest.items() if k not in ("fingerprint", "files")})
    features.load_or_compute_features(data, False, 1, False)
    assert "wrote" in capsys.readouterr().out
    cache, pid = SignalCache(data), table["patient_id"].iloc[10]
    assert cache.sample_rate == 500  # the features' own rate: nothing resampled between the cache and them
    row = table.set_index("patient_id").loc[pid].to_numpy()
    np.testing.assert_array_equal(row, features.signal_features(cache.record(pid, dtype=np.float64)))


@pytest.mark.slow
def test_classifiers_beat_chance(tmp_path):
    """300 short records, so the 30-record test fold says something about each classifier; each one is
    evaluated by the shared evaluator into its own folder, and the summary repeats those evaluations.
    The ensembles grow 30 trees (--trees) instead of the original's 300 and 100 (the configuration is
    pinned by test_classifiers_are_configured_as_the_original): on 240 training records they beat chance
    as well, in a third of the time."""
    import preprocess
    import synth

    data, results = tmp_path / "d", tmp_path / "r"
    synth.main(["--out", str(data), "--n", "300", "--seed", "11", "--max-seconds", "8"])
    preprocess.main(["--data-dir", str(data)])
    table = baselines.main(["--data-dir", str(data), "--classifier", "all", "--results-dir", str(results),
                            "--n-bootstrap", "200", "--no-figures", "--trees", "30"])
    table = table.set_index("classifier")
    assert list(table.index) == ["LR", "RF", "LGB", "MLP"]
    assert (table["mean_auc"] > 0.7).all(), table["mean_auc"]
    assert (table["mean_f1"] > 0.3).all(), table["mean_f1"]
    assert ((table["mean_f1_lo"] < table["mean_f1"]) & (table["mean_f1"] < table["mean_f1_hi"])).all()
    assert json.loads((results / data.name / "baselines_all_trees30.json").read_text())["trees"] == 30
    saved = pd.read_csv(results / data.name / "baselines_all_trees30.csv").set_index("classifier")
    pd.testing.assert_frame_equal(saved.drop(columns="untunable"), table.drop(columns=["thresholds", "untunable"]),
                                  check_dtype=False)
    splits = split_labels(load_labels(data), 42)  # the seeded 8/1/1 split: validation fold 4, test fold 7
    for name, row in table.iterrows():
        folder = results / data.name / "baselines" / "all_trees30" / name
        assert row["results"] == f"baselines/all_trees30/{name}"
        got = read_evaluation(folder)
        assert got["current"] and got["info"]["classifier"] == name and got["n_bootstrap"] == 200
        assert got["info"].get("trees") == {"RF": 30, "LGB": 30}.get(name)  # the size each one grew; LR, MLP: none
        assert got["metrics"].loc["mean", "f1"] == pytest.approx(row["mean_f1"])
        assert got["metrics"].loc["AF", "auc"] == pytest.approx(row["auc_AF"])
        assert got["thresholds"].tolist() == pytest.approx(list(row["thresholds"].values()), nan_ok=True)
        test, val = read_scores(folder / "test_scores.csv", CLASSES), read_scores(folder / "val_scores.csv", CLASSES)
        assert test["patient_id"].tolist() == splits["test"]["patient_id"].tolist()
        assert val["patient_id"].tolist() == splits["val"]["patient_id"].tolist()
        assert (test[list(CLASSES)].to_numpy() == splits["test"][list(CLASSES)].to_numpy()).all()
        assert not {"roc.png", "reliability.png"} & set(got["manifest"]["files"])  # --no-figures (figures: test_evaluator)

    lead = baselines.main(["--data-dir", str(data), "--classifier", "LR", "--leads", "V1", "--standardize",
                           "--results-dir", str(results), "--num-workers", "1", "--no-figures"])
    summary = json.loads((results / data.name / "baselines_V1_std.json").read_text())
    assert summary["leads"] == ["V1"] and summary["standardize"] and summary["results"][0]["classifier"] == "LR"
    assert summary["results"][0]["mean_f1"] == pytest.approx(lead["mean_f1"].item())
    variant = read_evaluation(results / data.name / "baselines" / "V1_std" / "LR")
    assert variant["current"] and variant["info"]["leads"] == ["V1"] and variant["info"]["features"] == 53
    assert read_evaluation(results / data.name / "baselines" / "all_trees30" / "LR")["current"]  # not overwritten
    assert lead["mean_f1"].item() != pytest.approx(table.loc["LR", "mean_f1"])


def test_a_rerun_with_fewer_classifiers_keeps_the_others_current_rows(prepared, tmp_path, capsys):
    """--classifier RF after LR,RF under the same tag: the summary still holds LR (its evaluation is current,
    as the report shows it), in the classifiers' order; after a run of other settings (--n-bootstrap) LR's
    evaluation no longer matches, and its row is left out rather than set beside rows it does not match."""
    import shutil
    data, results = tmp_path / "d", tmp_path / "r"
    shutil.copytree(prepared, data)
    common = ["--data-dir", str(data), "--results-dir", str(results), "--trees", "5", "--no-figures",
              "--num-workers", "1"]
    first = baselines.main([*common, "--classifier", "RF,LR", "--n-bootstrap", "0"]).set_index("classifier")
    again = baselines.main([*common, "--classifier", "RF", "--n-bootstrap", "0"]).set_index("classifier")
    assert list(first.index) == list(again.index) == ["LR", "RF"]
    assert "LR's current evaluation kept in the summary" in capsys.readouterr().out
    saved = pd.read_csv(results / data.name / "baselines_all_trees5.csv")
    assert saved["classifier"].tolist() == ["LR", "RF"]
    assert saved.set_index("classifier").loc["LR", "mean_auc"] == pytest.approx(first.loc["LR", "mean_auc"])
    (results / data.name / "baselines" / "all_trees5" / "LR" / "metrics.json").write_text("{")  # damaged
    damaged = baselines.main([*common, "--classifier", "RF", "--n-bootstrap", "0"])
    assert damaged["classifier"].tolist() == ["RF"]  # this command's own work goes on, without that row
    assert "note: LR's earlier evaluation is left out of the summary" in capsys.readouterr().err
    other = baselines.main([*common, "--classifier", "RF", "--n-bootstrap", "10"])
    assert other["classifier"].tolist() == ["RF"]
    assert json.loads((results / data.name / "baselines_all_trees5.json").read_text())["n_bootstrap"] == 10
    seeded = baselines.main([*common, "--classifier", "RF,LR", "--n-bootstrap", "0", "--seed", "5"])
    tested = read_scores(results / data.name / seeded.set_index("classifier").loc["LR", "results"] / "test_scores.csv",
                         list(CLASSES))
    assert tested["patient_id"].tolist() == split_labels(load_labels(data), 5)["test"]["patient_id"].tolist()  # --seed


def test_a_read_only_data_folder_is_only_read_and_refused_before_an_extraction(prepared, tmp_path, read_only,
                                                                              capsys):
    """With its features.csv current, a data folder is only read: baselines.py runs on a read-only one (the
    shared `prepared` here, which the session also checks unchanged). Without it, a read-only folder is
    refused in one line before the extraction starts."""
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(prepared, bare, ignore=shutil.ignore_patterns("features.*"))
    read_only(prepared, bare)
    common = ["--classifier", "LR", "--n-bootstrap", "0", "--no-figures", "--num-workers", "1",
              "--results-dir", str(tmp_path / "r")]
    table = baselines.main(["--data-dir", str(prepared), *common])
    assert table["classifier"].tolist() == ["LR"]
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"cannot write to .*bare \(Read-only file system\).*features.csv is cached"):
        baselines.main(["--data-dir", str(bare), *common])
    assert "features" not in capsys.readouterr().out  # no extraction started
    assert not (bare / "features.csv").exists()


def test_trees_sizes_the_ensembles_alone_and_names_its_own_variant(prepared, capsys):
    """--trees changes RF's and LightGBM's sizes and nothing else, files its results apart from the
    original configuration's, and is refused where no ensemble runs (a preset's value is not)."""
    rf, lgb, lr = (baselines.make_classifier(name, 0, trees=7) for name in ("RF", "LGB", "LR"))
    assert rf.estimator.n_estimators == 7 and rf.estimator.max_depth == 10 and lgb.estimator.n_estimators == 7
    assert lr.estimator.get_params() == baselines.make_classifier("LR", 0).estimator.get_params()

    def tag(*argv):
        return baselines.BaselineRun.from_args(baselines.parse_args(["--data-dir", str(prepared), *argv])).tag

    assert tag() == "all" and tag("--trees", "50") == "all_trees50" and tag("--trees", "50", "--classifier", "RF") \
        == "all_trees50"
    assert tag("--preset", "demo", "--classifier", "all") == "all_trees50" and tag("--preset", "demo") == "all"
    with pytest.raises(SystemExit) as e:
        tag("--trees", "50", "--classifier", "LR,MLP")
    assert e.value.code == 2
    assert "argument --trees: sizes RF and LGB, and --classifier LR,MLP runs neither" in capsys.readouterr().err


def test_classifiers_are_configured_as_the_original():
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    lr, rf, lgb, mlp = (baselines.make_classifier(name, 0) for name in baselines.CLASSIFIERS)
    assert isinstance(lr, OneVsRestClassifier)  # unscaled: no StandardScaler in front
    assert lr.estimator.solver == "lbfgs" and lr.estimator.max_iter == 1000
    assert rf.estimator.n_estimators == 300 and rf.estimator.max_depth == 10
    assert lgb.estimator.n_estimators == 100
    assert isinstance(mlp, MLPClassifier)  # natively multi-label, not one-vs-rest
    assert mlp.hidden_layer_sizes == (100, 50) and mlp.max_iter == 500
    scaled = baselines.make_classifier("LR", 0, standardize=True)
    assert isinstance(scaled, Pipeline) and type(scaled.steps[0][1]).__name__ == "StandardScaler"


def test_cross_validation_covers_every_fold(prepared, tmp_path, capsys):
    import shutil
    data, out = tmp_path / "d", tmp_path / "r"
    shutil.copytree(prepared, data)
    common = ["--data-dir", str(data), "--classifier", "LR", "--results-dir", str(out), "--num-workers", "1",
              "--no-figures"]
    stats = baselines.main([*common, "--cv", "--n-bootstrap", "0"])
    folds = pd.read_csv(out / data.name / "baselines_all_cv.csv")
    assert folds["fold"].tolist() == list(range(1, 11)) and set(folds["classifier"]) == {"LR"}
    assert "mean_f1_lo" not in folds  # --n-bootstrap 0: no CIs anywhere
    assert stats.loc["LR", ("mean_f1", "mean")] == pytest.approx(folds["mean_f1"].mean())
    assert stats.loc["LR", ("AF", "std")] == pytest.approx(folds["AF"].std())
    for k in range(1, 11):  # each fold evaluated by the evaluator, on that fold's test records
        got = read_evaluation(out / data.name / "baselines" / "all" / f"fold{k}" / "LR")
        assert got["current"] and got["info"]["test_fold"] == k
        assert got["metrics"].loc["mean", "f1"] == pytest.approx(folds.loc[k - 1, "mean_f1"])
        assert set(read_scores(got["folder"] / "test_scores.csv", CLASSES)["patient_id"]) == \
            set(load_labels(data).query("fold == @k")["patient_id"])
        assert not [c for c in got["metrics"].columns if c.endswith("_lo")]
    one = baselines.main([*common, "--test-fold", "3"]).iloc[0]  # fold 3 of the CV is the --test-fold 3 run
    assert one["mean_auc"] == pytest.approx(folds.loc[folds["fold"] == 3, "mean_auc"].item())
    assert json.loads((out / data.name / "baselines_all_fold3.json").read_text())["test_fold"] == 3
    md = (out / data.name / "baselines_all_cv.md").read_text()
    assert "over 10 folds" in md and md.count("| LR | ") == 1
    assert f"| {folds['mean_f1'].mean():.3f} ± {folds['mean_f1'].std():.3f} |" in md
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        baselines.parse_args([*common, "--cv", "--test-fold", "3"])
    assert e.value.code == 2
    assert "argument --test-fold: not allowed with argument --cv" in capsys.readouterr().err


def test_flat_lead_record_is_reported_not_fatal(mark_current, hospitals, tmp_path, capsys):
    import shutil
    data = tmp_path / "d"
    shutil.copytree(hospitals[0], data)
    sig = np.load(data / "signals.npy", mmap_mode="r+")
    index = pd.read_csv(data / "signals_index.csv", dtype={"patient_id": str}).set_index("patient_id")
    pid = index.index[4]
    s, n = index.loc[pid, ["start", "length"]]
    sig[:, s:s + n] = 0  # every lead of one record flat
    sig.flush()
    del sig
    mark_current(data)  # as if preprocess.py had written this signal
    table = features.load_or_compute_features(data, True, 1, True)
    err = capsys.readouterr().err
    assert f"{pid}: lead I is flat" in err and "fewer than 3 R peaks" in err
    assert np.isfinite(table.drop(columns="patient_id").to_numpy()).all()


def test_bad_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # a pipeline error: exit status 1 with the message
        baselines.main(["--data-dir", str(tmp_path)])
    assert str(e.value.code).startswith("error: ") and "run `python preprocess.py" in e.value.code
    for argv, message in [(["--classifier", "SVM"], "argument --classifier: unknown classifier(s) ['SVM']"),
                          (["--leads", "V7"], "argument --leads: unknown lead(s) ['V7']"),
                          (["--n-bootstrap", "-1"], "argument --n-bootstrap: -1 is outside 0..100000")]:
        with pytest.raises(SystemExit) as e:  # a bad argument: argparse's exit status 2
            baselines.main(["--data-dir", str(tmp_path), *argv])
        assert e.value.code == 2
        assert message in capsys.readouterr().err


def test_r_peaks_on_synthetic_beats():
    fs = 500
    t = np.arange(10 * fs) / fs
    beats = np.arange(0.4, 10, 0.8)
    lead = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in beats) + 0.05 * np.sin(2 * np.pi * 0.3 * t)
    found = features.detect_r_peaks(lead, fs) / fs
    assert len(found) == len(beats) and np.abs(found - beats).max() < 0.01


def test_heart_rate_statistics_equal_their_definitions_on_known_beats():
    """Lead II with beats at known, irregular RR intervals (successive differences of 30 and 120 ms): each
    of the 8 statistics, under its own name, equals its textbook definition on those intervals (RMSSD: root
    mean square of the successive differences; pNN50: their share above 50 ms; SDNN and CV with ddof 0)."""
    fs = 500
    rr = np.array([0.60, 0.63, 0.75, 0.78, 0.90, 0.93, 1.05])
    beats = 0.4 + np.concatenate([[0], np.cumsum(rr)])
    t = np.arange(10 * fs) / fs
    mv = np.zeros((len(LEADS), len(t)))
    mv[LEADS.index("II")] = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in beats)
    got = dict(zip(features.feature_names(heart_rate=True)[-len(features.HR_FEATURES):],
                   features.heart_rate_features(mv, fs)))
    d = np.diff(rr)
    expected = {"hr_mean": np.mean(60 / rr), "hr_min": 60 / rr.max(), "hr_max": 60 / rr.min(), "rr_mean": rr.mean(),
                "rr_sdnn": rr.std(), "rr_rmssd": np.sqrt(np.mean(d ** 2)), "rr_pnn50": 0.5,
                "rr_cv": rr.std() / rr.mean()}
    assert set(got) == set(expected)
    for name, value in expected.items():  # R peaks found within a few ms of the beats
        assert got[name] == pytest.approx(value, rel=0.02, abs=0.004), name


def test_features_of_a_100_hz_cache_are_its_records_at_500_hz(prepared_100hz):
    """The expert features are designed for 500 Hz: from a cache at 100 Hz (--cache-rate 100, PTB-XL's
    records100) each record is brought up to 500 Hz first (scipy's polyphase resampling, here by hand)."""
    from scipy.signal import resample_poly

    cache = SignalCache(prepared_100hz)
    assert cache.sample_rate == 100
    ids = list(cache.ids[:2])
    table, _ = features.compute_features(prepared_100hz, ids, False, 1)
    for pid, row in zip(ids, table.drop(columns="patient_id").to_numpy()):
        at_500 = resample_poly(cache.record(pid, dtype=np.float64), 5, 1, axis=-1)
        np.testing.assert_allclose(row, features.signal_features(at_500), rtol=1e-9, atol=1e-12)


@pytest.mark.real_data
def test_heart_rate_agrees_with_wfdb_xqrs_on_real_records(real_dir):
    from utils.records import read_wfdb_record
    diffs = []
    for hea in sorted(real_dir.glob("*.hea"))[:12]:
        _, mv = read_wfdb_record(hea)
        ours = features.heart_rate_features(mv)[0]
        ref = wfdb.processing.xqrs_detect(mv[LEADS.index("II")], fs=500, verbose=False)
        theirs = 60 / np.mean(np.diff(ref) / 500)
        diffs.append(abs(ours - theirs))
    assert np.median(diffs) < 3 and np.mean(np.array(diffs) < 8) >= 0.75, diffs


# ---------------------------------------------------------------------------------------------
# The baselines' --standardize scaler sees the training records only
# ---------------------------------------------------------------------------------------------
def test_standardize_scaler_is_fitted_on_training_records(hospitals, monkeypatch):
    data_dir = hospitals[0]
    features = load_or_compute_features(data_dir, False, 1, False)
    data = load_labels(data_dir).merge(features, on="patient_id", how="left", validate="one_to_one")
    splits = split_labels(data, 42)
    cols = feature_columns(list(LEADS), False)
    made = []
    real = baselines.make_classifier
    monkeypatch.setattr(baselines, "make_classifier", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    scores = baselines.FeatureClassifier("LR", splits, cols, tuple(CLASSES), 42, standardize=True).score()
    [pipeline] = made
    scaler = pipeline.steps[0][1]
    train_mean = splits["train"][cols].to_numpy().mean(0)
    all_mean = pd.concat(list(splits.values()))[cols].to_numpy().mean(0)
    assert not np.allclose(train_mean, all_mean)  # the case tells the two apart
    np.testing.assert_allclose(scaler.mean_, train_mean, rtol=1e-10)
    np.testing.assert_allclose(scaler.scale_[scaler.scale_ != 1], splits["train"][cols].to_numpy().std(0)[
        scaler.scale_ != 1], rtol=1e-8)
    # and it is the scaler that scored: the same pipeline refitted here gives the same probabilities
    refit = real("LR", 42, True).fit(splits["train"][cols].to_numpy(), splits["train"][list(CLASSES)].to_numpy(int))
    np.testing.assert_allclose(scores.test[[f"p_{c}" for c in CLASSES]].to_numpy(),
                               refit.predict_proba(splits["test"][cols].to_numpy()), rtol=1e-6, atol=1e-9)


def test_heart_rate_features_reach_the_classifiers(hospitals, tmp_path):
    """--heart-rate: the classifiers are fitted on the 53 statistics of each of the 12 leads and the 8
    heart-rate ones (644 columns), not on the leads' alone."""
    import shutil

    data = tmp_path / "d"
    shutil.copytree(hospitals[0], data)
    table = baselines.main(["--data-dir", str(data), "--classifier", "LR", "--heart-rate", "--n-bootstrap", "0",
                            "--no-figures", "--num-workers", "1", "--results-dir", str(tmp_path / "r")])
    folder = tmp_path / "r" / data.name / table.set_index("classifier").loc["LR", "results"]
    assert read_evaluation(folder)["info"]["features"] == 12 * 53 + 8


@pytest.mark.parametrize("split", [[], ["--cv"]])
def test_a_split_without_validation_records_is_refused_before_any_feature(tmp_path, split):
    """Three records leave the seeded split's validation fold empty (and with --cv, some fold's): one error
    line naming the part and the data (the fold too), as main.py says it, before the features are computed
    and any classifier is fitted; before, scikit-learn's traceback about an array of 0 samples."""
    import preprocess
    import synth

    data = tmp_path / "d"
    synth.main(["--out", str(data), "--n", "3", "--seed", "7", "--max-seconds", "7"])
    preprocess.main(["--data-dir", str(data), "--num-workers", "1"])
    fold = r" with test fold 1" if split else ""
    with pytest.raises(SystemExit, match=rf"^error: no records in the val (and test )?splits? of .*d{fold} "
                                         rf"\(train \d+, val 0, test \d+ records\); too few records\?$"):
        baselines.main(["--data-dir", str(data), "--results-dir", str(tmp_path / "r"), "--num-workers", "1", *split])
    assert not (data / "features.csv").exists() and not list((tmp_path / "r").rglob("*.csv"))
