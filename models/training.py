"""One training run as a function of its configuration: `train(cfg)`.

main.py builds a RunConfig from its command line and calls `train`; the studies (cross_validate.py,
lead_study.py) call `train(dataclasses.replace(cfg, leads=…, test_fold=…))`. A run writes only into its
own folder (models.run.Run), whose file names are fixed. The checkpoint stores the configuration
as a plain dict (key `config`, with a format version), the label set, and the record ids of the split,
so every later stage rebuilds the run from the checkpoint alone.

Folds are split 8/1/1 into train/validation/test by a permutation seeded with `seed` (or the database's
own fixed split, e.g. PTB-XL's, or with `test_fold` k for cross-validation: test fold k, validation fold
k % 10 + 1). The checkpoint kept is the one with the best validation mean F1 at a fixed 0.5 threshold
(thresholds are tuned later, on the same validation fold, by evaluation). Every epoch reseeds dropout,
shuffling and augmentation from (seed, epoch), which makes `resume` end exactly where an uninterrupted
run would.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from models.checkpoint import (CHECKPOINT_FORMAT, build_network, load_checkpoint, peek_checkpoint, read_checkpoint,
                               run_id_mismatch, save_checkpoint)
from models.inputs import (INPUT_SECONDS, ECGDataset, InputSpec, augment, batch_parts, checkpoint_splits,
                           fit_standardization, make_loader, pick_device, random_crop, score, split_provenance)
from models.registry import (builder_argument, builder_arguments, check_network, create_model, list_models,
                             model_entry, normalises_single_values, protocol_settings)
from models.transfer import HEAD, finetune_network, input_mismatch, phase, phase_param_groups, source_argument, source_info
from models.run import Run, run_name
from utils.results import database_identity
from utils.cache import (SignalCache, cache_rate, data_label_set, data_split_rule, database_name, load_labels,
                         preprocess_manifest)
from utils.errors import PipelineError
from utils.folds import nested_subset, refuse_empty_parts, split_labels
from utils.cli import (MAX_WORKERS, bounded_float, bounded_int, describe_flag, flag_error, flag_given, folder_path,
                       seed_int, usable_cpus)
from utils.files import check_writable, write_csv
from utils.locks import exclusive_lock
from utils.labels import LEADS
from utils.metrics import auc_scores, f1_scores
from utils.records import SAMPLE_RATE
from utils.defaults import DEFAULT_DATA_DIR
from utils.presets import PROTOCOLS
from utils.settings import Settings, setting


def arch_arg_pairs(given: Mapping | Iterable) -> tuple[tuple[str, object], ...]:
    """A builder's arguments as sorted (key, value) pairs (hashable, one order), from a checkpoint's dict,
    the parsed `--arch-arg` pairs or a preset's "KEY=VALUE" texts."""
    items = given.items() if isinstance(given, Mapping) else given
    return tuple(sorted(dict(builder_argument(i) if isinstance(i, str) else i for i in items).items()))


