"""A run is known by its content (data fingerprint, settings, run id), equal runs are trained once, a
missing run is refused, a dead --jobs worker fails its own run only, and pooling keeps clipping counts."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import cross_database
import lead_study
import main
import predict
import preprocess
import report
import shap_values
import synth
from models.studies import run_all, study_config
from utils.errors import PipelineError
from utils.parallel import parallel_map, process_map
from utils.labels import LEADS
from utils.database_pool import pool_databases

QUIET = ["--n-bootstrap", "0", "--num-workers", "0", "--no-figures"]


@pytest.fixture(scope="session")
def one(tiny):
    """One epoch of the tiny model on at most 60 records."""
    return [*tiny, "--epochs", "1", "--limit", "60"]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """Two databases of 60 synthetic records from two sites, preprocessed: D and E."""
    root = tmp_path_factory.mktemp("identity")
    for name, site, seed in (("D", "a", 20), ("E", "b", 21)):
        synth.main(["--out", str(root / f"raw{name}"), "--n", "60", "--seed", str(seed), "--site", site,
                    "--max-seconds", "8"])
        preprocess.main(["--data-dir", str(root / f"raw{name}"), "--out", str(root / name), "--num-workers", "1"])
    return {"raw": root / "rawE", "data": root / "E", "D": root / "D"}


def test_a_run_on_other_data_of_the_same_folder_is_neither_current_nor_reused(one, small, tmp_path, capsys):
    data = tmp_path / "E"
    shutil.copytree(small["data"], data)
    run = tmp_path / "m"
    main.main(["--data-dir", str(data), *one, "--run", str(run)])
    weights = (run / "model.pth").read_bytes()
    evaluate = ["--run", str(run), "--results-dir", str(tmp_path / "r"), *QUIET]
    predict.main(evaluate)
    preprocess.main(["--data-dir", str(small["raw"]), "--out", str(data), "--num-workers", "1", "--seed", "5"])
    with pytest.raises(SystemExit, match=r"other settings \(data: \w+ -> \w+\).*--force"):
        main.main(["--data-dir", str(data), *one, "--run", str(run)])
    assert (run / "model.pth").read_bytes() == weights
    capsys.readouterr()
    predict.main(evaluate)  # same model, but the records it reads changed: evaluated again
    assert "is current" not in capsys.readouterr().out


def test_a_model_copied_in_from_another_run_is_refused(one, trained, prepared, tmp_path):
    run = tmp_path / "m"
    main.main(["--data-dir", str(prepared), *one, "--run", str(run)])
    shutil.copy(trained["model_path"], run / "model.pth")
    both = rf"{run / 'model.pth'} \(run id \w+\) and {run / 'last.pth'} \(run id \w+\) belong to different runs"
    with pytest.raises(SystemExit, match=both):
        main.main(["--data-dir", str(prepared), *one, "--run", str(run), "--epochs", "2"])
    with pytest.raises(SystemExit, match=both):
        predict.main(["--run", str(run), "--results-dir", str(tmp_path / "r"), *QUIET])
    with pytest.raises(SystemExit, match=both):
        shap_values.main(["--run", str(run), "--results-dir", str(tmp_path / "r")])


def test_commands_that_read_a_run_refuse_a_missing_one(trained, prepared, tmp_path):
    results = tmp_path / "r"
    common = ["--data-dir", str(prepared), "--results-dir", str(results)]
    shutil.copytree(trained["model_path"].parent, tmp_path / "m")
    first = report.main([*common, "--run", str(tmp_path / "m")]).read_bytes()
    typo = tmp_path / "typo"
    for command, argv in ((report, common), (predict, ["--results-dir", str(results)]),
                          (shap_values, ["--results-dir", str(results)])):
        with pytest.raises(SystemExit, match=f"{typo / 'model.pth'}.* not found"):
            command.main([*argv, "--run", str(typo)])
    assert (results / prepared.name / "report.md").read_bytes() == first
    assert not typo.exists()


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
    with pytest.raises(SystemExit, match=f"{tmp_path / 'F'}: no records in its .*split"):
        cross_database.main(["--data-dirs", str(data), str(tmp_path / "F"), *one, "--n-bootstrap", "0",
                             "--results-dir", str(tmp_path / "r")])
    assert "epoch" not in capsys.readouterr().out and not (data / "runs").exists()


def test_outcomes_stay_with_their_tasks_and_a_killed_worker_fails_its_task_alone():
    """The first job finishes last, the second one's worker is killed with -9: the others' outcomes are
    kept, each at its own job's place, and the call returns."""
    tasks = [["sh", "-c", "sleep 0.8; echo slow"], ["sh", "-c", "kill -9 $PPID"], ["sh", "-c", "echo fast"],
             ["sh", "-c", "exit 3"]]
    outcomes = process_map(subprocess.check_output, tasks, 2)
    assert outcomes[0] == (True, b"slow\n") and outcomes[2] == (True, b"fast\n")
    assert outcomes[1] == (False, "its worker process died (killed by signal 9)")
    assert not outcomes[3].ok and "exit status 3" in outcomes[3].value


