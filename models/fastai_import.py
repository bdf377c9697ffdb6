"""The PTB-XL benchmark's published models as run folders of this project.

The benchmark (Strodthoff et al., IEEE JBHI 2021; its code: fastai v1) saves each trained network with
`learn.save`: a dict whose `model` holds the state dict (and `opt` the optimiser), or, from other code, the
bare state dict; beside it, the StandardScaler its inputs were standardised with (`standard_scaler.pkl`,
one feature: a single mean and standard deviation over every sample of every lead of the training
records). Its inputs are 12 leads at 100 Hz, 2.5-s windows scored every 1.25 s, the maximum over windows
kept; its `all` task has PTB-XL's 71 statements, sorted as its MultiLabelBinarizer sorts them.

The seven architectures registered from the benchmark hold the same tensors in the same order as the
reference's modules, so the import maps state dicts by position, checking every shape. Two of the
reference's quirks are undone: its xresnet blocks hold their convolutions twice (`convs`, and again
inside `convpath`), and every name differs.

Loading is safe by construction: the checkpoint is read with `torch.load(weights_only=True)`, allowing
only the plain objects a fastai checkpoint holds besides tensors (its optimiser's `functools.partial` and
optimiser class, never called); the scaler's pickle is read by an unpickler that resolves only numpy's
array constructors and maps the StandardScaler class to a plain record of its attributes, so no
scikit-learn code, and no other code at all, runs while it is read. A pickle naming anything else is
refused, not loaded.
"""
from __future__ import annotations

import argparse
import functools
import io
import os
import pickle
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from models.inputs import ECGModel, InputSpec, split_provenance
from models.registry import create_model
from models.run import Run
from models.training import RunConfig
from utils.errors import PipelineError
from utils.manifest import file_sha
from utils.labels import LEADS
from utils.presets import PTBXL_PROTOCOL

__all__ = ["BENCHMARK_INPUT", "read_fastai_state", "map_fastai_state", "read_standard_scaler", "import_fastai"]

# The benchmark's input: 10-s records at 100 Hz, 2.5-s windows (utils.presets.PTBXL_PROTOCOL)
BENCHMARK_INPUT = InputSpec(LEADS, PTBXL_PROTOCOL["seconds"], PTBXL_PROTOCOL["sample_rate"],
                            PTBXL_PROTOCOL["crop_seconds"])
# Besides tensors, a fastai v1 `learn.save` file holds its optimiser's settings: the optimiser function
# (functools.partial of a torch optimiser class). Unpickling them builds the partial; nothing is called.
FASTAI_GLOBALS = [functools.partial, torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD]


def read_fastai_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a fastai checkpoint (dict with `model`, or a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found")
    try:
        with torch.serialization.safe_globals(FASTAI_GLOBALS):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PipelineError(f"{path} is not a checkpoint this import reads safely "
                            f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    state = saved.get("model", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{path} holds no state dict (a dict of tensors, or a dict with one under 'model')")
    return state


def _without_aliases(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """The entries in order, each tensor once: a name under which an earlier entry's tensor appears again
    (the reference's xresnet `convpath.0.*`, its `convs.*` again) is dropped."""
    kept, seen = [], {}
    for name, t in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        twin = name.replace(".convpath.0.", ".convs.")
        if twin != name and twin in state:
            if not torch.equal(state[twin], t):
                raise PipelineError(f"{name} and {twin} differ: not the reference's xresnet block")
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        if key is not None and key in seen:
            continue
        seen[key] = name
        kept.append((name, t))
    return kept


def map_fastai_state(state: dict[str, torch.Tensor], net: torch.nn.Module, arch: str) -> dict[str, torch.Tensor]:
    """The reference's state dict renamed to `net`'s, by position; every shape must agree."""
    theirs = _without_aliases(state)
    ours = [(k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours):
        raise PipelineError(f"the checkpoint holds {len(theirs)} tensors, a {arch} {len(ours)}: not a {arch} "
                            f"of the benchmark (pass the right --arch and --classes)")
    mapped = dict(net.state_dict())
    for (their_name, t), (name, mine) in zip(theirs, ours):
        if tuple(t.shape) != tuple(mine.shape):
            raise PipelineError(f"the checkpoint's {their_name} has shape {tuple(t.shape)}, a {arch}'s {name} "
                                f"{tuple(mine.shape)}: not a {arch} of the benchmark (pass the right --arch and "
                                f"--classes)")
        mapped[name] = t.to(mine.dtype)
    return mapped


class _Record:
    """What a pickled StandardScaler becomes: its attributes, nothing else."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {})


class _ScalerUnpickler(pickle.Unpickler):
    """Resolves only numpy's array and scalar constructors and the StandardScaler class (as `_Record`)."""

    ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
    SCALERS = ("sklearn.preprocessing._data", "sklearn.preprocessing.data")

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module in self.NUMPY_CORE and name in ("_reconstruct", "scalar"):
            return {"_reconstruct": np.zeros(1).__reduce__()[0], "scalar": np.float64(0).__reduce__()[0]}[name]
        if module in self.SCALERS and name == "StandardScaler":
            return _Record
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a StandardScaler's pickle never holds")


def read_standard_scaler(path: Path) -> tuple[float, float]:
    """(mean, standard deviation) of the benchmark's pickled StandardScaler, read without running code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            scaler = _ScalerUnpickler(io.BytesIO(f.read())).load()
    except FileNotFoundError:
        raise PipelineError(f"{path} not found") from None
    except Exception as e:
        raise PipelineError(f"{path} is not a StandardScaler pickle read safely ({type(e).__name__}: {e})") from None
    if not isinstance(scaler, _Record):
        raise PipelineError(f"{path} holds a {type(scaler).__name__}, not a StandardScaler")
    mean = getattr(scaler, "mean_", None)
    scale = getattr(scaler, "scale_", None)
    mean = np.zeros(1) if mean is None or not getattr(scaler, "with_mean", True) else np.ravel(mean)
    scale = np.ones(1) if scale is None or not getattr(scaler, "with_std", True) else np.ravel(scale)
    if mean.size != 1 or scale.size != 1:
        raise PipelineError(f"{path} standardises {max(mean.size, scale.size)} features separately; the benchmark's "
                            f"scaler (and this project) use one mean and one standard deviation for every lead")
    mean_, std_ = float(mean[0]), float(scale[0])
    if not (np.isfinite(mean_) and np.isfinite(std_) and std_ > 0):
        raise PipelineError(f"{path}: mean {mean_!r}, scale {std_!r} cannot standardise")
    return mean_, std_


def import_fastai(path: Path, arch: str, classes: Sequence[str], out: Path, scaler: Path | None = None,
                  label_set: str = "all", data: dict | None = None, split: dict | None = None) -> Run:
    """Write the run folder `out` (its model.pth) holding the benchmark's `arch` checkpoint at `path`, its
    inputs those of the benchmark, standardised by `scaler` (none: inputs as they are). `data` and `split`
    tie the run to a preprocessed database (its provenance and its split, so that it can be evaluated);
    without them the run is for finetuning (--init-from) and diagnosing only."""
    classes = list(classes)
    net = create_model(arch, len(LEADS), len(classes))
    net.load_state_dict(map_fastai_state(read_fastai_state(path), net, arch))
    mean, std = read_standard_scaler(scaler) if scaler is not None else (0.0, 1.0)
    model = ECGModel(net, BENCHMARK_INPUT, mean, std)
    cfg = RunConfig.from_args(argparse.Namespace(**PTBXL_PROTOCOL), arch=arch, leads=LEADS, label_set=label_set,
                              standardize=scaler is not None, data_dir=(data or {}).get("dir") or str(out),
                              data_fingerprint=(data or {}).get("fingerprint"), run_dir=str(out), precision="fp32")
    run = Run(Path(out))
    empty = {name: [] for name in ("train", "val", "test")}
    provenance = (split_provenance(split, classes) if split is not None
                  else {"split": empty, "split_labels": {name: None for name in empty}})
    state = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "epoch": 0, "best_f1": float("nan"),
             "history": [], "config": cfg.to_dict(), "label_set": {"name": label_set, "classes": classes},
             "data": data or {"dir": None, "name": "imported", "fingerprint": None,
                              "identity": os.path.realpath(out)},
             "run_id": uuid.uuid4().hex, **provenance,
             "imported": {"from": "fastai", "path": str(path), "sha": file_sha(path),
                          "scaler": None if scaler is None else str(scaler),
                          "scaler_sha": None if scaler is None else file_sha(scaler)}}
    run.folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run.model, state)
    return run
