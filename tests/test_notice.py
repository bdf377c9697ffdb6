"""Numbers that could be wrong while everything still runs: ECE's top bin, which records a temperature is
fitted on, which cached lead rows reach a model, which class names `--record` prints, and which records
the baselines' scaler is fitted on. Each case is built so that the wrong computation gives another value."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import baselines
import cross_database
import main
import predict
import preprocess
import synth
from models.checkpoint import read_checkpoint, save_checkpoint
from models.inputs import ECGDataset, InputSpec
from utils.cache import SignalCache, fit_length, load_labels
from utils.evaluator import read_scores, scores_arrays
from utils.folds import split_labels
from utils.manifest import file_sha
from utils.labels import CLASSES, LEADS
from utils.metrics import classification_metrics, ece_scores
from utils.features import feature_columns, load_or_compute_features
from utils.metrics import fit_temperature, probability_bins
from utils.results import thresholds_json


# ---------------------------------------------------------------------------------------------
# 1. ECE: a saturated score with label 0 belongs to the top bin, a zero score with label 1 to the bottom one
# ---------------------------------------------------------------------------------------------
def test_ece_top_and_bottom_bins_by_hand():
    assert probability_bins(np.array([0.0, 0.05, 0.07, 0.5, 0.95, 0.999, 1.0])).tolist() == [0, 0, 1, 7, 14, 14, 14]
    y = np.array([0, 1, 0, 1, 0, 1])
    p = np.array([1.0, 1.0, 0.97, 0.0, 0.0, 0.5])
    # bin 14: labels 0, 1, 0 against 1.0, 1.0, 0.97; bin 0: labels 1, 0 against 0.0, 0.0; bin 7: 1 against 0.5
    expected = 3 / 6 * abs(1 / 3 - 2.97 / 3) + 2 / 6 * abs(1 / 2 - 0.0) + 1 / 6 * abs(1 - 0.5)
    assert expected == pytest.approx(0.578333, abs=1e-6)
    assert ece_scores(y, p) == pytest.approx([expected], rel=1e-12)
    assert ece_scores(y, p.astype(np.float32)) == pytest.approx([expected], rel=1e-6)  # float32 sigmoids saturate
    table = classification_metrics(y[:, None], p[:, None], np.array([0.5]), ["X"])  # the evaluator's own path
    assert table.loc["X", "ece"] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# 2. The temperature comes from the source's validation scores, for every evaluation that calibrates
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hospitals(tmp_path_factory) -> tuple[Path, Path]:
    """Two small preprocessed databases from two other synthetic sites (40 records each)."""
    root = tmp_path_factory.mktemp("hospitals")
    out = []
    for name, site, seed in (("X", "b", 21), ("Y", "c", 22)):
        synth.main(["--out", str(root / "raw" / name), "--n", "40", "--seed", str(seed), "--site", site,
                    "--max-seconds", "8"])
        preprocess.main(["--data-dir", str(root / "raw" / name), "--out", str(root / name), "--num-workers", "1"])
        out.append(root / name)
    return out[0], out[1]


def fitted(scores_csv: Path) -> float:
    """The temperature fitted on one scores file."""
    y, p = scores_arrays(read_scores(scores_csv, CLASSES), CLASSES)
    return fit_temperature(p, y)


def temperature(folder: Path) -> float:
    return json.loads((folder / "calibration.json").read_text())["temperature"]


def check_fitted_on_validation(saved: float, val_csv: Path, test_csv: Path) -> None:
    """`saved` is the fit on the validation scores, and the fit on the test scores is another value
    (so fitting on the wrong records would show)."""
    from_val, from_test = fitted(val_csv), fitted(test_csv)
    assert from_val != pytest.approx(from_test, rel=1e-3), (val_csv, test_csv)
    assert saved == pytest.approx(from_val, rel=1e-7), (val_csv, test_csv)


def test_predict_temperature_is_fitted_on_own_validation_scores(copy_run, trained, prepared, hospitals, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    results = tmp_path / "results"
    common = ["--run", str(run), "--results-dir", str(results), "--n-bootstrap", "0", "--num-workers", "0",
              "--no-figures", "--calibrate"]
    predict.main(common)
    own = results / prepared.name / "run"
    check_fitted_on_validation(temperature(own), own / "val_scores.csv", own / "test_scores.csv")
    predict.main([*common, "--external-data-dir", str(hospitals[0])])
    external = own / "external" / hospitals[0].name
    check_fitted_on_validation(temperature(external), own / "val_scores.csv", external / "test_scores.csv")


def test_cross_database_and_baselines_temperatures(tiny, hospitals, tmp_path):
    matrix = cross_database.main(["--data-dirs", *map(str, hospitals), *tiny, "--epochs", "1", "--limit", "32",
                                  "--n-bootstrap", "0", "--no-figures", "--calibrate",
                                  "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")])
    assert len(matrix) == 4
    for _, row in matrix.iterrows():
        cell = Path(row["scores"]).parent
        source = cell if row["trained_on"] == row["tested_on"] else cell.parent.parent  # external/<db>/ sits in it
        check_fitted_on_validation(row["temperature"], source / "val_scores.csv", cell / "test_scores.csv")
        assert temperature(cell) == row["temperature"]

    baselines.main(["--data-dir", str(hospitals[0]), "--classifier", "LR", "--calibrate", "--n-bootstrap", "0",
                    "--no-figures", "--num-workers", "1", "--results-dir", str(tmp_path / "b")])
    [folder] = [p.parent for p in (tmp_path / "b").rglob("LR/calibration.json")]
    check_fitted_on_validation(temperature(folder), folder / "val_scores.csv", folder / "test_scores.csv")


# ---------------------------------------------------------------------------------------------
# 3. Exactly the cache rows of the asked leads reach the model
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("leads", [("V5",), ("I", "aVR", "V5")])
def test_dataset_reads_the_cache_rows_of_its_leads(prepared, leads):
    cache = SignalCache(prepared)
    labels = load_labels(prepared).head(4)
    rows = [LEADS.index(lead) for lead in leads]
    spec = InputSpec(leads, seconds=2.0, sample_rate=int(cache.sample_rate))
    dataset = ECGDataset(cache, labels, spec, CLASSES)
    for i, pid in enumerate(labels["patient_id"]):
        whole = cache.record(pid)
        for r in rows:  # each asked lead differs from its neighbours, so a shifted row would show
            assert not np.allclose(whole[r], whole[r - 1]) and not np.allclose(whole[r], whole[(r + 1) % 12])
        x, y = dataset[i]
        expected = fit_length(cache.record(pid, rows), spec.n_samples)
        np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6, atol=1e-7)
        assert y.numpy().tolist() == labels.loc[i, list(CLASSES)].astype(float).tolist()


@pytest.fixture(scope="module")
def v5_run(tiny, prepared, tmp_path_factory) -> Path:
    """A one-epoch single-lead (V5) model on 40 records."""
    work = tmp_path_factory.mktemp("v5")
    main.main(["--data-dir", str(prepared), *tiny, "--epochs", "1", "--limit", "40", "--leads", "V5",
               "--run", str(work / "v5")])
    return work / "v5"


def test_single_lead_checkpoint_reads_v5_of_a_12_lead_record(v5_run):
    ckpt = read_checkpoint(v5_run / "model.pth")
    spec = InputSpec.from_checkpoint(ckpt)
    assert spec.leads == ("V5",)
    mv = np.random.default_rng(3).normal(size=(12, 1500)).astype(np.float32)
    x = spec.from_signal(mv)
    assert x.shape == (1, spec.n_samples) and np.abs(x).max() > 0.1
    only_v5, without_v5 = np.zeros_like(mv), mv.copy()
    only_v5[10], without_v5[10] = mv[10], 0.0
    np.testing.assert_array_equal(spec.from_signal(only_v5), x)  # V5 alone gives the same input
    assert not spec.from_signal(without_v5).any()                # every other lead contributes nothing


# ---------------------------------------------------------------------------------------------
# 4. predict.py --record names the class that is above its own threshold
# ---------------------------------------------------------------------------------------------
def test_record_labels_name_the_class_above_its_threshold(trained, synth_records, tmp_path):
    """A checkpoint whose last layer ignores its input (weights 0, bias = chosen logits), and thresholds
    under which only AF passes: a name or threshold taken one class over names another class."""
    ckpt = read_checkpoint(trained["model_path"])
    logits = np.linspace(-1.0, 1.0, len(CLASSES))
    weight, bias = ckpt["model"]["net.fc.weight"], ckpt["model"]["net.fc.bias"]
    ckpt["model"]["net.fc.weight"] = torch.zeros_like(weight)
    ckpt["model"]["net.fc.bias"] = torch.tensor(logits, dtype=bias.dtype)
    run = tmp_path / "fixed"
    save_checkpoint(run / "model.pth", ckpt)
    probs = 1 / (1 + np.exp(-logits))
    k = CLASSES.index("AF")
    thresholds = np.where(np.arange(len(CLASSES)) == k, probs[k] - 0.05, np.minimum(probs + 0.05, 1.0))
    (run / "thresholds.json").write_text(json.dumps(thresholds_json(CLASSES, thresholds, "chosen",
                                                                    model_sha=file_sha(run / "model.pth"))))
    table = predict.main(["--run", str(run), "--record", str(synth_records / "A0001.hea"), "--results-dir",
                          str(tmp_path / "results")])
    assert table.loc[0, "labels"] == "AF"
    np.testing.assert_allclose(table.loc[0, list(CLASSES)].to_numpy(float), probs.round(4), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# 5. The baselines' --standardize scaler sees the training records only
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
