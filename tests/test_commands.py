"""The top-level commands: each file is a command with main(argv), none imports another, the library
(utils/, models/) imports none of them, utils/ never imports torch, and no flag can point two runs at one file."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("flag", ["--log-dir", "--shap-dir", "--models-dir", "--model-path"])
def test_no_flag_can_point_two_runs_at_one_file(flag):
    for path in COMMANDS:
        assert f'"{flag}"' not in path.read_text(), f"{path.name} still has {flag}"
