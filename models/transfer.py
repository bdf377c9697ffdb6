"""Finetuning a trained run on another database, as the PTB-XL benchmark does (`fastai_model.fit` with
`pretrained=True`; Strodthoff et al., IEEE JBHI 2021).

The source run's network is loaded whole (its standardisation included, unless the run refits it on
the target's training records) and its output layer, the network's last linear layer, is replaced by
a new one for the target's classes (kaiming-normal weights, zero bias). Training then has two phases:

- head: every layer group but the last (models.registry, `layer_groups`) is frozen, except their batch
  norms, which keep training (fastai's `freeze` with `train_bn`): their scale and shift are updated and
  their running statistics follow the new data. Every other weight of the body (convolutions, LSTMs,
  linear layers) stays exactly the source's. One cycle to `lr`.
- all: every layer group trains, group g of n at its own peak rate, spaced evenly on a log scale from
  lr/1000 (the first) to lr/10 (the head), as fastai's `slice(lr/1000, lr/10)`. One cycle again.

Inputs must be those the source was trained on: the same leads in the same order, the same rate and
the same window (or, for a network that reads whole inputs, the same length); `input_mismatch` says
which one differs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from torch import nn

from models.checkpoint import check_same_run, read_checkpoint
from models.registry import model_entry
from models.run import Run
from utils.errors import PipelineError
from utils.manifest import file_sha

__all__ = ["HEAD", "ALL", "phase", "source_path", "source_argument", "source_info", "input_mismatch", "output_layer",
           "replace_output_layer", "layer_groups", "group_lrs", "phase_param_groups", "is_batchnorm",
           "finetune_network"]

HEAD, ALL = "head", "all"   # the two phases of a finetuned run
LOWEST, HIGHEST = 1e-3, 1e-1  # the groups' peak rates run from lr/1000 to lr/10


def phase(freeze_epochs: int, epoch: int) -> str:
    """The phase epoch `epoch` (1-based) belongs to: the first `freeze_epochs` train the head alone."""
    return HEAD if epoch <= freeze_epochs else ALL


def source_path(path: Path | str) -> Path:
    """The model.pth of a source given as a run folder or a checkpoint file."""
    path = Path(path)
    return path / Run.MODEL if path.is_dir() else path


def source_argument(text: str) -> str:
    """argparse type of `--init-from`: a run folder or checkpoint; one that exists must read as a
    checkpoint of this project (else exit 2). A missing one is refused when the run starts (exit 1), as
    every command refuses a missing input, so that a command can be written before its source exists."""
    path = source_path(text)
    if path.exists():
        try:
            read_checkpoint(path)
        except PipelineError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return str(path)


def source_info(path: Path | str) -> dict:
    """What identifies a source model: its path, its run id and its file's hash (a source trained again,
    or replaced, is another source), with its configuration and label set."""
    path = source_path(path)
    check_same_run(path)
    ckpt = read_checkpoint(path)
    return {"path": str(path), "run_id": ckpt.get("run_id"), "sha": file_sha(path), "config": ckpt["config"],
            "label_set": ckpt["label_set"]}


def input_mismatch(source_cfg: dict, leads: Sequence[str], sample_rate: int, crop_seconds: float | None,
                   seconds: float) -> tuple[str, str] | None:
    """(setting, why) for the first input setting that differs from the source's; None when they agree.
    The window is what the network sees: with one, the input's length may differ (scores are the
    maximum over windows); without one, the network read whole inputs, and their length must match."""
    theirs = list(source_cfg["leads"])
    if list(leads) != theirs:
        return "leads", f"leads {','.join(leads)} differ from the source's {','.join(theirs)}"
    if int(sample_rate) != int(source_cfg["sample_rate"]):
        return "sample_rate", f"{int(sample_rate)} Hz differs from the source's {int(source_cfg['sample_rate'])} Hz"
    window = source_cfg.get("crop_seconds")
    if (crop_seconds is None) != (window is None) or (window is not None and float(crop_seconds) != float(window)):
        mine = "none" if crop_seconds is None else f"{float(crop_seconds):g} s"
        return "crop_seconds", (f"window {mine} differs from the source's "
                                f"{'none' if window is None else f'{float(window):g} s'}")
    if window is None and float(seconds) != float(source_cfg["seconds"]):
        return "seconds", (f"input {float(seconds):g} s differs from the source's {float(source_cfg['seconds']):g} s "
                           f"(it read whole inputs)")
    return None


def output_layer(net: nn.Module) -> tuple[str, nn.Linear]:
    """The network's output layer, its last linear layer, with its dotted name."""
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise PipelineError(f"{type(net).__name__} has no linear output layer to replace")
    return linears[-1]


def replace_output_layer(net: nn.Module, num_classes: int) -> nn.Linear:
    """A new output layer for `num_classes` classes in place of the old (kaiming-normal, zero bias)."""
    name, old = output_layer(net)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    nn.init.kaiming_normal_(new.weight)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_name, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, child, new)
    return new


def layer_groups(net: nn.Module, arch: str) -> list[list[nn.Module]]:
    """The architecture's declared layer groups (models.registry), the head last: modules of `net`, each
    parameter in at most one group (one in none is not finetuned, as the reference's inception1d leaves
    its first blocks; a module that is not the network's would train in its place, unseen). A
    PipelineError names the architecture and what is wrong."""
    entry = model_entry(arch)
    where = f"architecture {arch} (layer_groups of {entry.builder.__module__})"
    try:
        groups = [list(g) for g in entry.layer_groups(net)]
    except Exception as e:  # noqa: BLE001 -- a user's function: said in one line
        raise PipelineError(f"{where} failed on its network: {type(e).__name__}: {e}") from None
    if len(groups) < 2:
        raise PipelineError(f"{arch} declares {len(groups)} layer group(s); finetuning needs a body and a head")
    if not all(isinstance(m, nn.Module) for g in groups for m in g):
        raise PipelineError(f"{where}: a group holds something that is not a module (give lists of modules)")
    own = {id(p) for p in net.parameters()}
    placed: set[int] = set()
    for i, group in enumerate(groups, 1):
        ids = {id(p) for p in _params(group)}
        if ids - own:
            raise PipelineError(f"{where}: group {i} holds parameters of modules that are not the network's")
        if ids & placed:
            raise PipelineError(f"{where}: group {i} shares parameters with an earlier group; each parameter "
                                "belongs to one group")
        placed |= ids
    return groups


def group_lrs(lr: float, n: int) -> list[float]:
    """Peak rates of n groups, evenly spaced on a log scale from lr/1000 to lr/10 (fastai's even_mults)."""
    if n == 1:
        return [lr * HIGHEST]
    return [lr * LOWEST * (HIGHEST / LOWEST) ** (i / (n - 1)) for i in range(n)]


def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _params(modules: Sequence[nn.Module], batchnorm_only: bool = False) -> list[nn.Parameter]:
    seen, out = set(), []
    for top in modules:
        for m in top.modules():
            if batchnorm_only and not is_batchnorm(m):
                continue
            for p in m.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


def phase_param_groups(net: nn.Module, arch: str, lr: float, which: str, discriminative: bool) -> list[dict]:
    """The optimiser's parameter groups for one phase, with `requires_grad` set to match: in the head
    phase the last group and every batch norm of the others, all at `lr`; in the other, every group at
    its own rate (`group_lrs`) when `discriminative`, else every parameter at `lr`. Each group is named
    (`name`: "group k of n"), so the checkpoint's optimiser state says which rate went where."""
    groups = layer_groups(net, arch)
    for p in net.parameters():
        p.requires_grad_(False)
    if which == ALL and not discriminative:
        for p in net.parameters():
            p.requires_grad_(True)
        return [{"params": list(net.parameters()), "lr": lr, "name": "all"}]
    n = len(groups)
    rates = [lr] * n if which == HEAD else group_lrs(lr, n)
    out = []
    for k, (modules, rate) in enumerate(zip(groups, rates), 1):
        params = _params(modules, batchnorm_only=which == HEAD and k < n)
        for p in params:
            p.requires_grad_(True)
        if params:  # an empty group takes its place in the spacing of rates, not a place in the optimiser
            out.append({"params": params, "lr": rate, "name": f"group {k} of {n}"})
    return out


def finetune_network(model: nn.Module, source: dict, num_classes: int) -> nn.Module:
    """`model` (an ECGModel of the source's architecture built for the source's classes) with the
    source's weights and standardisation, and a new output layer for `num_classes` classes."""
    ckpt = read_checkpoint(Path(source["path"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise PipelineError(f"{source['path']} does not fit a {source['config']['arch']} "
                            f"({str(e).splitlines()[0]})") from None
    replace_output_layer(model.net, num_classes)
    return model
