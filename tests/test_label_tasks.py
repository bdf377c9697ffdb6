"""The six PTB-XL tasks, the cache's stored rate and one signal cache shared by several tasks: known answers
on a hand-made statement table, class counts on the real table, an independent derivation of every task
on synthetic PTB-XL compared record by record, 100 Hz records read from records100/ alone, and a model
input read from a cache at another rate."""
from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

import preprocess
import synth
from utils.cache import SignalCache, load_labels
from utils.labels import LEADS, PTBXL_TASKS, ptbxl_statement_classes, ptbxl_task
from utils.records import resample

REAL_STATEMENTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl" / "scp_statements.csv"
UPPER = tuple(lead.upper() if lead.startswith("aV") else lead for lead in LEADS)

# statement: (diagnostic, form, rhythm, diagnostic_class, diagnostic_subclass); NDT is diagnostic and form,
# XDIAG a diagnostic statement with neither class nor subclass, ODD one with a class but no subclass
HAND = {"NORM": (1, None, None, "NORM", "NORM"), "IMI": (1, None, None, "MI", "IMI"),
        "NDT": (1, 1, None, "STTC", "STTC"), "XDIAG": (1, None, None, None, None),
        "ODD": (1, None, None, "CD", None), "LVH": (1, None, None, "HYP", "LVH"),
        "PVC": (None, 1, None, None, None), "SR": (None, None, 1, None, None), "AFIB": (None, None, 1, None, None)}
HAND_CODES = {1: {"NORM": 100.0, "SR": 0.0}, 2: {"IMI": 0.0, "NDT": 100.0}, 3: {"AFIB": 0.0},
              4: {"PVC": 0.0, "SR": 0.0}, 5: {"XDIAG": 100.0, "SR": 0.0}, 6: {"ODD": 50.0}}
# the answers, by hand: LVH is carried by no record, so no task has it; a NaN subclass or class maps to nothing
HAND_ANSWERS = {
    "all": {1: {"NORM", "SR"}, 2: {"IMI", "NDT"}, 3: {"AFIB"}, 4: {"PVC", "SR"}, 5: {"XDIAG", "SR"}, 6: {"ODD"}},
    "diagnostic": {1: {"NORM"}, 2: {"IMI", "NDT"}, 5: {"XDIAG"}, 6: {"ODD"}},
    "subdiagnostic": {1: {"NORM"}, 2: {"IMI", "STTC"}},
    "superdiagnostic": {1: {"NORM"}, 2: {"MI", "STTC"}, 6: {"CD"}},
    "form": {2: {"NDT"}, 4: {"PVC"}},
    "rhythm": {1: {"SR"}, 3: {"AFIB"}, 4: {"SR"}, 5: {"SR"}},
}


def statement_table(rows: dict) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=[
        "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"]).astype(
        {"diagnostic": float, "form": float, "rhythm": float})


def run_quietly(argv: list[str]) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        preprocess.main(argv)
    return out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def hand_db(tmp_path_factory) -> Path:
    """Six records (1-s, 500 Hz, random) with HAND_CODES, and HAND's statement table."""
    db = tmp_path_factory.mktemp("hand") / "PTBXL"
    rows = []
    for i, codes in HAND_CODES.items():
        val = np.random.default_rng(i).integers(-900, 900, (12, 500)).astype(np.int16)
        synth.write_wfdb_dat(db / "records500" / "00000", f"{i:05d}_hr", val, 500, [], UPPER)
        rows.append({"ecg_id": i, "scp_codes": str(codes), "strat_fold": i, "filename_hr": f"records500/00000/{i:05d}_hr"})
    pd.DataFrame(rows).to_csv(db / "ptbxl_database.csv", index=False)
    statement_table(HAND).to_csv(db / "scp_statements.csv")
    return db


def test_the_six_tasks_on_a_hand_made_table(hand_db, tmp_path):
    statements = statement_table(HAND)
    for task, answer in HAND_ANSWERS.items():
        label_set = ptbxl_task(task, statements, [list(c) for c in HAND_CODES.values()])
        assert label_set.classes == tuple(sorted(set().union(*answer.values()))), task
    # end to end: labels.csv, the records left out (counted, printed, in the manifest)
    for task, answer in HAND_ANSWERS.items():
        out = tmp_path / task
        printed, _ = run_quietly(["--data-dir", str(hand_db), "--out", str(out), "--labels", task, "--num-workers", "1"])
        labels = load_labels(out).set_index("patient_id")
        classes = sorted(set().union(*answer.values()))
        assert list(labels.columns) == [*classes, "fold"], task
        got = {int(pid): {c for c in classes if row[c] == 1} for pid, row in labels.iterrows()}
        assert got == answer, task
        manifest = json.loads((out / "preprocess.json").read_text())
        assert manifest["label_set"] == {"name": task, "classes": classes}
        left_out = len(HAND_CODES) - len(answer)
        assert manifest["unlabelled"] == left_out and manifest["read"] == len(HAND_CODES), task
        if left_out:
            assert f"none of the {len(classes)} classes: {left_out}" in printed, task


