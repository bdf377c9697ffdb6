"""Hostile uses of runs, thresholds and the report (stale thresholds, a retrained model, folders that
cannot be written): each ends in a correct result or one clear line, never a silently wrong one."""
from __future__ import annotations

import json
import os

import pytest
import torch

import main
import predict
import report
import shap_values
from models.run import Run
from utils.locks import exclusive_lock


@pytest.fixture
def evaluated_copy(copy_run):
    """evaluated_copy(trained, prepared, tmp_path): a copy of the trained run, evaluated; with the flags
    naming it and its results folder."""
    def evaluate(trained, prepared, tmp_path, name="m") -> tuple[Run, list[str]]:
        run = Run(copy_run(trained, tmp_path / name))
        predict.main(["--run", str(run), "--results-dir", str(tmp_path / "r"), "--n-bootstrap", "0",
                      "--num-workers", "0", "--no-figures"])
        return run, ["--run", str(run), "--results-dir", str(tmp_path / "r")]
    return evaluate


def change_weights(run: Run) -> None:
    ckpt = torch.load(run.model, weights_only=True)
    ckpt["model"]["net.fc.weight"] += 0.1  # a retrained (or resumed, or still training) model under the same name
    torch.save(ckpt, run.model)


def test_thresholds_never_outlive_their_model(evaluated_copy, trained, prepared, synth_records, tmp_path):
    run, _ = evaluated_copy(trained, prepared, tmp_path)
    record = ["--record", str(synth_records / "A0020.hea"), "--results-dir", str(tmp_path / "r")]
    predict.main(["--run", str(run), *record])  # the thresholds of this very model: accepted
    change_weights(run)
    with pytest.raises(SystemExit, match="tuned for an earlier .*model.pth.*predict.py --run"):
        predict.main(["--run", str(run), *record])


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1.5", '"0.3"', "null"])
def test_a_damaged_threshold_is_refused(evaluated_copy, trained, prepared, synth_records, tmp_path, value):
    run, _ = evaluated_copy(trained, prepared, tmp_path)
    text = run.thresholds.read_text()
    saved = json.loads(text)
    saved["thresholds"]["AF"] = "__X__"
    saved["untunable"] = [c for c in saved.get("untunable", []) if c != "AF"]
    run.thresholds.write_text(json.dumps(saved).replace('"__X__"', value))
    with pytest.raises(SystemExit, match="AF"):
        predict.main(["--run", str(run), "--record", str(synth_records / "A0020.hea"),
                      "--results-dir", str(tmp_path / "r")])


def test_one_writer_per_run_folder(tiny, prepared, tmp_path):
    """A second main.py on a run that is being trained is refused at once, naming the holder."""
    run = Run(tmp_path / "busy")
    with exclusive_lock(run.lock, f"run {run}"):
        with pytest.raises(SystemExit, match=f"is being written by another process .pid {os.getpid()}"):
            main.main(["--data-dir", str(prepared), *tiny, "--epochs", "1", "--run", str(run)])
    assert not run.model.exists() and not run.last.exists()


def test_unwritable_folders_fail_before_any_work(tiny, copy_run, trained, prepared, tmp_path, capsys):
    """A run or results folder that cannot be written (here: under a file, which stops root too) fails at
    once with one line, not after the first epoch or the scoring."""
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with pytest.raises(SystemExit, match="cannot write to .*a_file"):
        main.main(["--data-dir", str(prepared), *tiny, "--epochs", "1", "--run", str(blocked / "x")])
    assert "epoch" not in capsys.readouterr().out
    run = copy_run(trained, tmp_path / "m")
    with pytest.raises(SystemExit) as e:  # a results folder under a file is a bad argument
        predict.main(["--run", str(run), "--results-dir", str(blocked / "r"), "--n-bootstrap", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument --results-dir: {blocked / 'r'} cannot be a folder" in err
    assert "score" not in err


def test_seconds_longer_than_every_record_is_said(tiny, prepared, tmp_path, capsys):
    main.main(["--data-dir", str(prepared), *tiny, "--seconds", "20", "--epochs", "1", "--limit", "60",
               "--run", str(tmp_path / "long")])
    assert "longer than every training record (longest 12.0 s)" in capsys.readouterr().err


def test_the_report_never_shows_another_models_shap_or_external_numbers(evaluated_copy, prep, trained, prepared, tmp_path):
    """After retraining, every section of the report that came from the old model says so."""
    import synth
    run, common = evaluated_copy(trained, prepared, tmp_path)
    synth.main(["--out", str(tmp_path / "raw"), "--n", "40", "--seed", "3", "--max-seconds", "8"])
    prep(tmp_path / "raw", tmp_path / "OTHER")
    predict.main([*common, "--external-data-dir", str(tmp_path / "OTHER"), "--n-bootstrap", "0", "--no-figures"])
    shap_values.main([*common, "--background", "4", "--n-explain", "2", "--n-samples", "2"])
    argv = ["--data-dir", str(prepared), *common]
    text = report.main(argv).read_text()
    assert "Out of date" not in text and "out of date" not in text and "| OTHER |" in text
    change_weights(run)
    text = report.main(argv).read_text()
    shap = text.split("## SHAP lead importance")[1].split("##")[0]
    external = text.split("## External validation")[1].split("##")[0]
    assert "Out of date" in shap and "| average |" not in shap
    assert external.count("out of date") == 2 and "changed after it was evaluated" in external