@dataclass(frozen=True)
class RunConfig(Settings):
    """Everything that defines one training run (and how to execute it), each setting declared once: its
    flag, bounds, help and whether it is part of the run's identity (utils.settings). Built once from
    the command line, stored in the checkpoint as a plain dict and rebuilt from it with `from_dict`.

    The identity is what makes two runs different runs: a checkpoint is resumed or reused only when
    it agrees. The data are known by the preprocess manifest's fingerprint (the record files' paths,
    sizes and modification times and the preprocessing settings), not by their folder's name: a folder
    preprocessed again from other records holds other data, a copy of a preprocessed folder the same."""
    data_dir: str = setting(str(DEFAULT_DATA_DIR), "preprocess output folder", type=folder_path, read=str,
                            identity=False)
    arch: str = setting("resnet34", "a registered architecture (`python -m models` lists them)",
                        choices=list_models)  # read when the flags are built
    # the builder's keyword arguments: a variant of the architecture (in the checkpoint as a dict)
    arch_args: tuple[tuple[str, object], ...] = setting(
        (), "a keyword argument of the architecture's builder, e.g. kernel_size=7 (repeatable; `python -m models` "
            "lists them)", flag="--arch-arg", type=builder_argument, append=True, metavar="KEY=VALUE",
        read=arch_arg_pairs)
    leads: tuple[str, ...] = setting(LEADS, flag=None, dest="lead_names", read=tuple)  # each command's --leads
    seconds: float = setting(INPUT_SECONDS, "input length: the last N seconds",
                             type=bounded_float(0, 3600, above=True), read=float)
    sample_rate: int = setting(SAMPLE_RATE, "model input rate in Hz (resampled from the cache)",
                               type=bounded_int(1, 10_000), read=int)
    seed: int = setting(42, type=seed_int)
    # more epochs extend a run (resumed), except under a one-cycle schedule (see `changed`)
    epochs: int = setting(40, type=bounded_int(1, 10_000), identity=False)
    lr: float = setting(1e-4, "learning rate", type=bounded_float(0, 10, above=True))
    batch_size: int = setting(32, "per process", type=bounded_int(1, 65_536))
    limit: int | None = setting(None, "use a seeded random subset of N records", type=bounded_int(1, 10_000_000))
    test_fold: int | None = setting(None, flag=None)       # main.py's --test-fold; the studies set it per run
    deterministic: bool = setting(False, "bit-identical results across processes: one CPU thread and "
                                         "deterministic kernels (cuDNN deterministic on GPU); 1.4-1.8x the time "
                                         "per step on a 2-core CPU")
    label_set: str | None = setting(None, flag=None)       # filled from the preprocess manifest when the run starts
    data_fingerprint: str | None = setting(None, flag=None)  # the preprocess manifest's, filled when the run starts
    processes: int = setting(1, flag=None)                 # DDP processes: the batch per step is processes x batch_size
    # the training protocol: the paper's (defaults) or the PTB-XL benchmark's (preset ptbxl)
    crop_seconds: float | None = setting(None, "train on random crops of N seconds of the input; score the maximum "
                                               "over windows of N seconds every N/2 (the PTB-XL benchmark: 2.5)",
                                         type=bounded_float(0, 3600, above=True))
    standardize: bool = setting(False, "divide inputs by one global mean and std fitted on the training records")
    augment: bool = setting(True, "no amplitude scaling or baseline shift", flag="--no-augment")
    optimizer: str = setting("adam", "adam (the paper) or adamw (decoupled --weight-decay)", choices=("adam", "adamw"))
    weight_decay: float = setting(0.0, type=bounded_float(0, 1))
    beta2: float = setting(0.999, "Adam's second-moment decay", type=bounded_float(0, 0.999999, above=True))
    schedule: str = setting("constant", "constant --lr, or one cycle up to --lr and down (cosine, 30%% warm-up)",
                            choices=("constant", "onecycle"))
    clip_grad: float | None = setting(None, "clip the gradient norm to N", type=bounded_float(0, 1e6, above=True))
    keep: str = setting("best", "model.pth: the epoch of best validation F1 at 0.5, or the last epoch",
                        choices=("best", "last"))
    # finetuning (models.transfer): the source's weights, a new output layer, a frozen-body phase first
    source: str | None = setting(None, flag=None, dest="source_identity")  # the source model's run id and file hash,
    # filled when the run starts
    restandardize: bool = setting(False, "with --init-from: refit the standardisation on this run's training records "
                                         "(default: keep the source's)")
    freeze_epochs: int = setting(0, "with --init-from: the first N epochs train the head alone, the body frozen but "
                                    "its batch norms training (--preset finetune: 30)", type=bounded_int(0, 10_000))
    discriminative_lrs: bool = setting(False, "with --init-from: after the frozen epochs, layer group g of n peaks at "
                                              "a rate from lr/1000 to lr/10 (the architecture's layer groups)")
    train_fraction: float = setting(1.0, "train on this fraction of the training records: a stratified subset, seeded "
                                         "by --seed, each smaller one inside every larger one (validation and test "
                                         "stay whole)", type=bounded_float(0, 1, above=True))
    init_from: str | None = setting(None, "finetune: start from this run's weights (its folder or model.pth; an "
                                          "imported one too) with a new output layer; its inputs (leads, rate, "
                                          "window) are this run's", type=source_argument, metavar="RUN",
                                    identity=False)  # the source is known by `source`: its id and hash
    drop_last: bool = setting(False, "drop the last incomplete training batch: an epoch of N records is "
                                     "floor(N / batch) steps (the PTB-XL benchmark's fastai loader)")
    whole_records: bool = setting(False, "with --crop-seconds: crop and score windows over each whole record (any "
                                         "length) instead of its last --seconds (the PTB-XL benchmark's ICBEB2018 "
                                         "experiment; benchmark.py's default for cpsc9)")
    precision: str | None = setting(None, flag=None)  # "fp32" | "bf16" (autocast): resolved when the run starts
    # how to execute it (not part of what makes two runs different)
    run_dir: str | None = setting(None, flag=None, dest="run", read=str, identity=False)  # main.py's --run;
    # default data/<db>/runs/<run name>/
    num_workers: int = setting(min(4, usable_cpus()), "data-loading processes (default 4, or the CPUs this "
                               "process may use when fewer)", type=bounded_int(0, MAX_WORKERS), identity=False)
    use_gpu: bool = setting(False, identity=False)
    amp: bool = setting(True, "GPU: train and score in fp32 instead of bf16 autocast (the ptbxl preset's default)",
                        flag="--no-amp", identity=False)  # --amp (below) turns it on over a preset's --no-amp
    compile: bool = setting(True, "GPU: do not torch.compile the training step (CPU never compiles)",
                            flag="--no-compile", identity=False)
    resume: bool = setting(False, flag=None, identity=False)  # the command's --resume
    force: bool = setting(False, flag=None, identity=False)   # the command's --force

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """The declared settings' flags, and --amp: bf16 autocast where a preset says --no-amp."""
        super().add_arguments(p)
        p.add_argument("--amp", dest="force_amp", action="store_true",
                       help="GPU: train and score under bf16 autocast, even where the preset says --no-amp")
        return p

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides) -> "RunConfig":
        cfg = super().from_args(args, **overrides)
        return dataclasses.replace(cfg, amp=True) if getattr(args, "force_amp", False) else cfg

    @property
    def spec(self) -> InputSpec:
        return InputSpec(tuple(self.leads), float(self.seconds), int(self.sample_rate),
                         None if self.crop_seconds is None else float(self.crop_seconds), bool(self.whole_records))

    def run_name(self, prefix: str = "") -> str:
        return run_name(self.arch, self.leads, self.seed, self.test_fold, prefix)

    @property
    def run(self) -> Run:
        """The run folder: --run, or data/<db>/runs/<run name>/."""
        return Run.at(self.run_dir) if self.run_dir is not None else Run(Path(self.data_dir) / "runs" / self.run_name())

    def to_dict(self) -> dict:
        """Plain types only: loadable with torch.load(weights_only=True)."""
        d = dataclasses.asdict(self)
        d["leads"], d["arch_args"] = list(self.leads), dict(self.arch_args)
        return d

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "RunConfig":
        """The configuration a checkpoint was trained with (its data fingerprint from `data` for
        checkpoints written before the configuration held it)."""
        cfg = cls.from_dict(ckpt["config"])
        if cfg.data_fingerprint is None:
            cfg = dataclasses.replace(cfg, data_fingerprint=(ckpt.get("data") or {}).get("fingerprint"))
        if cfg.precision is None:  # written before the precision was recorded: what amp and the device gave
            cfg = dataclasses.replace(cfg, precision="bf16" if cfg.amp and cfg.use_gpu else "fp32")
        return cfg

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**{**d, "leads": tuple(d.get("leads", LEADS)), "arch_args": arch_arg_pairs(d.get("arch_args", {}))})

    def changed(self, other: "RunConfig") -> list[str]:
        """The identity settings in which `other` differs from this run, as 'key: mine -> other'."""
        mine, theirs = self.to_dict(), other.to_dict()
        names = {"data_fingerprint": "data"}  # 'data: 3f2a… -> 9c1b…': the folder holds other records now
        # a one-cycle schedule spans the planned epochs: more epochs are another schedule, not an extension
        keys = self.identity() + (("epochs",) if "onecycle" in (self.schedule, other.schedule) else ())
        return [f"{names.get(k, k)}: {mine.get(k)} -> {theirs.get(k)}" for k in keys
                if str(mine.get(k)) != str(theirs.get(k))]


# what names the experiment rather than how an architecture trains: never an architecture's to set
EXPERIMENT_SETTINGS = ("arch", "arch_arg", "data_dir", "seed", "limit", "train_fraction", "init_from", "use_gpu",
                       "num_workers", "deterministic")


