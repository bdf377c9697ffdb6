"""cross_validate.py: each run tests its own fold, the summary matches the per-fold rows, finished folds are reused."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import cross_validate
import main
from utils.cache import load_labels
from utils.labels import CLASSES


@pytest.mark.slow
def test_two_folds_then_reuse(tiny, prepared, tmp_path, capsys):
    argv = ["--data-dir", str(prepared), *tiny, "--epochs", "1", "--n-bootstrap", "20", "--folds", "2,1",
            "--runs-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results")]
    summary = cross_validate.main(argv)
    labels = load_labels(prepared)
    for k in (1, 2):
        run = tmp_path / "results" / prepared.name / f"study_resnet10_all_42_fold{k}"
        saved = json.loads((run / "metrics.json").read_text())
        assert saved["test_folds"] == [k] and saved["n_test"] == int((labels["fold"] == k).sum())
        tested = pd.read_csv(run / "test_scores.csv", dtype={"patient_id": str})["patient_id"]
        assert set(tested) == set(labels.loc[labels["fold"] == k, "patient_id"])
    folds = pd.read_csv(tmp_path / "results" / prepared.name / "cv_resnet10_all_42.csv")
    assert folds["fold"].tolist() == [1, 2]
    assert summary.loc["mean", "f1_mean"] == pytest.approx(folds["f1_mean"].mean())
    assert summary.loc["AF", "auc_sd"] == pytest.approx(np.std(folds["auc_AF"], ddof=1))
    for c in [*CLASSES, "mean"]:  # sample sds (ddof 1), F1's as AUC's; some spread, so that it shows
        assert summary.loc[c, "f1_sd"] == pytest.approx(np.std(folds[f"f1_{c}"], ddof=1), nan_ok=True), c
    assert (summary["f1_sd"] > 0).any()
    assert list(summary.index) == [*CLASSES, "mean"]
    md = (tmp_path / "results" / prepared.name / "cv_resnet10_all_42.md").read_text()
    # every cell a mean and its sd; "(sd n/a)" for a class one fold alone could assess, n/a for one none could
    # (LBBB: no positive test record in either fold)
    assert "| LBBB | n/a | n/a |" in md and "nan" not in md
    assert "over 2 test fold(s)" in md and md.count(" ± ") + md.count(" (sd n/a)") == 1 + 2 * len(CLASSES)

    capsys.readouterr()
    cross_validate.main(argv)
    printed = capsys.readouterr().out
    assert printed.count("evaluation current, reusing") == 2 and "best val F1" not in printed
    assert printed.count("current, nothing to train") == 2

    cross_validate.main([*argv[:-6], "--folds", "10", *argv[-4:]])  # another fold: the table holds all three
    assert "fold(s) 1, 2: finished and current, kept in the table" in capsys.readouterr().out
    again = pd.read_csv(tmp_path / "results" / prepared.name / "cv_resnet10_all_42.csv")
    assert again["fold"].tolist() == [1, 2, 10]
    pd.testing.assert_frame_equal(again.iloc[:2], folds)
    assert "over 3 test fold(s)" in (tmp_path / "results" / prepared.name / "cv_resnet10_all_42.md").read_text()
    # a fold trained longer is no run of fewer epochs (its kept checkpoint may be a later epoch's): it is not
    # set beside them, and named again at fewer epochs it fails alone, saying why, rather than being reused
    cross_validate.main([*argv[:-6], "--folds", "4", *argv[-4:], "--epochs", "2"])  # the last --epochs counts
    cross_validate.main([*argv[:-6], "--folds", "5", *argv[-4:]])
    assert "fold(s) 1, 2, 10: finished and current" in capsys.readouterr().out  # the last fold kept too
    table = tmp_path / "results" / prepared.name / "cv_resnet10_all_42.csv"
    assert pd.read_csv(table)["fold"].tolist() == [1, 2, 5, 10]
    with pytest.raises(SystemExit, match="1 of 2 runs failed"):
        cross_validate.main([*argv[:-6], "--folds", "4,5", *argv[-4:]])
    assert "holds a run trained for 2 epochs with these settings, more than the 1 asked for" in capsys.readouterr().err
    assert 4 not in pd.read_csv(table)["fold"].tolist()


def test_bad_fold_is_a_clear_error(prepared, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cross_validate.parse_args(["--data-dir", str(prepared), "--folds", "0,11"])
    assert e.value.code == 2 and "argument --folds: fold 0 is outside 1..10" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main.parse_args(["--data-dir", str(prepared), "--test-fold", "11"])
    assert e.value.code == 2 and "--test-fold" in capsys.readouterr().err


@pytest.mark.slow
def test_jobs_run_side_by_side_with_the_same_weights_as_alone(tiny, prepared_100hz, tmp_path):
    """--jobs 2 trains two folds in two processes at once; under --deterministic each run's weights are
    bit-identical to the same run trained alone."""
    import torch
    common = ["--data-dir", str(prepared_100hz), *tiny, "--epochs", "1", "--n-bootstrap", "0", "--folds", "1,2",
              "--limit", "80", "--deterministic"]
    for jobs in ("1", "2"):
        cross_validate.main([*common, "--jobs", jobs, "--runs-dir", str(tmp_path / f"runs{jobs}"),
                             "--results-dir", str(tmp_path / f"results{jobs}")])
    for k in (1, 2):
        name = f"study_resnet10_all_42_fold{k}"
        alone, together = (torch.load(tmp_path / f"runs{j}" / name / "model.pth", weights_only=True)["model"]
                           for j in ("1", "2"))
        assert all(torch.equal(alone[w], together[w]) for w in alone)
