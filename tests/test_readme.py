"""The README is the contract: its test command is .ci/run's, and every command it prints parses as
written (each script's own argparse, in-process); the fast ones run for real."""
from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))  # the reference the README points to


def bash_lines(text: str = README + DOCS) -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def python_commands() -> list[tuple[str, list[str]]]:
    """(script, argv) of every `python X.py …` and `torchrun … X.py …` the README and docs/ print."""
    out = []
    for line in bash_lines():
        for part in line.split("&&"):
            words = shlex.split(part)
            scripts = [i for i, w in enumerate(words) if w.endswith(".py") and (ROOT / w).exists()]
            if scripts and words[0] in ("python", "python3", "torchrun"):
                i = scripts[0]
                out.append((words[i][:-3], words[i + 1:]))
    return out


def test_the_two_commands_and_ci():
    lines = bash_lines(README)
    test_command = next(line for line in lines if line.endswith("python -m pytest -q"))
    main_command = next(line for line in lines if line.endswith("./reproduce.sh --demo"))
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert main_command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt")


COMMANDS = python_commands()


def test_the_readme_prints_every_command():
    assert {s for s, _ in COMMANDS} >= {"get_data", "preprocess", "baselines", "main", "predict", "shap_values",
                                        "cross_validate", "lead_study", "report", "cross_database"}


@pytest.mark.parametrize("script,argv", COMMANDS, ids=[f"{s} {' '.join(a)}"[:60] for s, a in COMMANDS])
def test_every_printed_command_parses(script, argv, capsys):
    module = importlib.import_module(script)
    try:
        module.parse_args(argv)
    except SystemExit as e:  # an argparse error: the README prints a command that does not run
        pytest.fail(f"`{script}.py {' '.join(argv)}` does not parse: {capsys.readouterr().err.strip()} ({e.code})")


def test_the_fast_commands_run(tmp_path):
    listing = subprocess.run([sys.executable, "get_data.py", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert listing.returncode == 0 and "cpsc2018" in listing.stdout and "CC BY 4.0" in listing.stdout
    presets = subprocess.run([sys.executable, "-m", "utils.presets"], cwd=ROOT, capture_output=True, text=True)
    assert presets.returncode == 0 and presets.stdout in (ROOT / "docs" / "presets.md").read_text()
    syntax = subprocess.run(["bash", "-n", "reproduce.sh"], cwd=ROOT, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_readme_is_for_a_user_not_a_history():
    assert len(README.splitlines()) <= 200
    assert "../shared" not in README and "SPEC.md" not in README  # nothing outside the repository