def architecture_settings(arch: str, protocol: str | None) -> dict:
    """The training settings `arch`'s registry entry asks for under `protocol`, checked like the flags
    they stand for (a PipelineError naming the architecture and the setting otherwise); a setting that
    names the experiment (data, run, seed, leads...) is refused."""
    values = protocol_settings(arch, protocol)
    where = f"architecture {arch} (its registry entry, protocol {protocol})"
    named = [key for key in values if key in EXPERIMENT_SETTINGS]
    if named:
        raise PipelineError(f"{where}: {', '.join(map(repr, named))} names the experiment, not how the "
                            f"architecture trains (a protocol entry sets e.g. lr, clip_grad, batch_size)")
    RunConfig.check_values(values, where, not_settable=EXPERIMENT_SETTINGS)
    settings = {**PROTOCOLS.get(protocol, {}), **values}
    finetuning = [key for key in FINETUNE_SETTINGS if values.get(key)]
    if finetuning and not any(PROTOCOLS.get(protocol, {}).get(key) for key in FINETUNE_SETTINGS):
        raise PipelineError(f"{where}: {', '.join(map(repr, finetuning))} finetunes a trained run, and protocol "
                            f"{protocol} trains from scratch (set it under protocol finetune)")
    if "epochs" in settings and settings.get("freeze_epochs", 0) > settings["epochs"]:
        raise PipelineError(f"{where}: freeze_epochs {settings['freeze_epochs']} is above its epochs "
                            f"{settings['epochs']}")
    problem = _entry_input_problem(arch, settings) if protocol else None
    if problem:  # the flags' cross-checks, for values no flag gave (a command would blame its --preset)
        raise PipelineError(f"{where}: {problem}")
    return values


class InputProblem(NamedTuple):
    """The first thing that makes an input and batch unusable (`input_problem`). `kind`: "input", its
    `samples` fewer than `arch` needs (`need`); "window", its crops' samples fewer; "crop", crops longer
    than the input; "batch", batches of one record where `arch` batch-normalises pooled features."""
    kind: str
    samples: int
    arch: str
    need: int


def input_problem(archs: Sequence[str], spec: InputSpec, batch_size: int) -> InputProblem | None:
    """What no flag alone shows: the input (or its crops) shorter than the most demanding of `archs` needs
    (its registry entry's min_samples), crops longer than the input, or batches of one record where an
    architecture normalises single values. The one test behind `check_run_args` (which blames a flag) and
    `architecture_settings` (which names a registry entry); None when the input is usable."""
    need, arch = max([(model_entry(a).min_samples, a) for a in archs] or [(1, "")])  # none: at least a sample
    need = max(need, 1)
    if spec.n_samples < need:
        return InputProblem("input", spec.n_samples, arch, need)
    if spec.window_samples is not None and spec.window_samples < need:
        return InputProblem("window", spec.window_samples, arch, need)
    if spec.window_samples is not None and spec.window_samples > spec.n_samples and not spec.whole:
        return InputProblem("crop", spec.window_samples, arch, need)
    if batch_size == 1:
        for one in archs:
            if single_record_batches_fail(one, spec):
                return InputProblem("batch", 1, one, need)
    return None


def _entry_input_problem(arch: str, values: Mapping) -> str | None:
    """`input_problem` for the input and batch that a protocol and an architecture's entry give together,
    said in the settings' names."""
    defaults = RunConfig()
    seconds, rate = float(values.get("seconds", defaults.seconds)), int(values.get("sample_rate", defaults.sample_rate))
    crop = values.get("crop_seconds", defaults.crop_seconds)
    problem = input_problem([arch], InputSpec(LEADS, seconds, rate, None if crop is None else float(crop)),
                            int(values.get("batch_size", defaults.batch_size)))
    if problem is None:
        return None
    if problem.kind in ("input", "window"):
        return (f"seconds {seconds:g}{'' if crop is None else f', crop_seconds {float(crop):g}'} at {rate} Hz give "
                f"{problem.samples} samples; {arch} needs at least {problem.need} (its min_samples)")
    if problem.kind == "crop":
        return f"crop_seconds {float(crop):g} is longer than the input (seconds {seconds:g})"
    return f"batch_size 1: {arch} batch-normalises pooled features while training, undefined for one record"


def check_run_args(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None = None) -> None:
    """For a parser built with `RunConfig.add_arguments`, what argparse cannot see alone (exit 2, naming
    the flag given): an architecture's builder arguments (`--arch-arg`), and an input shorter than an
    architecture needs (its registry entry's min_samples: a preset's --seconds crossed by a
    --sample-rate, or the reverse) or crops longer than the input. A rate too low to see a QRS complex
    is a warning. With --models (the benchmark), every architecture is checked."""
    archs = [a for a in getattr(args, "models", None) or [args.arch] if a in list_models()]
    keys = [key for key, _ in args.arch_arg or []]
    twice = next((key for i, key in enumerate(keys) if key in keys[:i]), None)
    if twice is not None:
        flag_error(p, "--arch-arg", f"{twice} is given twice")
    for arch in archs:
        try:
            builder_arguments(arch, args.arch_arg or [], build=True)
        except ValueError as e:
            flag_error(p, "--arch-arg", str(e))
    whole = bool(getattr(args, "whole_records", None))
    if whole and flag_given(p, argv, "--whole-records") and flag_given(p, argv, "--seconds"):
        flag_error(p, "--seconds", f"{args.seconds:g} is not read with --whole-records (each record is cropped and "
                                   "scored whole, whatever its length); leave one out")
    if whole and args.crop_seconds is None:
        flag_error(p, "--whole-records", "needs --crop-seconds (the network sees crops and windows of a record of "
                                         "any length)")
    spec = InputSpec(LEADS, args.seconds, args.sample_rate, args.crop_seconds, whole)
    problem = input_problem(archs, spec, args.batch_size)
    rate = describe_flag(p, args, argv, "--sample-rate")

    def blame(*flags: str) -> str:  # the first of `flags` given on the command line (a default is no one's)
        return next((f for f in flags if flag_given(p, argv, f)), flags[0])

    if problem is not None:
        needs = f"{problem.arch or args.arch} needs inputs of at least {problem.need} samples (its registry entry's " \
                "min_samples)"
        if problem.kind == "input":
            blamed = "--sample-rate" if flag_given(p, argv, "--sample-rate") and not flag_given(p, argv, "--seconds") \
                else "--seconds"
            flag_error(p, blamed, f"{describe_flag(p, args, argv, '--seconds')} with {rate} gives {problem.samples} "
                                  f"samples; {needs}")
        if problem.kind == "window":
            crop = describe_flag(p, args, argv, "--crop-seconds")
            flag_error(p, blame("--crop-seconds", "--sample-rate"),
                       f"{crop} at {rate} gives {problem.samples} samples; {needs}")
        if problem.kind == "crop":
            flag_error(p, blame("--crop-seconds", "--seconds"), f"{describe_flag(p, args, argv, '--crop-seconds')} "
                                                                f"is longer than the input "
                                                                f"({describe_flag(p, args, argv, '--seconds')})")
        flag_error(p, "--batch-size", f"1: {problem.arch} batch-normalises pooled features while training, which is "
                                      "undefined for one record; give 2 or more")
    try:
        warnings = spec.check()
    except ValueError as e:
        flag_error(p, blame("--crop-seconds", "--sample-rate"), str(e))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


