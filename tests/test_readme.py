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


# The project speaks of its software (machines, versions, dates, commands), never of how it was written:
# no work sessions, work items, issue numbers, agents, helpers or reviewers.
HISTORY_WORDS = re.compile(r"\b(sessions?|agents?|helpers?|reviewers?|issues?|(this|earlier|previous|older|old|new) "
                           r"versions?|(this|my|our|next|previous|earlier) tasks?|tasks? #?\d+)\b", re.I)
# Phrases where such a word is about the software itself, each with the reason; removed before the check.
ALLOWED_PHRASES = {
    r'scope="session"': "pytest's fixture scope",
    r"\bper test session\b": "pytest's run of the whole suite (tests/conftest.py)",
    r"\bstart_new_session\b": "subprocess's option that starts a process group",
    r"\bkeep-alive session\b|_local\.session\b|_local, \"session\"|requests\.Session\(\)":
        "HTTP sessions of requests in utils/download.py",
    r"\bUser-Agent\b": "the HTTP header utils/download.py sends",
}
TEXT_SUFFIXES = {".py", ".md", ".sh", ".txt", ".ini", ".cfg", ".toml", ".yml", ".yaml"}


def tracked_text_files() -> list[Path]:
    """Every tracked text file (.ci/run included), this test file excepted: it spells the words it bans."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    paths = [ROOT / name for name in listed.stdout.splitlines()]
    return [p for p in paths if (p.suffix in TEXT_SUFFIXES or p.parent.name == ".ci") and p.is_file()
            and p != Path(__file__).resolve()]


def history_words(text: str) -> list[str]:
    """Each line of `text` that speaks of how the project was written, as 'line N: text'."""
    found = []
    for n, line in enumerate(text.splitlines(), start=1):
        cleaned = line
        for phrase in ALLOWED_PHRASES:
            cleaned = re.sub(phrase, "", cleaned)
        if HISTORY_WORDS.search(cleaned):
            found.append(f"line {n}: {line.strip()[:100]}")
    return found


def test_the_word_check_catches_history_and_spares_the_software():
    assert history_words("Measured by an earlier session (issue 19).\nreviewer: ok\nas in this version")  \
        == ["line 1: Measured by an earlier session (issue 19).", "line 2: reviewer: ok", "line 3: as in this version"]
    assert history_words('@pytest.fixture(scope="session")\ns.headers["User-Agent"]\nparallel_map(fn, tasks)') == []
    assert history_words("a helper function\nthis task\nTask 12") == ["line 1: a helper function", "line 2: this task",
                                                                      "line 3: Task 12"]


def test_no_tracked_file_speaks_of_how_the_project_was_written():
    files = tracked_text_files()
    assert ROOT / "README.md" in files and ROOT / "bench" / "README.md" in files and len(files) > 50
    found = {str(p.relative_to(ROOT)): hits for p in files if (hits := history_words(p.read_text(errors="replace")))}
    assert not found, "\n".join(f"{name} {hit}" for name, hits in found.items() for hit in hits)
