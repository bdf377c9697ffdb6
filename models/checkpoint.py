"""Checkpoints: one plain dict, loadable with `torch.load(weights_only=True)`.

Keys: `format` (CHECKPOINT_FORMAT), `config` (the run's RunConfig as a dict: the architecture's name and
its builder's arguments `arch_args`, the input, the training settings), `label_set`
({"name", "classes"}), `split` (record ids of train/val/test) and `split_labels` (a fingerprint of their
labels), `data` (the preprocess folder, its name, manifest fingerprint and the cache's rate: a folder cached
again at another rate is not evaluated with the run), `model` (weights), `epoch`,
`best_f1`, `history`, `run_id`; the resume checkpoint (last.pth) adds `optimizer`. Everything a later stage
needs to rebuild the run is in it, so no stage guesses settings from file names.

`run_id` is drawn when a run starts and kept when it resumes, so a run folder's model.pth and last.pth
carry the same one: a model.pth copied in from another run is refused when it is loaded beside a
last.pth of another id (`check_same_run`), not evaluated, explained or resumed as if it were this run's.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from torch import nn

from models.inputs import ECGModel, InputSpec
from models.registry import create_model
from models.run import Run
from utils.errors import MissingInputError, PipelineError
from utils.files import atomic_write, file_version

CHECKPOINT_FORMAT = 3  # 2: the bare network's weights (no input rules); 1: settings under "args"

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "read_checkpoint", "peek_checkpoint", "run_id_mismatch",
           "check_same_run", "build_network", "load_checkpoint"]


def save_checkpoint(path: Path, state: dict) -> Path:
    """Written to a temporary file and renamed: a killed run never leaves half a checkpoint."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict (`weights_only=True`, so no pickled code runs), checked to be of this format."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"checkpoint {path} not found; train one with `python main.py` first")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise PipelineError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    return _checked(path, ckpt)


def _checked(path: Path, ckpt) -> dict:
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise PipelineError(f"{path} is not a checkpoint written by main.py")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format", "1 (settings under 'args', no label set)")
        raise PipelineError(f"{path} is a checkpoint of format {found}; every stage reads format {CHECKPOINT_FORMAT} "
                            f"(config, label_set, split): retrain it with `python main.py`")
    if not isinstance(ckpt.get("data"), dict) or "identity" not in ckpt["data"]:
        raise PipelineError(f"{path} records no database identity (data.identity), which files its results; "
                            f"retrain it with `python main.py`")
    return ckpt


def build_network(cfg: dict, num_classes: int) -> ECGModel:
    """The run's registered architecture inside its input rules (standardisation, windows), untrained."""
    net = create_model(cfg["arch"], len(cfg["leads"]), num_classes, **cfg.get("arch_args", {}))
    return ECGModel(net, InputSpec.from_checkpoint({"config": cfg}))


def peek_checkpoint(path: Path) -> dict:
    """The checkpoint's plain entries (config, epoch, run id...) with its tensors memory-mapped, not read.
    A study looks at every run folder of its database for each of its runs (`adopt_equal_run`): a file
    already peeked at, unchanged since (the same `file_version`: inode, size, modification and
    status-change times; checkpoints are only ever replaced whole), is not unpickled again. A new dict
    each call; its tensors are shared."""
    path = Path(path)
    try:
        ckpt = _peeked(file_version(path))
    except Exception as e:
        raise PipelineError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    return _checked(path, dict(ckpt))


@functools.lru_cache(maxsize=256)
def _peeked(version: tuple) -> dict:
    return torch.load(version[0], map_location="cpu", weights_only=True, mmap=True)


def run_id_mismatch(run: Run) -> str | None:
    """Why the run folder's model.pth and last.pth are not of one run (None when they are, or when one
    of them is missing): a checkpoint copied in from another run carries that run's id."""
    if not (run.model.exists() and run.last.exists()):
        return None
    best, last = peek_checkpoint(run.model).get("run_id"), peek_checkpoint(run.last).get("run_id")
    if best == last:
        return None
    return (f"{run.model} (run id {best}) and {run.last} (run id {last}) belong to different runs "
            f"(a checkpoint copied in from another run?)")


def check_same_run(path: Path) -> None:
    """Refuse a run folder's model.pth whose last.pth is of another run (see `run_id_mismatch`)."""
    path = Path(path)
    if path.name == Run.MODEL:
        why = run_id_mismatch(Run(path.parent))
        if why:
            raise PipelineError(f"{why}; retrain the run with `python main.py --run {path.parent} --force`, "
                                f"or remove the file that does not belong")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Model (eval mode) and the checkpoint dict; a run folder's model.pth only if its last.pth is of the
    same run."""
    check_same_run(path)
    ckpt = read_checkpoint(path, map_location)
    model = build_network(ckpt["config"], len(ckpt["label_set"]["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt
