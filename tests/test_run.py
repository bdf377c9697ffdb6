"""models/run.py: the one place that names a run folder's files."""
from __future__ import annotations

from pathlib import Path

import pytest

from models.run import Run, run_name
from utils.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]


COMMANDS = sorted(p for p in ROOT.glob("*.py"))


LIBRARY = sorted([*ROOT.glob("utils/*.py"), *ROOT.glob("models/*.py")])


def test_run_file_names_are_defined_once():
    """Only models/run.py spells the run's file names; every other file goes through Run."""
    names = ("last.pth", "thresholds.json", "log.csv")
    for path in [*COMMANDS, *LIBRARY, ROOT / "reproduce.sh"]:
        if path.name == "run.py":
            continue
        text = path.read_text()
        for name in names:
            assert f'"{name}"' not in text, f"{path.relative_to(ROOT)} spells the run file {name}"
    run = Run.at(ROOT / "x" / "runs" / "a" / "model.pth")
    assert run == Run(ROOT / "x" / "runs" / "a") and run.log.parent == run.thresholds.parent == run.folder
    assert run_name("resnet34", ("I", "aVR"), 42, 3, "study_") == "study_resnet34_I-aVR_42_fold3"
    with pytest.raises(PipelineError, match="a run is a folder"):
        Run.at("somewhere/tiny.pth")
