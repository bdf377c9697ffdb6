"""utils.evaluator and the metrics under it: calibration metrics by hand, temperature scaling, bootstrap CIs
against a plain loop, untunable classes, threshold files, the outputs and their manifest."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

import utils.evaluator as evaluator
from models.run import Run, load_thresholds
from utils.errors import MissingInputError, PipelineError
from utils.evaluator import (EvalOptions, Scores, evaluate, evaluate_scorer, print_metrics, read_scores,
                             scores_arrays, scores_table)
from utils.manifest import file_sha, read_manifest
from utils.metrics import (THRESHOLD_GRID, apply_temperature, auc_scores, average_ranks, brier_scores,
                           classification_metrics, ece_scores, fit_temperature, probability_bins, tune_thresholds)
from utils.results import EVALUATED_JSON, EvaluationFolder, parse_thresholds, read_evaluation, thresholds_json
from utils.tables import Column, ci_columns, format_ci, format_mean_sd, markdown_table, table_frame

CLASSES = ["A", "B", "C"]


def evaluate_scores(out, classes, test, val=None, **options) -> pd.DataFrame:
    """The evaluator on scores tables, as every model hands them over."""
    return evaluate(Scores(test, val), EvalOptions(out, classes, **options))


def synthetic(n: int, seed: int, temperature: float = 2.0, classes=CLASSES) -> pd.DataFrame:
    """Labels y ~ Bernoulli(sigmoid(z)) and over-confident scores p = sigmoid(temperature * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-0.5, 1.5, (n, len(classes)))
    y = rng.random(z.shape) < 1 / (1 + np.exp(-z))
    return scores_table([f"R{seed}_{i}" for i in range(n)], y, 1 / (1 + np.exp(-temperature * z)), classes)


# ---------------------------------------------------------------------------------------------
# Calibration metrics
# ---------------------------------------------------------------------------------------------
def test_ece_and_brier_by_hand():
    # 15 bins, bin = min(floor(15 p), 14).
    # Column 0: p 0.9 -> bin 13; 0.95 and 1.0 -> bin 14; 0.2 and 0.21 -> bin 3.
    #   bin 13: 1/5 * |1 - 0.9| = 0.02;  bin 14: 2/5 * |0.5 - 0.975| = 0.19;  bin 3: 2/5 * |0.5 - 0.205| = 0.118
    #   ECE = 0.328; Brier = (0.01 + 0.9025 + 0.04 + 0.6241 + 0) / 5 = 0.31532
    # Column 1: p 0, 0 -> bin 0 (labels 0, 0: no gap); 0.5 x 3 -> bin 7, labels 0, 0, 1:
    #   ECE = 3/5 * |1/3 - 0.5| = 0.1; Brier = 3 * 0.25 / 5 = 0.15
    y = np.array([[1, 0], [0, 0], [0, 0], [1, 0], [1, 1]])
    p = np.array([[0.9, 0.0], [0.95, 0.0], [0.2, 0.5], [0.21, 0.5], [1.0, 0.5]])
    np.testing.assert_allclose(ece_scores(y, p), [0.328, 0.1], rtol=1e-12)
    np.testing.assert_allclose(brier_scores(y, p), [0.31532, 0.15], rtol=1e-12)
    table = classification_metrics(y, p, np.array([0.5, 0.5]), ["X", "Y"])
    np.testing.assert_allclose(table["ece"], [0.328, 0.1, 0.214], rtol=1e-12)
    np.testing.assert_allclose(table["brier"], [0.31532, 0.15, 0.23266], rtol=1e-12)
    assert ece_scores(y[:, 1], p[:, 1]) == pytest.approx([0.1])  # one column as a vector


