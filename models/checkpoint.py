"""Checkpoints: one plain dict, loadable with `torch.load(weights_only=True)`.

Keys: `format` (CHECKPOINT_FORMAT), `config` (the run's RunConfig as a dict), `label_set`
({"name", "classes"}), `split` (record ids of train/val/test) and `split_labels` (a fingerprint of their
labels), `data` (the preprocess folder, its name and manifest fingerprint), `model` (weights), `epoch`,
`best_f1`, `history`; the resume checkpoint (last.pth) adds `optimizer`. Everything a later stage needs
to rebuild the run is in it, so no stage guesses settings from file names.
"""
from __future__ import annotations

from pathlib import Path

import torch

from torch import nn

from models.inputs import ECGModel, InputSpec
from models.registry import create_model
from utils import MissingInputError, PipelineError, atomic_write

CHECKPOINT_FORMAT = 3  # 2: the bare network's weights (no input rules); 1: settings under "args"

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "read_checkpoint", "build_network", "load_checkpoint"]


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
        raise PipelineError(f"{path} is a checkpoint of format {found}; every stage reads format {CHECKPOINT_FORMAT} "
                            f"(config, label_set, split): retrain it with `python main.py`")
    if not isinstance(ckpt.get("data"), dict) or "identity" not in ckpt["data"]:
        raise PipelineError(f"{path} records no database identity (data.identity), which files its results; "
                            f"retrain it with `python main.py`")
    return ckpt


def build_network(cfg: dict, num_classes: int) -> ECGModel:
    """The run's registered architecture inside its input rules (standardisation, windows), untrained."""
    net = create_model(cfg["arch"], len(cfg["leads"]), num_classes)
    return ECGModel(net, InputSpec.from_checkpoint({"config": cfg}))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Model (eval mode) and the checkpoint dict."""
    ckpt = read_checkpoint(path, map_location)
    model = build_network(ckpt["config"], len(ckpt["label_set"]["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt
