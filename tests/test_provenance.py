"""Provenance: a run's checkpoint carries its split, and every later stage evaluates exactly those
records, whatever preprocess.py wrote since (no test-set leakage after re-preprocessing)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import main
import predict
import shap_values
from utils.labels import CLASSES


@pytest.fixture(scope="module")
def trained_once(tiny, prep, synth_records, tmp_path_factory):
    """A tiny model trained once on a private preprocess of a private copy of the records."""
    base = tmp_path_factory.mktemp("provenance")
    shutil.copytree(synth_records, base / "records")
    prep(base / "records", base / "data")
    main.main(["--data-dir", str(base / "data"), *tiny, "--epochs", "1", "--run", str(base / "m")])
    return base


@pytest.fixture
def run(trained_once, tmp_path):
    """Private copies of the records, their preprocess outputs and the run folder, which a test may
    damage; every evaluation below reads the copied data (--data-dir)."""
    for name in ("records", "data", "m"):
        shutil.copytree(trained_once / name, tmp_path / name)
    model = tmp_path / "m" / "model.pth"
    ckpt = torch.load(model, weights_only=True)
    return {"records": tmp_path / "records", "data": tmp_path / "data", "model": model, "ckpt": ckpt, "tmp": tmp_path}


def evaluate(run, name):
    predict.main(["--run", str(run["model"]), "--data-dir", str(run["data"]), "--results-dir", str(run["tmp"] / name),
                  "--n-bootstrap", "0", "--num-workers", "0", "--no-figures"])
    return pd.read_csv(run["tmp"] / name / "data" / "m" / "test_scores.csv", dtype={"patient_id": str})


def test_checkpoint_holds_its_split_and_loads_weights_only(run):
    ckpt = run["ckpt"]
    split = ckpt["split"]
    assert set(split) == {"train", "val", "test"} and all(split.values())
    assert not (set(split["train"]) & set(split["test"])) and not (set(split["train"]) & set(split["val"]))
    labels = pd.read_csv(run["data"] / "labels.csv", dtype={"patient_id": str})
    assert sorted(split["test"]) == sorted(labels.loc[labels["fold"] == 7, "patient_id"])  # seed 42: test fold 7


def test_re_preprocessing_with_another_seed_never_moves_training_records_into_the_test(prep, run, capsys):
    prep(run["records"], run["data"], "--seed", "5")  # new folds: the old fold-7 records are scattered
    labels = pd.read_csv(run["data"] / "labels.csv", dtype={"patient_id": str})
    assert sorted(labels.loc[labels["fold"] == 7, "patient_id"]) != sorted(run["ckpt"]["split"]["test"])
    scores = evaluate(run, "r1")
    assert sorted(scores["patient_id"]) == sorted(run["ckpt"]["split"]["test"])
    assert not set(scores["patient_id"]) & set(run["ckpt"]["split"]["train"])


def test_added_records_are_said_and_left_out(prep, run, capsys):
    for i, src in enumerate(("A0001", "A0002", "A0003")):
        for ext in (".hea", ".mat"):
            text_or_bytes = (run["records"] / f"{src}{ext}").read_bytes()
            if ext == ".hea":
                text_or_bytes = text_or_bytes.replace(src.encode(), f"B900{i}".encode())
            (run["records"] / f"B900{i}{ext}").write_bytes(text_or_bytes)
    prep(run["records"], run["data"])
    capsys.readouterr()
    scores = evaluate(run, "r2")
    assert "3 record(s) this run never used" in capsys.readouterr().err
    assert sorted(scores["patient_id"]) == sorted(run["ckpt"]["split"]["test"])


def test_a_missing_or_relabelled_test_record_is_an_error(prep, run):
    """A test record whose diagnosis changed in its header, re-preprocessed: an error, not a silent
    change; a test record removed from the database: an error naming the record."""
    victim = run["ckpt"]["split"]["test"][0]
    header = run["records"] / f"{victim}.hea"
    text = header.read_text()
    dx = next(line for line in text.splitlines() if line.startswith("#Dx") or line.startswith("# Dx"))
    header.write_text(text.replace(dx, "# Dx: 164931005" if "164931005" not in dx else "# Dx: 426783006"))
    prep(run["records"], run["data"])
    with pytest.raises(SystemExit, match="labels of this run's test records"):
        evaluate(run, "r3")
    header.unlink()
    prep(run["records"], run["data"])
    with pytest.raises(SystemExit, match=f"{victim}.*not in .*labels.csv"):
        evaluate(run, "r4")


def test_a_hand_edited_preprocess_folder_is_refused(run):
    """labels.csv changed after preprocess.json was written: every stage refuses the folder."""
    labels = pd.read_csv(run["data"] / "labels.csv", dtype={"patient_id": str})
    labels.loc[0, "AF"] = 1 - labels.loc[0, "AF"]
    labels.to_csv(run["data"] / "labels.csv", index=False)
    with pytest.raises(SystemExit, match="does not match its preprocess.json .labels.csv was changed"):
        evaluate(run, "r6")


def test_thresholds_on_the_runs_validation_and_shap_on_its_test_against_its_training(run, tmp_path):
    predict.main(["--run", str(run["model"]), "--data-dir", str(run["data"]), "--results-dir", str(tmp_path / "r"),
                  "--n-bootstrap", "0",
                  "--num-workers", "0", "--no-figures"])
    import json
    tuned = json.loads((run["model"].parent / "thresholds.json").read_text())
    assert tuned["tuned_on"] == f"validation fold(s) [4]: {len(run['ckpt']['split']['val'])} records"
    seen = {}
    real_explain = shap_values.explain

    def spy(model, background, x, *a, **k):
        seen["n_background"], seen["n_explained"] = len(background), len(x)
        return real_explain(model, background, x, *a, **k)

    shap_values.explain = spy
    try:
        shap_values.main(["--run", str(run["model"]), "--results-dir", str(tmp_path / "r"), "--background", "5", "--n-explain", "4", "--n-samples", "2"])
    finally:
        shap_values.explain = real_explain
    index = next((run["model"].parent / "shap").glob("index_*.csv"))
    explained = pd.read_csv(index, dtype={"patient_id": str})["patient_id"]
    assert set(explained) <= set(run["ckpt"]["split"]["test"]) and seen == {"n_background": 5, "n_explained": 4}
    settings = json.loads(next((run["model"].parent / "shap").glob("settings_*.json")).read_text())
    background = settings["background_ids"]
    assert len(background) == len(set(background)) == 5 and set(background) <= set(run["ckpt"]["split"]["train"])
    assert settings["explained_ids"] == explained.tolist()


def test_record_diagnosis_of_a_cached_record_equals_its_test_score(run, tmp_path):
    scores = evaluate(run, "r5").set_index("patient_id")
    pid = scores.index[0]
    table = predict.main(["--run", str(run["model"]), "--record", str(run["records"] / f"{pid}.hea"),
                          "--results-dir", str(tmp_path / "rec")])
    np.testing.assert_allclose(table.loc[0, list(CLASSES)].to_numpy(float),
                               scores.loc[pid, [f"p_{c}" for c in CLASSES]].to_numpy(float), atol=6e-5)
