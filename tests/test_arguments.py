"""Every command's arguments: each numeric flag is bounded (range in its --help), each folder flag refuses a
file, and every bad value or contradicting pair of flags exits 2 with one line naming the flag.

The cases are generated from the parsers themselves, so a flag added later with an unbounded type (int,
float, positive_int) fails here. Everything is parsed in-process: no command runs."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
from pathlib import Path

import numpy as np
import pytest

from utils.cli import Bounded, BoundedList, folder_path, nonnegative_int, positive_float, positive_int
from utils.labels import leads_argument
from utils.presets import PRESETS, preset_defaults

ROOT = Path(__file__).resolve().parents[1]
BASE = {  # the least each command needs to parse
    "synth": [], "preprocess": [], "get_data": ["cpsc2018"], "baselines": [], "main": [], "predict": ["--run", "m"],
    "shap_values": ["--run", "m"], "cross_validate": [], "lead_study": [], "cross_database": ["--data-dirs", "a", "b"],
    "report": ["--run", "m"], "statistic": [], "visualize": ["--record", "x.hea"],
    "benchmark": ["score", "--scores", "s.csv", "--out", "o.csv"], "transfer": ["--source", "m"],
}
STAGES = {"main": "train", "cross_database": "train", "cross_validate": "study", "lead_study": "study",
          "predict": "evaluate", "shap_values": "shap", "baselines": "baselines", "transfer": "transfer"}


class _Built(Exception):
    """Raised in place of parsing, carrying the finished parser."""


def parser_of(name: str) -> argparse.ArgumentParser:
    """The parser `name.parse_args` builds, caught at its first parse (after every flag is added)."""
    module = importlib.import_module(name)
    original = argparse.ArgumentParser.parse_known_args

    def catch(self, *args, **kwargs):
        raise _Built(self)

    argparse.ArgumentParser.parse_known_args = catch
    try:
        module.parse_args(BASE[name])
    except _Built as built:
        return built.args[0]
    finally:
        argparse.ArgumentParser.parse_known_args = original
    raise AssertionError(f"{name}.parse_args never parsed")


def parse(name: str, argv: list[str]) -> tuple[int | None, str]:
    """(exit code or None, stderr) of `name.parse_args(BASE + argv)`."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            importlib.import_module(name).parse_args([*BASE[name], *argv])
        except SystemExit as e:
            return e.code, err.getvalue()
    return None, err.getvalue()


def refused(name: str, argv: list[str], flag: str) -> str:
    code, err = parse(name, argv)
    assert code == 2, f"{name} {argv}: exit {code}\n{err}"
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and f"argument {flag}" in errors[0] and "Traceback" not in err, f"{name} {argv}:\n{err}"
    return errors[0]


def options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and a.nargs != 0 and not isinstance(a, argparse._HelpAction)]


def bad_numbers(t: Bounded) -> list[str]:
    if t.kind is int:
        return [str(t.lo - 1), str(t.hi + 1), str(10 ** 30), "1.5", "nan", "inf", "x", ""]
    below = f"{t.lo:g}" if t.above else f"{t.lo - max(abs(t.lo) * 0.01, 1e-3):g}"
    return [below, f"{t.hi * 1.01 + 1e-3:g}", "nan", "inf", "-inf", "1e400", "x", ""]


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return {name: parser_of(name) for name in BASE}


def test_every_command_is_walked():
    assert set(BASE) == {p.stem for p in ROOT.glob("*.py")}


def test_every_numeric_flag_is_bounded_and_every_folder_flag_checked(parsers):
    unbounded = (int, float, positive_int, nonnegative_int, positive_float)
    for name, p in parsers.items():
        for a in options(p):
            flag = a.option_strings[0]
            numeric = isinstance(a.default, (int, float)) and not isinstance(a.default, bool)
            if a.choices is None:
                assert a.type not in unbounded and (not numeric or isinstance(a.type, Bounded)), \
                    f"{name} {flag}: a number without bounds (use utils.cli.bounded_int / bounded_float)"
            if a.dest.endswith(("dir", "dirs")) or (a.dest == "out" and a.metavar != "FILE"):
                assert a.type is folder_path, f"{name} {flag}: a folder flag without the folder_path type"
            if isinstance(a.type, (Bounded, BoundedList)):
                shown = p._get_formatter()._expand_help(a)
                bounds = a.type.bounds if isinstance(a.type, Bounded) else a.type.item_type.bounds
                assert bounds in shown, f"{name} {flag}: --help does not give its range {bounds}: {shown!r}"


