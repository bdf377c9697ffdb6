"""Bad input gets a clear message and nothing is lost: malformed headers and reference rows, bad
arguments, Ctrl-C, read-only folders, duplicate names, colliding figure names, damaged outputs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

import predict
import preprocess
import synth
import visualize
from utils.cache import load_labels
from utils.cli import MAX_WORKERS
from utils.errors import MissingInputError, PipelineError, RecordError
from utils.records import parse_header, read_record, read_records

ROOT = Path(__file__).resolve().parents[1]
MALFORMED = [  # (what to replace in A0001.hea, the field the message must name)
    ("1000/mV", "1000.0.0/mV", "gain"),
    ("1000/mV", "e/mV", "gain"),
    ("1000/mV", "1000(-)/mV", "baseline"),
    (" 500 ", " nan ", "sampling rate"),
    (" 500 ", " inf ", "sampling rate"),
]


def damaged_copy(src: Path, dst: Path, old: str, new: str) -> Path:
    """A0001 copied to dst/ with its header's first `old` replaced by `new`."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "A0001.mat", dst / "A0001.mat")
    text = (src / "A0001.hea").read_text()
    assert old in text
    (dst / "A0001.hea").write_text(text.replace(old, new, 1))
    return dst / "A0001.hea"


@pytest.mark.parametrize("old,new,field", MALFORMED)
def test_malformed_header_numbers_are_record_errors(synth_records, tmp_path, old, new, field):
    bad = damaged_copy(synth_records, tmp_path, old, new)
    with pytest.raises(RecordError, match=f"{bad}.*{field}"):
        parse_header(bad)
    with pytest.raises(RecordError, match=field):
        read_record(bad)


def test_the_library_raises_and_only_scripts_exit(tmp_path):
    with pytest.raises(RecordError, match="nope.hea") as exc:
        read_record(tmp_path / "nope.hea")
    assert not isinstance(exc.value, SystemExit)
    with pytest.raises(PipelineError, match="none of the records"):
        read_records([tmp_path / "nope.hea"])
    with pytest.raises(MissingInputError, match="run `python preprocess.py"):
        load_labels(tmp_path)
    import statistic
    with pytest.raises(SystemExit, match="^error: .*run `python preprocess.py"):  # the script's one-line exit
        statistic.main(["--data-dir", str(tmp_path), "--results-dir", str(tmp_path / "r")])


@pytest.fixture(scope="module")
def tuned(trained, tmp_path_factory):
    """The trained run with the thresholds --record needs (tuned once for the module)."""
    predict.main(["--run", str(trained["run"]), "--results-dir", str(tmp_path_factory.mktemp("tuned")),
                  "--n-bootstrap", "0", "--num-workers", "0", "--no-figures"])
    return trained


@pytest.mark.parametrize("old,new,field", MALFORMED[::2])
def test_record_options_go_on_past_a_malformed_header(tuned, synth_records, tmp_path, capsys, old, new, field):
    bad = damaged_copy(synth_records, tmp_path / "bad", old, new)
    good = synth_records / "A0002.hea"
    model = tuned["model_path"]
    table = predict.main(["--run", str(model), "--record", str(good), str(bad),
                          "--results-dir", str(tmp_path / "r")])
    assert table["record"].tolist() == [str(good)]
    err = capsys.readouterr().err
    assert str(bad) in err and field in err
    written = visualize.main(["--record", str(bad), str(good), "--results-dir", str(tmp_path / "ecg"), "--layout", "1col"])
    assert [p.name for p in written] == ["A0002_1col.png"]
    assert field in capsys.readouterr().err


def test_preprocess_reports_the_malformed_field(records_copy, tmp_path, capsys):
    text = (records_copy / "A0003.hea").read_text()
    (records_copy / "A0003.hea").write_text(text.replace("1000/mV", "1000.0.0/mV", 1))
    preprocess.main(["--data-dir", str(records_copy), "--out", str(tmp_path / "out"), "--num-workers", "1"])
    err = capsys.readouterr().err
    assert "A0003.hea: malformed gain '1000.0.0'" in err and "ValueError" not in err
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", dtype={"patient_id": str})
    assert len(labels) == 199 and "A0003" not in set(labels["patient_id"])


def test_one_bad_reference_row_skips_only_that_record(tmp_path, capsys):
    records = tmp_path / "cpsc"
    synth.main(["--out", str(records), "--n", "30", "--seed", "3", "--max-seconds", "7", "--layout", "cpsc2018"])
    ref = pd.read_csv(records / "REFERENCE.csv", dtype=str)
    bad = {3: "12", 7: "abc", 11: "nan", 15: "2.5"}
    for row, value in bad.items():
        ref.loc[row, "First_label"] = value
    ref.to_csv(records / "REFERENCE.csv", index=False)
    preprocess.main(["--data-dir", str(records), "--out", str(tmp_path / "out"), "--num-workers", "1"])
    err = capsys.readouterr().err
    for row, value in bad.items():
        assert f"First_label '{value}' of {ref.loc[row, 'Recording']} is not a class number" in err
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", dtype={"patient_id": str})
    assert len(labels) == 30 - len(bad) and not {ref.loc[r, "Recording"] for r in bad} & set(labels["patient_id"])