@pytest.mark.skipif(not REAL_STATEMENTS.exists(), reason=f"{REAL_STATEMENTS} not present")
def test_the_real_statement_table_gives_the_benchmarks_class_counts():
    statements = pd.read_csv(REAL_STATEMENTS, index_col=0)
    maps = {task: ptbxl_statement_classes(task, statements) for task in PTBXL_TASKS}
    assert {task: len(m) for task, m in maps.items()} == {"all": 71, "diagnostic": 44, "subdiagnostic": 44,
                                                          "superdiagnostic": 44, "form": 19, "rhythm": 12}
    # a database where each statement is carried by one record: every class is kept
    every = [[code] for code in statements.index]
    counts = {task: len(ptbxl_task(task, statements, every).classes) for task in PTBXL_TASKS}
    assert counts == {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19, "rhythm": 12}
    assert ptbxl_task("superdiagnostic", statements, every).classes == ("CD", "HYP", "MI", "NORM", "STTC")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("synth_ptbxl") / "PTBXL"
    synth.main(["--out", str(db), "--layout", "ptbxl", "--n", "40", "--seed", "9"])
    return db


def independent_labels(db: Path, task: str) -> dict[str, set[str]]:
    """The benchmark's recipe written out again: every scp_codes key, mapped through the table's columns."""
    statements = pd.read_csv(db / "scp_statements.csv", index_col=0)
    records = pd.read_csv(db / "ptbxl_database.csv", index_col="ecg_id")
    out = {}
    for ecg_id, text in records["scp_codes"].items():
        found = set()
        for code in ast.literal_eval(text):
            if code not in statements.index:
                if task == "all":  # every key is a class of `all`, in the table or not
                    found.add(code)
                continue
            row = statements.loc[code]
            if task == "all" or (task in ("diagnostic", "form", "rhythm") and row[task] == 1):
                found.add(code)
            elif task in ("subdiagnostic", "superdiagnostic") and row["diagnostic"] == 1:
                cls = row["diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"]
                if isinstance(cls, str):
                    found.add(cls)
        if found:
            out[str(ecg_id)] = found
    return out


def test_every_task_over_one_shared_cache_equals_an_independent_derivation(synthetic, tmp_path):
    db, shared = tmp_path / "db", tmp_path / "all"
    shutil.copytree(synthetic, db)
    run_quietly(["--data-dir", str(db), "--out", str(shared), "--labels", "all", "--num-workers", "1"])
    fingerprints = set()
    for task in PTBXL_TASKS:
        out = tmp_path / task
        if task != "all":
            printed, _ = run_quietly(["--data-dir", str(db), "--out", str(out), "--labels", task,
                                      "--signals-from", str(shared), "--num-workers", "1"])
            assert "over the signals of" in printed
            assert os.path.samefile(out / "signals.npy", shared / "signals.npy")  # a hard link, not a copy
        want = independent_labels(db, task)
        labels = load_labels(out).set_index("patient_id")
        classes = sorted(set().union(*want.values()))
        assert list(labels.columns) == [*classes, "fold"] and set(labels.index) == set(want), task
        for pid, row in labels.iterrows():
            assert {c for c in classes if row[c] == 1} == want[pid], (task, pid)
        manifest = json.loads((out / "preprocess.json").read_text())
        fingerprints.add(manifest["fingerprint"])
        assert manifest["unlabelled"] == 40 - len(want) and manifest["label_set"]["classes"] == classes
        cache = SignalCache(out)  # every labelled record is in the shared cache, at its rate
        assert set(labels.index) <= set(cache.ids) and cache.sample_rate == 500
    assert len(fingerprints) == len(PTBXL_TASKS)
    assert {"SR", "SBRAD", "AFIB"} <= set(load_labels(tmp_path / "rhythm").columns)
    assert list(load_labels(tmp_path / "superdiagnostic").columns)[1:-1] == ["CD", "HYP", "MI", "NORM", "STTC"]
    # a folder decoded for a narrower label set cannot serve a task whose records it left out
    run_quietly(["--data-dir", str(db), "--out", str(tmp_path / "own_form"), "--labels", "form", "--num-workers", "1"])
    with pytest.raises(SystemExit, match="never decoded into"):
        run_quietly(["--data-dir", str(db), "--out", str(tmp_path / "x"), "--labels", "rhythm",
                     "--signals-from", str(tmp_path / "own_form"), "--num-workers", "1"])

    # rerun: current; a record rewritten: the task folder is refused until the shared folder is rebuilt,
    # then rebuilt itself
    argv = ["--data-dir", str(db), "--out", str(tmp_path / "rhythm"), "--labels", "rhythm",
            "--signals-from", str(shared), "--num-workers", "1"]
    assert "outputs are current" in run_quietly(argv)[0]
    old = json.loads((tmp_path / "rhythm" / "preprocess.json").read_text())["fingerprint"]
    dat = db / "records500" / "00000" / "00003_hr.dat"
    data = bytearray(dat.read_bytes())
    data[100:102] = b"\x10\x00"
    dat.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="holds signals of other records"):
        run_quietly(argv)
    run_quietly(["--data-dir", str(db), "--out", str(shared), "--labels", "all", "--num-workers", "1"])
    assert "outputs are current" not in run_quietly(argv)[0]
    assert json.loads((tmp_path / "rhythm" / "preprocess.json").read_text())["fingerprint"] != old
    assert os.path.samefile(tmp_path / "rhythm" / "signals.npy", shared / "signals.npy")


