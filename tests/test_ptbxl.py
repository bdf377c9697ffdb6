"""PTB-XL in its own layout, on a small hand-made database: superdiagnostic labels against an independent
aggregation of scp_statements.csv, strat_fold as the folds of --test-fold k and of the fixed split, and
rows that must be skipped with a message (bad folds, paths outside the database, one ECG under two ids,
malformed fields) while preprocessing goes on."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import preprocess
import synth
from utils.cache import data_split_rule, load_labels
from utils.folds import split_labels
from utils.labels import LEADS

UPPER = tuple(lead.upper() if lead.startswith("aV") else lead for lead in LEADS)  # PTB-XL: AVR, AVL, AVF
CLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]

# statement -> (diagnostic, diagnostic_class); PVC is a trap: a class but not a diagnostic statement
STATEMENTS = {"NORM": (1, "NORM"), "IMI": (1, "MI"), "AMI": (1, "MI"), "ISC_": (1, "STTC"), "NDT": (1, "STTC"),
              "1AVB": (1, "CD"), "CRBBB": (1, "CD"), "LVH": (1, "HYP"), "SR": (None, None), "AFIB": (None, None),
              "PVC": (None, "CD")}
CODES = [  # likelihood 0 counts like any other (PTB-XL's own aggregation ignores it)
    {"NORM": 100.0, "SR": 0.0}, {"IMI": 80.0, "ISC_": 0.0, "SR": 0.0}, {"AFIB": 0.0}, {"1AVB": 100.0, "LVH": 50.0},
    {"CRBBB": 0.0, "AMI": 100.0, "NDT": 100.0, "LVH": 0.0}, {"PVC": 0.0, "SR": 0.0}, {"NORM": 50.0},
    {"ISC_": 100.0, "NDT": 0.0}, {"1AVB": 0.0}, {"LVH": 100.0, "SR": 0.0}, {"AMI": 15.0}]


def write_record(folder: Path, name: str, seed: int, seconds: float = 1.0) -> None:
    val = np.random.default_rng(seed).integers(-800, 800, (len(LEADS), int(500 * seconds))).astype(np.int16)
    synth.write_wfdb_dat(folder, name, val, 500, [], UPPER)


def ptbxl_row(i: int, codes: dict, fold, filename: str | None = None, **extra) -> dict:
    return {"ecg_id": i, "patient_id": 1000 + i, "age": 60, "sex": i % 2, "scp_codes": str(codes),
            "strat_fold": fold, "filename_hr": filename or f"records500/00000/{i:05d}_hr", **extra}


def write_database(folder: Path, rows: list[dict]) -> None:
    pd.DataFrame(rows).to_csv(folder / "ptbxl_database.csv", index=False)
    pd.DataFrame([{"code": k, "diagnostic": d, "diagnostic_class": c} for k, (d, c) in STATEMENTS.items()]
                 ).to_csv(folder / "scp_statements.csv", index=False)


def prep(records: Path, out: Path, *extra: str) -> None:
    preprocess.main(["--data-dir", str(records), "--out", str(out), "--num-workers", "1",
                     "--labels", "superdiagnostic", *extra])


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """30 good rows (three per strat_fold) and rows that must be refused without a traceback: folds
    0, 11, 2.5 and empty, paths outside the folder (to a real record there), two rows on one record,
    and a header whose signal file is another record's."""
    root = tmp_path_factory.mktemp("ptbxl")
    db, outside = root / "PTBXL", root / "w"
    rows = []
    for i in range(1, 31):
        write_record(db / "records500" / "00000", f"{i:05d}_hr", i)
        rows.append(ptbxl_row(i, CODES[i % len(CODES)], i % 10 + 1))
    for i in (101, 102, 103, 104, 111, 113):
        write_record(db / "records500" / "00000", f"{i:05d}_hr", i)
    write_record(outside, "00001_hr", 999)                                  # a real record outside the folder
    hea = db / "records500" / "00000" / "00113_hr.hea"                      # names 00001_hr.dat as its signal
    hea.write_text(hea.read_text().replace("00113_hr.dat", "00001_hr.dat"))
    norm = {"NORM": 100.0}
    rows += [ptbxl_row(101, norm, 0), ptbxl_row(102, norm, 11), ptbxl_row(103, norm, None),
             ptbxl_row(104, norm, 2.5),
             ptbxl_row(109, norm, 3, "../w/00001_hr"), ptbxl_row(110, norm, 3, str(outside / "00001_hr")),
             ptbxl_row(111, norm, 4), ptbxl_row(112, {"IMI": 100.0}, 5, "records500/00000/00111_hr"),
             ptbxl_row(113, {"LVH": 100.0}, 6)]
    write_database(db, rows)
    return db


