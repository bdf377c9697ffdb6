"""Shared fixtures: one small synthetic dataset, generated and preprocessed once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import preprocess
import synth

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


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


@pytest.fixture(scope="session")
def synth_records(tmp_path_factory) -> Path:
    """200 short WFDB records (6-12 s), enough for every class to appear in every fold."""
    out = tmp_path_factory.mktemp("synth")
    synth.main(["--out", str(out), "--n", "200", "--seed", "7", "--max-seconds", "12"])
    return out


@pytest.fixture(scope="session")
def prepared(synth_records, tmp_path_factory) -> Path:
    """The preprocess outputs (labels, cache) of `synth_records`; treat as read-only."""
    out = tmp_path_factory.mktemp("prepared")
    preprocess.main(["--data-dir", str(synth_records), "--out", str(out), "--num-workers", "1"])
    return out


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


@pytest.fixture
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


@pytest.fixture
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


# the smallest training the tests run: a ResNet10 on 2 s at 100 Hz
TINY = ["--arch", "resnet10", "--seconds", "2", "--sample-rate", "100", "--batch-size", "16",
        "--num-workers", "0", "--lr", "1e-3"]


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """main.py's flags for the tiny model every training test uses (append --epochs etc.)."""
    return list(TINY)


@pytest.fixture(scope="session")
def trained(prepared, tmp_path_factory) -> dict:
    """A tiny ResNet18 (2 s at 100 Hz, 3 epochs) trained on `prepared`: checkpoint path and history."""
    import main

    work = tmp_path_factory.mktemp("trained")
    return main.main(["--data-dir", str(prepared), *TINY, "--epochs", "3",
                      "--run", str(work / "tiny")])


@pytest.fixture(scope="session")
def lead_study_run(prepared, tmp_path_factory) -> dict:
    """lead_study.py with one-epoch tiny models on 80 records: its argv, table and output folder."""
    import lead_study

    work = tmp_path_factory.mktemp("lead_study")
    argv = ["--data-dir", str(prepared), *TINY, "--epochs", "1", "--limit", "80", "--n-bootstrap", "50",
            "--runs-dir", str(work / "models"), "--results-dir", str(work / "results")]
    return {"argv": argv, "table": lead_study.main(argv), "work": work}


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
