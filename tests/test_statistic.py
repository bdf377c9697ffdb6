"""statistic.py: the dataset table agrees with the generator's answer key and the preprocess outputs."""
from __future__ import annotations

import numpy as np
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


def test_ptbxl_s_sexes_and_ages_are_counted_and_a_folder_without_them_is_said(tmp_path, capsys):
    """PTB-XL's headers carry no age or sex: the table counts its database's (sex 0 male, 1 female); a folder
    whose reference.csv lacks them (written before they were read) is said, with the command that fills it."""
    import preprocess
    import synth

    synth.main(["--out", str(tmp_path / "PTBXL"), "--layout", "ptbxl", "--n", "30", "--seed", "2"])
    preprocess.main(["--data-dir", str(tmp_path / "PTBXL"), "--out", str(tmp_path / "p"), "--num-workers", "1"])
    db = pd.read_csv(tmp_path / "PTBXL" / "ptbxl_database.csv", dtype={"ecg_id": str}).set_index("ecg_id")
    kept = pd.read_csv(tmp_path / "p" / "labels.csv", dtype={"patient_id": str})["patient_id"]
    capsys.readouterr()
    table = statistic.main(["--data-dir", str(tmp_path / "p"), "--results-dir", str(tmp_path / "r")]).set_index("class")
    assert table.loc["All", "male_n"] == (db.loc[kept, "sex"] == 0).sum() > 0
    assert table.loc["All", "age_missing"] == 0 and "warning" not in capsys.readouterr().err
    from utils.cache import PREPROCESS_OUTPUTS
    from utils.manifest import read_manifest, write_manifest

    data = tmp_path / "p"  # as the code before this fix wrote it: no age or sex, the same fingerprint
    pd.read_csv(data / "reference.csv").assign(sex="Unknown", age=np.nan).to_csv(data / "reference.csv", index=False)
    manifest = read_manifest(data / "preprocess.json")
    write_manifest(data / "preprocess.json", manifest["fingerprint"], [data / f for f in PREPROCESS_OUTPUTS],
                   **{k: v for k, v in manifest.items() if k not in ("fingerprint", "files")})
    statistic.main(["--data-dir", str(tmp_path / "p"), "--results-dir", str(tmp_path / "r")])
    assert "holds no age or sex of its PTB-XL records" in capsys.readouterr().err


def test_missing_preprocess_outputs_name_the_stage(tmp_path):
    with pytest.raises(SystemExit, match="preprocess.py"):
        statistic.main(["--data-dir", str(tmp_path), "--results-dir", str(tmp_path / "r")])


def test_dataset_table_on_a_hand_made_database():
    """Worked by hand: per class, its N, its men as a share of that class's records (an unknown sex is not
    a man), ages and durations as mean ± sample sd (ddof 1) over the records that have them."""
    labels = pd.DataFrame({"patient_id": list("abcde"), "AF": [1, 1, 1, 0, 0], "RBBB": [0, 0, 1, 1, 1]})
    reference = pd.DataFrame({"patient_id": list("abcde"), "sex": ["Male", "Female", "Unknown", "Male", "Male"],
                              "age": [50, 60, 70, np.nan, 40], "signal_len": [5000, 10000, 15000, 5000, 5000],
                              "sample_rate": [500] * 5})
    table = statistic.dataset_table(reference, labels, ["AF", "RBBB"]).set_index("class")
    expected = {  # class: n, men, male %, age, duration (s), ages missing
        "AF": (3, 1, 100 / 3, "60.0 ± 10.0", "20.0 ± 10.0", 0),  # ages 50 60 70; 10 20 30 s
        "RBBB": (3, 2, 200 / 3, "55.0 ± 21.2", "16.7 ± 11.5", 1),  # ages 70 40 (sd 21.21); 30 10 10 s
        "All": (5, 3, 60.0, "55.0 ± 12.9", "16.0 ± 8.9", 1),  # ages 50 60 70 40 (sd 12.91); sd of seconds 8.94
    }
    for cls, (n, men, pct, age, seconds, missing) in expected.items():
        row = table.loc[cls]
        assert (row["n"], row["male_n"], row["age"], row["duration_s"], row["age_missing"]) == \
            (n, men, age, seconds, missing), cls
        assert row["male_pct"] == pytest.approx(pct), cls
