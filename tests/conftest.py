"""Shared fixtures: the synthetic databases, the tiny trained run and the helpers several test files use.
The synthetic records and the preprocess outputs the tests only read are built once per run, shared by
the test processes (`built_once`); the runs and the other databases once per test process. Treat them
all as read-only (copy what a test changes)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest


def share_the_cores() -> None:
    """With the tests spread over processes (pytest-xdist, `-n auto` in pytest.ini), each process and the
    commands it starts get their share of the cores: two processes of two OpenMP threads each on two cores
    wait for each other far more than they compute. Where a library still starts threads of its own
    (LightGBM's `n_jobs=2`, a study's `torch.set_num_threads`), they sleep while they wait rather than spin
    on a core the other test process needs (a spinning LightGBM took six times its CPU time beside a
    training). Set before numpy, torch and LightGBM are first imported."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = threads
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def cache_bytecode() -> None:
    """Compiled modules are cached (`__pycache__/`, git-ignored), as Python does unless told not to, even
    where the environment says not to (PYTHONDONTWRITEBYTECODE): the suite starts dozens of processes, and
    each would compile the project's modules again, and each test process rewrite every test module."""
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


share_the_cores()
cache_bytecode()

import preprocess  # noqa: E402 - after the thread settings
import synth  # noqa: E402

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def pytest_collection_modifyitems(config, items):
    """The tests on the one-node SLURM first (they wait on the cluster's jobs most of their time), then the
    others marked slow, then the rest (each group in its own order): spread over processes, the long ones
    start early and the short ones fill in around them, rather than one long test ending the session."""
    items.sort(key=lambda item: ("slurm" not in getattr(item, "fixturenames", ()),
                                 item.get_closest_marker("slow") is None))


def pytest_runtest_setup(item):
    """Tests marked `real_data` need the 30 real PhysioNet records beside the checkout; skipped without them."""
    if item.get_closest_marker("real_data") and not REAL_DIR.is_dir():
        pytest.skip(f"real records not present at {REAL_DIR}")


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The folder of real PhysioNet records (the test is skipped when it is absent)."""
    if not REAL_DIR.is_dir():
        pytest.skip(f"real records not present at {REAL_DIR}")
    return REAL_DIR


@pytest.fixture(scope="module")
def one_thread():
    """Forward passes on a few records gain nothing from a second thread, and lose a lot on a busy machine
    (`pytestmark = pytest.mark.usefixtures("one_thread")` in a test file)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _file_states(folder: Path) -> list[list]:
    """Each file under `folder` with its size and modification time, and each subfolder: what a read
    leaves as it is. A file gone while listed (a command's probe of whether it may write there) is left
    out."""
    states = []
    for p in sorted(folder.rglob("*")):
        try:
            info = p.stat()
        except FileNotFoundError:
            continue
        is_dir = p.is_dir()
        states.append([str(p.relative_to(folder)), "folder" if is_dir else info.st_size,
                       None if is_dir else info.st_mtime_ns])
    return states


def _built_once(config, tmp_path_factory, name: str, build: Callable[[Path], None]) -> tuple[Path, Path]:
    """The folder `name`, written by `build(folder)` once per test run and then only read: the processes of
    pytest-xdist share one copy (the run's temporary folder above theirs; the first to need it builds it
    under a lock while the others wait), so the synthetic databases are generated once, not once per
    process. A build that did not finish (its marker file missing) is started again. The marker holds
    the folder's listing as built, to check it against at the end (`built_once`). Returns the folder and
    its marker."""
    root = tmp_path_factory.getbasetemp()
    if hasattr(config, "workerinput"):  # a pytest-xdist worker (read from the config: a pytest that a test
        root = root.parent              # starts inherits its worker's variables); pytest-N holds its popen-gwK
    root /= "built_once"
    folder, done = root / name, root / f"{name}.done"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.write_text(json.dumps(_file_states(folder)))
    return folder, done


@pytest.fixture(scope="session")
def built_once(pytestconfig, tmp_path_factory):
    """built_once(name, build): the folder `name` (may hold a /), written by `build(folder)` once per test
    run, shared by the test processes, only read (see `_built_once`). At the end of the session each
    folder this process used must be as it was built: a test that wrote into one would change what the
    tests of the other processes read while they run."""
    used = {}

    def get(name: str, build: Callable[[Path], None]) -> Path:
        used[name] = _built_once(pytestconfig, tmp_path_factory, name, build)
        return used[name][0]

    yield get
    changed = [name for name, (folder, done) in used.items() if _file_states(folder) != json.loads(done.read_text())]
    assert not changed, f"tests wrote into the shared, read-only folders {changed}: copy what a test changes"


@pytest.fixture(scope="session")
def synth_records(built_once) -> Path:
    """200 short WFDB records (6-12 s), enough for every class to appear in every fold; only read."""
    return built_once("synth", lambda out: synth.main(
        ["--out", str(out), "--n", "200", "--seed", "7", "--max-seconds", "12"]))