def test_killing_the_parent_stops_its_workers(tmp_path):
    code = ("import time; from utils.parallel import process_map; "
            "process_map(time.sleep, [60, 60], 2)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    try:
        workers: list[int] = []
        deadline = time.time() + 30
        while len(workers) < 2 and time.time() < deadline:
            time.sleep(0.2)
            children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
            workers = [int(pid) for pid in (children.read_text().split() if children.exists() else [])
                       if "spawn_main" in cmdline(int(pid))]  # not the resource tracker
        assert len(workers) == 2
        time.sleep(1.0)  # past the workers' start-up
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(alive(pid) for pid in workers):
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers)
    finally:
        parent.kill()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by init has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_pool_keeps_clipping_counts_and_drops_runs_of_other_sources(tmp_path, capsys):
    from test_readers import analogue, quiet_prep, write_dat
    from utils.labels import LEADS as ALL

    dbs = []
    for name, offset in (("X", 40.0), ("Y", 0.0), ("Z", 0.0)):
        mv = analogue(500, len(dbs))
        clipped = mv.copy()
        clipped[ALL.index("II")] += offset
        write_dat(tmp_path / "rec" / name, "C1", "16", "mV", 200, [0] * 12, 500, clipped, 16)
        write_dat(tmp_path / "rec" / name, "C2", "16", "mV", 1000, [0] * 12, 500, mv, 16)
        quiet_prep(tmp_path / "rec" / name, tmp_path / name)
        dbs.append(tmp_path / name)
    out = tmp_path / "pool"
    pool_databases(dbs[:2], out, ["X", "Y"])
    index = pd.read_csv(out / "signals_index.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert index["clipped"].to_dict() == {"X_C1": 1000, "X_C2": 0, "Y_C1": 0, "Y_C2": 0}
    manifest = json.loads((out / "preprocess.json").read_text())
    assert list(manifest["clipped"]) == ["X_C1"] and "II 1000" in manifest["clipped"]["X_C1"]
    (out / "runs" / "xdb").mkdir(parents=True)
    pool_databases(dbs[:2], out, ["X", "Y"])  # current: kept as it is
    assert (out / "runs" / "xdb").is_dir()
    pool_databases([dbs[0], dbs[2]], out, ["X", "Z"])
    assert not (out / "runs").exists() and "removing its runs of the old data" in capsys.readouterr().out
    assert json.loads((out / "pool.json").read_text())["sources"] == [os.path.realpath(d) for d in (dbs[0], dbs[2])]


def test_a_killed_worker_of_a_parallel_stage_is_an_error_not_a_hang():
    """What preprocess.py, baselines.py and shap_values.py run their records through."""
    tasks = [["true"]] * 3 + [["sh", "-c", "kill -9 $PPID"]] + [["true"]] * 3
    with pytest.raises(PipelineError, match="decode: a worker process died"):
        parallel_map(subprocess.check_output, tasks, 2, "decode", chunksize=1, serial_up_to=0)
    assert parallel_map(subprocess.check_output, [["echo", str(i)] for i in range(5)], 2, "echo", chunksize=2,
                        serial_up_to=0) == [f"{i}\n".encode() for i in range(5)]
