"""Named settings, as data: the demo (built-in synthetic data, minutes on a 2-core CPU) and the paper's.

Every command that trains, evaluates or explains takes `--preset NAME`: the preset's values become the
command's defaults, and a flag given on the command line still wins. `reproduce.sh` only passes
`--preset`; docs/presets.md's table is printed by `python -m utils.presets` (a test checks they agree).

Why the demo differs from the paper: on 2 CPU cores a ResNet34 on 30 s at 500 Hz learns far less in
ten minutes than a ResNet10 on the last 10 s at 100 Hz, and the 23 study runs must each take seconds.
"""
from __future__ import annotations

import argparse
from typing import Callable, Sequence

from utils.errors import PipelineError
from utils.labels import PTBXL_TASKS
from utils.cli import flag_error, flag_given
from utils.settings import check_defaults, parsed_defaults

__all__ = ["PRESETS", "STAGES", "PROTOCOLS", "PTBXL_PROTOCOL", "BENCHMARK_PROTOCOL", "BENCHMARK_TASKS",
           "BENCHMARK_MODELS", "preset_defaults", "parse_with_preset", "preset_table"]

STAGES = ("train", "study", "evaluate", "shap", "baselines", "benchmark", "transfer")

# The PTB-XL benchmark's protocol (Strodthoff et al., IEEE JBHI 2021; its fastai v1 defaults): 10-s records
# at 100 Hz, random 2.5-s training crops, one global standardisation from the training records, AdamW
# (beta2 0.99, weight decay 0.01) with a one-cycle schedule to lr 0.01, batch 128 (the last incomplete batch
# dropped, as fastai's training loader does), 50 epochs, the last epoch kept, no augmentation, fp32 (bf16
# autocast only with --amp). Architectures that train otherwise under it say so in their registry entry, under
# the protocol's name (the LSTMs: `protocol={"ptbxl": {"lr": 0.001, "clip_grad": 0.25}}`).
PTBXL_PROTOCOL = {"seconds": 10.0, "sample_rate": 100, "crop_seconds": 2.5, "standardize": True, "no_augment": True,
                  "optimizer": "adamw", "beta2": 0.99, "weight_decay": 0.01, "schedule": "onecycle", "lr": 0.01,
                  "batch_size": 128, "epochs": 50, "keep": "last", "drop_last": True, "no_amp": True}
# Training protocols by name: a preset's stage follows one with `"protocol": name` (its settings, then the
# stage's own, then each architecture's under that name, then the flags given).
# finetune: the benchmark's finetuning schedule over its protocol (main.py --init-from): one cycle of 30 epochs
# on the head (body frozen, batch norms training), then 30 with layer-group rates lr/1000 ... lr/10.
FINETUNE_PROTOCOL = {**PTBXL_PROTOCOL, "epochs": 60, "freeze_epochs": 30, "discriminative_lrs": True}
PROTOCOLS = {"ptbxl": PTBXL_PROTOCOL, "finetune": FINETUNE_PROTOCOL}
BENCHMARK_PROTOCOL = "ptbxl"  # benchmark.py's, unless its preset stage names another
BENCHMARK_TASKS = ",".join(PTBXL_TASKS)
BENCHMARK_MODELS = "inception1d,xresnet1d101,xresnet1d50,resnet1d_wang,fcn_wang,lstm,lstm_bidir"

PRESETS: dict[str, dict[str, dict]] = {
    "demo": {
        # the paper's blocks, one per stage, at half its channels (32-256): a third of the compute of the full
        # width, and on the demo's data a better model in 8 epochs than the full width in 6
        "train": {"arch": "resnet10", "arch_arg": ["width=32"], "seconds": 10.0, "sample_rate": 100, "epochs": 8,
                  "lr": 3e-3, "num_workers": 0},
        # 23 runs of seconds each: a quarter of the channels (16-128), 6 epochs (at 2 epochs of the full width
        # the 12-lead model barely learnt: mean AUC 0.59 against 0.81)
        # Two runs side by side, a thread each: these small convolutions use a second thread poorly (lead
        # study 19 s against 21-23 s, cross-validation 18 s against 22 s on 2 cores; the benchmark's four
        # runs and the transfer study's gain less than two workers' start-up)
        "study": {"arch": "resnet10", "arch_arg": ["width=16"], "seconds": 5.0, "sample_rate": 100, "epochs": 6,
                  "lr": 3e-3, "limit": 300, "num_workers": 0, "n_bootstrap": 200, "jobs": 2},
        "evaluate": {"num_workers": 0},
        "shap": {"n_explain": 40},
        # baselines.py --preset demo fits LR alone (its ten-fold --cv); with --classifier all (reproduce.sh's
        # single split) RF and LightGBM grow 50 trees, not the original's 300 and 100 rounds: on the demo's
        # data 16-18 s instead of 26-33 s for the stage, ranked alike by test AUC (RF 0.772 against 0.800,
        # LGB 0.813 against 0.820)
        "baselines": {"classifier": "LR", "trees": 50},
        # two tasks x two convolutional architectures of the benchmark on synthetic PTB-XL, in about 20 s (an
        # LSTM, whose step on a CPU is several times theirs, would double it)
        "benchmark": {"protocol": "ptbxl", "batch_size": 32, "epochs": 2, "tasks": "superdiagnostic,rhythm",
                      "models": "fcn_wang,resnet1d_wang", "num_workers": 0, "n_bootstrap": 100},
        # synthetic PTB-XL's fcn_wang -> the synthetic CPSC-like site: two fractions, one seed, the last 5 s
        # (3 windows to score, not 7): about 20 s of CPU
        "transfer": {"protocol": "finetune", "seconds": 5.0, "epochs": 2, "freeze_epochs": 1,
                     "batch_size": 32, "fractions": "0.125,0.03125", "seeds": "0", "num_workers": 0, "n_bootstrap": 100},
    },
    "paper": {
        "train": {"arch": "resnet34", "seconds": 30.0, "sample_rate": 500, "epochs": 40, "lr": 1e-4, "batch_size": 32,
                  "use_gpu": True},
        "study": {"arch": "resnet34", "seconds": 30.0, "sample_rate": 500, "epochs": 40, "lr": 1e-4, "batch_size": 32,
                  "use_gpu": True, "jobs": 3},  # three trainings share one GPU (a single one leaves it half idle)
        "evaluate": {"use_gpu": True},
        "shap": {"n_explain": 200, "background": 100, "use_gpu": True},
        "baselines": {"classifier": "all"},
    },
    # Finetuning a trained run (main.py --init-from) with the benchmark's schedule; the inputs (leads, rate,
    # window) are always the source's.
    "finetune": {
        "train": {"protocol": "finetune", "use_gpu": True},
        "transfer": {"protocol": "finetune", "n_bootstrap": 100, "use_gpu": True},
    },
    "ptbxl": {
        "train": {"protocol": "ptbxl", "arch": "xresnet1d101", "use_gpu": True},
        "evaluate": {"use_gpu": True, "n_bootstrap": 100},
        "shap": {"n_explain": 200, "background": 100, "use_gpu": True},
        "benchmark": {"protocol": "ptbxl", "tasks": BENCHMARK_TASKS, "models": BENCHMARK_MODELS, "n_bootstrap": 100,
                      "use_gpu": True},
    },
}


def preset_defaults(name: str, stage: str) -> dict:
    """The defaults a preset gives one stage ({} for a stage it leaves alone): its protocol's settings,
    then its own; the protocol's name under "protocol"."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    values = dict(PRESETS[name].get(stage, {}))
    return {**PROTOCOLS.get(values.get("protocol"), {}), **values}


def parse_with_preset(p: argparse.ArgumentParser, argv: Sequence[str] | None, stage: str,
                      refine: Callable[[argparse.Namespace], dict] | None = None) -> argparse.Namespace:
    """Parse `argv` with `--preset NAME` added: the preset's values for `stage` become defaults, explicit
    flags override them. Only keys the parser knows are applied (a stage's preset never sets a flag the
    command lacks), and only the presets that set something for `stage` are offered (one that would
    change nothing is an error, not a silent no-op); `args.protocol` is the name of the protocol followed
    (the preset stage's, else the parser's default, else None). `refine(args)` may add defaults that
    depend on those values (the settings an architecture needs under the protocol); explicit flags
    override those too. A value its flag would refuse is an argparse error naming the preset (or the
    refinement) and the flag."""
    p.add_argument("--preset", choices=sorted(n for n in PRESETS if PRESETS[n].get(stage)), default=None,
                   help="named settings (see docs/presets.md); explicit flags override them")
    if p.get_default("protocol") is None:
        p.set_defaults(protocol=None)
    known, _ = p.parse_known_args(argv)
    if known.preset:
        dests = {a.dest for a in p._actions} | {"protocol"}
        values = {k: v for k, v in preset_defaults(known.preset, stage).items() if k in dests}
        if "arch_arg" in values and flag_given(p, argv, "--arch") and known.arch != values.get("arch") \
                and not flag_given(p, argv, "--arch-arg"):
            del values["arch_arg"]  # the preset's builder arguments are its own architecture's, not --arch's
        try:  # argparse never checks a default: each value must be one its flag accepts
            check_defaults(p, values, f"preset {known.preset} ({stage})")
        except PipelineError as e:
            flag_error(p, "--preset", str(e))
        p.set_defaults(**parsed_defaults(p, values, argv))
    if refine is not None:
        known, _ = p.parse_known_args(argv)
        values = refine(known)
        check_defaults(p, values, f"the settings of --arch {known.arch} under protocol {known.protocol}", strict=True)
        p.set_defaults(**values)
    return p.parse_args(argv)


def _flags(settings: dict) -> str:
    def flag(key: str, value) -> str:
        name = "--" + key.replace("_", "-")
        if value is True:
            return f"`{name}`"
        if isinstance(value, list):  # a repeatable flag
            return " ".join(flag(key, v) for v in value)
        return f"`{name} {value:g}`" if isinstance(value, float) else f"`{name} {value}`"
    return " ".join(flag(k, v) for k, v in settings.items()) or "-"


def preset_table() -> str:
    """The presets as a markdown table, one row per stage, the flags each preset sets (docs/presets.md shows it);
    a stage following a protocol shows its name and only its other flags."""
    def cell(settings: dict) -> str:
        name = settings.get("protocol")
        if name is None:
            return _flags(settings)
        own = {k: v for k, v in settings.items() if k != "protocol" and PROTOCOLS[name].get(k) != v}
        return f"protocol {name} " + _flags(own)

    rows = ["| stage | " + " | ".join(PRESETS) + " |", "| --- |" + " --- |" * len(PRESETS)]
    rows += [f"| {stage} | " + " | ".join(cell(PRESETS[name].get(stage, {})) if PRESETS[name].get(stage) else "-"
                                          for name in PRESETS) + " |" for stage in STAGES]
    return "\n".join(rows) + "\n\n" + "\n\n".join(f"protocol {name}: " + _flags(settings)
                                                 for name, settings in PROTOCOLS.items()) + "\n"


if __name__ == "__main__":
    print(preset_table(), end="")
