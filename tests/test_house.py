"""The house rules, checked from the code: a top-level file is a command, the library never imports one,
utils/ never imports torch, run files are named in one place, results are filed by database identity."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from models.run import Run, run_name
from utils.errors import PipelineError
from utils.presets import PRESETS, preset_table
from utils.results import results_home

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(p for p in ROOT.glob("*.py"))
LIBRARY = sorted([*ROOT.glob("utils/*.py"), *ROOT.glob("models/*.py")])


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_every_top_level_file_is_a_command():
    assert len(COMMANDS) >= 12
    for path in COMMANDS:
        text = path.read_text()
        assert re.search(r"^def main\(argv", text, re.M), f"{path.name} has no main(argv)"
        assert 'if __name__ == "__main__":' in text, f"{path.name} cannot run as a command"


def test_the_library_never_imports_a_command_and_utils_never_imports_torch():
    commands = {p.stem for p in COMMANDS}
    for path in LIBRARY:
        imported = imported_modules(path)
        assert not imported & commands, f"{path.relative_to(ROOT)} imports command(s) {imported & commands}"
        if path.parent.name == "utils":
            assert "torch" not in imported and "models" not in imported, f"{path.relative_to(ROOT)} imports torch"
    probe = "import sys, utils, utils.presets, utils.results, utils.download; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_command_imports_another_command():
    commands = {p.stem for p in COMMANDS}
    for path in COMMANDS:
        assert not (imported_modules(path) & commands) - {path.stem}, path.name


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


@pytest.mark.parametrize("flag", ["--log-dir", "--shap-dir", "--models-dir", "--model-path"])
def test_no_flag_can_point_two_runs_at_one_file(flag):
    for path in COMMANDS:
        assert f'"{flag}"' not in path.read_text(), f"{path.name} still has {flag}"


def test_results_are_filed_by_database_identity_not_folder_name(tmp_path, capsys):
    a, b = tmp_path / "s1" / "db", tmp_path / "s2" / "db"
    a.mkdir(parents=True), b.mkdir(parents=True)
    home_a = results_home(tmp_path / "results", a)
    home_b = results_home(tmp_path / "results", b)
    assert home_a == tmp_path / "results" / "db" and home_b.parent == home_a.parent and home_b != home_a
    assert "another database named db" in capsys.readouterr().out
    assert results_home(tmp_path / "results", a) == home_a and results_home(tmp_path / "results", b) == home_b
    assert json.loads((home_b / "database.json").read_text())["data_dir"] == str(b.resolve())


def test_presets_are_defaults_that_flags_override_and_the_readme_shows_them():
    import main
    args = main.parse_args(["--data-dir", "d", "--preset", "demo", "--epochs", "2"])
    demo = PRESETS["demo"]["train"]
    assert (args.arch, args.seconds, args.sample_rate, args.lr) == (demo["arch"], demo["seconds"],
                                                                   demo["sample_rate"], demo["lr"])
    assert args.epochs == 2  # the explicit flag wins
    assert main.parse_args(["--data-dir", "d"]).arch == "resnet34"  # no preset: the paper's defaults
    assert preset_table() in (ROOT / "docs" / "presets.md").read_text(), \
        "docs/presets.md's table differs from utils/presets.py"
    assert "--preset \"$preset\"" in (ROOT / "reproduce.sh").read_text()


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
