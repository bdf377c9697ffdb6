"""Shared fixtures: one small synthetic dataset, generated and preprocessed once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import preprocess
import synth

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL_DIR.is_dir(), reason=f"real records not present at {REAL_DIR}")


@pytest.fixture(scope="module")
def one_thread():
    """Forward passes on a few records gain nothing from a second thread, and lose a lot on a busy machine
    (`pytestmark = pytest.mark.usefixtures("one_thread")` in a test file)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def copy_run(trained: dict, folder: Path) -> Path:
    """A private run folder holding a copy of the trained model (to change or evaluate apart)."""
    folder.mkdir(parents=True)
    shutil.copy(trained["model_path"], folder / "model.pth")
    return folder


TINY = ["--arch", "resnet18", "--seconds", "2", "--sample-rate", "100", "--batch-size", "16",
        "--num-workers", "0", "--lr", "1e-3"]


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