def test_average_ranks_and_auc_equal_scipy_and_sklearn_with_and_without_ties():
    """Ranks by hand for one column; then scipy's rankdata (a column holding NaN has none) and sklearn's
    AUC (ties count one half) on columns of many ties, of none, of one class only, and on a single vector."""
    from scipy.stats import rankdata

    np.testing.assert_array_equal(average_ranks(np.array([0.3, 0.1, 0.3, 0.2, 0.3])), [4, 1, 4, 2, 4])
    rng = np.random.default_rng(3)
    with_nan = rng.random((8, 3))
    with_nan[2, 1] = np.nan
    for scores in (rng.integers(0, 4, (60, 5)) / 4, rng.random((60, 5)), rng.random(7), np.zeros((9, 2)), with_nan):
        np.testing.assert_array_equal(average_ranks(scores), rankdata(scores, axis=0))
    y = rng.random((60, 5)) < 0.3
    y[:, 4] = False  # one class only: no AUC
    p = rng.integers(0, 5, (60, 5)) / 4
    got = auc_scores(y, p)
    np.testing.assert_allclose(got[:4], [skm.roc_auc_score(y[:, j], p[:, j]) for j in range(4)], rtol=1e-12)
    assert np.isnan(got[4])


@pytest.mark.parametrize("true_t", [2.0, 0.5])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    """p = sigmoid(true_t * z) with y ~ Bernoulli(sigmoid(z)): T = true_t undoes the distortion."""
    val = synthetic(20000, 0, true_t)
    y, p = scores_arrays(val, CLASSES)
    t = fit_temperature(p, y)
    assert t == pytest.approx(true_t, rel=0.05)
    y_test, p_test = scores_arrays(synthetic(5000, 1, true_t), CLASSES)
    before, after = ece_scores(y_test, p_test).mean(), ece_scores(y_test, apply_temperature(p_test, t)).mean()
    assert after < 0.02 < before
    np.testing.assert_allclose(apply_temperature(p_test, 1.0), np.clip(p_test, 1e-7, 1 - 1e-7), rtol=1e-9)
    # the ranking is unchanged: the same AUC
    np.testing.assert_allclose(skm.roc_auc_score(y_test, apply_temperature(p_test, t), average=None),
                               skm.roc_auc_score(y_test, p_test, average=None))


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------
def test_a_class_without_validation_positives_is_untunable_and_never_predicted():
    rng = np.random.default_rng(3)
    y = rng.random((200, 3)) < 0.3
    y[:, 1] = False
    p = np.round(np.clip(0.3 * y + rng.random((200, 3)) * 0.7, 0, 1), 2)
    thr = tune_thresholds(y, p)
    assert np.isnan(thr[1]) and np.isfinite(thr[[0, 2]]).all() and set(thr[[0, 2]]) <= set(THRESHOLD_GRID)
    for j in (0, 2):  # the F1-optimal grid point, ties to the lowest
        f1 = [skm.f1_score(y[:, j], p[:, j] > t, zero_division=0) for t in THRESHOLD_GRID]
        assert thr[j] == THRESHOLD_GRID[int(np.argmax(f1))]
    # scores on grid points, and every threshold from the negative's score to below the positives' equally
    # good: strictly above (a score equal to the threshold is not predicted), ties to the lowest
    grid_y = np.array([[1], [0], [1], [0]], bool)
    grid_p = THRESHOLD_GRID[[80, 10, 90, 20]][:, None]
    assert tune_thresholds(grid_y, grid_p)[0] == THRESHOLD_GRID[20]
    y_test = y.copy()
    y_test[:5, 1] = True  # the test records do have the class: the model never predicts it
    table = classification_metrics(y_test, p, thr, CLASSES)
    assert table.loc["B", ["precision", "recall", "f1"]].tolist() == [0.0, 0.0, 0.0]
    assert table.loc["B", "accuracy"] == pytest.approx(195 / 200)
    assert table["untunable"].tolist() == [False, True, False, None]