BAD_ARGUMENTS = [
    ("shap_values.py", ["--run", "m", "--background", "0"]),
    ("shap_values.py", ["--run", "m", "--n-explain", "0"]),
    ("main.py", ["--batch-size", "0"]),
    ("main.py", ["--seconds", "0"]),
    ("main.py", ["--seconds", "-5"]),
    ("main.py", ["--sample-rate", "0"]),
    ("main.py", ["--limit", "-5"]),
    ("main.py", ["--limit", "0"]),
    ("main.py", ["--epochs", "0"]),
    ("main.py", ["--seed", "-1"]),
    ("main.py", ["--seed", "4294967296"]),
    ("main.py", ["--seconds", "2", "--sample-rate", "7"]),
    ("lead_study.py", ["--seconds", "0.1", "--sample-rate", "100"]),
    ("cross_validate.py", ["--epochs", "-1"]),
    ("predict.py", ["--run", "m", "--batch-size", "0"]),
    ("predict.py", ["--run", "m", "--leads", "I,XYZ"]),
    ("preprocess.py", ["--num-workers", "-1"]),
    ("baselines.py", ["--num-workers", "-1"]),
    ("synth.py", ["--n", "0"]),
    ("visualize.py", ["--record", "x.hea", "--seconds", "0"]),
]


