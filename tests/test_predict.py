"""predict.py: evaluation outputs, metrics equal scikit-learn's, --record, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

import main
import predict
import report
import shap_values
from models.checkpoint import read_checkpoint, save_checkpoint
from models.inputs import InputSpec
from utils.labels import CLASSES
from utils.manifest import file_sha
from utils.metrics import classification_metrics, tune_thresholds
from utils.results import read_evaluation, thresholds_json


@pytest.fixture(scope="module")
def evaluated(trained, prepared, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    table = predict.main(["--run", str(trained["model_path"]), "--results-dir", str(results),
                          "--n-bootstrap", "200", "--num-workers", "0"])
    return table, results / prepared.name / trained["run"].name, trained["run"]  # results/<db>/<run>


def test_evaluation_writes_every_output(evaluated):
    table, out, model_path = evaluated
    for name in ["metrics.csv", "metrics.json", "test_scores.csv", "roc.png", *[f"confusion_{c}.png" for c in CLASSES]]:
        assert (out / name).stat().st_size > 0, name
    thresholds = json.loads(model_path.thresholds.read_text())["thresholds"]
    assert list(thresholds) == list(CLASSES) and all(t is None or 0 <= t < 1 for t in thresholds.values())
    csv = pd.read_csv(out / "metrics.csv").set_index("class")
    assert list(csv.index) == [*CLASSES, "mean"]
    finite = csv.dropna(subset=["f1_lo"])
    assert (finite["f1_lo"] <= finite["f1"] + 1e-9).all() and (finite["f1"] <= finite["f1_hi"] + 1e-9).all()


def test_metrics_equal_scikit_learn(evaluated):
    table, out, _ = evaluated
    scores = pd.read_csv(out / "test_scores.csv")
    y = scores[list(CLASSES)].to_numpy().astype(bool)
    p = scores[[f"p_{c}" for c in CLASSES]].to_numpy()
    thr = table.loc[list(CLASSES), "threshold"].to_numpy()
    for j, cls in enumerate(CLASSES):
        if not 0 < y[:, j].sum() < len(y):  # a class that cannot be assessed on this test fold: n/a, not 0
            assert table.loc[cls, ["precision", "recall", "f1", "auc", "accuracy"]].isna().all()
            continue
        pred = p[:, j] > thr[j]
        assert table.loc[cls, "precision"] == pytest.approx(skm.precision_score(y[:, j], pred, zero_division=0))
        assert table.loc[cls, "recall"] == pytest.approx(skm.recall_score(y[:, j], pred, zero_division=0))
        assert table.loc[cls, "f1"] == pytest.approx(skm.f1_score(y[:, j], pred, zero_division=0))
        assert table.loc[cls, "accuracy"] == pytest.approx(skm.accuracy_score(y[:, j], pred))
        if 0 < y[:, j].sum() < len(y):
            assert table.loc[cls, "auc"] == pytest.approx(skm.roc_auc_score(y[:, j], p[:, j]))


def test_the_intervals_are_drawn_with_the_runs_own_seed(evaluated):
    """The bootstrap resamples of an evaluation are the run's seed's (recorded in the manifest): its
    intervals are those computed again from test_scores.csv with that seed, and not those of another."""
    table, out, run = evaluated
    seed = int(read_checkpoint(run.model)["config"]["seed"])
    assert read_evaluation(out)["manifest"]["seed"] == seed
    scores = pd.read_csv(out / "test_scores.csv")
    y, p = scores[list(CLASSES)].to_numpy().astype(bool), scores[[f"p_{c}" for c in CLASSES]].to_numpy()
    thr = table.loc[list(CLASSES), "threshold"].to_numpy()
    bounds = [c for c in table.columns if c.endswith(("_lo", "_hi"))]
    assert {"f1_lo", "auc_hi"} <= set(bounds)
    again, other = (classification_metrics(y, p, thr, CLASSES, n_bootstrap=200, seed=s)[bounds]
                    for s in (seed, seed + 1))
    pd.testing.assert_frame_equal(table[bounds], again, check_exact=True)
    assert not again.equals(other)


def test_metric_functions_against_scikit_learn_on_random_data():
    rng = np.random.default_rng(1)
    y = rng.random((300, 9)) < 0.25
    p = np.round(np.clip(0.3 * y + rng.random((300, 9)) * 0.7, 0, 1), 2)  # rounding makes ties
    thr = tune_thresholds(y, p)
    table = classification_metrics(y, p, thr, CLASSES)
    for j, cls in enumerate(CLASSES):
        assert table.loc[cls, "auc"] == pytest.approx(skm.roc_auc_score(y[:, j], p[:, j]))
        assert table.loc[cls, "f1"] == pytest.approx(skm.f1_score(y[:, j], p[:, j] > thr[j]))
        grid = np.linspace(0, 1, 100)  # the original's grid: scikit-learn's F1 at every threshold in one call
        truth = np.repeat(y[:, j, None], len(grid), axis=1)
        best = skm.f1_score(truth, p[:, j, None] > grid, average=None, zero_division=0).max()
        assert table.loc[cls, "f1"] == pytest.approx(best)  # the tuned threshold is the F1-optimal one
    assert table.loc["mean", "f1"] == pytest.approx(table.loc[list(CLASSES), "f1"].mean())
    assert set(thr) <= set(np.linspace(0, 1, 100))  # the original's grid


def test_record_diagnosis(evaluated, prepared, synth_records, tmp_path, capsys):
    _, _, model_path = evaluated
    table = predict.main(["--run", str(model_path), "--record", str(synth_records / "A0001.hea"),
                          str(synth_records / "A0002.mat"), str(tmp_path / "nope.hea"), "--results-dir", str(tmp_path)])
    assert len(table) == 2 and set(CLASSES) <= set(table.columns)
    assert ((table[list(CLASSES)] >= 0) & (table[list(CLASSES)] <= 1)).all().all()
    err = capsys.readouterr().err
    assert "nope.hea" in err and "warning" not in err  # ordinary records: no doubt said
    assert (tmp_path / prepared.name / model_path.name / "records.csv").exists()

    import wfdb
    rec = wfdb.rdrecord(str(synth_records / "A0001"))
    for name, fs, signal in (("short", 500, rec.p_signal[:250]), ("flat", 500, np.zeros_like(rec.p_signal)),
                             ("slow", 20, rec.p_signal[::25]), ("offset", 250, np.full((2000, 12), 0.3)),
                             ("short250", 250, rec.p_signal[:500:2])):
        wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=rec.sig_name, p_signal=signal, fmt=["16"] * 12,
                    write_dir=str(tmp_path))
    table = predict.main(["--run", str(model_path), "--results-dir", str(tmp_path / "r"), "--record",
                          *(str(tmp_path / f"{name}.hea") for name in ("short", "flat", "slow", "offset",
                                                                          "short250"))])
    err = capsys.readouterr().err
    assert len(table) == 5  # still diagnosed, each with its doubt said
    assert f"warning: {tmp_path / 'offset.hea'}: every lead is flat" in err  # constant, resampled: edges ring
    assert f"warning: {tmp_path / 'short.hea'}: 0.5 s long, against the model's 2-s input" in err
    assert f"warning: {tmp_path / 'short250.hea'}: 1 s long" in err  # 250 samples at 250 Hz, whatever rate it reads
    assert f"warning: {tmp_path / 'flat.hea'}: every lead is flat" in err
    assert f"warning: {tmp_path / 'slow.hea'}: recorded at 20 Hz, below 50 Hz" in err


@pytest.mark.real_data
def test_record_diagnosis_on_a_real_record(real_dir, evaluated, tmp_path):
    _, _, model_path = evaluated
    table = predict.main(["--run", str(model_path), "--record", str(real_dir / "JS20000.hea"),
                          "--results-dir", str(tmp_path)])
    assert len(table) == 1 and np.isfinite(table[list(CLASSES)].to_numpy(float)).all()


def test_bad_inputs(evaluated, tmp_path):
    _, _, model_path = evaluated
    with pytest.raises(SystemExit, match="not found"):
        predict.main(["--run", str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="trained on leads I,II,III"):
        predict.main(["--run", str(model_path), "--leads", "I"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="not a readable checkpoint"):
        predict.main(["--run", str(tmp_path / "junk")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="run `python preprocess.py"):
        predict.main(["--run", str(model_path), "--data-dir", str(tmp_path / "empty")])


def sklearn_thresholds(y: np.ndarray, p: np.ndarray) -> list[float | None]:
    """F1-optimal thresholds computed independently: scikit-learn's f1_score over the original's grid,
    predicted when strictly above, the lowest of equal maxima; None for a class without a positive."""
    grid = np.linspace(0, 1, 100)
    out = []
    for j in range(y.shape[1]):
        if not y[:, j].any():
            out.append(None)
            continue
        truth = np.repeat(y[:, j:j + 1], len(grid), axis=1)  # one multilabel call: column k is threshold k
        f1 = skm.f1_score(truth, p[:, j:j + 1] > grid, average=None, zero_division=0)
        out.append(float(grid[int(np.argmax(f1))]))
    return out


def test_thresholds_come_from_exactly_the_validation_records(evaluated, trained):
    """val_scores.csv holds the checkpoint's validation split, test_scores.csv its test split, and the
    saved thresholds are the F1 optimum on those validation scores — not on the test scores, which here
    give other thresholds, so tuning on the wrong records would fail this test."""
    import torch
    _, out, run = evaluated
    split = torch.load(trained["model_path"], weights_only=True)["split"]
    val = pd.read_csv(out / "val_scores.csv", dtype={"patient_id": str})
    test = pd.read_csv(out / "test_scores.csv", dtype={"patient_id": str})
    assert val["patient_id"].tolist() == split["val"] and test["patient_id"].tolist() == split["test"]
    assert not set(val["patient_id"]) & set(test["patient_id"])
    saved = json.loads(run.thresholds.read_text())
    probs = [f"p_{c}" for c in CLASSES]
    from_val = sklearn_thresholds(val[list(CLASSES)].to_numpy(bool), val[probs].to_numpy())
    from_test = sklearn_thresholds(test[list(CLASSES)].to_numpy(bool), test[probs].to_numpy())
    assert [saved["thresholds"][c] for c in CLASSES] == pytest.approx(from_val, nan_ok=True)
    assert from_val != from_test  # the case can tell validation from test tuning
    assert saved["untunable"] == [c for c, t in zip(CLASSES, from_val) if t is None]


def test_thresholds_never_outlive_their_model(change_weights, evaluated_copy, trained, prepared, synth_records, tmp_path):
    run, _ = evaluated_copy(trained, prepared, tmp_path)
    record = ["--record", str(synth_records / "A0020.hea"), "--results-dir", str(tmp_path / "r")]
    predict.main(["--run", str(run), *record])  # the thresholds of this very model: accepted
    change_weights(run)
    with pytest.raises(SystemExit, match="tuned for an earlier .*model.pth.*predict.py --run"):
        predict.main(["--run", str(run), *record])


def test_another_bootstrap_size_or_model_is_evaluated_again_never_reused(change_weights, evaluated_copy, trained,
                                                                         prepared, tmp_path, capsys):
    """An evaluation is reused only for the settings and the checkpoint it was made with: another
    --n-bootstrap is evaluated again (its intervals), and the training records' scores (the ICBEB
    thresholds' records) are scored again once the model changed."""
    from models.checkpoint import load_checkpoint
    from models.scoring import score_training_records
    from utils.results import read_evaluation

    run, flags = evaluated_copy(trained, prepared, tmp_path)
    folder = next(p.parent for p in (tmp_path / "r").rglob("evaluated.json") if p.parent.name == run.name)
    assert read_evaluation(folder)["n_bootstrap"] == 0
    capsys.readouterr()
    predict.main([*flags, "--n-bootstrap", "7", "--num-workers", "0", "--no-figures"])
    assert "current" not in capsys.readouterr().out and read_evaluation(folder)["n_bootstrap"] == 7
    model, ckpt = load_checkpoint(run.model)
    first = score_training_records(model, ckpt, run, tmp_path / "r", torch.device("cpu")).read_text()
    change_weights(run)
    model, ckpt = load_checkpoint(run.model)
    assert score_training_records(model, ckpt, run, tmp_path / "r", torch.device("cpu")).read_text() != first


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1.5", '"0.3"', "null"])
def test_a_damaged_threshold_is_refused(evaluated_copy, trained, prepared, synth_records, tmp_path, value):
    run, _ = evaluated_copy(trained, prepared, tmp_path)
    text = run.thresholds.read_text()
    saved = json.loads(text)
    saved["thresholds"]["AF"] = "__X__"
    saved["untunable"] = [c for c in saved.get("untunable", []) if c != "AF"]
    run.thresholds.write_text(json.dumps(saved).replace('"__X__"', value))
    with pytest.raises(SystemExit, match="AF"):
        predict.main(["--run", str(run), "--record", str(synth_records / "A0020.hea"),
                      "--results-dir", str(tmp_path / "r")])