def test_ptbxl_at_100_hz_reads_records100_alone_without_resampling(synthetic, tmp_path):
    db = tmp_path / "lr"
    shutil.copytree(synthetic, db, ignore=shutil.ignore_patterns("records500"))
    out = tmp_path / "out100"
    run_quietly(["--data-dir", str(db), "--out", str(out), "--labels", "all", "--cache-rate", "100",
                 "--num-workers", "1"])
    cache = SignalCache(out)
    assert cache.sample_rate == 100 and json.loads((out / "preprocess.json").read_text())["sample_rate"] == 100
    assert (cache.length == 1000).all() and len(cache) == 40
    files = pd.read_csv(db / "ptbxl_database.csv", index_col="ecg_id")["filename_lr"]
    for pid in ("1", "17", "40"):
        rec = wfdb.rdrecord(str(db / files[int(pid)]), physical=False)
        assert rec.fs == 100
        np.testing.assert_array_equal(cache.signals[:, cache.start[cache.row[pid]]:][:, :1000], rec.d_signal.T)
    # the 500 Hz records of the same database, cached at 500 Hz and brought to 100 Hz: the same ECG
    hi = tmp_path / "out500"
    run_quietly(["--data-dir", str(synthetic), "--out", str(hi), "--labels", "all", "--num-workers", "1"])
    high = SignalCache(hi)
    for pid in ("1", "17"):
        down = resample(high.record(pid, dtype=np.float64), 500, 100)
        np.testing.assert_allclose(down, cache.record(pid, dtype=np.float64), atol=0.004)


def test_a_model_input_is_read_at_the_caches_rate(synthetic, tmp_path):
    """ECGDataset on a 100 Hz cache: the window is the last `seconds` at the cache's rate, resampled to the
    model's; at the cache's own rate it is the cached samples themselves."""
    from models.inputs import ECGDataset, InputSpec

    out = tmp_path / "c100"
    run_quietly(["--data-dir", str(synthetic), "--out", str(out), "--labels", "rhythm", "--cache-rate", "100",
                 "--num-workers", "1"])
    cache, labels = SignalCache(out), load_labels(out)
    classes = list(labels.columns[1:-1])
    same = ECGDataset(cache, labels, InputSpec(LEADS, 4.0, 100), classes)
    x, _ = same[0]
    pid = labels["patient_id"][0]
    np.testing.assert_allclose(x.numpy(), cache.record(pid)[:, -400:], rtol=1e-6)
    up = ECGDataset(cache, labels, InputSpec(("II",), 4.0, 500), classes)
    x, _ = up[0]
    assert tuple(x.shape) == (1, 2000)
    want = resample(cache.record(pid)[LEADS.index("II"):LEADS.index("II") + 1, -400:], 100, 500)
    np.testing.assert_allclose(x.numpy(), want, atol=1e-5)


def test_a_statement_listed_twice_in_the_table_is_refused(hand_db, tmp_path):
    """Two rows for one statement (here NORM again, as MI): which class its records get would be an accident
    of the file's order (the last row silently relabelled every NORM record as MI); refused in one line."""
    db = tmp_path / "PTBXL"
    shutil.copytree(hand_db, db)
    table = statement_table(HAND)
    pd.concat([table, statement_table({"NORM": (1, None, None, "MI", "IMI")})]).to_csv(db / "scp_statements.csv")
    with open(hand_db / "scp_statements.csv") as f:  # rows without a statement (a spreadsheet's) are no duplicates
        (tmp_path / "empty_rows").mkdir()
        shutil.copytree(hand_db, tmp_path / "empty_rows" / "PTBXL")
        (tmp_path / "empty_rows" / "PTBXL" / "scp_statements.csv").write_text(f.read() + ",,,,,\n,,,,,\n")
    run_quietly(["--data-dir", str(tmp_path / "empty_rows" / "PTBXL"), "--out", str(tmp_path / "ok"), "--labels",
                 "superdiagnostic", "--num-workers", "1"])
    for task in ("superdiagnostic", "all"):
        with pytest.raises(SystemExit, match=r"scp_statements.csv: statement NORM is listed 2 times; each statement "
                                             "must have one row$"):  # a message: exit status 1
            run_quietly(["--data-dir", str(db), "--out", str(tmp_path / task), "--labels", task, "--num-workers", "1"])
        assert not (tmp_path / task / "labels.csv").exists()


def test_statements_without_a_class_and_keys_with_spaces_are_said(hand_db, tmp_path, capsys):
    """A diagnostic statement without a diagnostic_class (XDIAG) or subclass (ODD) maps to no class of
    superdiagnostic / subdiagnostic, as in the benchmark, and a warning names the statements records carry;
    a key ' NORM ' is not NORM (the benchmark compares keys as they are): a statement the table lacks."""
    for task, unclassed in (("superdiagnostic", "XDIAG (1 record)"),
                            ("subdiagnostic", "ODD (1 record), XDIAG (1 record)")):
        _, err = run_quietly(["--data-dir", str(hand_db), "--out", str(tmp_path / task), "--labels", task,
                              "--num-workers", "1"])
        column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
        assert f"gives diagnostic statement(s) no {column}: {unclassed}; left out of the {task} task" in err
    _, err = run_quietly(["--data-dir", str(hand_db), "--out", str(tmp_path / "diag"), "--labels", "diagnostic",
                          "--num-workers", "1"])
    assert "no diagnostic_class" not in err and "no diagnostic_subclass" not in err
    db = tmp_path / "PTBXL"
    shutil.copytree(hand_db, db)
    records = pd.read_csv(db / "ptbxl_database.csv")
    records.loc[0, "scp_codes"] = str({" NORM ": 100.0, "SR": 0.0})
    records.to_csv(db / "ptbxl_database.csv", index=False)
    _, err = run_quietly(["--data-dir", str(db), "--out", str(tmp_path / "spaced"), "--labels", "superdiagnostic",
                          "--num-workers", "1"])
    assert "lacks statement(s) carried in scp_codes: ' NORM ' (1 record)" in err
    # the table's statements are read as they are too: its ' NORM ' is that key, and not NORM
    spaced = statement_table({" NORM ": HAND["NORM"]})
    assert ptbxl_statement_classes("diagnostic", spaced) == {" NORM ": " NORM "}
    assert ptbxl_task("all", spaced, [[" NORM "], ["NORM"]]).classes == (" NORM ", "NORM")
    assert "1" not in set(load_labels(tmp_path / "spaced")["patient_id"])  # no class of superdiagnostic left


def test_a_statement_missing_from_the_table_is_a_class_of_all_and_said(hand_db, tmp_path):
    """The benchmark's `all` is every scp_codes key: a statement scp_statements.csv lacks becomes a class of
    `all` (a record carrying only it is labelled, not left out), of no other task, and a warning names it."""
    db = tmp_path / "PTBXL"
    shutil.copytree(hand_db, db)
    table = pd.read_csv(db / "ptbxl_database.csv")
    val = np.random.default_rng(7).integers(-900, 900, (12, 500)).astype(np.int16)
    synth.write_wfdb_dat(db / "records500" / "00000", "00007_hr", val, 500, [], UPPER)
    table.loc[0, "scp_codes"] = str({"NORM": 100.0, "SR": 0.0, "QQQ": 0.0})
    table.loc[len(table)] = {"ecg_id": 7, "scp_codes": str({"ZZZ": 100.0}), "strat_fold": 7,
                             "filename_hr": "records500/00000/00007_hr"}
    table.to_csv(db / "ptbxl_database.csv", index=False)
    _, err = run_quietly(["--data-dir", str(db), "--out", str(tmp_path / "all"), "--labels", "all",
                          "--num-workers", "1"])
    assert "lacks statement(s) carried in scp_codes: QQQ (1 record), ZZZ (1 record)" in err
    labels = load_labels(tmp_path / "all").set_index("patient_id")
    assert {"QQQ", "ZZZ"} <= set(labels.columns)
    assert labels.loc["7", "ZZZ"] == 1 and labels.loc["1", "QQQ"] == 1 and labels.loc["1", "NORM"] == 1
    _, err = run_quietly(["--data-dir", str(db), "--out", str(tmp_path / "diag"), "--labels", "diagnostic",
                          "--num-workers", "1"])
    assert "QQQ (1 record), ZZZ (1 record); left out of the diagnostic task" in err
    assert not {"QQQ", "ZZZ"} & set(load_labels(tmp_path / "diag").columns)