def test_thresholds_file_round_trip(tmp_path):
    obj = thresholds_json(CLASSES, np.array([0.25, np.nan, 1.0]), "validation fold 4: 20 records", model="m.pth")
    assert obj == {"classes": CLASSES, "thresholds": {"A": 0.25, "B": None, "C": 1.0}, "untunable": ["B"],
                   "tuned_on": "validation fold 4: 20 records", "model": "m.pth"}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(obj))
    got = parse_thresholds(json.loads(path.read_text()), CLASSES, path)
    assert got[0] == 0.25 and np.isnan(got[1]) and got[2] == 1.0
    with pytest.raises(ValueError):
        thresholds_json(CLASSES, np.array([0.25, 1.5, 0.5]), "x")


GOOD = {"classes": CLASSES, "thresholds": {"A": 0.2, "B": None, "C": 0.5}, "untunable": ["B"]}


@pytest.mark.parametrize("change, message", [
    ({"thresholds": {"A": 0.2, "B": None}}, "missing: C"),
    ({"thresholds": {"A": 0.2, "B": None, "C": 0.5, "D": 0.1}}, "expected one per class A, B, C"),
    ({"classes": ["A", "B", "X"]}, "expected one per class"),
    ({"thresholds": {"A": "0.2", "B": None, "C": 0.5}}, "threshold of A is '0.2', not a number"),
    ({"thresholds": {"A": True, "B": None, "C": 0.5}}, "threshold of A is True, not a number"),
    ({"thresholds": {"A": float("nan"), "B": None, "C": 0.5}}, "threshold of A is nan, not a number in"),
    ({"thresholds": {"A": float("inf"), "B": None, "C": 0.5}}, "threshold of A is inf"),
    ({"thresholds": {"A": 1.5, "B": None, "C": 0.5}}, "threshold of A is 1.5, not a number in \\[0, 1\\]"),
    ({"thresholds": {"A": -0.01, "B": None, "C": 0.5}}, "threshold of A is -0.01"),
    ({"untunable": []}, "threshold of B is null, but B is not listed"),
    ({"untunable": ["B", "C"]}, "C is listed under \"untunable\" but has the threshold 0.5"),
    ({"untunable": "B"}, "not a list of class names"),
    ({"thresholds": [0.2, None, 0.5]}, "holds no \"thresholds\" object"),
])
def test_thresholds_file_refusals_name_the_file(tmp_path, change, message):
    path = tmp_path / "m.thresholds.json"
    path.write_text(json.dumps({**GOOD, **change}))  # NaN and inf as Python's json writes them: NaN, Infinity
    with pytest.raises(PipelineError, match=message) as e:
        parse_thresholds(json.loads(path.read_text()), CLASSES, path)
    assert str(path) in str(e.value)
    got = parse_thresholds(GOOD, CLASSES, path)
    assert got[0] == 0.2 and np.isnan(got[1])


def test_unreadable_thresholds_file(tmp_path):
    run = Run(tmp_path)
    run.model.write_bytes(b"weights")
    with pytest.raises(MissingInputError, match="thresholds.json not found"):
        load_thresholds(run, CLASSES)
    run.thresholds.write_text("{")
    with pytest.raises(PipelineError, match="thresholds.json is not a thresholds file written by predict.py"):
        load_thresholds(run, CLASSES)


# ---------------------------------------------------------------------------------------------
# Bootstrap CIs
# ---------------------------------------------------------------------------------------------
def plain_bootstrap(y, p, thr, n_bootstrap, seed):
    """The CI definition restated as a loop over resamples, with scikit-learn's metrics: a class without a
    positive or a negative record in a resample is left out of that resample, and of its mean row."""
    rng = np.random.default_rng(seed)
    n, c = y.shape
    draws = {m: [[] for _ in range(c + 1)] for m in ("precision", "recall", "f1", "auc", "accuracy", "ece", "brier")}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        yb, pb = y[idx], p[idx]
        row = {m: [] for m in draws}
        for j in range(c):
            if yb[:, j].all() or not yb[:, j].any():
                continue
            pred = pb[:, j] > thr[j]
            gaps = 0.0
            for b in range(15):
                in_bin = np.minimum(np.floor(15 * pb[:, j]), 14) == b
                if in_bin.any():
                    gaps += in_bin.sum() / n * abs(yb[in_bin, j].mean() - pb[in_bin, j].mean())
            values = {"precision": skm.precision_score(yb[:, j], pred, zero_division=0),
                      "recall": skm.recall_score(yb[:, j], pred), "f1": skm.f1_score(yb[:, j], pred),
                      "auc": skm.roc_auc_score(yb[:, j], pb[:, j]), "accuracy": skm.accuracy_score(yb[:, j], pred),
                      "ece": gaps, "brier": np.mean((pb[:, j] - yb[:, j]) ** 2)}
            for m, v in values.items():
                draws[m][j].append(v)
                row[m].append(v)
        for m in draws:
            if row[m]:
                draws[m][c].append(np.mean(row[m]))
    ci = {m: [np.percentile(d, [2.5, 97.5]) if d else [np.nan, np.nan] for d in per] for m, per in draws.items()}
    return ci, [len(d) for d in draws["f1"]]


def test_bootstrap_cis_equal_a_plain_loop():
    """40 records; class C has 3 positives that the model ranks perfectly. Resamples without any of them
    used to read F1 0 and made its CI [0, 1]; left out, every remaining resample reads F1 1."""
    rng = np.random.default_rng(8)
    n = 40
    y = np.zeros((n, 3), bool)
    y[:, 0] = rng.random(n) < 0.5
    y[:, 1] = rng.random(n) < 0.2
    y[[3, 17, 29], 2] = True
    p = np.round(np.clip(0.35 * y + 0.65 * rng.random((n, 3)), 0, 1), 1)  # rounded: tied scores
    p[:, 2] = np.where(y[:, 2], 0.9, 0.3)
    thr = np.array([0.5, 0.4, 0.6])
    table = classification_metrics(y, p, thr, CLASSES, n_bootstrap=50, seed=5)
    ci, kept = plain_bootstrap(y, p, thr, 50, 5)
    for m, per in ci.items():
        np.testing.assert_allclose(table[[f"{m}_lo", f"{m}_hi"]].to_numpy(float), np.array(per), rtol=1e-10,
                                   err_msg=m)
    assert table["n_resamples"].tolist() == kept
    # P(a resample misses all 3 of 40) = (37/40)^40 = 4.4 %; with this seed 3 of the 50 draw none (the loop
    # above counts them independently), so C's CI rests on 47 resamples, every other class's on all 50
    assert kept == [50, 50, 47, 50]
    assert table.loc["C", ["f1", "f1_lo", "f1_hi"]].tolist() == [1.0, 1.0, 1.0]
    # drawn in chunks, the same resamples (default_rng(seed).integers(0, n, n) per resample, in order)
    pd.testing.assert_frame_equal(classification_metrics(y, p, thr, CLASSES, n_bootstrap=50, seed=5, chunk=7), table)


@pytest.mark.parametrize("every_record", [False, True], ids=["no positive", "no negative"])
def test_a_class_that_cannot_be_assessed_has_no_metrics(every_record, capsys):
    """A class without a positive record, or without a negative one (its F1 and accuracy would otherwise
    count in the mean row): every metric NaN, no resample, the mean over the other classes."""
    rng = np.random.default_rng(2)
    y = rng.random((60, 3)) < 0.4
    y[:, 2] = every_record
    p = np.clip(0.3 * y + 0.7 * rng.random((60, 3)), 0, 1)
    table = classification_metrics(y, p, np.array([0.5, 0.5, 0.5]), CLASSES, n_bootstrap=50)
    assert table.loc["C", ["precision", "recall", "f1", "auc", "accuracy", "ece", "brier", "f1_lo"]].isna().all()
    assert table.loc["C", "n_resamples"] == 0
    assert table.loc["mean", "f1"] == pytest.approx(table.loc[["A", "B"], "f1"].mean())
    print_metrics(table)
    line = [row for row in capsys.readouterr().out.splitlines() if row.startswith("C ")][0]
    assert "n/a" in line and "0.000" not in line


def test_no_bootstrap_no_ci_columns_and_no_brackets(capsys):
    y, p = scores_arrays(synthetic(200, 4), CLASSES)
    table = classification_metrics(y, p, np.full(3, 0.5), CLASSES, n_bootstrap=0)
    assert not [c for c in table.columns if c.endswith(("_lo", "_hi"))] and "n_resamples" not in table
    print_metrics(table)
    plain = capsys.readouterr().out
    assert "[" not in plain and "f1" in plain
    print_metrics(classification_metrics(y, p, np.full(3, 0.5), CLASSES, n_bootstrap=20))
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 4 and all(row.count("[") == 2 for row in rows)  # F1 and AUC with their CI on every row


# ---------------------------------------------------------------------------------------------
# Scores files
# ---------------------------------------------------------------------------------------------
def test_scores_round_trip(tmp_path):
    table = synthetic(30, 5)
    table.to_csv(tmp_path / "s.csv", index=False)
    pd.testing.assert_frame_equal(read_scores(tmp_path / "s.csv", CLASSES), table)


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.drop(columns="p_B"), "lacks column\\(s\\) p_B"),
    (lambda t: t.assign(p_A=t["p_A"].where(t.index != 4)), "p_A of record R5_4 is empty, not a number"),
    (lambda t: t.assign(p_C=t["p_C"].where(t.index != 2, 1.2)), "p_C of record R5_2 is 1.2, not a probability"),
    (lambda t: t.assign(B=t["B"].where(t.index != 7, 2)), "B of record R5_7 is 2, not a 0/1 label"),
    (lambda t: t.assign(A=t["A"].astype(object).where(t.index != 1, "yes")), "A of record R5_1 is 'yes'"),
    (lambda t: t.assign(patient_id=t["patient_id"].where(t.index != 3, "R5_0")), "R5_0 appears more than once"),
    (lambda t: t.iloc[:0], "holds no records"),
])
def test_bad_scores_files_are_refused_by_name(tmp_path, damage, message):
    path = tmp_path / "test_scores.csv"
    damage(synthetic(30, 5)).to_csv(path, index=False)
    with pytest.raises(PipelineError, match=message) as e:
        read_scores(path, CLASSES)
    assert str(path) in str(e.value)


def test_unreadable_scores_file(tmp_path):
    (tmp_path / "s.csv").write_bytes(b"")
    with pytest.raises(PipelineError, match="s.csv is not a readable CSV"):
        read_scores(tmp_path / "s.csv", CLASSES)
    with pytest.raises(MissingInputError):
        read_scores(tmp_path / "none.csv", CLASSES)


# ---------------------------------------------------------------------------------------------
# The evaluator's outputs
# ---------------------------------------------------------------------------------------------
def test_evaluate_scores_writes_one_complete_evaluation(tmp_path, capsys):
    import matplotlib.image

    val, test = synthetic(300, 10), synthetic(400, 11)
    val["B"] = 0  # no validation positive: B is untunable
    out, run = tmp_path / "results", Run(tmp_path / "run")
    run.folder.mkdir()
    run.model.write_bytes(b"weights")
    info = {"model": str(run.model), "model_sha": file_sha(run.model)}
    table = evaluate_scores(out, CLASSES, test, val, n_bootstrap=200, seed=3, info=info, calibrate=True,
                            thresholds_file=run.thresholds)
    assert f"warning: {out}: B: no positive record in the validation scores" in capsys.readouterr().err

    y, p = scores_arrays(test, CLASSES)
    thr = tune_thresholds(*scores_arrays(val, CLASSES))
    expected = classification_metrics(y, p, thr, CLASSES, n_bootstrap=200, seed=3)
    pd.testing.assert_frame_equal(table, expected)
    csv = pd.read_csv(out / "metrics.csv").set_index("class")
    np.testing.assert_allclose(csv[["f1", "auc_lo", "ece", "brier_hi"]], expected[["f1", "auc_lo", "ece", "brier_hi"]])
    assert csv.loc["B", "untunable"] and np.isnan(csv.loc["B", "threshold"]) and csv.loc["B", "recall"] == 0
    pd.testing.assert_frame_equal(read_scores(out / "test_scores.csv", CLASSES), test)
    pd.testing.assert_frame_equal(read_scores(out / "val_scores.csv", CLASSES), val)
    np.testing.assert_array_equal(load_thresholds(run, CLASSES), thr)  # the run's loader: tied to its model.pth
    assert json.loads(run.thresholds.read_text())["model"] == str(run.model)

    saved = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN written as null
    assert saved["thresholds"]["B"] is None and saved["untunable"] == ["B"] and saved["n_test"] == 400
    calibration = json.loads((out / "calibration.json").read_text())
    t = fit_temperature(*scores_arrays(val, CLASSES)[::-1])
    assert calibration["temperature"] == pytest.approx(t) == saved["calibration"]["temperature"]
    assert t == pytest.approx(2.0, rel=0.2)
    after = ece_scores(y, apply_temperature(p, t))
    assert [calibration["after"][c]["ece"] for c in CLASSES] == pytest.approx(after.tolist())
    assert calibration["after"]["mean"]["ece"] < calibration["before"]["mean"]["ece"]
    paired = classification_metrics(y, apply_temperature(p, t), thr, CLASSES, n_bootstrap=200, seed=3)  # before's
    for c in [*CLASSES, "mean"]:  # resamples: the intervals before and after scaling are of the same records
        assert [calibration["after"][c][k] for k in ("ece_lo", "ece_hi", "brier_lo", "brier_hi")] == pytest.approx(
            paired.loc[c, ["ece_lo", "ece_hi", "brier_lo", "brier_hi"]].tolist(), abs=1e-12), c

    for name in ["roc.png", "reliability.png", "confusion_A.png"]:
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.std() > 0
    manifest = read_manifest(out / EVALUATED_JSON)
    assert set(manifest["files"]) == {"test_scores.csv", "val_scores.csv", "calibration.json", "metrics.csv",
                                      "metrics.json", "roc.png", "reliability.png", "../run/thresholds.json",
                                      *[f"confusion_{c}.png" for c in CLASSES]}
    assert manifest["model"] == str(run.model) and manifest["n_bootstrap"] == 200

    got = read_evaluation(out)
    assert got["current"] and got["problem"] is None and got["classes"] == CLASSES and got["untunable"] == ["B"]
    assert got["info"] == info and got["n_test"] == 400 and got["calibration"] == calibration
    pd.testing.assert_frame_equal(got["metrics"].drop(columns="untunable"), table.drop(columns="untunable"),
                                  check_dtype=False)
    assert read_evaluation(out, key=manifest["fingerprint"])["current"]
    assert "other scores or settings" in read_evaluation(out, key="another")["problem"]
    (out / "metrics.csv").write_text("changed\n")
    assert read_evaluation(out)["problem"].startswith("metrics.csv was changed after evaluated.json was written")


def test_external_evaluation_with_given_thresholds_replaces_the_old_outputs(tmp_path):
    out = tmp_path / "run"
    evaluate_scores(out, CLASSES, synthetic(100, 1), synthetic(100, 2), n_bootstrap=10, calibrate=True)
    thr = np.array([0.3, np.nan, 0.6])
    table = evaluate_scores(out, CLASSES, synthetic(150, 3), thresholds=thr, n_bootstrap=0, figures=False,
                            tuned_on="CPSC's validation records", info={"database": "OTHER"})
    assert table["threshold"].tolist()[:3] == pytest.approx([0.3, np.nan, 0.6], nan_ok=True)
    assert sorted(p.name for p in out.iterdir()) == [EVALUATED_JSON, "metrics.csv", "metrics.json", "test_scores.csv"]
    got = read_evaluation(out)
    assert got["current"] and got["tuned_on"] == "CPSC's validation records" and got["n_val"] is None
    assert got["info"] == {"database": "OTHER"} and got["untunable"] == ["B"] and got["calibration"] is None
    assert not [c for c in got["metrics"].columns if c.endswith("_lo")]


def test_an_interrupted_evaluation_leaves_no_manifest(tmp_path, monkeypatch):
    out = tmp_path / "run"
    evaluate_scores(out, CLASSES, synthetic(100, 1), synthetic(100, 2), n_bootstrap=10, figures=False)
    assert read_evaluation(out)["current"]

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluator, "plot_roc", crash)
    with pytest.raises(KeyboardInterrupt):
        evaluate_scores(out, CLASSES, synthetic(100, 3), synthetic(100, 2), n_bootstrap=10)
    assert not (out / EVALUATED_JSON).exists()
    got = read_evaluation(out)
    assert not got["current"] and "evaluated.json is missing" in got["problem"]


def test_bad_evaluator_inputs_touch_nothing(tmp_path):
    out = tmp_path / "run"
    evaluate_scores(out, CLASSES, synthetic(100, 1), synthetic(100, 2), n_bootstrap=10, figures=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = synthetic(100, 3)
    bad.loc[5, "p_A"] = 1.5
    with pytest.raises(PipelineError, match="test scores: p_A of record R3_5 is 1.5"):
        evaluate_scores(out, CLASSES, bad, synthetic(100, 2))
    with pytest.raises(ValueError, match="info may not set \\['thresholds'\\]"):
        evaluate_scores(out, CLASSES, synthetic(100, 3), synthetic(100, 2), info={"thresholds": "x"})
    with pytest.raises(ValueError, match="give validation scores"):
        evaluate_scores(out, CLASSES, synthetic(100, 3))
    with pytest.raises(ValueError, match="calibrate=True"):
        evaluate_scores(out, CLASSES, synthetic(100, 3), thresholds=np.full(3, 0.5), calibrate=True)
    with pytest.raises(ValueError, match="thresholds"):
        evaluate_scores(out, CLASSES, synthetic(100, 3), thresholds=np.array([0.5, 0.5, math.inf]))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(MissingInputError, match="metrics.json not found"):
        read_evaluation(tmp_path / "none")
    (tmp_path / "metrics.json").write_text('{"classes": ["A"]}')
    with pytest.raises(PipelineError, match="not an evaluation's metrics.json"):
        read_evaluation(tmp_path)


# ---------------------------------------------------------------------------------------------
# One path from a Scorer to its evaluation, its summary row, tables
# ---------------------------------------------------------------------------------------------
class CountingScorer:
    """A Scorer that hands over fixed scores and counts how often it was asked."""

    def __init__(self, test: pd.DataFrame, val: pd.DataFrame):
        self.scores, self.calls = Scores(test, val), 0

    def score(self) -> Scores:
        self.calls += 1
        return self.scores


def test_a_scorer_is_evaluated_once_while_current_and_summarised_from_its_files(tmp_path, capsys):
    folder = EvaluationFolder(tmp_path / "LR")
    scorer = CountingScorer(synthetic(120, 1), synthetic(80, 2))
    options = EvalOptions(folder, CLASSES, n_bootstrap=20, figures=False, key="k1")
    table = evaluate_scorer(scorer, options)
    again = evaluate_scorer(scorer, options, what="LR on these features")
    said = capsys.readouterr().out
    assert scorer.calls == 1
    assert said == f"{folder}: LR on these features is current; nothing to do (--force redoes it)\n"
    pd.testing.assert_frame_equal(again.drop(columns="untunable"), table.drop(columns="untunable"), check_dtype=False)
    evaluate_scorer(scorer, options, force=True)
    evaluate_scorer(scorer, EvalOptions(folder, CLASSES, n_bootstrap=20, figures=False, key="k2"))
    assert scorer.calls == 3 and folder.current("k2") and not folder.current("k1")

    s = folder.summary()
    assert s.records == 120 and s.classes == CLASSES and s.folder == folder.folder
    assert s.mean["f1"] == pytest.approx(table.loc["mean", "f1"]) and s.mean["auc_hi"] == table.loc["mean", "auc_hi"]
    assert s.per_class.loc["B", "auc"] == pytest.approx(table.loc["B", "auc"])
    assert [s.thresholds[c] for c in CLASSES] == pytest.approx(table.loc[CLASSES, "threshold"].tolist())
    evaluate_scorer(scorer, EvalOptions(folder, CLASSES, n_bootstrap=0, figures=False, key="k3"))
    assert "f1_lo" not in folder.summary().mean  # no bootstrap: no bounds, not NaN bounds


def test_one_column_declaration_gives_the_csv_and_the_markdown(tmp_path):
    assert format_ci(0.8361, 0.7104, 0.9188) == "0.836 [0.710, 0.919]"
    assert format_ci(0.5, None, None) == format_ci(0.5, np.nan, 0.6) == "0.500"
    assert format_ci(np.nan, 0.1, 0.2) == "n/a"
    # a mean over folds: the sd of one fold is undefined, and a mean of none is no number ("nan ± nan")
    assert format_mean_sd(0.3612, 0.0731) == "0.361 ± 0.073" and format_mean_sd(0.3333, np.nan) == "0.333 (sd n/a)"
    assert format_mean_sd(np.nan, np.nan) == "n/a"
    columns = [Column("model", "model", align="left"), *ci_columns("f1", "mean F1"), Column("ece", "ECE"),
               Column("scores")]
    rows = [{"model": "a", "f1": 0.5, "f1_lo": 0.4, "f1_hi": 0.6, "ece": np.nan, "scores": "a.csv"},
            {"model": "b", "f1": 0.25, "f1_lo": 0.125, "f1_hi": 0.375, "ece": 0.0625, "scores": "b.csv"},
            ["c", "_out of date_"]]
    assert table_frame(rows[:2], columns).columns.tolist() == ["model", "f1", "f1_lo", "f1_hi", "ece", "scores"]
    assert markdown_table(rows, columns) == ("| model | mean F1 | ECE |\n| --- | ---: | ---: |\n"
                                             "| a | 0.500 [0.400, 0.600] | n/a |\n"
                                             "| b | 0.250 [0.125, 0.375] | 0.062 |\n| c | _out of date_ | |\n")
    bare = [{k: v for k, v in r.items() if not k.endswith(("_lo", "_hi"))} for r in rows[:2]]
    assert table_frame(bare, columns).columns.tolist() == ["model", "f1", "ece", "scores"]
    assert "| a | 0.500 | n/a |" in markdown_table(bare, columns)


# ---------------------------------------------------------------------------------------------
# ECE: a saturated score with label 0 belongs to the top bin, a zero score with label 1 to the bottom one
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


def test_the_reliability_diagram_draws_the_models_own_scores_beside_the_scaled_ones(tmp_path, monkeypatch):
    """With calibration, reliability.png's "model" curve is the test scores as the model gave them, and the
    scaled curve those scores at the temperature fitted on validation (calibration.json's)."""
    drawn = {}
    real = evaluator.plot_reliability

    def spy(y_true, y_score, classes, title, path, calibrated=None, temperature=None, **kwargs):
        drawn.update(score=np.array(y_score), calibrated=np.array(calibrated), temperature=temperature)
        return real(y_true, y_score, classes, title, path, calibrated, temperature, **kwargs)

    monkeypatch.setattr(evaluator, "plot_reliability", spy)
    test = synthetic(100, 1)
    evaluate_scores(tmp_path / "run", CLASSES, test, synthetic(100, 2), n_bootstrap=0, calibrate=True)
    raw = test[[f"p_{c}" for c in CLASSES]].to_numpy()
    t = json.loads((tmp_path / "run" / "calibration.json").read_text())["temperature"]
    np.testing.assert_array_equal(drawn["score"], raw)
    logit = np.log(raw / (1 - raw))
    np.testing.assert_allclose(drawn["calibrated"], 1 / (1 + np.exp(-logit / t)), rtol=1e-6)
    assert drawn["temperature"] == t and abs(t - 1) > 0.1
