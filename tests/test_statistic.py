"""statistic.py: the dataset table agrees with the generator's answer key and the preprocess outputs."""
from __future__ import annotations

import pandas as pd
import pytest

import statistic
from utils.labels import CLASSES


def test_dataset_table_counts(prepared, synth_records, tmp_path):
    table = statistic.main(["--data-dir", str(prepared), "--results-dir", str(tmp_path)]).set_index("class")
    key = pd.read_csv(synth_records / "REFERENCE.csv")
    details = pd.read_csv(synth_records / "synth_details.csv")
    assert table.loc["All", "n"] == len(key) == 200
    for cls in CLASSES:  # a record counts once in each of its classes
        expected = details["labels"].str.split(",").apply(lambda labels: cls in labels).sum()
        assert table.loc[cls, "n"] == expected, cls
    assert table.loc["All", "pct"] == pytest.approx(100.0)
    mean_s = float(table.loc["All", "duration_s"].split(" ± ")[0])
    assert mean_s == pytest.approx(details["seconds"].mean(), abs=0.05)
    md = (tmp_path / prepared.name / "dataset_table.md").read_text()
    assert md.count("\n") == len(CLASSES) + 3 and "| All |" in md
    assert pd.read_csv(tmp_path / prepared.name / "dataset_table.csv")["n"].tolist() == table["n"].tolist()


def test_missing_preprocess_outputs_name_the_stage(tmp_path):
    with pytest.raises(SystemExit, match="preprocess.py"):
        statistic.main(["--data-dir", str(tmp_path), "--results-dir", str(tmp_path / "r")])