def test_bad_values_of_every_flag_exit_2_naming_it(parsers, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = 0
    for name, p in parsers.items():
        for a in options(p):
            flag, t = a.option_strings[0], a.type
            if isinstance(t, Bounded):
                bad = bad_numbers(t)
                for good in ([] if t.above else [t.lo]) + [t.hi]:  # the bounds themselves are accepted
                    code, err = parse(name, [f"{flag}={good}"])
                    assert "is outside" not in err, f"{name} {flag}={good}: {err}"
            elif isinstance(t, BoundedList):
                bad = [*bad_numbers(t.item_type), "1,1", "1,,2"]
            elif t is folder_path:
                bad = [str(a_file), str(a_file / "sub"), "", " "]
            elif t is leads_argument:
                bad = ["I,I", "V1,v1", "XYZ", ""]
            elif a.choices is not None:
                bad = ["nan", "0", "no-such-choice"]
            else:
                continue
            for value in bad:
                refused(name, [f"{flag}={value}"], flag)
                cases += 1
    assert cases > 300 and not list(tmp_path.glob("*/"))  # nothing was created


@pytest.mark.parametrize("name, argv, flag, says", [
    ("synth", ["--seed", "-1"], "--seed", "-1 is outside 0..4294967295"),
    ("baselines", ["--seed", "-1"], "--seed", "outside 0..4294967295"),
    ("baselines", ["--seed", str(2 ** 32)], "--seed", "4294967296 is outside"),
    ("shap_values", ["--seed", str(2 ** 32)], "--seed", "outside"),
    ("synth", ["--min-seconds", "10", "--max-seconds", "5"], "--min-seconds",
     "--min-seconds 10 is above --max-seconds 5"),
    ("synth", ["--max-seconds", "5"], "--max-seconds", "--min-seconds 6 (the default) is above --max-seconds 5"),
    ("synth", ["--min-seconds", "0.001", "--max-seconds", "0.002"], "--min-seconds", "0.001 is outside 2..600"),
    ("synth", ["--layout", "cpsc2018", "--site", "b"], "--layout", "cannot hold 250 Hz records"),
    ("synth", ["--site", "c", "--sample-rate", "60"], "--sample-rate", "bandpass"),
    ("cross_validate", ["--folds", "nan"], "--folds", "fold 'nan' is not an integer"),
    ("cross_validate", ["--folds", "3,3"], "--folds", "fold 3 is given twice"),
    ("main", ["--resume", "--force"], "--force", "not allowed with argument --resume"),
    ("main", ["--leads", "I,I"], "--leads", "lead I is given twice"),
    ("baselines", ["--leads", "V1,v1"], "--leads", "lead v1 is given twice"),
    ("main", ["--num-workers", str(10 ** 12)], "--num-workers", "outside 0.."),
    ("main", ["--lr", "nan"], "--lr", "'nan' is not a finite number"),
    ("main", ["--arch", "xresnet1d101", "--arch-arg", "kernel=7"], "--arch-arg",
     "xresnet1d101 takes no argument 'kernel' (its arguments: kernel_size=5, kernel_size_stem=5)"),
    ("main", ["--arch-arg", "kernel_size"], "--arch-arg", "'kernel_size' is not KEY=VALUE"),
    ("main", ["--arch-arg", "kernel_size=3", "--arch-arg", "kernel_size=5"], "--arch-arg", "kernel_size is given twice"),
    ("main", ["--arch", "xresnet1d50", "--arch-arg", "kernel_size=4"], "--arch-arg", "cannot be built"),
    ("main", ["--arch", "resnet34", "--arch-arg", "dropout=high"], "--arch-arg", "dropout='high': not float"),
    ("main", ["--seconds", "0.1", "--sample-rate", "100"], "--seconds",
     "--seconds 0.1 with --sample-rate 100 gives 10 samples; resnet34 needs inputs of at least 32 samples"),
    ("main", ["--arch", "fcn_wang", "--seconds", "10", "--sample-rate", "100", "--crop-seconds", "0.01"],
     "--crop-seconds", "--crop-seconds 0.01 at --sample-rate 100 gives 1 samples; fcn_wang needs inputs of at least 2"),
    ("preprocess", ["--sample-rate", "100"], "--sample-rate", "the cache's rate is --cache-rate 100"),
    ("main", ["--preset", "demo", "--sample-rate", "3"], "--sample-rate",
     "--seconds 10 (from --preset demo) with --sample-rate 3 gives 30 samples"),
    ("lead_study", ["--preset", "demo", "--seconds", "0.2"], "--seconds",
     "--seconds 0.2 with --sample-rate 100 (from --preset demo) gives 20 samples"),
    ("predict", ["--record", "a.hea", "--external-data-dir", "x"], "--record",
     "not allowed with argument --external-data-dir"),
    ("predict", ["--external-data-dir", "x", "--data-dir", "y"], "--external-data-dir", "not allowed"),
    ("get_data", ["--mirror", "ftp://host/files/"], "--mirror", "ftp:// is not supported"),
    ("get_data", ["--mirror", "http://host:99999/files/"], "--mirror", "the port is not a number"),
    ("get_data", ["--mirror", "http://host:port/files/"], "--mirror", "the port is not a number"),
    ("get_data", ["--mirror", "no/such/folder"], "--mirror", "no such folder"),
    ("cross_database", ["--data-dirs", "x/a"], "--data-dirs", "give two or more databases"),
    ("cross_database", ["--data-dirs", "a", "x/a"], "--data-dirs", "share a folder name"),
    ("lead_study", ["--preset", "ptbxl"], "--preset", "invalid choice: 'ptbxl'"),  # it has no study settings
    ("lead_study", ["--freeze-epochs", "2"], "--freeze-epochs", "finetunes a trained run: the lead study trains"),
    ("transfer", ["--source", ".", "--seed", "7"], "--seed", "transfer.py trains each of --seeds; give --seeds"),
    # under one sample per 3x4 column: a blank figure and numpy's warnings
    ("visualize", ["--record", "x.hea", "--seconds", "0.001"], "--seconds", "0.001 is outside 0.2..3600"),
    ("transfer", ["--source", ".", "--train-fraction", "0.25"], "--train-fraction", "give --fractions instead"),
    ("main", ["--arch", "inception1d", "--batch-size", "1"], "--batch-size",
     "inception1d batch-normalises pooled features"),
    ("main", ["--whole-records", "--crop-seconds", "2", "--seconds", "5"], "--seconds",
     "5 is not read with --whole-records"),
    ("main", ["--whole-records", "--crop-seconds", "2.5", "--seconds", "0.1"], "--seconds",  # unread, not too short
     "0.1 is not read with --whole-records"),
    # bounds written out, not taken from the code's own: a moved bound fails here
    ("main", ["--batch-size", "0"], "--batch-size", "0 is outside 1..65536"),
    ("predict", ["--run", ".", "--n-bootstrap", "-1"], "--n-bootstrap", "-1 is outside 0..100000"),
    ("predict", ["--run", ".", "--n-bootstrap", "100001"], "--n-bootstrap", "100001 is outside 0..100000"),
    ("cross_validate", ["--n-bootstrap", "-1"], "--n-bootstrap", "-1 is outside 0..100000"),
    ("shap_values", ["--run", ".", "--background", "0"], "--background", "0 is outside 1..10000"),
    ("shap_values", ["--run", ".", "--n-explain", "0"], "--n-explain", "0 is outside 1..100000"),
    ("transfer", ["--source", ".", "--fractions", "0.5,1.5"], "--fractions", "give distinct fractions in (0, 1]"),
    ("transfer", ["--source", ".", "--seeds", "-1"], "--seeds", "-1 is outside 0..4294967295"),
])
def test_each_reported_case_exits_2_naming_the_flag(name, argv, flag, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert says in refused(name, argv, flag)


@pytest.mark.parametrize("argv, flag, says", [
    (["--arch", "lstm"], "--arch", "the benchmark trains the architectures of --models (e.g. --models lstm)"),
    (["--preset", "paper"], "--preset", "invalid choice: 'paper' (choose from 'demo', 'ptbxl')"),
    (["--models", "resnet18", "--sample-rate", "10"], "--sample-rate",
     "--crop-seconds 2.5 (the default) at --sample-rate 10 gives 25 samples; resnet18 needs inputs of at least 32"),
    (["--seconds", "2"], "--seconds", "--crop-seconds 2.5 (the default) is longer than the input (--seconds 2)"),
    (["--models", "resnet18", "--crop-seconds", "0.2"], "--crop-seconds",
     "at --sample-rate 100 (the default) gives 20 samples; resnet18 needs"),
    (["--tasks", "cpsc9", "--seconds", "30"], "--seconds", "30 is not read for cpsc9: its records are cropped and "
                                                           "scored whole"),
    # finetuning flags: the benchmark has no source run, so they would be recorded and never act
    (["--freeze-epochs", "1"], "--freeze-epochs", "finetunes a trained run: the benchmark trains every architecture"),
    (["--discriminative-lrs"], "--discriminative-lrs", "finetunes a trained run"),
    (["--restandardize"], "--restandardize", "finetunes a trained run"),
])
def test_each_reported_benchmark_case_exits_2_naming_the_flag(argv, flag, says, capsys):
    import benchmark

    with pytest.raises(SystemExit) as e:
        benchmark.parse_args(argv)
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert e.value.code == 2 and len(errors) == 1 and f"argument {flag}: " in errors[0] and says in errors[0]


def test_an_abbreviated_flag_is_refused_not_read_as_the_flag_it_begins(parsers, tmp_path, monkeypatch):
    """argparse would read `--tre 5` as `--trees 5`, and `--run X` as a study's `--runs-dir X`: a shortened
    or mistyped flag must be refused, never taken for another one. Generated from every command's flags."""
    monkeypatch.chdir(tmp_path)
    for name, p in parsers.items():
        flags = {f for a in p._actions for f in a.option_strings}
        for a in p._actions:
            long = [f for f in a.option_strings if f.startswith("--") and len(f) > 4]
            if not long or isinstance(a, argparse._HelpAction):
                continue
            short = long[0][:-1]
            if any(f == short for f in flags):
                continue
            code, err = parse(name, [short] + ([] if a.nargs == 0 else ["1"]))
            assert code == 2 and f"unrecognized arguments: {short}" in err, f"{name} {short}: exit {code}\n{err}"
    import benchmark
    import cross_validate

    for parse_args, argv in ((benchmark.parse_args, ["--model", "fcn_wang"]),
                             (benchmark.parse_args, ["compare", "--tab", "t.csv"]),
                             (cross_validate.parse_args, ["--run", "x"])):
        with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
            parse_args(argv)
        assert e.value.code == 2, argv


def test_every_command_takes_num_workers_0():
    for name in BASE:
        if any("--num-workers" in a.option_strings for a in options(parser_of(name))):
            code, err = parse(name, ["--num-workers", "0"])
            assert code is None, f"{name} --num-workers 0: {err}"


def test_no_command_defaults_to_more_loader_workers_than_usable_cpus():
    """torch warns (twice, with its source path) when a loader starts more worker processes than the CPUs
    the process may use (its affinity: taskset, a cgroup, SLURM's --cpus-per-task): every command's default,
    and the training and evaluation settings', stays within them: torch's own check of a loader at each
    default, in a process pinned to one CPU."""
    import subprocess
    import sys

    check = ("import os, warnings\n"
             "from models.inputs import make_loader\n"
             "from models.scoring import EvalSettings\n"
             "from models.training import RunConfig\n"
             "warnings.simplefilter('error')\n"
             "for workers in (RunConfig(data_dir='d').num_workers, EvalSettings().num_workers):\n"
             "    make_loader(list(range(10)), 2, True, workers).check_worker_number_rationality()\n"
             "print(len(os.sched_getaffinity(0)))\n")
    import os
    import shutil

    if shutil.which("taskset"):  # the defaults are set as the modules load: a process of its own, on one CPU
        one = str(min(os.sched_getaffinity(0)))  # one of the CPUs this machine lets the tests use
        proc = subprocess.run(["taskset", "-c", one, sys.executable, "-c", check], capture_output=True, text=True,
                              cwd=ROOT)
        assert proc.returncode == 0 and proc.stdout.split()[-1] == "1", proc.stderr[-2000:]
    from utils.cli import usable_cpus

    for name in BASE:
        for a in options(parser_of(name)):
            if "--num-workers" in a.option_strings and a.default is not None:
                assert 0 <= a.default <= usable_cpus(), f"{name} --num-workers defaults to {a.default}"


def test_a_file_named_as_a_folder_is_not_a_folder(tmp_path):
    a_file = tmp_path / "afile"
    a_file.write_text("")
    assert refused("preprocess", ["--data-dir", str(a_file)], "--data-dir").endswith(f"{a_file} is not a folder")
    assert f"{a_file} is a file" in refused("get_data", ["--out", str(a_file / "sub")], "--out")
    assert folder_path(str(tmp_path / "new" / "folder")) == tmp_path / "new" / "folder"  # need not exist yet


def test_preset_values_pass_their_flags_types(parsers):
    """A preset sets defaults, which argparse never checks: each must be a value its flag accepts."""
    for name, stage in STAGES.items():
        actions = {a.dest: a for a in options(parsers[name])}
        for preset in PRESETS:
            for key, value in preset_defaults(preset, stage).items():  # the protocol's values included
                a = actions.get(key)
                if a is not None and isinstance(a.type, Bounded):  # a string value argparse converts itself
                    assert a.type(str(value)) == value, (name, key, value)
                if a is not None and a.choices is not None:
                    assert value in a.choices, (name, key, value)


def test_bounded_types_say_the_range():
    t = Bounded(float, 0.0, 10.0, above=True)
    assert t.bounds == "(0, 10]" and t("10") == 10.0 and t("1e-9") == 1e-9
    for text, why in (("0", "0 is outside (0, 10]"), ("10.5", "outside"), ("nan", "not a finite number"),
                      ("x", "'x' is not a number")):
        with pytest.raises(argparse.ArgumentTypeError, match=why.replace("(", r"\(").replace("]", r"\]")):
            t(text)
    assert BoundedList(1, 10, "fold")("7,3") == [3, 7]
    assert leads_argument("aVR,i") == ["I", "aVR"]


def test_an_output_or_run_path_at_or_under_a_file_exits_2_naming_the_flag(tmp_path, capsys):
    """A run folder or output file named where a file is (or below one): exit 2 naming the flag, the file
    left as it was: not "cannot write ... the folder is read-only" (exit 1), nor a traceback."""
    import benchmark
    import main
    import predict
    from models.__main__ import import_args

    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    np.save(tmp_path / "y.npy", np.eye(2, dtype=int))
    np.save(tmp_path / "p.npy", np.eye(2) * 0.8 + 0.1)
    cases = [(main.parse_args, ["--data-dir", str(tmp_path), "--run", str(notes)], "--run"),
             (main.parse_args, ["--data-dir", str(tmp_path), "--run", str(notes / "run")], "--run"),
             (predict.parse_args, ["--run", str(notes / "model.pth")], "--run"),
             (import_args, [str(tmp_path / "p.npy"), "--arch", "fcn_wang", "--classes", "71", "--out", str(notes)],
              "--out"),
             (import_args, [str(tmp_path / "p.npy"), "--arch", "fcn_wang", "--classes", "71", "--out",
                            str(notes / "run")], "--out"),
             (benchmark.parse_args, ["score", "--scores", str(tmp_path / "p.npy"), "--labels", str(tmp_path / "y.npy"),
                                     "--out", str(notes / "te.csv")], "--out"),
             (benchmark.parse_args, ["compare", "--table", str(tmp_path / "t.csv"), "--out", str(notes / "c.csv")],
              "--out")]
    for parse, argv, flag in cases:
        with pytest.raises(SystemExit) as e:
            parse(argv)
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert e.value.code == 2 and len(errors) == 1 and "Traceback" not in err, (argv, err)
        assert f"argument {flag}: " in errors[0], errors[0]
        assert "notes.txt is not a folder" in errors[0] or "notes.txt is a file" in errors[0], errors[0]
    assert notes.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "p.npy", "y.npy"]
