"""The model contract: every architecture is a builder registered under a name.

    @register_model("resnet34", family="resnet")
    def resnet34(in_leads: int, num_classes: int, kernel_size: int = 7) -> nn.Module: ...

A builder takes the number of input leads and of classes, and any keyword arguments with defaults (a
variant without a new name: `--arch xresnet1d101 --arch-arg kernel_size=7`), and returns a module
mapping a float tensor (batch, leads, samples) to logits (batch, classes), for any input length of at
least its entry's `min_samples` (every registered network pools globally at the end). The entry also
holds the training settings the architecture needs under a named protocol (the PTB-XL benchmark's
LSTMs: `protocol={"ptbxl": {"lr": 1e-3, "clip_grad": 0.25}}`, keyed by the protocol's name in
utils/presets.py). Nothing else in the project knows which architecture it holds: training,
evaluation, SHAP, the studies and the benchmark build models with `create_model(name, …, **arch_args)`,
and a checkpoint stores the name and the builder's arguments. Adding an architecture is one file in
`models/archs/` (every module there is imported when the registry is first read), or a
`register_model` call anywhere before the model is built.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import numbers
import pkgutil
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from utils.errors import PipelineError

__all__ = ["ModelEntry", "register_model", "create_model", "list_models", "model_entry", "protocol_settings",
           "count_parameters", "builder_argument", "builder_arguments", "LayerGroups", "default_layer_groups",
           "broken_files", "check_network", "normalises_single_values"]

Builder = Callable[..., nn.Module]  # builder(in_leads, num_classes, **keyword arguments with defaults)
# A network -> its layer groups for finetuning (earliest first, the head last), each a list of modules. As
# the PTB-XL benchmark's `get_layer_groups` and fastai's split: the body is frozen while the head trains,
# then each group trains at its own rate (lr/1000 ... lr/10). A group may be empty (it still takes a rate);
# a module in no group is never updated by discriminative finetuning (the reference's inception1d).
LayerGroups = Callable[[nn.Module], Sequence[Sequence[nn.Module]]]


def default_layer_groups(model: nn.Module) -> list[list[nn.Module]]:
    """Every top-level part but the last, then the last (which holds the output layer)."""
    children = list(model.children())
    return [children[:-1], children[-1:]]


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture: its builder and what the training protocol must know about it."""
    name: str
    builder: Builder
    family: str
    description: str = ""
    # Training settings this architecture needs under a named protocol, over the protocol's own (keyed
    # by the flags' dests): e.g. the PTB-XL benchmark trains its LSTMs at lr 1e-3 with clipping at 0.25.
    protocol: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    min_samples: int = 32   # the shortest input the network can reduce to a prediction
    layer_groups: LayerGroups = default_layer_groups

    @property
    def arguments(self) -> dict[str, Any]:
        """The builder's keyword arguments and their defaults (what `--arch-arg KEY=VALUE` may set)."""
        params = list(inspect.signature(self.builder).parameters.values())[2:]
        return {q.name: q.default for q in params if q.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, ModelEntry] = {}
_DISCOVERED = False
_BROKEN: dict[str, str] = {}  # a file of models/archs that could not be imported, or a name two files take -> why
_DISCOVERING: dict[str, list[str]] | None = None  # while models/archs is imported: name -> the modules registering it
_REGISTERED_BY: dict[str, str] = {}  # name -> the module whose code registered it (not the builder's: a file may
# register a builder it imports)
ARCHS = "models.archs."
# A name is a folder name too (runs/<arch>_<leads>_<seed>): letters, digits and _ . + - only, no path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# and a value of the tables' model column: not one that CSV readers (pandas) take for a missing value
MISSING_WORDS = {"NA", "NaN", "nan", "None", "NULL", "null"}


def register_model(name: str, *, family: str, description: str = "",
                   protocol: Mapping[str, Mapping[str, object]] | None = None,
                   min_samples: int = 32, layer_groups: LayerGroups | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(in_leads, num_classes, **arch_args) -> nn.Module` under `name` (unique)."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"architecture name {name!r} is not a plain name (letters, digits, _ . + -): it names "
                         "run folders")
    if name in MISSING_WORDS:
        raise ValueError(f"architecture name {name!r} reads as a missing value in CSV tables (the benchmark's "
                         f"model column): choose another")

    from utils.presets import PROTOCOLS

    if isinstance(min_samples, bool) or not isinstance(min_samples, numbers.Integral) or not 1 <= min_samples <= 10**7:
        raise ValueError(f"architecture {name}: min_samples={min_samples!r} is not a whole number of samples in "
                         f"1..10000000 (the shortest input the network reduces to a prediction)")
    if layer_groups is not None and not callable(layer_groups):
        raise ValueError(f"architecture {name}: layer_groups={layer_groups!r} is not a function of the network")
    if not isinstance(protocol or {}, Mapping):
        raise ValueError(f"architecture {name}: protocol={protocol!r} is not a mapping of protocol names to settings")
    for key, settings in (protocol or {}).items():
        if key not in PROTOCOLS:  # a misspelt name would never apply, silently
            raise ValueError(f"architecture {name}: protocol {key!r} is unknown (known: {', '.join(PROTOCOLS)})")
        if not isinstance(settings, Mapping):
            raise ValueError(f"architecture {name}: protocol {key!r} maps to {settings!r}, not to settings "
                             "(e.g. {'lr': 0.001})")

    def register(builder: Builder) -> Builder:
        known = _REGISTRY.get(name)
        by = sys._getframe(1).f_globals.get("__name__", builder.__module__)  # the module applying the decorator
        if _DISCOVERING is not None and (known is None or _REGISTERED_BY.get(name, "").startswith(ARCHS)):
            # two files of models/archs: which would win is their names' order, so settled after all
            _DISCOVERING.setdefault(name, []).append(by)
            if known is not None and _REGISTERED_BY.get(name) != by:
                return builder
        if known is not None and known.builder is not builder:
            # The same module imported twice (e.g. as a script and as a module) re-registers the same
            # definition under a new function object: only a different family or place is a clash.
            if (known.builder.__module__, known.builder.__qualname__) != (builder.__module__, builder.__qualname__):
                raise ValueError(f"architecture {name!r} is registered twice ({known.builder.__module__} and "
                                 f"{builder.__module__})")
        _REGISTRY[name] = ModelEntry(name, builder, family, description or (builder.__doc__ or "").strip().split("\n")[0],
                                     dict(protocol or {}), int(min_samples), layer_groups or default_layer_groups)
        _REGISTERED_BY[name] = by
        return builder
    return register


def _discover() -> None:
    """Import every module of models/archs once, so each registers its architectures. A file that fails
    to import (an error in it) is said in one warning line naming it, and none of its architectures is
    registered: the others stay usable, and every command still runs. A name that two files register is
    registered by neither (whichever came first in the folder's order would win, a user's file over a
    shipped one), said in one line naming both; their other architectures stay."""
    global _DISCOVERED, _DISCOVERING
    if _DISCOVERED:
        return
    _DISCOVERED = True  # the files' registrations, counting those of files already imported (which import no more)
    _DISCOVERING = {name: [by] for name, by in _REGISTERED_BY.items() if by.startswith(ARCHS) and name in _REGISTRY}
    import models.archs as archs
    try:
        for info in sorted(pkgutil.iter_modules(archs.__path__), key=lambda m: m.name):
            before, claims = set(_REGISTRY), {name: len(files) for name, files in _DISCOVERING.items()}
            try:
                importlib.import_module(f"models.archs.{info.name}")
            except (Exception, SystemExit) as e:  # noqa: BLE001 -- a user's file raising, exit() too: reported
                for name in set(_REGISTRY) - before:
                    del _REGISTRY[name], _REGISTERED_BY[name]
                for name, files in _DISCOVERING.items():  # its registrations do not count against other files'
                    del files[claims.get(name, 0):]
                where = f"models/archs/{info.name}.py"
                _BROKEN[where] = f"{type(e).__name__}: {e}"
                print(f"warning: {where} cannot be imported ({_BROKEN[where]}); its architectures are not available",
                      file=sys.stderr)
        for name, modules in _DISCOVERING.items():
            files = sorted({m.replace(".", "/") + ".py" for m in modules})
            if len(files) > 1:
                _REGISTRY.pop(name, None)
                _REGISTERED_BY.pop(name, None)
                where = f"architecture {name!r}"
                _BROKEN[where] = f"registered by {' and by '.join(files)}"
                print(f"warning: {where} is {_BROKEN[where]}: not available until all but one rename it (their other "
                      f"architectures are available)", file=sys.stderr)
    finally:
        _DISCOVERING = None


def broken_files() -> dict[str, str]:
    """The files of models/archs that could not be imported and the names two files register, and why."""
    _discover()
    return dict(_BROKEN)


def list_models() -> list[str]:
    """Every registered architecture's name, sorted."""
    _discover()
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; ValueError naming the known ones otherwise."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        broken = "".join(f"; {where} is {why}" if where.startswith("architecture ") else
                         f"; {where} cannot be imported ({why})" for where, why in _BROKEN.items())
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}{broken}") from None


def create_model(name: str, in_leads: int, num_classes: int, **arch_args) -> nn.Module:
    """A freshly initialised `name` for `in_leads` leads and `num_classes` classes, its builder called
    with `arch_args` (checked by `builder_arguments`)."""
    if in_leads < 1 or num_classes < 1:
        raise ValueError(f"a model needs at least one lead and one class (got {in_leads} and {num_classes})")
    net = model_entry(name).builder(in_leads, num_classes, **builder_arguments(name, arch_args))
    if not isinstance(net, nn.Module):
        raise PipelineError(f"architecture {name}: its builder returned a {type(net).__name__}, not a torch "
                            "nn.Module")
    return net


def builder_argument(text: str) -> tuple[str, Any]:
    """argparse type of `--arch-arg KEY=VALUE`: the value as an integer, a number, true/false or text
    (its builder's default says which it must be: see `builder_arguments`)."""
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. kernel_size=7)")
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), {"true": True, "false": False}.get(value.lower(), value)


builder_argument.__name__ = "KEY=VALUE"


def builder_arguments(name: str, given: Mapping[str, Any] | Iterable[tuple[str, Any]], build: bool = False) -> dict:
    """`given` as keyword arguments of `name`'s builder, each of its default's type (an integer where a
    number is due becomes one); ValueError, one line naming the architecture and the key, for a key the
    builder does not take or a value of another type. With `build`, the network is built once with
    them, so that a value the builder itself refuses (a kernel of 0) is named before any work."""
    known = model_entry(name).arguments
    takes = ", ".join(f"{k}={v}" for k, v in known.items()) or "none"
    out = {}
    for key, value in dict(given).items():
        if key not in known:
            raise ValueError(f"{name} takes no argument {key!r} (its arguments: {takes})")
        kind = type(known[key])
        if kind is float and type(value) is int:
            value = float(value)
        if kind in (bool, int, float, str) and type(value) is not kind:
            raise ValueError(f"{name} argument {key}={value!r}: not {kind.__name__} (default {known[key]!r})")
        out[key] = value
    if build and out:
        try:
            model_entry(name).builder(1, 2, **out)
        except Exception as e:  # noqa: BLE001 - any refusal of the builder is the argument's
            raise ValueError(f"{name} cannot be built with {out}: {type(e).__name__}: {e}") from None
    return out


def protocol_settings(name: str, protocol: str | None) -> dict:
    """The training settings architecture `name` needs under `protocol` (a protocol's name, e.g. "ptbxl"),
    over the protocol's own; {} for an unknown architecture (argparse reports it) or no protocol."""
    if protocol is None or name not in list_models():
        return {}
    return dict(_REGISTRY[name].protocol.get(protocol, {}))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (what the published tables count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_network(name: str, net: nn.Module, in_leads: int, num_classes: int, n_samples: int) -> None:
    """The builder's side of the contract, checked before training: trainable parameters, and logits of
    shape (batch, classes) for inputs of `n_samples` (the training crop, or the whole input). A
    PipelineError naming the architecture and what is wrong, rather than a traceback an epoch later."""
    if count_parameters(net) == 0:
        raise PipelineError(f"architecture {name}: the network has no trainable parameters")
    was_training = net.training
    net.eval()
    try:
        for batch in (2, 1):  # a batch of one too: the last batch, or --batch-size 1 (a squeeze() shows there)
            try:
                with torch.no_grad():
                    out = net(torch.zeros(batch, in_leads, n_samples))
            except Exception as e:  # noqa: BLE001 -- whatever a user's network raises
                raise PipelineError(f"architecture {name} fails on a batch of {batch} input(s) of {in_leads} lead(s) x "
                                    f"{n_samples} samples ({type(e).__name__}: {e}); its network must reduce any batch "
                                    "and any input length of at least its min_samples") from None
            shape = tuple(getattr(out, "shape", ()))
            if not isinstance(out, torch.Tensor) or shape != (batch, num_classes) or not out.is_floating_point():
                raise PipelineError(f"architecture {name} returns "
                                    f"{shape if isinstance(out, torch.Tensor) else type(out).__name__} for a batch of "
                                    f"{batch} record(s) and {num_classes} classes; a network must return float logits "
                                    "of shape (batch, classes)")
    finally:
        net.train(was_training)


def normalises_single_values(net: nn.Module, in_leads: int, n_samples: int) -> bool:
    """Whether training on a batch of one record would batch-normalise a single value per channel (the
    benchmark heads normalise pooled (batch, features)), which torch refuses. Seen on a forward pass in
    eval mode, which changes no statistic."""
    single = []
    hooks = [m.register_forward_pre_hook(lambda m, args: single.append(args[0].numel() == args[0].shape[1]))
             for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, in_leads, n_samples))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return any(single)
