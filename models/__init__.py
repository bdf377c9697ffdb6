"""The network and its checkpoints.

A checkpoint is a plain dict, loadable with `torch.load(weights_only=True)`:
`format` (CHECKPOINT_FORMAT), `config` (the run's RunConfig as a dict), `label_set` ({"name", "classes"}),
`split` (record ids of train/val/test) and `split_labels` (a fingerprint of their labels), `data`
(the preprocess folder, its name and manifest fingerprint), `model` (weights), `epoch`, `best_f1`,
`history`; the resume checkpoint adds `optimizer`.

A run's files sit beside its checkpoint: for `runs/<run>/model.pth` they are `last.pth`,
`thresholds.json`, `log.csv` and `shap/`; for any other `--model-path x/name.pth` they are
`name.last.pth`, `name.thresholds.json`, `name.log.csv` and `name.shap/`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.resnet import ARCHS, ResNet1d, build_model
from utils import MissingInputError, PipelineError, atomic_write

CHECKPOINT_FORMAT = 2  # 1: settings under "args" (argparse namespace), classes under "classes"

__all__ = ["ARCHS", "CHECKPOINT_FORMAT", "ResNet1d", "build_model", "save_checkpoint", "read_checkpoint",
           "load_checkpoint", "run_file", "run_name", "last_path", "log_path", "thresholds_path", "shap_cache_dir",
           "load_thresholds"]


def run_file(model_path: Path, name: str) -> Path:
    """A file of the run whose checkpoint is `model_path` (see the module docstring)."""
    model_path = Path(model_path)
    return model_path.parent / (name if model_path.stem == "model" else f"{model_path.stem}.{name}")


def run_name(model_path: Path) -> str:
    """The name results are filed under: the run folder for runs/<run>/model.pth, else the file's stem."""
    model_path = Path(model_path)
    return model_path.parent.name if model_path.stem == "model" else model_path.stem


def last_path(model_path: Path) -> Path:
    return run_file(model_path, "last.pth")


def log_path(model_path: Path) -> Path:
    return run_file(model_path, "log.csv")


def thresholds_path(model_path: Path) -> Path:
    """The per-class decision thresholds evaluation tunes on the run's validation records."""
    return run_file(model_path, "thresholds.json")


def shap_cache_dir(model_path: Path) -> Path:
    return run_file(model_path, "shap")


def load_thresholds(model_path: Path, classes: list[str]) -> np.ndarray | None:
    """Thresholds in `classes` order, or None when evaluation has not tuned them yet."""
    path = thresholds_path(model_path)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())["thresholds"]
        return np.array([float(saved[c]) for c in classes])
    except (ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{path} does not hold one threshold per class {', '.join(classes)} "
                            f"({type(e).__name__}: {e}); rerun `python predict.py --model-path {model_path}`") from None


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
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise PipelineError(f"{path} is not a checkpoint written by main.py")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format", "1 (settings under 'args', no label set)")
        raise PipelineError(f"{path} is a checkpoint of format {found}; this version reads format {CHECKPOINT_FORMAT} "
                            f"(config, label_set, split): retrain it with `python main.py`")
    return ckpt


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[ResNet1d, dict]:
    """Model (eval mode) and the checkpoint dict."""
    ckpt = read_checkpoint(path, map_location)
    cfg = ckpt["config"]
    model = build_model(cfg["arch"], len(cfg["leads"]), len(ckpt["label_set"]["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt
