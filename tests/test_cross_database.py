"""cross_database.py: every model on its own test fold and on every other database, long matrix with
recomputable score files, calibration columns, leave-one-out pooling, reuse on a second call."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import baselines
import cross_database
import lead_study
import main
import preprocess
import synth
from models.studies import run_all, study_config
from utils.cache import SignalCache, load_labels
from utils.evaluator import read_scores
from utils.labels import LEADS
from utils.metrics import auc_scores


@pytest.fixture(scope="module")
def sites(tmp_path_factory, built_once):
    """Three small databases from three synthetic sites, preprocessed (cpsc9): the folder of their outputs,
    the preprocessed folders and the records (only read)."""
    root = tmp_path_factory.mktemp("xdb")
    dirs, raws = [], []
    for name, site, layout, seed in (("A", "a", "wfdb", 11), ("B", "b", "ptbxl", 12), ("C", "c", "wfdb", 13)):
        raw = built_once(f"sites/{name}", lambda out, site=site, layout=layout, seed=seed: synth.main(
            ["--out", str(out), "--n", "70", "--seed", str(seed), "--site", site, "--layout", layout,
             "--max-seconds", "10"]))
        preprocess.main(["--data-dir", str(raw), "--out", str(root / name), "--num-workers", "1"])
        dirs.append(root / name)
        raws.append(raw)
    return root, dirs, raws


@pytest.mark.slow
def test_matrix_cells_scores_and_reuse(tiny, sites, capsys, monkeypatch):
    root, dirs, _ = sites
    monkeypatch.chdir(root)  # a relative --results-dir: the matrix's score files are still found from its folder
    argv = ["--data-dirs", *map(str, dirs), *tiny, "--epochs", "1", "--n-bootstrap", "20", "--leave-one-out",
            "--no-figures", "--pool-dir", str(root / "pooled"), "--results-dir", "results"]
    matrix = cross_database.main(argv)
    monkeypatch.chdir(root / "results" / "cross_database")
    names = ["A", "B", "C"]
    pairs = set(zip(matrix["trained_on"], matrix["tested_on"]))
    assert pairs == {(a, b) for a in names for b in names} | {(f"all but {n}", n) for n in names}
    assert list(matrix.columns[:13]) == ["trained_on", "tested_on", "records", "classes", "auc", "auc_lo", "auc_hi",
                                         "f1", "f1_lo", "f1_hi", "ece", "ece_lo", "ece_hi"]
    for _, row in matrix.iterrows():
        scores = read_scores(row["scores"], list(load_labels(dirs[0]).columns[1:-1]))
        classes = row["classes"].split(",")
        y = scores[classes].to_numpy(bool)
        p = scores[[f"p_{c}" for c in classes]].to_numpy()
        assert np.nanmean(auc_scores(y, p)) == pytest.approx(row["auc"])  # every number recomputable
        assert 0 <= row["ece"] <= 1 and 0 <= row["brier"] <= 1
        own = row["trained_on"] == row["tested_on"]
        tested = dirs[names.index(row["tested_on"])]
        expected = len(load_labels(tested)) if not own else len(load_labels(tested).query("fold == 7"))
        assert row["records"] == len(scores) and (own or row["records"] == expected)
        # a class without a positive record in that test set is left out of the cell's means
        absent = [c for c in load_labels(tested).columns[1:-1] if not scores[c].any()]
        assert not set(absent) & set(classes)
    pooled = SignalCache(root / "pooled" / "all_but_A")
    assert len(pooled) == len(SignalCache(dirs[1])) + len(SignalCache(dirs[2]))
    assert pooled.ids[0].startswith("B_")
    out = root / "results" / "cross_database"
    assert {"matrix.csv", "per_class.csv", "matrix.md", "auc.png", "f1.png"} <= {p.name for p in out.iterdir()}
    from utils.results import recorded_data_problem
    record = json.loads((out / "matrix.json").read_text())  # the data of each database, for report.py
    assert {name: Path(db["data_dir"]).name for name, db in record["databases"].items()} == {n: n for n in names}
    assert all(recorded_data_problem(out / "matrix.json", d) is None for d in dirs)
    evaluations = {str(Path(scores).parent / "evaluated.json") for scores in matrix["scores"]}
    assert evaluations <= set(record["sources"])  # and the models evaluated:
    assert {Path(p).name for p in set(record["sources"]) - evaluations} == {"model.pth"}
    per_class = pd.read_csv(out / "per_class.csv")
    assert len(per_class) == len(matrix) * 9

    capsys.readouterr()
    monkeypatch.chdir(root)
    again = cross_database.main(argv)  # everything current: nothing trained or scored again
    printed = capsys.readouterr().out
    assert printed.count("current, nothing to train") == 6 and "best val F1" not in printed
    assert printed.count("external evaluation of this very model is current") == 9
    pd.testing.assert_frame_equal(again, matrix)


def test_refuses_mixed_label_sets_and_a_single_database(tiny, sites, tmp_path, capsys):
    _, dirs, raws = sites
    with pytest.raises(SystemExit) as e:
        cross_database.parse_args(["--data-dirs", str(dirs[0])])
    assert e.value.code == 2 and "two or more" in capsys.readouterr().err
    preprocess.main(["--data-dir", str(raws[1]), "--out", str(tmp_path / "S"), "--num-workers", "1",
                     "--labels", "superdiagnostic"])
    with pytest.raises(SystemExit, match="different label sets"):
        cross_database.main(["--data-dirs", str(dirs[0]), str(tmp_path / "S"), *tiny, "--epochs", "1",
                             "--results-dir", str(tmp_path / "r")])
    shutil.copytree(dirs[0], tmp_path / "copy")  # a database under another name: refused before any training
    with pytest.raises(SystemExit, match=rf"^error: {tmp_path / 'copy'} holds the data of {dirs[0]} \(a copy"):
        cross_database.main(["--data-dirs", str(dirs[0]), str(tmp_path / "copy"), *tiny, "--epochs", "1",
                             "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "r")])
    assert not (tmp_path / "runs").exists()


def temperature(folder: Path) -> float:
    return json.loads((folder / "calibration.json").read_text())["temperature"]


def calibration_means(scores: Path, temperature: float) -> tuple[float, float]:
    """(ECE, Brier) of a score file after temperature scaling, as docs/databases.md defines them: q =
    sigmoid(logit(p) / T), p clipped to [1e-7, 1 - 1e-7]; 15 equal-width bins, bin = min(floor(15 q), 14),
    ECE = sum over bins of |sum(y - q)| / n; Brier = mean (q - y)^2; each the mean over the classes with a
    positive and a negative record."""
    table = pd.read_csv(scores)
    classes = [c[2:] for c in table.columns if c.startswith("p_")]
    eces, briers = [], []
    for c in classes:
        y, p = table[c].to_numpy(float), np.clip(table[f"p_{c}"].to_numpy(float), 1e-7, 1 - 1e-7)
        if y.min() == y.max():
            continue
        q = 1 / (1 + np.exp(-np.log(p / (1 - p)) / temperature))
        bins = np.minimum(np.floor(q * 15), 14)
        eces.append(sum(abs((y - q)[bins == b].sum()) for b in range(15)) / len(y))
        briers.append(np.mean((q - y) ** 2))
    return float(np.mean(eces)), float(np.mean(briers))


@pytest.mark.slow
def test_cross_database_and_baselines_temperatures(check_fitted_on_validation, tiny, hospitals, tmp_path):
    matrix = cross_database.main(["--data-dirs", *map(str, hospitals), *tiny, "--epochs", "3", "--lr", "1e-2",
                                  "--limit", "48", "--n-bootstrap", "0", "--no-figures", "--calibrate",
                                  "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")])
    assert len(matrix) == 4
    for _, row in matrix.iterrows():
        cell = Path(row["scores"]).parent
        source = cell if row["trained_on"] == row["tested_on"] else cell.parent.parent  # external/<db>/ sits in it
        check_fitted_on_validation(row["temperature"], source / "val_scores.csv", cell / "test_scores.csv")
        assert temperature(cell) == row["temperature"]
        # the calibrated columns are the scaled scores', the plain ones the model's own (T = 1)
        assert (row["ece_calibrated"], row["brier_calibrated"]) == pytest.approx(
            calibration_means(row["scores"], row["temperature"]), abs=1e-9)
        assert (row["ece"], row["brier"]) == pytest.approx(calibration_means(row["scores"], 1.0), abs=1e-9)
    assert (abs(matrix["temperature"] - 1) > 0.05).any()  # scaling changed something to compare

    baselines.main(["--data-dir", str(hospitals[0]), "--classifier", "LR", "--calibrate", "--n-bootstrap", "0",
                    "--no-figures", "--num-workers", "1", "--results-dir", str(tmp_path / "b")])
    [folder] = [p.parent for p in (tmp_path / "b").rglob("LR/calibration.json")]
    check_fitted_on_validation(temperature(folder), folder / "val_scores.csv", folder / "test_scores.csv")


@pytest.mark.slow
def test_equal_runs_are_trained_once_and_two_database_leave_one_out_reuses_the_plain_cells(one, small, tmp_path, capsys):
    data = tmp_path / "D"
    shutil.copytree(small["D"], data)
    main.main(["--data-dir", str(data), *one])
    trained = data / "runs" / "resnet10_all_42"
    results = tmp_path / "results"
    capsys.readouterr()
    args = lead_study.parse_args(["--data-dir", str(data), *one, "--n-bootstrap", "0",
                                  "--results-dir", str(results)])
    run_all([study_config(args, list(LEADS))], results, 0)  # the lead study's all-leads run
    printed = capsys.readouterr().out
    study = data / "runs" / "study_resnet10_all_42"
    assert f"finished run {trained} (1 epoch(s)): reusing it" in printed and "epoch   1/1" not in printed
    assert (study / "model.pth").read_bytes() == (trained / "model.pth").read_bytes()
    assert (results / "D" / "study_resnet10_all_42" / "metrics.json").exists()

    matrix = cross_database.main(["--data-dirs", str(data), str(small["data"]), *one, "--n-bootstrap", "0",
                                  "--leave-one-out", "--no-figures", "--pool-dir", str(tmp_path / "pooled"),
                                  "--results-dir", str(results)])
    printed = capsys.readouterr().out
    assert printed.count("epoch   1/1") == 1  # E's model only: D's is main.py's run
    assert f"finished run {trained} (1 epoch(s)): reusing it" in printed
    assert "--leave-one-out with two databases: all but D is E" in printed and not (tmp_path / "pooled").exists()
    cells = matrix.set_index(["trained_on", "tested_on"])
    assert len(matrix) == 6
    pd.testing.assert_series_equal(cells.loc[("all but D", "D")], cells.loc[("E", "D")], check_names=False)
    pd.testing.assert_series_equal(cells.loc[("all but E", "E")], cells.loc[("D", "E")], check_names=False)


def test_every_split_is_checked_before_any_training(one, small, tmp_path, capsys):
    few = tmp_path / "raw"
    synth.main(["--out", str(few), "--n", "4", "--seed", "3", "--max-seconds", "7"])
    preprocess.main(["--data-dir", str(few), "--out", str(tmp_path / "F"), "--num-workers", "1"])
    data = tmp_path / "D"
    shutil.copytree(small["D"], data)
    capsys.readouterr()
    with pytest.raises(SystemExit, match=f"no records in the .*splits? of {tmp_path / 'F'} .*leave it out of "
                                         f"--data-dirs"):
        cross_database.main(["--data-dirs", str(data), str(tmp_path / "F"), *one, "--n-bootstrap", "0",
                             "--results-dir", str(tmp_path / "r")])
    assert "epoch" not in capsys.readouterr().out and not (data / "runs").exists()