def temperature(folder: Path) -> float:
    return json.loads((folder / "calibration.json").read_text())["temperature"]


def test_predict_temperature_is_fitted_on_own_validation_scores(check_fitted_on_validation, copy_run, trained, prepared, hospitals, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    results = tmp_path / "results"
    common = ["--run", str(run), "--results-dir", str(results), "--n-bootstrap", "0", "--num-workers", "0",
              "--no-figures", "--calibrate"]
    own = results / prepared.name / "run"
    predict.main(common[:-1])  # evaluated without --calibrate first: --calibrate then is another evaluation
    assert not (own / "calibration.json").exists()
    predict.main(common)
    check_fitted_on_validation(temperature(own), own / "val_scores.csv", own / "test_scores.csv")
    external = own / "external" / hospitals[0].name
    predict.main([*common[:-1], "--external-data-dir", str(hospitals[0])])
    assert not (external / "calibration.json").exists()
    predict.main([*common, "--external-data-dir", str(hospitals[0])])
    check_fitted_on_validation(temperature(external), own / "val_scores.csv", external / "test_scores.csv")


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
# predict.py --record names the class that is above its own threshold
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


def test_commands_that_read_a_run_refuse_a_missing_one(trained, prepared, tmp_path):
    results = tmp_path / "r"
    common = ["--data-dir", str(prepared), "--results-dir", str(results)]
    shutil.copytree(trained["model_path"].parent, tmp_path / "m")
    first = report.main([*common, "--run", str(tmp_path / "m")]).read_bytes()
    typo = tmp_path / "typo"
    for command, argv in ((report, common), (predict, ["--results-dir", str(results)]),
                          (shap_values, ["--results-dir", str(results)])):
        with pytest.raises(SystemExit, match=f"{typo / 'model.pth'}.* not found"):
            command.main([*argv, "--run", str(typo)])
    assert (results / prepared.name / "report.md").read_bytes() == first
    assert not typo.exists()


def test_data_dir_evaluates_a_run_whose_data_folder_moved(tiny, prepared_100hz, tmp_path):
    """--data-dir stands in for the checkpoint's data folder once it has moved (to scratch, another disk):
    the evaluation reads it, its currency included, and never sends the user to preprocess the old path."""
    data = tmp_path / "A"
    shutil.copytree(prepared_100hz, data)
    main.main(["--data-dir", str(data), *tiny, "--epochs", "1", "--limit", "40", "--run", str(tmp_path / "run")])
    data.rename(tmp_path / "moved")
    argv = ["--run", str(tmp_path / "run"), "--data-dir", str(tmp_path / "moved"), "--n-bootstrap", "10",
            "--no-figures", "--num-workers", "0", "--results-dir", str(tmp_path / "results")]
    table = predict.main(argv)
    assert len(table) > 0
    folder = next((tmp_path / "results").glob("*/run"))
    assert read_evaluation(folder)["info"]["data_dir"] == str(tmp_path / "moved")