FINETUNE_FLAGS = ("--restandardize", "--freeze-epochs", "--discriminative-lrs")
INPUT_FLAGS = {"leads": "--leads", "sample_rate": "--sample-rate", "crop_seconds": "--crop-seconds",
               "seconds": "--seconds"}


def check_finetune(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None = None) -> None:
    """For a parser built with `RunConfig.add_arguments`: with --init-from, the architecture, its builder
    arguments and the input settings are the source's (a flag given with another value exits 2 naming it),
    and so is the standardisation unless --restandardize; without it, the finetuning flags exit 2. Call it
    before `check_input_size`."""
    if args.init_from is None:
        refuse_finetune_flags(p, args, argv, "give --init-from RUN")
        return
    if args.freeze_epochs > args.epochs:
        flag_error(p, "--freeze-epochs", f"{describe_flag(p, args, argv, '--freeze-epochs')} is above "
                                         f"{describe_flag(p, args, argv, '--epochs')}")
    if not Path(args.init_from).exists():
        return  # refused when the run starts
    cfg = source_info(args.init_from)["config"]
    if flag_given(p, argv, "--arch") and args.arch != cfg["arch"]:
        flag_error(p, "--arch", f"{args.arch} differs from the source's {cfg['arch']} ({args.init_from})")
    args.arch = cfg["arch"]
    theirs = dict(cfg.get("arch_args") or {})  # the source's network, built as it was (a preset's are another's)
    if flag_given(p, argv, "--arch-arg") and dict(args.arch_arg or []) != theirs:
        flag_error(p, "--arch-arg", f"{dict(args.arch_arg or [])} differs from the source's builder arguments "
                                    f"{theirs} ({args.init_from})")
    args.arch_arg = list(theirs.items())
    given = {k: getattr(args, "leads" if k == "leads" else k) for k in INPUT_FLAGS}
    for key, flag in INPUT_FLAGS.items():
        if not flag_given(p, argv, flag):
            given[key] = list(cfg["leads"]) if key == "leads" else cfg.get(key)
    if not flag_given(p, argv, "--seconds") and cfg.get("crop_seconds") is not None:
        given["seconds"] = args.seconds  # with a window, the input may be longer or shorter than the source's
    mismatch = input_mismatch(cfg, given["leads"], given["sample_rate"], given["crop_seconds"], given["seconds"])
    if mismatch:
        flag_error(p, INPUT_FLAGS[mismatch[0]], f"{mismatch[1]} ({args.init_from})")
    args.leads, args.sample_rate, args.crop_seconds = given["leads"], int(given["sample_rate"]), given["crop_seconds"]
    args.seconds = float(given["seconds"])
    args.standardize = bool(cfg.get("standardize")) or args.restandardize


def source_arch(init_from: str | None) -> str | None:
    """The architecture of a --init-from source (None without one, or a missing one): its preset protocol
    applies."""
    return None if init_from is None or not Path(init_from).exists() else source_info(init_from)["config"]["arch"]


def refuse_finetune_flags(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None,
                          why: str) -> None:
    """Exit 2 naming a finetuning flag (or the preset that set it) when there is no source run: it would be
    recorded in the runs' settings and never act. `why`: what to do instead."""
    for flag in FINETUNE_FLAGS:
        if getattr(args, _dest(flag), None):
            given = flag_given(p, argv, flag)
            flag_error(p, flag if given else "--preset", f"{flag if given else args.preset} finetunes a trained "
                                                         f"run: {why}")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


FINETUNE_SETTINGS = tuple(_dest(flag) for flag in FINETUNE_FLAGS)  # their RunConfig fields


def single_record_batches_fail(arch: str, spec: InputSpec) -> bool:
    """Whether `arch` cannot train on batches of one record (see `normalises_single_values`); a network
    that fails otherwise is left to the run's own check. Cached per builder and input length: building and
    running a network takes up to a second, and one command may ask more than once (its parse, each
    benchmark row)."""
    try:
        builder = model_entry(arch).builder
    except ValueError:  # reported where the architecture is named
        return False
    n_samples = spec.window_samples or spec.n_samples
    try:
        return _cached_batch_check(arch, builder, n_samples)
    except TypeError:  # a builder that cannot be hashed (a callable instance): checked each time
        return _batch_check(arch, n_samples)


def _batch_check(arch: str, n_samples: int) -> bool:
    try:
        return normalises_single_values(create_model(arch, len(LEADS), 2), len(LEADS), n_samples)
    except Exception:  # noqa: BLE001 -- reported by check_network when the run starts
        return False


@functools.lru_cache(maxsize=64)
def _cached_batch_check(arch: str, builder, n_samples: int) -> bool:
    return _batch_check(arch, n_samples)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device):
    """Within the block, kernels whose result does not depend on scheduling or thread count.

    Without it, repeated CPU runs with one seed match inside one process but not always across
    processes: multi-threaded oneDNN kernels may reduce in another order from one process to the next.
    One thread removes that on CPU (disabling oneDNN would too, at ~6x the time); on GPU, cuDNN's
    deterministic algorithms and cuBLAS's fixed workspace do the same. The previous settings are
    restored afterwards, so a caller's other work keeps its threads."""
    if not enabled:
        yield
        return
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


PROGRESS_EVERY = 25  # steps between progress-bar updates: reading the loss forces a host synchronisation


@dataclass
class Step:
    """How one optimisation step is taken: the run's protocol, resolved once per run."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    crop: int | None = None           # samples per random training crop (None: the whole input)
    augment: bool = True
    clip_grad: float | None = None
    amp: bool = False


def make_step(cfg: "RunConfig", model: torch.nn.Module, steps_per_epoch: int, cuda: bool, epoch: int = 1) -> Step:
    """The optimiser and schedule of `cfg` for the phase of `epoch`: Adam at a constant rate (the paper),
    or AdamW with decoupled weight decay and a one-cycle schedule (the PTB-XL benchmark's fastai defaults:
    30 % warm-up from lr/25 to lr, cosine down to lr/25e4, Adam's beta1 cycled 0.95 -> 0.85 -> 0.95).
    A finetuned run has one optimiser and one cycle per phase (models.transfer), over that phase's
    epochs, each parameter group peaking at its own rate."""
    adam = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    groups: list = [{"params": list(model.parameters()), "lr": cfg.lr}]
    epochs = cfg.epochs
    if cfg.init_from is not None or cfg.source is not None:
        which = phase(cfg.freeze_epochs, epoch)
        groups = phase_param_groups(model.net, cfg.arch, cfg.lr, which, cfg.discriminative_lrs)
        epochs = cfg.freeze_epochs if which == HEAD else cfg.epochs - cfg.freeze_epochs
    epochs = max(epochs, 1)  # a phase with no epoch left (a finished run resumed) still builds its schedule
    optimizer = adam(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay,
                     fused=cuda or None)  # fused: one kernel for all parameters on a GPU
    scheduler = None
    if cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=epochs * max(steps_per_epoch, 1), pct_start=0.3,
            anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95)
    return Step(optimizer, scheduler, cfg.spec.window_samples, cfg.augment, cfg.clip_grad)


class DivergedError(PipelineError):
    """The loss became NaN or infinite: the weights are garbage from here on."""


def train_one_epoch(model, loader, step: Step, device, aug_gen: torch.Generator, desc: str) -> float:
    """One pass over the training records; the loss is summed on the device and read back only every
    PROGRESS_EVERY steps and at the end, so a GPU is never stalled waiting for the host. A non-finite loss
    stops training at the next read (DivergedError): nothing of that epoch is saved."""
    model.train()
    total = torch.zeros((), device=device, dtype=torch.float64)
    finite = torch.ones((), device=device, dtype=torch.bool)
    count = 0
    bar = tqdm(loader, desc=desc, leave=False)
    for i, batch in enumerate(bar, 1):
        x, y, lengths = batch_parts(batch)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if step.crop is not None:
            x = random_crop(x, step.crop, aug_gen, lengths)
        if step.augment:
            x = augment(x, aug_gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=step.amp):
            logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        step.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), step.clip_grad)
        step.optimizer.step()
        if step.scheduler is not None:
            step.scheduler.step()
        finite &= torch.isfinite(loss)
        total += loss.detach().double() * len(x)
        count += len(x)
        if i % PROGRESS_EVERY == 0 or i == len(loader):
            if not bool(finite):
                raise DivergedError(f"training diverged: the loss is not finite at step {i} of {desc} "
                                    f"(lower --lr, or clip gradients with --clip-grad); no checkpoint of this epoch "
                                    f"was saved")
            bar.set_postfix(loss=f"{float(total) / count:.4f}")
    return float(total) / max(count, 1)


def validate(model, loader, device, amp: bool) -> dict:
    """Loss, F1 at 0.5 and mean AUC on the validation records; outputs that are not finite are a
    DivergedError (the epoch is not kept), not an F1 of 0 computed from NaN."""
    probs, y, loss = score(model, loader, device, amp)
    if not np.isfinite(probs).all():
        raise DivergedError(f"the model's outputs on {int((~np.isfinite(probs)).any(axis=1).sum())} of {len(probs)} "
                            "validation records are not finite (NaN or inf) after this epoch; no checkpoint of it was "
                            "saved (lower --lr, or check the architecture's forward)")
    return {"val_loss": loss, "val_f1": float(f1_scores(y, probs > 0.5).mean()),
            "val_auc": mean_defined(auc_scores(y, probs)) if len(y) else float("nan")}


def mean_defined(values: np.ndarray) -> float:
    """The mean of the values that are defined (a class whose AUC is), NaN without any (a validation fold
    of one record), without numpy's warning about an empty mean."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def shard_sampler(train_ds, world: int, rank: int, seed: int):
    """Under DDP, this rank's share of the training records (None for one process): the ranks' shares
    are disjoint and together cover the split, except that the last few records may be repeated to give
    every rank the same count (at most world - 1 repeats)."""
    if world == 1:
        return None
    return torch.utils.data.distributed.DistributedSampler(train_ds, world, rank, shuffle=True, seed=seed)


def compile_enabled(cfg: "RunConfig", device: torch.device) -> bool:
    """torch.compile for training: on by default on CUDA (`--no-compile` turns it off), never on CPU, where
    it was measured to give no gain after about 70 s of compiling on the 2-core project machines."""
    return device.type == "cuda" and cfg.compile


def param_checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def run_state(cfg: RunConfig) -> tuple[str, str]:
    """What the run folder holds for `cfg` (label set and data fingerprint resolved): ("new", ""),
    ("current", why) when it finished exactly cfg.epochs epochs with exactly these settings on exactly these
    data, ("unfinished", why) when it stopped early with them, or ("other", why) when it holds a run of other
    settings or other data, one trained for more epochs (not a run of fewer: its kept checkpoint may be a
    later epoch's), model.pth and last.pth of two different runs, or an unreadable one."""
    run = cfg.run
    if not run.last.exists():
        return ("other", f"{run.model} exists without {run.last}") if run.model.exists() else ("new", "")
    try:
        saved = peek_checkpoint(run.last)
        mixed = run_id_mismatch(run)
    except PipelineError as e:
        return "other", str(e)
    if mixed:
        return "other", mixed
    changed = RunConfig.from_checkpoint(saved).changed(cfg)
    if changed:
        return "other", f"{run} holds a run with other settings ({'; '.join(changed)})"
    if saved["epoch"] > cfg.epochs:  # its model.pth may be a later epoch's: not a run of cfg.epochs
        return "other", (f"{run} holds a run trained for {saved['epoch']} epochs with these settings, more than the "
                         f"{cfg.epochs} asked for (its best checkpoint may come from a later epoch); ask for "
                         f"--epochs {saved['epoch']}")
    if saved["epoch"] == cfg.epochs:
        return "current", f"{run} finished {saved['epoch']} epoch(s) with these settings"
    return "unfinished", f"{run} stopped after epoch {saved['epoch']} of {cfg.epochs}"


def equal_finished_run(cfg: RunConfig, folder: Path) -> bool:
    """Whether `folder` holds a finished run that training `cfg` (resolved) would repeat: the same
    identity, exactly cfg.epochs epochs trained and asked for, and model.pth and last.pth of one run."""
    other = Run(Path(folder))
    if not (other.model.exists() and other.last.exists()):
        return False
    try:
        saved = peek_checkpoint(other.last)
        if run_id_mismatch(other) or saved.get("run_id") is None:
            return False
    except PipelineError:
        return False
    theirs = RunConfig.from_checkpoint(saved)
    return not theirs.changed(cfg) and theirs.epochs == cfg.epochs == saved["epoch"]


def resolve_identity(cfg: RunConfig) -> RunConfig:
    """`cfg` with what identifies its data and arithmetic filled in: the label set, the preprocess
    fingerprint and the precision it trains in (unless given: a SLURM job's, decided by its node's GPU, not
    the login node's); for a finetuned run, the source model's run id and file hash (its inputs checked to
    be the source's)."""
    cfg = resolve_label_set(cfg)
    if cfg.init_from is not None:
        source = source_info(cfg.init_from)
        mismatch = input_mismatch(source["config"], cfg.leads, cfg.sample_rate, cfg.crop_seconds, cfg.seconds)
        if mismatch:
            raise PipelineError(f"{mismatch[1]} ({source['path']}): finetuning keeps the source's inputs")
        if cfg.arch != source["config"]["arch"]:
            raise PipelineError(f"{cfg.arch} differs from the source's {source['config']['arch']} ({source['path']})")
        theirs = dict(source["config"].get("arch_args") or {})
        if cfg.arch_args and dict(cfg.arch_args) != theirs:
            raise PipelineError(f"builder arguments {dict(cfg.arch_args)} differ from the source's {theirs} "
                                f"({source['path']})")
        cfg = dataclasses.replace(cfg, source=f"{source['run_id']}:{source['sha']}", arch_args=theirs)
    return dataclasses.replace(cfg, data_fingerprint=preprocess_manifest(cfg.data_dir)["fingerprint"],
                               precision=cfg.precision or training_precision(cfg))


def training_precision(cfg: RunConfig) -> str:
    """"bf16" (autocast) on a GPU unless --no-amp, else "fp32": a run trained in bf16 is another run than
    one trained in fp32, and it is scored in the precision it was trained in."""
    return "bf16" if cfg.amp and cfg.use_gpu and torch.cuda.is_available() else "fp32"


def resolve_label_set(cfg: RunConfig) -> RunConfig:
    """`cfg` with the label set of its data filled in (an explicit, different one is an error)."""
    name = data_label_set(cfg.data_dir)["name"]
    if cfg.label_set not in (None, name):
        raise PipelineError(f"{cfg.data_dir} was preprocessed with label set {name!r}, not {cfg.label_set!r}")
    return dataclasses.replace(cfg, label_set=name)


def train(cfg: RunConfig, rank: int = 0, world: int = 1, device: torch.device | None = None) -> dict:
    """One training run (this process's share of it under DDP); returns the run, best F1 and history.

    The run folder decides what happens, so rerunning a command is always safe: a run that finished
    with these settings is kept (said in one line; `force` retrains it), one that stopped early with
    them resumes after its last epoch, one of other settings is refused unless `force`."""
    cfg = dataclasses.replace(resolve_identity(cfg), processes=world)  # torchrun's N processes: N x the batch
    state, why = run_state(cfg)
    if not cfg.force:
        if cfg.resume and state == "new":
            raise PipelineError(f"--resume: no checkpoint {cfg.run.last} to resume from")
        if state == "other":
            raise PipelineError(f"{why}; pass --force to overwrite it, or train into another folder (main.py's "
                                  f"--run, a study's --runs-dir, the benchmark's --tasks-dir)")
        if state == "current" and not cfg.resume:
            saved = read_checkpoint(cfg.run.model if cfg.run.model.exists() else cfg.run.last)
            if rank == 0:
                print(f"{why}: current, nothing to train (--force retrains it)")
            return {"run": cfg.run, "model_path": cfg.run.model, "best_f1": saved["best_f1"],
                    "history": saved["history"], "skipped": True}
        cfg = dataclasses.replace(cfg, resume=state in ("unfinished", "current"))
    else:
        cfg = dataclasses.replace(cfg, resume=False)
    device = device or pick_device(cfg.use_gpu)
    if rank != 0:
        with deterministic_mode(cfg.deterministic, device):
            return _train(cfg, rank, world, device)
    check_writable(cfg.run.folder, "pass --run DIR with a writable DIR")  # before any work, not after epoch 1
    with exclusive_lock(cfg.run.lock, f"run {cfg.run}"), deterministic_mode(cfg.deterministic, device):
        return _train(cfg, rank, world, device)


def run_splits(cfg: RunConfig, resume_ckpt: dict | None, cache: SignalCache, warn: bool = True
               ) -> dict[str, pd.DataFrame]:
    """The run's train/validation/test records: the resumed checkpoint's own, or the split rule's (with
    `train_fraction`, a nested stratified subset of its training records); an empty part is an error
    before any training (without test records the run could never be evaluated), inputs longer than every
    record a warning."""
    if resume_ckpt is not None:
        splits = checkpoint_splits(resume_ckpt, cfg.data_dir)
    else:
        splits = split_labels(load_labels(cfg.data_dir), cfg.seed, cfg.limit, cfg.test_fold,
                              data_split_rule(cfg.data_dir))
        if cfg.train_fraction < 1:
            splits["train"] = nested_subset(splits["train"], data_label_set(cfg.data_dir)["classes"],
                                            cfg.train_fraction, cfg.seed)
    refuse_empty_parts(splits, cfg.data_dir)
    longest = max(int(cache.length[cache.row[pid]]) for pid in splits["train"]["patient_id"]) / cache.sample_rate
    if warn and cfg.spec.seconds > longest and not cfg.whole_records:
        print(f"warning: --seconds {cfg.spec.seconds:g} is longer than every training record (longest {longest:.1f} "
              f"s): every input is zero-padded in front", file=sys.stderr)
    return splits


def new_network(cfg: RunConfig, train_ds: ECGDataset, num_classes: int, fit: bool = True,
                verbose: bool = True) -> torch.nn.Module:
    """The registered architecture in its input rules, with the standardisation fitted on the training
    records when the run asks for it (`fit`: a resumed run keeps the statistics in its weights)."""
    if cfg.init_from is not None and fit:
        source = source_info(cfg.init_from)
        model = finetune_network(build_network(source["config"], len(source["label_set"]["classes"])), source,
                                 num_classes)
        if verbose:
            print(f"finetuning {source['path']} ({source['config']['arch']}, {source['label_set']['name']}): a new "
                  f"output layer for {num_classes} classes"
                  f"{'; the standardisation refitted' if cfg.restandardize else ''}")
        if not cfg.restandardize:
            return model
    else:
        model = build_network(cfg.to_dict(), num_classes)
        check_network(cfg.arch, model.net, len(cfg.leads), num_classes,
                      cfg.spec.window_samples or cfg.spec.n_samples)
    if (cfg.standardize or cfg.restandardize) and fit:
        mean, std = fit_standardization(train_ds, num_workers=cfg.num_workers)
        model.mean.fill_(mean)
        model.std.fill_(std)
        if verbose:
            print(f"standardisation fitted on the {len(train_ds)} training records: mean {mean:.5f} mV, "
                  f"std {std:.5f} mV")
    return model


def save_epoch(run: Run, state: dict, step: Step, keep: bool, replace: bool = False) -> None:
    """last.pth (with the optimizer and schedule, for --resume) and, when `keep`, model.pth; refused when
    a weight is not finite, so a diverged epoch never becomes the run's model. `replace` (the first epoch
    of a --force run) removes the old run's files first: until then they stay, so a retraining that
    fails or is stopped before its first epoch leaves the old run as it was."""
    if not all(bool(torch.isfinite(t).all()) for t in state["model"].values() if t.is_floating_point()):
        raise DivergedError(f"training diverged at epoch {state['epoch']}: the weights are not finite (lower --lr); "
                            f"no checkpoint of this epoch was saved")
    if replace:
        run.clear()  # a retrained run keeps nothing of the old one
    if keep:
        save_checkpoint(run.model, state)
    save_checkpoint(run.last, {**state, "optimizer": step.optimizer.state_dict(),
                               **({"scheduler": step.scheduler.state_dict()} if step.scheduler else {})})
    write_csv(pd.DataFrame(state["history"]), run.log)


def wrap_for_training(model: torch.nn.Module, cfg: RunConfig, world: int, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: DDP over the parameters that train now, compiled on CUDA."""
    train_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if compile_enabled(cfg, device):  # the weights stay in `model`: checkpoints never hold compiled names
        train_model = torch.compile(train_model)
    return train_model


def finish_ddp(model: torch.nn.Module, world: int, is_main: bool) -> None:
    """Check that the ranks ended with the same weights, then close the process group. The caller frees
    the DDP wrapper first: left to interpreter exit, its Gloo threads aborted rank 0 with
    std::terminate in about 1 run in 30."""
    import torch.distributed as dist

    sums = [None] * world
    dist.all_gather_object(sums, param_checksum(model))
    if is_main:
        if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
            raise PipelineError(f"DDP ranks disagree on the weights: {sums}")
        print(f"DDP: {world} ranks agree (parameter checksum {sums[0]:.6f})")
    gc.collect()
    dist.destroy_process_group()


def _resume_checkpoint(cfg: RunConfig) -> dict | None:
    """The last.pth a --resume run continues (None without --resume), refused when its settings differ."""
    if not cfg.resume:
        return None
    _, ckpt = load_checkpoint(cfg.run.last)
    changed = RunConfig.from_checkpoint(ckpt).changed(cfg)
    if changed:
        raise PipelineError(f"cannot resume {cfg.run.last} with different settings ({'; '.join(changed)})")
    return ckpt


def _loaders(cfg: RunConfig, train_ds: ECGDataset, val_ds: ECGDataset, world: int, rank: int,
             device: torch.device, is_main: bool):
    """(sampler, training loader, validation loader): this rank's shard of the training records, and the
    validation records in larger batches (no gradients to hold)."""
    sampler = shard_sampler(train_ds, world, rank, cfg.seed)
    pin = device.type == "cuda"
    train_loader = make_loader(train_ds, cfg.batch_size, True, cfg.num_workers, cfg.seed, sampler, pin,
                               drop_last=cfg.drop_last)
    if cfg.drop_last and len(train_ds) < cfg.batch_size and is_main:
        print(f"warning: --drop-last with {len(train_ds)} training records, fewer than one batch of "
              f"{cfg.batch_size}: each epoch is that one incomplete batch", file=sys.stderr)
    val_loader = make_loader(val_ds, cfg.batch_size * (8 if pin else 2), False, cfg.num_workers, pin_memory=pin)
    return sampler, train_loader, val_loader


def _restore(ckpt: dict, cfg: RunConfig, model: torch.nn.Module, step: Step, start: int,
             is_main: bool) -> tuple[float, list, str | None]:
    """Put a resumed run back where it stopped (weights, and the optimiser and schedule unless a new phase
    begins, which gets a new optimiser); returns its best val F1, history and run id (None for a run
    begun before runs had ids)."""
    model.load_state_dict(ckpt["model"])
    if phase(cfg.freeze_epochs, ckpt["epoch"]) == phase(cfg.freeze_epochs, start):
        step.optimizer.load_state_dict(ckpt["optimizer"])
        if step.scheduler is not None:
            step.scheduler.load_state_dict(ckpt["scheduler"])
    best, history = ckpt["best_f1"], list(ckpt["history"])
    if is_main:
        left = (f"{cfg.epochs - ckpt['epoch']} epoch(s) left" if start <= cfg.epochs
                else "all epochs done, nothing to train")
        print(f"resuming {cfg.run.last} after epoch {ckpt['epoch']} (best val F1 {best:.4f}): {left}")
    return best, history, ckpt.get("run_id")


def _autotune(cfg: RunConfig, device: torch.device) -> None:
    """The same algorithm at the GPU's speed: fused Adam (one kernel for all parameters) and cuDNN's
    autotuner, except under --deterministic, where the autotuner's choice could differ between runs."""
    if device.type == "cuda" and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True


def _print_setup(cfg: RunConfig, label_set: dict, train_ds: ECGDataset, val_ds: ECGDataset, n_test: int,
                 steps: int, world: int, device: torch.device) -> None:
    """One line saying what trains on what."""
    spec = cfg.spec
    split = f" (test fold {cfg.test_fold})" if cfg.test_fold else ""
    length = (f"whole records at {spec.sample_rate} Hz" if spec.whole else
              f"{spec.n_samples} samples ({spec.seconds:g} s at {spec.sample_rate} Hz)")
    print(f"{cfg.arch} on {len(spec.leads)} lead(s) {','.join(spec.leads)}, {length}, "
          f"{len(label_set['classes'])} classes ({label_set['name']}); "
          f"train {len(train_ds)} val {len(val_ds)} test {n_test} records{split}; device {device}"
          f"{' (bf16 autocast)' if cfg.precision == 'bf16' else ''}{f', {world} processes' if world > 1 else ''}"
          f"{f'; {steps} steps per epoch' if cfg.drop_last else ''}")


def _seed_epoch(cfg: RunConfig, epoch: int, rank: int, train_loader, sampler) -> torch.Generator:
    """Seed dropout and shuffling from the run's seed and the epoch alone (a resumed run draws what an
    uninterrupted one would); returns this rank's augmentation generator."""
    torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout
    train_loader.generator.manual_seed(cfg.seed * 1000 + epoch)  # shuffling
    if sampler is not None:
        sampler.set_epoch(epoch)
    return torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 7919 * rank)


def _print_phase(cfg: RunConfig, step: Step, epoch: int) -> None:
    """A fine-tuned run's parameter groups at the start of each phase."""
    print(f"phase {phase(cfg.freeze_epochs, epoch)}: " + "; ".join(
        f"{g['name']} {sum(p.numel() for p in g['params']):,} parameters at lr {g.get('max_lr', g['lr']):.3g}"
        for g in step.optimizer.param_groups))


def _run_provenance(cfg: RunConfig, manifest: dict, label_set: dict, run_id: str | None, splits: dict) -> dict:
    """What every checkpoint of the run holds alike: its settings, labels, data and split."""
    data = {"dir": str(cfg.data_dir), "name": database_name(cfg.data_dir), "fingerprint": manifest.get("fingerprint"),
            "identity": database_identity(cfg.data_dir), "cache_rate": cache_rate(cfg.data_dir)}
    return {"config": cfg.to_dict(), "label_set": label_set, "data": data, "run_id": run_id,
            **split_provenance(splits, label_set["classes"])}


def _keep_epoch(cfg: RunConfig, model: torch.nn.Module, step: Step, history: list, best: float, improved: bool,
                fixed: dict) -> None:
    """Save the epoch that ends `history` (last.pth, model.pth when kept, the log; frozen.pth at the end
    of a frozen phase) and print its line; `fixed` is what every checkpoint of the run holds alike."""
    row, run = history[-1], cfg.run
    epoch = row["epoch"]
    state = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "epoch": epoch, "best_f1": best,
             "history": history, **fixed}
    save_epoch(run, state, step, keep=improved or cfg.keep == "last", replace=cfg.force and len(history) == 1)
    if cfg.freeze_epochs and epoch == cfg.freeze_epochs and (cfg.init_from or cfg.source):
        save_checkpoint(run.frozen, state)  # the end of the frozen phase, to compare with the source
    print(f"epoch {epoch:3d}/{cfg.epochs}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
          f"val F1 {row['val_f1']:.4f}  val AUC {row['val_auc']:.4f}  {row['seconds']:.1f}s"
          f"{'  * best' if improved and cfg.keep == 'best' else ''}", flush=True)


