"""A run is one folder with fixed file names, defined here and nowhere else.

    data/<db>/runs/<arch>_<leads>_<seed>[_fold<k>]/   (studies prefix the name with `study_`)
        model.pth        the best validation epoch (what every later stage uses)
        last.pth         the last completed epoch, with the optimizer (for --resume)
        frozen.pth       a finetuned run's last epoch with the body frozen (models.transfer)
        log.csv          one row per epoch
        thresholds.json  per-class thresholds tuned on the run's validation records, tied to model.pth's bytes
        shap/            the SHAP value cache
        .lock            held by the one process writing the run

Every stage takes a run by one handle, `--run <folder>` (its model.pth is accepted too), so two runs can
never share a file: the only way to name a file of a run is through its folder.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.errors import MissingInputError, PipelineError
from utils.manifest import file_sha
from utils.labels import LEADS, leads_tag
from utils.results import parse_thresholds

__all__ = ["Run", "run_name", "run_argument", "new_run_folder", "load_thresholds"]


def run_name(arch: str, leads: Sequence[str] = LEADS, seed: int = 42, test_fold: int | None = None,
             prefix: str = "") -> str:
    """{prefix}{arch}_{leads}_{seed}[_fold{k}]: the original's naming without the database (the folder says it)."""
    fold = f"_fold{test_fold}" if test_fold is not None else ""
    return f"{prefix}{arch}_{leads_tag(leads)}_{seed}{fold}"


@dataclass(frozen=True)
class Run:
    """The handle of one run: its folder. Every file of the run is a property, never a computed name."""
    folder: Path

    MODEL = "model.pth"
    LAST = "last.pth"
    FROZEN = "frozen.pth"
    LOG = "log.csv"
    THRESHOLDS = "thresholds.json"
    SHAP = "shap"
    LOCK = ".lock"

    @classmethod
    def at(cls, path: Path | str) -> "Run":
        """The run at `path`: its folder, or the folder's model.pth / last.pth."""
        path = Path(path)
        if path.suffix == ".pth":
            if path.name not in (cls.MODEL, cls.LAST):
                raise PipelineError(f"{path}: a run is a folder holding {cls.MODEL}; pass the folder "
                                    f"(a checkpoint under another name is not a run)")
            path = path.parent
        return cls(path)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def model(self) -> Path:
        return self.folder / self.MODEL

    @property
    def last(self) -> Path:
        return self.folder / self.LAST

    @property
    def frozen(self) -> Path:
        return self.folder / self.FROZEN

    @property
    def log(self) -> Path:
        return self.folder / self.LOG

    @property
    def thresholds(self) -> Path:
        return self.folder / self.THRESHOLDS

    @property
    def shap_dir(self) -> Path:
        return self.folder / self.SHAP

    @property
    def lock(self) -> Path:
        return self.folder / self.LOCK

    @property
    def files(self) -> tuple[Path, ...]:
        """What one training or import writes: a new one keeps none of an old run's (the SHAP cache is keyed
        by the model's contents and so never taken for the new model's)."""
        return self.model, self.last, self.log, self.thresholds, self.frozen

    def clear(self, keep: tuple[Path, ...] = ()) -> None:
        """Remove the run's files but `keep` (--force): nothing of the old run is left beside the new one."""
        for old in self.files:
            if old not in keep:
                old.unlink(missing_ok=True)

    def __str__(self) -> str:
        return str(self.folder)


def run_argument(text: str) -> Run:
    """argparse type of `--run`: a bad path is a usage error (exit 2), like every bad argument."""
    from utils.cli import folder_path

    try:
        run = Run.at(text)
    except PipelineError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    folder_path(str(run.folder))  # a file where the run's folder, or one above it, should be: named here
    return run


def new_run_folder(text: str) -> Path:
    """argparse type of the folder a command writes a run into (main.py's --run, `models import --out`): a
    folder path (utils.cli.folder_path), and not a preprocessed data folder, where the run's files would
    mix with the database's."""
    from utils.cache import MANIFEST_JSON
    from utils.cli import folder_path

    path = folder_path(text)
    if (path / MANIFEST_JSON).exists():
        raise argparse.ArgumentTypeError(f"{text} is a preprocessed data folder; name a run folder, e.g. "
                                         f"{path / 'runs' / 'NAME'}")
    return path


def load_thresholds(run: Run, classes: list[str], required: bool = True) -> np.ndarray | None:
    """The thresholds tuned for this very model.pth, in `classes` order (NaN: untunable, never predicted).

    Thresholds tuned for an earlier model.pth of the run (retrained, resumed, or still training) are
    never applied to the current one: they are refused, naming the command that retunes them; so are a
    missing class, NaN, inf or a value outside [0, 1] (utils.parse_thresholds). Without `required`,
    missing thresholds give None."""
    path = run.thresholds
    retune = f"rerun `python predict.py --run {run} --force`"
    if not path.exists():
        if required:
            raise MissingInputError(f"{path} not found; run `python predict.py --run {run}` once to tune the "
                                    f"thresholds on the run's validation records")
        return None
    try:
        saved = json.loads(path.read_text())
        model_sha = saved["model_sha"]
    except (ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{path} is not a thresholds file written by predict.py ({type(e).__name__}: {e}); "
                            f"{retune}") from None
    if model_sha != file_sha(run.model):
        raise PipelineError(f"{path} was tuned for an earlier {run.model} (the checkpoint changed since); {retune}")
    return parse_thresholds(saved, classes, path)
