"""The model contract: every architecture is a builder registered under a name.

    @register_model("resnet34", family="resnet")
    def resnet34(in_leads: int, num_classes: int) -> nn.Module: ...

A builder takes the number of input leads and of classes and returns a module mapping a float tensor
(batch, leads, samples) to logits (batch, classes), for any input length the network can reduce (every
registered network pools globally at the end). Nothing else in the project knows which architecture it
holds: training, evaluation, SHAP, the studies and the benchmark build models with `create_model(name, …)`,
and a checkpoint stores only the name. Adding an architecture is one file in `models/archs/` (every
module there is imported when the registry is first read), or a `register_model` call anywhere before
the model is built.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import nn

__all__ = ["ModelEntry", "register_model", "create_model", "list_models", "model_entry", "protocol_settings",
           "count_parameters"]

Builder = Callable[[int, int], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture: its builder and what the training protocol must know about it."""
    name: str
    builder: Builder
    family: str
    description: str = ""
    # Training settings this architecture needs under a named protocol (preset), over the preset's own:
    # e.g. the PTB-XL benchmark trains its LSTMs at lr 1e-3 with gradient clipping at 0.25.
    protocol: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    min_samples: int = 32   # the shortest input the network can reduce to a prediction


_REGISTRY: dict[str, ModelEntry] = {}
_DISCOVERED = False


def register_model(name: str, *, family: str, description: str = "",
                   protocol: Mapping[str, Mapping[str, object]] | None = None,
                   min_samples: int = 32) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(in_leads, num_classes) -> nn.Module` under `name` (unique)."""
    def register(builder: Builder) -> Builder:
        known = _REGISTRY.get(name)
        if known is not None and known.builder is not builder:
            # The same module imported twice (e.g. as a script and as a module) re-registers the same
            # definition under a new function object: only a different family or place is a clash.
            if (known.builder.__module__, known.builder.__qualname__) != (builder.__module__, builder.__qualname__):
                raise ValueError(f"architecture {name!r} is registered twice ({known.builder.__module__} and "
                                 f"{builder.__module__})")
        _REGISTRY[name] = ModelEntry(name, builder, family, description or (builder.__doc__ or "").strip().split("\n")[0],
                                     dict(protocol or {}), min_samples)
        return builder
    return register


def _discover() -> None:
    """Import every module of models/archs once, so each registers its architectures."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import models.archs as archs
    for info in sorted(pkgutil.iter_modules(archs.__path__), key=lambda m: m.name):
        importlib.import_module(f"models.archs.{info.name}")
    _DISCOVERED = True


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
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def create_model(name: str, in_leads: int, num_classes: int) -> nn.Module:
    """A freshly initialised `name` for `in_leads` leads and `num_classes` classes."""
    if in_leads < 1 or num_classes < 1:
        raise ValueError(f"a model needs at least one lead and one class (got {in_leads} and {num_classes})")
    return model_entry(name).builder(in_leads, num_classes)


def protocol_settings(name: str, protocol: str | None) -> dict:
    """The training settings architecture `name` needs under `protocol` (a preset's name), over the
    preset's own; {} for an unknown architecture (argparse reports it) or no protocol."""
    if protocol is None or name not in list_models():
        return {}
    return dict(_REGISTRY[name].protocol.get(protocol, {}))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (what the published tables count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
