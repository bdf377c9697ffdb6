"""lead_study.py: 13 runs, a ranked table and chart, and a second call that trains nothing."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import lead_study
from utils.labels import LEADS
from utils.results import read_evaluation


@pytest.mark.slow
def test_lead_table_is_complete_and_ranked(lead_study_run, prepared):
    table, out = lead_study_run["table"], lead_study_run["work"] / "results" / prepared.name
    assert sorted(table["leads"]) == sorted(["all 12", *LEADS])
    assert table["f1"].is_monotonic_decreasing and table["rank"].tolist() == list(range(1, 14))
    # 8 test records and one-epoch models: the percentile interval of a mean over rare classes need not
    # contain the point estimate here (test_predict checks that on a larger test fold); it must be ordered
    assert (table["f1_lo"] <= table["f1_hi"] + 1e-9).all() and (table["auc_lo"] <= table["auc_hi"] + 1e-9).all()
    assert table["auc"].between(0, 1).all()
    assert pd.read_csv(out / "lead_study.csv")["leads"].tolist() == table["leads"].tolist()
    for _, row in table.iterrows():  # each row is its own run's evaluation, read with the one reader
        saved = read_evaluation(out / row["model"])
        assert saved["metrics"].loc["mean", "f1"] == pytest.approx(row["f1"])
        bounds = [saved["metrics"].loc["mean", c] for c in ("f1_lo", "f1_hi", "auc_lo", "auc_hi")]
        assert [row["f1_lo"], row["f1_hi"], row["auc_lo"], row["auc_hi"]] == pytest.approx(bounds, nan_ok=True)
        assert saved["info"]["leads"] == (list(LEADS) if row["leads"] == "all 12" else [row["leads"]])
    # what each row was read from, for the report to check: every run's evaluation and model
    sources = json.loads((out / "lead_study.json").read_text())["sources"]
    assert {str(out / m / "evaluated.json") for m in table["model"]} | {
        read_evaluation(out / m)["info"]["model"] for m in table["model"]} == set(sources)
    import matplotlib.image as mpimg
    assert mpimg.imread(out / "lead_study.png").shape[0] > 100
    assert (out / "lead_study.md").read_text().count("\n") == 13 + 2


@pytest.mark.slow
def test_second_call_trains_nothing(lead_study_run, capsys):
    models = lead_study_run["work"] / "models"
    checkpoints = {p: p.stat().st_mtime_ns for p in models.rglob("*.pth")}
    assert len(checkpoints) == 26  # best + last for each of the 13 runs
    capsys.readouterr()
    again = lead_study.main(lead_study_run["argv"])
    printed = capsys.readouterr().out
    assert printed.count("evaluation current, reusing") == 13 and "best val F1" not in printed
    assert {p: p.stat().st_mtime_ns for p in models.rglob("*.pth")} == checkpoints
    pd.testing.assert_frame_equal(again, lead_study_run["table"])


@pytest.mark.slow
def test_a_finished_run_with_other_settings_is_never_reused(lead_study_run):
    """Same file names, another --lr: the old models' metrics must not be reported as the new ones."""
    argv = [a if a != "1e-3" else "5e-3" for a in lead_study_run["argv"]]
    assert argv != lead_study_run["argv"]
    with pytest.raises(SystemExit, match=r"other settings \(lr: 0.001 -> 0.005\)"):
        lead_study.main(argv)