def _preprocessed_with_features(records: Path, out: Path) -> None:
    """preprocess.py's outputs of `records` in `out`, with the baselines' features.csv computed here, once,
    rather than by a test or in each copy a test makes (a test of that computation removes it first): a
    folder the test processes share is then only ever read."""
    from utils.features import load_or_compute_features

    preprocess.main(["--data-dir", str(records), "--out", str(out), "--num-workers", "1"])
    load_or_compute_features(out, False, 1, False)


@pytest.fixture(scope="session")
def prepared(synth_records, built_once) -> Path:
    """The preprocess outputs (labels, cache) of `synth_records` with features.csv; only read."""
    return built_once("prepared", lambda out: _preprocessed_with_features(synth_records, out))


@pytest.fixture(scope="session")
def prepared_100hz(synth_records, built_once) -> Path:
    """`prepared`'s records cached at 100 Hz, the tiny model's rate: a process started to train on them
    reads its inputs without resampling, so it never imports scipy.signal (about 1 s each); only read."""
    return built_once("prepared_100hz", lambda out: preprocess.main(
        ["--data-dir", str(synth_records), "--out", str(out), "--num-workers", "1", "--cache-rate", "100"]))


@pytest.fixture
def records_copy(synth_records, tmp_path) -> Path:
    """A private copy of the synthetic records that a test may damage."""
    dst = tmp_path / "records"
    shutil.copytree(synth_records, dst)
    return dst


def _copy_run(trained: dict, folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(trained["model_path"], folder / "model.pth")
    return folder


@pytest.fixture(scope="session")
def copy_run():
    """copy_run(trained, folder): a private run folder holding a copy of the trained model (to change or
    evaluate apart)."""
    return _copy_run


def _prep(records: Path, out: Path, *extra: str) -> None:
    preprocess.main(["--data-dir", str(records), "--out", str(out), "--num-workers", "1", *extra])


@pytest.fixture(scope="session")
def prep():
    """prep(records, out, *flags): preprocess.py on `records` into `out`, one worker."""
    return _prep


def _terminal_sigint() -> None:
    """In the child before exec: SIGINT as a terminal's foreground job has it (default action, not
    blocked). A process started with SIGINT ignored ignores Ctrl-C by design (Python then installs no
    KeyboardInterrupt handler), and the test process's own state must not decide the test."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.fixture(scope="session")
def terminal_sigint():
    """A `preexec_fn` for a command a test interrupts with Ctrl-C (see `_terminal_sigint`)."""
    return _terminal_sigint


@pytest.fixture
def read_only(monkeypatch):
    """read_only(*folders): creating a file in any of `folders` fails as on a read-only mount (errno 30),
    where the operating system would refuse it: as root a chmod does not stop writes."""
    import tempfile

    refused, real = set(), tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() in refused:
            raise OSError(30, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return lambda *folders: refused.update(Path(f).resolve() for f in folders)


@pytest.fixture(scope="session")
def mark_current():
    """mark_current(folder): rewrite a preprocess folder's manifest for its files as they are now (a test's
    deliberate edit of a cached signal)."""
    from utils.manifest import read_manifest, write_manifest
    from utils.cache import PREPROCESS_OUTPUTS

    def mark(data: Path) -> None:
        manifest = read_manifest(data / "preprocess.json")
        info = {k: v for k, v in manifest.items() if k not in ("fingerprint", "files")}
        write_manifest(data / "preprocess.json", manifest["fingerprint"], [data / f for f in PREPROCESS_OUTPUTS],
                       **info)
    return mark


# the smallest training the tests run: a ResNet10 at an eighth of the paper's channels (8-64) on 2 s at 100 Hz
TINY = ["--arch", "resnet10", "--arch-arg", "width=8", "--seconds", "2", "--sample-rate", "100", "--batch-size", "16",
        "--num-workers", "0", "--lr", "1e-3"]


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """main.py's flags for the tiny model every training test uses (append --epochs etc.)."""
    return list(TINY)


@pytest.fixture(scope="session")
def trained(prepared, built_once, tmp_path_factory) -> dict:
    """The tiny ResNet10 (2 s at 100 Hz, 3 epochs at lr 0.01, so that its outputs differ from record to
    record) trained on `prepared`, once for all test processes, and copied into each (predict.py and
    shap_values.py write into a run): checkpoint path and history, main.py's answer for a finished run."""
    import main

    def argv(folder: Path) -> list[str]:
        return ["--data-dir", str(prepared), *TINY, "--epochs", "3", "--lr", "1e-2", "--run", str(folder / "tiny")]

    built = built_once("trained", lambda out: main.main(argv(out)))
    mine = tmp_path_factory.mktemp("trained")  # this process's copy: evaluations write into their run
    shutil.copytree(built / "tiny", mine / "tiny")
    result = main.main(argv(mine))
    assert result.get("skipped"), "the copy of the trained run was trained again"
    return result


