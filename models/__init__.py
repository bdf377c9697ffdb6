"""The network and its checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.resnet import ARCHS, ResNet1d, build_model
from utils import CLASSES, atomic_write

__all__ = ["ARCHS", "ResNet1d", "build_model", "save_checkpoint", "load_checkpoint", "default_model_path",
           "thresholds_path", "load_thresholds"]


def default_model_path(arch: str, data_dir: Path, leads_tag: str, seed: int, test_fold: int | None = None) -> Path:
    """models/resnet34_{database}_{leads}_{seed}.pth, the original's naming (+ _fold{k} in cross-validation)."""
    fold = f"_fold{test_fold}" if test_fold is not None else ""
    return Path("models") / f"{arch}_{Path(data_dir).resolve().name}_{leads_tag}_{seed}{fold}.pth"


def thresholds_path(model_path: Path) -> Path:
    """The per-class decision thresholds predict.py tunes on validation: JSON beside the checkpoint."""
    return Path(model_path).with_suffix(".thresholds.json")


def load_thresholds(model_path: Path) -> np.ndarray | None:
    """Thresholds in CLASSES order, or None when predict.py has not tuned them yet."""
    path = thresholds_path(model_path)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())["thresholds"]
        return np.array([float(saved[c]) for c in CLASSES])
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {path} does not hold one threshold per class {', '.join(CLASSES)} "
                         f"({type(e).__name__}: {e}); rerun `python predict.py --model-path {model_path}`") from None


def save_checkpoint(path: Path, state: dict) -> Path:
    """Written to a temporary file and renamed: a killed run never leaves half a checkpoint."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[ResNet1d, dict]:
    """Model (eval mode) and the checkpoint dict; `weights_only=True`, so no pickled code runs."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"error: checkpoint {path} not found; train one with `python main.py` first")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise SystemExit(f"error: {path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise SystemExit(f"error: {path} is not a checkpoint written by main.py")
    if list(ckpt.get("classes", [])) != list(CLASSES):
        raise SystemExit(f"error: {path} was trained for classes {ckpt.get('classes')}, expected {list(CLASSES)}")
    model = build_model(ckpt["args"]["arch"], len(ckpt["leads"]), len(CLASSES))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt
