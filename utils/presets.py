"""Named settings, as data: the demo (built-in synthetic data, minutes on a 2-core CPU) and the paper's.

Every command that trains, evaluates or explains takes `--preset NAME`: the preset's values become the
command's defaults, and a flag given on the command line still wins. `reproduce.sh` only passes
`--preset`; the README's preset table is printed by `python -m utils.presets` (a test checks they agree).

Why the demo differs from the paper: on 2 CPU cores a ResNet34 on 30 s at 500 Hz learns far less in
ten minutes than a ResNet10 on the last 10 s at 100 Hz, and the 23 study runs must each take seconds.
"""
from __future__ import annotations

import argparse
from typing import Sequence

__all__ = ["PRESETS", "STAGES", "preset_defaults", "parse_with_preset", "preset_table"]

STAGES = ("train", "study", "evaluate", "shap", "baselines_cv")

PRESETS: dict[str, dict[str, dict]] = {
    "demo": {
        "train": {"arch": "resnet10", "seconds": 10.0, "sample_rate": 100, "epochs": 10, "lr": 1e-3, "num_workers": 0},
        "study": {"arch": "resnet10", "seconds": 5.0, "sample_rate": 100, "epochs": 3, "lr": 1e-3, "limit": 300,
                  "num_workers": 0, "n_bootstrap": 200},
        "evaluate": {"num_workers": 0},
        "shap": {"n_explain": 40},
        "baselines_cv": {"classifier": "LR"},
    },
    "paper": {
        "train": {"arch": "resnet34", "seconds": 30.0, "sample_rate": 500, "epochs": 40, "lr": 1e-4, "batch_size": 32,
                  "use_gpu": True},
        "study": {"arch": "resnet34", "seconds": 30.0, "sample_rate": 500, "epochs": 40, "lr": 1e-4, "batch_size": 32,
                  "use_gpu": True, "jobs": 3},  # three trainings share one GPU (a single one leaves it half idle)
        "evaluate": {"use_gpu": True},
        "shap": {"n_explain": 200, "background": 100, "use_gpu": True},
        "baselines_cv": {"classifier": "all"},
    },
}


def preset_defaults(name: str, stage: str) -> dict:
    """The defaults a preset gives one stage ({} for a stage it leaves alone)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return dict(PRESETS[name].get(stage, {}))


def parse_with_preset(p: argparse.ArgumentParser, argv: Sequence[str] | None, stage: str) -> argparse.Namespace:
    """Parse `argv` with `--preset NAME` added: the preset's values for `stage` become defaults, explicit
    flags override them. Only keys the parser knows are applied (a stage's preset never sets a flag the
    command lacks)."""
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named settings (see the README's preset table); explicit flags override them")
    known, _ = p.parse_known_args(argv)
    if known.preset:
        dests = {a.dest for a in p._actions}
        p.set_defaults(**{k: v for k, v in preset_defaults(known.preset, stage).items() if k in dests})
    return p.parse_args(argv)


def preset_table() -> str:
    """The presets as a markdown table, one row per stage, the flags each preset sets (the README shows it)."""
    def flags(settings: dict) -> str:
        return " ".join(f"`--{k.replace('_', '-')}`" if v is True else f"`--{k.replace('_', '-')} {v:g}`"
                        if isinstance(v, float) else f"`--{k.replace('_', '-')} {v}`" for k, v in settings.items()) or "-"

    rows = ["| stage | " + " | ".join(PRESETS) + " |", "| --- |" + " --- |" * len(PRESETS)]
    rows += [f"| {stage} | " + " | ".join(flags(PRESETS[name].get(stage, {})) for name in PRESETS) + " |"
             for stage in STAGES]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(preset_table(), end="")