@pytest.fixture(scope="session")
def lead_study_run(prepared, tmp_path_factory) -> dict:
    """lead_study.py with one-epoch tiny models on 80 records: its argv, table and output folder."""
    import lead_study

    work = tmp_path_factory.mktemp("lead_study")
    argv = ["--data-dir", str(prepared), *TINY, "--epochs", "1", "--limit", "80", "--n-bootstrap", "50",
            "--runs-dir", str(work / "models"), "--results-dir", str(work / "results")]
    return {"argv": argv, "table": lead_study.main(argv), "work": work}


@pytest.fixture(scope="session")
def one(tiny):
    """One epoch of the tiny model on at most 60 records."""
    return [*tiny, "--epochs", "1", "--limit", "60"]


@pytest.fixture(scope="session")
def small(tmp_path_factory, built_once) -> dict:
    """Two databases of 60 synthetic records from two sites, preprocessed: D and E."""
    root = tmp_path_factory.mktemp("identity")
    raw = {}
    for name, site, seed in (("D", "a", 20), ("E", "b", 21)):
        raw[name] = built_once(f"raw{name}", lambda out, site=site, seed=seed: synth.main(
            ["--out", str(out), "--n", "60", "--seed", str(seed), "--site", site, "--max-seconds", "8"]))
        preprocess.main(["--data-dir", str(raw[name]), "--out", str(root / name), "--num-workers", "1"])
    return {"raw": raw["E"], "data": root / "E", "D": root / "D"}


@pytest.fixture(scope="session")
def hospitals(built_once) -> tuple[Path, Path]:
    """Two small preprocessed databases from two other synthetic sites (40 records each), with their
    features.csv; only read."""
    out = []
    for name, site, seed in (("X", "b", 21), ("Y", "c", 22)):
        raw = built_once(f"hospital{name}", lambda raw, site=site, seed=seed: synth.main(
            ["--out", str(raw), "--n", "40", "--seed", str(seed), "--site", site, "--max-seconds", "8"]))
        out.append(built_once(f"hospitals/{name}", lambda folder, raw=raw: _preprocessed_with_features(raw, folder)))
    return out[0], out[1]


@pytest.fixture(scope="session")
def check_fitted_on_validation():
    """check(saved, val_csv, test_csv): `saved` is the temperature fitted on the validation scores, and the
    fit on the test scores is another value (so fitting on the wrong records would show)."""
    from utils.evaluator import read_scores, scores_arrays
    from utils.labels import CLASSES
    from utils.metrics import fit_temperature

    def fitted(scores_csv: Path) -> float:
        y, p = scores_arrays(read_scores(scores_csv, CLASSES), CLASSES)
        return fit_temperature(p, y)

    def check(saved: float, val_csv: Path, test_csv: Path) -> None:
        from_val, from_test = fitted(val_csv), fitted(test_csv)
        assert from_val != pytest.approx(from_test, rel=1e-3), (val_csv, test_csv)
        assert saved == pytest.approx(from_val, rel=1e-7), (val_csv, test_csv)
    return check


@pytest.fixture(scope="session")
def evaluated_copy(copy_run):
    """evaluated_copy(trained, prepared, tmp_path): a copy of the trained run, evaluated; with the flags
    naming it and its results folder."""
    import predict
    from models.run import Run

    def evaluate(trained, prepared, tmp_path, name="m") -> tuple[Run, list[str]]:
        run = Run(copy_run(trained, tmp_path / name))
        predict.main(["--run", str(run), "--results-dir", str(tmp_path / "r"), "--n-bootstrap", "0",
                      "--num-workers", "0", "--no-figures"])
        return run, ["--run", str(run), "--results-dir", str(tmp_path / "r")]
    return evaluate


@pytest.fixture(scope="session")
def change_weights():
    """change_weights(run): a retrained (or resumed, or still training) model under the same name."""
    import torch

    def change(run) -> None:
        ckpt = torch.load(run.model, weights_only=True)
        ckpt["model"]["net.fc.weight"] += 0.1
        torch.save(ckpt, run.model)
    return change


CHECKOUT_OUTPUTS = [Path(__file__).resolve().parents[1] / name for name in ("results", "data")]


def _listing() -> set[str]:
    return {str(p) for folder in CHECKOUT_OUTPUTS if folder.is_dir() for p in folder.rglob("*")}


@pytest.fixture(autouse=True)
def nothing_written_into_the_checkout():
    """Tests write into their own temporary folders only: a command run with its default --results-dir
    or --data-dir would leave files in the checkout's results/ or data/."""
    before = _listing()
    yield
    added = sorted(_listing() - before)
    assert not added, f"the test wrote into the checkout: {added[:3]}"


@pytest.fixture(scope="session")
def synthetic_ptbxl(built_once) -> Path:
    """A synthetic PTB-XL of 160 records, built once and only read: the benchmark tests write their task
    folders and results under their own --tasks-dir and --results-dir."""
    return built_once("ptbxl", lambda out: synth.main(
        ["--out", str(out), "--layout", "ptbxl", "--n", "160", "--seed", "5"]))