@pytest.mark.parametrize("script,argv", BAD_ARGUMENTS)
def test_bad_arguments_exit_2_with_one_error_line(script, argv, tmp_path, capsys, monkeypatch):
    """Checked in-process (each script's own parse_args): exit code 2, one error line, nothing written."""
    import importlib
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        importlib.import_module(script[:-3]).parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_bad_argument_in_a_real_process_exits_2(tmp_path):
    """One end-to-end check that a command line really exits 2 with one line (the rest run in-process; a
    command that does not import torch, which would add a second to the check)."""
    proc = subprocess.run([sys.executable, str(ROOT / "preprocess.py"), "--num-workers", "-1"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if "error:" in ln] == [
        f"preprocess.py: error: argument --num-workers: -1 is outside 0..{MAX_WORKERS}"]
    assert not list(tmp_path.iterdir())


def test_low_sample_rate_warns(prepared, tmp_path, capsys):
    import main
    main.parse_args(["--data-dir", str(prepared), "--seconds", "10", "--sample-rate", "20"])
    assert "below 50 Hz" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_ends_preprocessing_promptly_and_cleanly(synth_records, tmp_path, terminal_sigint):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during the parallel decode of
    4,600 records: every try exits within seconds, leaves no temporary file and no output."""
    records = tmp_path / "many"
    records.mkdir()
    shutil.copy(synth_records / "REFERENCE.csv", records)
    for prefix in "ABCDEFGHIJKLMNOPQRSTUVW":  # the 200 records renamed (signals hard-linked): 4,600 records,
        for hea in sorted(synth_records.glob("A*.hea")):  # so the decode lasts ~4 s however fast the machine
            name = prefix + hea.stem[1:]
            (records / f"{name}.hea").write_text(hea.read_text().replace(hea.stem, name))
            os.link(hea.with_suffix(".mat"), records / f"{name}.mat")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def ctrl_c(attempt: int) -> None:
        out = tmp_path / f"out{attempt}"
        proc = subprocess.Popen([sys.executable, str(ROOT / "preprocess.py"), "--data-dir", str(records),
                                 "--out", str(out), "--num-workers", "2"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                preexec_fn=terminal_sigint)
        for line in proc.stdout:  # wait until decoding has started
            if line.startswith("reading"):
                break
        time.sleep(0.1 + 0.3 * attempt)  # as the workers start, mid-decode, later
        assert proc.poll() is None, "preprocess.py finished before Ctrl-C could be sent"
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"try {attempt}: preprocess.py still running 20 s after Ctrl-C")
        printed = proc.stdout.read().replace("\r", "\n")
        assert proc.returncode != 0, f"try {attempt}: Ctrl-C was lost; preprocess.py printed:\n{printed[-3000:]}"
        left = [p.name for p in out.iterdir()] if out.exists() else []
        assert left == [], left  # neither temporary files nor a partial set of outputs

    with ThreadPoolExecutor(3) as pool:  # the three tries side by side, each in its own process group
        for done in [pool.submit(ctrl_c, attempt) for attempt in range(3)]:
            done.result()


def test_read_only_folder_is_refused_before_decoding(records_copy, read_only, capsys):
    read_only(records_copy)
    with pytest.raises(SystemExit, match="read-only; use --out DIR"):
        preprocess.main(["--data-dir", str(records_copy), "--num-workers", "1"])
    assert "decode" not in capsys.readouterr().out


def test_duplicate_names_keep_the_labelled_copy_and_name_both(synth_records, tmp_path, capsys):
    records = tmp_path / "dups"
    for sub, dx in (("a", "10370003"), ("b", None)):  # a/X1 has only a code outside the nine classes
        (records / sub).mkdir(parents=True)
        shutil.copy(synth_records / "A0005.mat", records / sub / "X1.mat")
        text = (synth_records / "A0005.hea").read_text().replace("A0005", "X1")
        if dx:
            text = "\n".join(f"# Dx: {dx}" if ln.startswith("# Dx") or ln.startswith("#Dx") else ln
                             for ln in text.splitlines()) + "\n"
        (records / sub / "X1.hea").write_text(text)
    for i in (6, 7):
        shutil.copy(synth_records / f"A000{i}.mat", records)
        shutil.copy(synth_records / f"A000{i}.hea", records)
    preprocess.main(["--data-dir", str(records), "--out", str(tmp_path / "out"), "--num-workers", "1"])
    err = capsys.readouterr().err
    assert f"{records / 'a' / 'X1.hea'}: duplicate record name, skipped (kept {records / 'b' / 'X1.hea'})" in err
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", dtype={"patient_id": str})
    assert "X1" in set(labels["patient_id"])
    ref = pd.read_csv(tmp_path / "out" / "reference.csv", dtype={"patient_id": str, "dx": str})
    assert ref.set_index("patient_id").loc["X1", "dx"] != "10370003"


def test_figures_with_the_same_record_name_do_not_overwrite(synth_records, tmp_path):
    for d, src in (("d1", "A0001"), ("d2", "A0002")):
        (tmp_path / d).mkdir()
        for ext in (".hea", ".mat"):
            shutil.copy(synth_records / f"{src}{ext}", tmp_path / d / f"A0001{ext}")
        text = (tmp_path / d / "A0001.hea").read_text().replace(src, "A0001")
        (tmp_path / d / "A0001.hea").write_text(text)
    written = visualize.main(["--record", str(tmp_path / "d1" / "A0001.hea"), str(tmp_path / "d2" / "A0001.hea"),
                              "--layout", "3x4", "--results-dir", str(tmp_path / "ecg")])
    assert [p.name for p in written] == ["d1_A0001_3x4.png", "d2_A0001_3x4.png"]
    assert all(p.exists() for p in written)


@pytest.mark.slow
def test_damaged_labels_features_and_thresholds(tiny, mark_current, prepared, trained, synth_records, tmp_path, capsys):
    import baselines
    import main

    data = tmp_path / "d"
    shutil.copytree(prepared, data)
    (data / "labels.csv").write_text("")
    with pytest.raises(SystemExit, match="labels.csv was changed after preprocess.json"):
        main.main(["--data-dir", str(data), *tiny, "--run", str(tmp_path / "m")])
    mark_current(data)  # damaged by preprocess.py itself (as far as the manifest knows)
    with pytest.raises(SystemExit, match="labels.csv is empty or unreadable"):
        main.main(["--data-dir", str(data), *tiny, "--run", str(tmp_path / "m")])
    (data / "labels.csv").write_text("patient_id,fold\n")
    mark_current(data)
    with pytest.raises(SystemExit, match="lacks column"):
        baselines.main(["--data-dir", str(data), "--results-dir", str(tmp_path / "r")])
    shutil.copy(prepared / "labels.csv", data / "labels.csv")
    mark_current(data)

    table = baselines.load_or_compute_features(data, False, 1, False)
    table.drop(columns="I_p5").to_csv(data / "features.csv", index=False)  # a damaged cache, manifest intact
    again = baselines.load_or_compute_features(data, False, 1, False)
    assert "recomputing" in capsys.readouterr().err
    pd.testing.assert_frame_equal(again, table)

    model = tmp_path / "other"
    model.mkdir()
    shutil.copy(trained["model_path"], model / "model.pth")
    (model / "thresholds.json").write_text(json.dumps({"thresholds": {"NORM": 0.5, "MI": 0.5}}))
    with pytest.raises(SystemExit, match="not a thresholds file written by predict.py"):
        predict.main(["--run", str(model), "--record", str(synth_records / "A0001.hea"),
                      "--results-dir", str(tmp_path / "r")])
