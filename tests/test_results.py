"""utils/results.py and the readers of output folders: results filed by database identity; outputs of an
older layout refused with one line naming the command that rewrites them."""
from __future__ import annotations

import json

import pytest

from utils.errors import PipelineError
from utils.results import results_home


def test_results_are_filed_by_database_identity_not_folder_name(tmp_path, capsys):
    a, b = tmp_path / "s1" / "db", tmp_path / "s2" / "db"
    a.mkdir(parents=True), b.mkdir(parents=True)
    home_a = results_home(tmp_path / "results", a)
    home_b = results_home(tmp_path / "results", b)
    assert home_a == tmp_path / "results" / "db" and home_b.parent == home_a.parent and home_b != home_a
    assert "another database named db" in capsys.readouterr().out
    assert results_home(tmp_path / "results", a) == home_a and results_home(tmp_path / "results", b) == home_b
    assert json.loads((home_b / "database.json").read_text())["data_dir"] == str(b.resolve())


def test_outputs_of_an_older_layout_are_refused_not_guessed(tmp_path):
    """No reader of older output layouts: a preprocess manifest without its label set, an evaluation
    without its thresholds object and a checkpoint without its database identity each stop with one
    line naming the file and the command that rewrites it."""
    import torch

    from models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint
    from utils.cache import data_label_set
    from utils.files import write_json
    from utils.manifest import write_manifest
    from utils.results import read_evaluation

    write_manifest(tmp_path / "preprocess.json", "key", [])
    with pytest.raises(PipelineError, match=r"preprocess.json names no label set; rerun `python preprocess.py"):
        data_label_set(tmp_path)
    metrics = {"AF": {"f1": 0.5, "threshold": 0.3}, "mean": {"f1": 0.5, "threshold": None}}
    write_json({"classes": ["AF"], "metrics": metrics}, tmp_path / "metrics.json")
    with pytest.raises(PipelineError, match=r"metrics.json holds no \"thresholds\" object"):
        read_evaluation(tmp_path)
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}, "data": {"dir": "data/CPSC"}}, tmp_path / "model.pth")
    with pytest.raises(PipelineError, match=r"model.pth records no database identity .*python main.py"):
        read_checkpoint(tmp_path / "model.pth")