def _train(cfg: RunConfig, rank: int, world: int, device: torch.device) -> dict:
    import torch.distributed as dist

    is_main = rank == 0
    amp = cfg.precision == "bf16"
    run = cfg.run
    seed_everything(cfg.seed)
    cache = SignalCache(cfg.data_dir)
    manifest = preprocess_manifest(cfg.data_dir)
    label_set = data_label_set(cfg.data_dir)
    classes = label_set["classes"]
    resume_ckpt = _resume_checkpoint(cfg)  # a resumed run keeps the records it started with
    splits = run_splits(cfg, resume_ckpt, cache, warn=is_main)
    train_ds, val_ds = (ECGDataset(cache, splits[part], cfg.spec, classes) for part in ("train", "val"))
    sampler, train_loader, val_loader = _loaders(cfg, train_ds, val_ds, world, rank, device, is_main)

    model = new_network(cfg, train_ds, len(classes), fit=resume_ckpt is None, verbose=is_main).to(device)
    cuda = device.type == "cuda"
    _autotune(cfg, device)
    start = 1 if resume_ckpt is None else resume_ckpt["epoch"] + 1
    step = make_step(cfg, model, len(train_loader), cuda, start)
    step.amp = amp
    best, history, run_id = -1.0, [], uuid.uuid4().hex
    if resume_ckpt is not None:
        best, history, run_id = _restore(resume_ckpt, cfg, model, step, start, is_main)
    train_model = wrap_for_training(model, cfg, world, device)
    if is_main:
        _print_setup(cfg, label_set, train_ds, val_ds, len(splits["test"]), len(train_loader), world, device)
    fixed = _run_provenance(cfg, manifest, label_set, run_id, splits)

    for epoch in range(start, cfg.epochs + 1):
        t0 = time.time()
        aug_gen = _seed_epoch(cfg, epoch, rank, train_loader, sampler)
        if epoch > start and phase(cfg.freeze_epochs, epoch) != phase(cfg.freeze_epochs, epoch - 1):
            step = make_step(cfg, model, len(train_loader), cuda, epoch)  # the body thaws: other parameters train
            step.amp = amp
            del train_model  # DDP syncs only the parameters that trained when it was built
            train_model = wrap_for_training(model, cfg, world, device)
        if is_main and epoch in (start, cfg.freeze_epochs + 1) and (cfg.init_from or cfg.source):
            _print_phase(cfg, step, epoch)
        train_loss = train_one_epoch(train_model, train_loader, step, device, aug_gen, f"epoch {epoch}/{cfg.epochs}")
        if is_main:
            history.append({"epoch": epoch, "train_loss": train_loss, **validate(model, val_loader, device, amp),
                            "seconds": time.time() - t0})
            improved = history[-1]["val_f1"] > best
            best = max(best, history[-1]["val_f1"])
            _keep_epoch(cfg, model, step, history, best, improved, fixed)
        if world > 1:
            dist.barrier()

    if world > 1:
        del train_model  # its reducer holds the process group (see finish_ddp)
        finish_ddp(model, world, is_main)
    if is_main:
        kept = f"best val F1 {best:.4f}" if cfg.keep == "best" else f"last epoch kept (best val F1 {best:.4f})"
        print(f"{kept}; checkpoint {run.model}; log {run.log}")
    return {"run": run, "model_path": run.model, "best_f1": best, "history": history}