@pytest.fixture(scope="module")
def prepared_ptbxl(database, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "SUPER"
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        prep(database, out)
    return out, err.getvalue()


def independent_superclasses(database: Path) -> dict[str, set[str]]:
    """PTB-XL's own recipe: scp_statements.csv rows with diagnostic == 1, each code of a record mapped to
    its diagnostic_class whatever its likelihood."""
    statements = pd.read_csv(database / "scp_statements.csv", index_col=0)
    diagnostic = statements[statements["diagnostic"] == 1]
    db = pd.read_csv(database / "ptbxl_database.csv", index_col="ecg_id")
    return {str(i): {diagnostic.loc[k, "diagnostic_class"] for k in ast.literal_eval(codes) if k in diagnostic.index}
            for i, codes in db.loc[range(1, 31), "scp_codes"].items()}


def test_superdiagnostic_labels_equal_an_independent_aggregation(database, prepared_ptbxl):
    out, _ = prepared_ptbxl
    expected = independent_superclasses(database)
    labels = load_labels(out).set_index("patient_id")
    labels = labels[labels.index.isin(expected)]  # the 30 good rows (the others: see the tests below)
    assert set(labels.index) == {i for i, classes in expected.items() if classes}  # no diagnostic code: left out
    assert {"2", "5"} <= set(expected) - set(labels.index)  # AFIB only; PVC (a class, not diagnostic) + SR
    for pid in labels.index:
        assert {c for c in CLASSES if labels.loc[pid, c] == 1} == expected[pid], pid
    assert labels.loc["4", CLASSES].tolist() == [0, 1, 1, 1, 1]  # several classes, two of them at likelihood 0


def test_strat_fold_makes_the_fixed_split_and_every_test_fold(database, prepared_ptbxl):
    out, _ = prepared_ptbxl
    db = pd.read_csv(database / "ptbxl_database.csv")
    db = db[db["ecg_id"].astype(str).isin(load_labels(out)["patient_id"])]
    by_fold = {k: sorted(db.loc[db["strat_fold"] == k, "ecg_id"].astype(str)) for k in range(1, 11)}
    labels, rule = load_labels(out), data_split_rule(out)
    assert rule == {"train": list(range(1, 9)), "val": [9], "test": [10]}
    split = split_labels(labels, 42, fixed=rule)
    assert sorted(split["test"]["patient_id"]) == by_fold[10] and sorted(split["val"]["patient_id"]) == by_fold[9]
    assert sorted(split["train"]["patient_id"]) == sorted(sum((by_fold[k] for k in range(1, 9)), []))
    for k in range(1, 11):  # --test-fold k: test strat_fold k, validate on strat_fold k % 10 + 1
        split = split_labels(labels, 42, test_fold=k, fixed=rule)
        assert sorted(split["test"]["patient_id"]) == by_fold[k], k
        assert sorted(split["val"]["patient_id"]) == by_fold[k % 10 + 1], k
        assert not set(split["train"]["patient_id"]) & set(by_fold[k] + by_fold[k % 10 + 1])


def test_rows_with_a_fold_outside_1_to_10_are_skipped_and_reported(prepared_ptbxl):
    out, err = prepared_ptbxl
    ids = set(load_labels(out)["patient_id"])
    assert not {"101", "102", "103", "104"} & ids
    for pid, fold in (("101", "0"), ("102", "11"), ("103", "nan"), ("104", "2.5")):
        assert f"ecg_id {pid}: strat_fold {fold}" in err, pid
    manifest = json.loads((out / "preprocess.json").read_text())
    assert sum("strat_fold" in e for e in manifest["errors"]) == 4


def test_paths_outside_the_database_and_one_ecg_under_two_ids_are_refused(database, prepared_ptbxl):
    out, err = prepared_ptbxl
    ids = set(load_labels(out)["patient_id"])
    assert "ecg_id 109: filename_hr '../w/00001_hr' points outside" in err
    assert "ecg_id 110: filename_hr '/" in err and "points outside" in err
    assert not {"109", "110", "111", "112", "113"} & ids and {"1", "3"} <= ids
    hr = database / "records500" / "00000"
    assert f"{hr / '00111_hr.hea'} (record 111): its signal file" in err and "also read by record 112" in err
    assert f"{hr / '00111_hr.hea'} (record 112): its signal file" in err and "also read by record 111" in err
    assert f"{hr / '00113_hr.hea'} (record 113): its signal file 00001_hr.dat belongs to record 1 " \
           f"({hr / '00001_hr.hea'})" in err
    signals = np.load(out / "signals.npy")  # the outside record (seed 999) is not in the cache
    outside = np.random.default_rng(999).integers(-800, 800, (12, 500)).astype(np.int16)
    index = pd.read_csv(out / "signals_index.csv")
    assert not any(np.array_equal(signals[:, s:s + n], outside) for s, n in zip(index["start"], index["length"]))


def test_malformed_rows_are_skipped_with_one_line_each(database, tmp_path, capsys):
    """A missing header, an empty filename_hr, non-numeric sex, age or ecg_id, an scp_codes cell that is
    not a dict or empty: each row skipped with a message quoting the field; the others are preprocessed."""
    db = tmp_path / "PTBXL"
    shutil.copytree(database, db)
    rows = pd.read_csv(db / "ptbxl_database.csv", dtype=str, keep_default_na=False).to_dict("records")
    bad = [ptbxl_row(120, {"NORM": 100.0}, 1, "records500/00000/99999_hr"),
           ptbxl_row(121, {"NORM": 100.0}, 1) | {"filename_hr": ""},
           ptbxl_row(1, {"NORM": 100.0}, 1, sex="x") | {"ecg_id": 122, "filename_hr": "records500/00000/00001_hr"},
           ptbxl_row(123, {"NORM": 100.0}, 1, "records500/00000/00002_hr", age="old"),
           ptbxl_row(124, {"NORM": 100.0}, 1, "records500/00000/00007_hr") | {"ecg_id": "abc"},
           ptbxl_row(125, {"NORM": 100.0}, 1, "records500/00000/00008_hr") | {"scp_codes": "{'NORM': high}"},
           ptbxl_row(126, {"NORM": 100.0}, 1, "records500/00000/00009_hr") | {"scp_codes": ""}]
    write_database(db, rows + bad)
    prep(db, tmp_path / "out")
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and "<ast." not in err
    # the summary counts like reasons together, without the file, line, record or value
    assert "  skipped, scp_codes is not a dict of statements: 1" in captured.out.splitlines()
    assert "99999_hr.hea: cannot read header" in err
    assert "ecg_id 121: filename_hr is empty" in err
    assert "ecg_id 122: sex 'x' is not a number" in err
    assert "ecg_id 123: age 'old' is not a number" in err
    assert "ecg_id abc: ecg_id 'abc' is not a whole number" in err
    assert "ecg_id 125: scp_codes \"{'NORM': high}\" is not a dict" in err
    assert "ecg_id 126: scp_codes is empty, not a dict of statements" in err  # not read as a record without any
    ids = set(load_labels(tmp_path / "out")["patient_id"])
    assert not {"120", "121", "122", "123", "abc", "125", "126"} & ids and {"1", "7", "8"} <= ids
