"""Each training setting is declared once (utils/settings.py, models/training.py's RunConfig): its flag,
its place in the run's identity, and the check of preset and registry values all come from the field."""
from __future__ import annotations

import argparse
import contextlib
import io
from dataclasses import dataclass

import pytest
from torch import nn

import benchmark
import main
import predict
from models.checkpoint import load_checkpoint
from models.registry import register_model
from models.training import RunConfig, architecture_settings
from utils.errors import PipelineError
from utils.cli import bounded_int
from utils.presets import PRESETS, PROTOCOLS, parse_with_preset
from utils.settings import setting

# The flags and the identity as they were before the settings were declared as fields (and the builder's
# arguments added, absent from older checkpoints): every command line that worked then works now, and a
# run trained then keeps its identity.
FLAGS_BEFORE = {"--data-dir", "--arch", "--arch-arg", "--seed", "--epochs", "--lr", "--batch-size", "--num-workers", "--seconds",
                "--sample-rate", "--limit", "--use-gpu", "--no-amp", "--no-compile", "--crop-seconds", "--standardize",
                "--no-augment", "--optimizer", "--weight-decay", "--beta2", "--schedule", "--clip-grad", "--keep",
                "--deterministic"}
IDENTITY_BEFORE = {"data_fingerprint", "processes", "arch", "arch_args", "leads", "seconds", "sample_rate", "seed", "lr",
                   "batch_size", "limit", "test_fold", "deterministic", "label_set", "crop_seconds", "standardize",
                   "augment", "optimizer", "weight_decay", "beta2", "schedule", "clip_grad", "keep"}
# added since: finetuning (models/transfer.py), training subsets and the benchmark's steps, whole records and
# precision, with defaults that leave a run as it was
FLAGS_ADDED = {"--init-from", "--restandardize", "--freeze-epochs", "--discriminative-lrs", "--train-fraction",
               "--drop-last", "--whole-records", "--amp"}
IDENTITY_ADDED = {"source", "restandardize", "freeze_epochs", "discriminative_lrs", "train_fraction", "drop_last",
                  "whole_records", "precision"}
DEFAULTS_ADDED = {"source": None, "restandardize": False, "freeze_epochs": 0, "discriminative_lrs": False,
                  "train_fraction": 1.0, "init_from": None, "drop_last": False, "whole_records": False,
                  "precision": None}
# a checkpoint's `config` as written before (main.py --arch resnet18 --seconds 2 --sample-rate 100 --epochs 1
# --lr 1e-3 --batch-size 16 --num-workers 0 --limit 60 --run m --no-augment)
CONFIG_BEFORE = {
    "data_dir": "data/CPSC", "arch": "resnet18", "leads": ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3",
                                                            "V4", "V5", "V6"],
    "seconds": 2.0, "sample_rate": 100, "seed": 42, "epochs": 1, "lr": 0.001, "batch_size": 16, "limit": 60,
    "test_fold": None, "deterministic": False, "label_set": "cpsc9", "data_fingerprint": "3f2a", "processes": 1,
    "crop_seconds": None, "standardize": False, "augment": False, "optimizer": "adam", "weight_decay": 0.0,
    "beta2": 0.999, "schedule": "constant", "clip_grad": None, "keep": "best", "run_dir": "m", "num_workers": 0,
    "use_gpu": False, "amp": True, "compile": True, "resume": False, "force": False}


@dataclass(frozen=True)
class WithWarmup(RunConfig):
    """RunConfig with one more setting, declared the way every setting is."""
    warmup: int = setting(0, "warm-up epochs", type=bounded_int(0, 100))
    log_every: int = setting(10, "print every N steps", type=bounded_int(1, 1000), identity=False)


def parser(cls=RunConfig) -> argparse.ArgumentParser:
    return cls.add_arguments(argparse.ArgumentParser(prog="x"))


def exit_of(parse) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        parse()
    return e.value.code, err.getvalue()


def test_a_declared_field_brings_its_flag_identity_and_preset_check(monkeypatch):
    p = parser(WithWarmup)
    assert "--warmup" in p.format_help() and "0..100" in p.format_help()
    cfg = WithWarmup.from_args(p.parse_args(["--warmup", "5", "--log-every", "3"]))
    assert (cfg.warmup, cfg.log_every) == (5, 3)
    assert exit_of(lambda: parser(WithWarmup).parse_args(["--warmup", "500"]))[0] == 2
    assert "warmup" in WithWarmup.identity() and "warmup" not in RunConfig.identity()
    assert "log_every" not in WithWarmup.identity()  # opted out: how the run executes
    assert WithWarmup(warmup=1).changed(WithWarmup(warmup=2)) == ["warmup: 1 -> 2"]
    assert WithWarmup(log_every=1).changed(WithWarmup(log_every=2)) == []

    monkeypatch.setitem(PRESETS, "warm", {"train": {"warmup": 7}})
    assert parse_with_preset(parser(WithWarmup), ["--preset", "warm"], "train").warmup == 7
    monkeypatch.setitem(PRESETS, "hot", {"train": {"warmup": 500}})
    code, err = exit_of(lambda: parse_with_preset(parser(WithWarmup), ["--preset", "hot"], "train"))
    assert code == 2 and "argument --preset: preset hot (train): --warmup 500: 500 is outside 0..100" in err
    with pytest.raises(PipelineError, match="somewhere: --warmup 500: 500 is outside 0..100"):
        WithWarmup.check_values({"warmup": 500}, "somewhere")
    RunConfig.check_values({"lr": 0.5, "no_augment": True, "limit": None}, "fine")
    with pytest.raises(PipelineError, match="unknown setting 'warmup'"):
        RunConfig.check_values({"warmup": 5}, "RunConfig")


def test_every_flag_of_before_parses_with_its_meaning():
    p = parser()
    flags = {a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"}
    assert flags == FLAGS_BEFORE | FLAGS_ADDED
    default = RunConfig.from_args(p.parse_args([]))
    assert (default.augment, default.amp, default.compile) == (True, True, True)
    off = RunConfig.from_args(parser().parse_args(["--no-augment", "--no-amp", "--no-compile", "--standardize"]))
    assert (off.augment, off.amp, off.compile, off.standardize) == (False, False, False, True)
    assert set(RunConfig.identity()) == IDENTITY_BEFORE | IDENTITY_ADDED


def test_a_config_written_before_loads_with_the_same_identity():
    old = RunConfig.from_dict(CONFIG_BEFORE)
    assert old.to_dict() == {**CONFIG_BEFORE, "arch_args": {}, **DEFAULTS_ADDED}  # no builder arguments: the defaults
    argv = ["--arch", "resnet18", "--seconds", "2", "--sample-rate", "100", "--epochs", "1", "--lr", "1e-3",
            "--batch-size", "16", "--num-workers", "0", "--limit", "60", "--run", "m", "--no-augment"]
    now = RunConfig.from_args(main.parse_args(argv))
    assert now.run_dir == "m" and now.leads == old.leads
    now = RunConfig.from_dict({**now.to_dict(), "label_set": "cpsc9", "data_fingerprint": "3f2a"})
    assert old.changed(now) == [] and now.changed(old) == []
    assert old.changed(RunConfig.from_dict({**CONFIG_BEFORE, "augment": True})) == ["augment: False -> True"]


@pytest.fixture(scope="module")
def bad_entries():
    """Architectures whose registry entry asks, under the ptbxl protocol, for what no flag would accept."""
    import models.registry as registry

    def net(in_leads: int, num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Conv1d(in_leads, 4, 3), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(4, num_classes))

    def one_record_net(in_leads: int, num_classes: int) -> nn.Module:  # batch norm of pooled features
        return nn.Sequential(nn.Conv1d(in_leads, 4, 3), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.BatchNorm1d(4),
                             nn.Linear(4, num_classes))

    entries = {"huge_lr": {"lr": 500}, "negative_lr": {"lr": -5}, "typo_key": {"lrr": 0.1},
               "text_lr": {"lr": "fast"}, "sets_seed": {"lr": 1e-3, "seed": 7},
               "bool_epochs": {"epochs": True}, "bool_lr": {"lr": False},  # Python's bools are numbers: not here
               # each value within its flag's bounds, wrong together with the protocol's (10 s at 100 Hz)
               "long_crop": {"crop_seconds": 100}, "short_input": {"seconds": 0.2},
               "slow_crop": {"sample_rate": 10}, "one_record": {"batch_size": 1},
               # finetuning settings, under a protocol that trains from scratch: recorded, never acting
               "freezes": {"freeze_epochs": 5}, "layerwise": {"lr": 1e-3, "discriminative_lrs": True}}
    for name, values in entries.items():
        register_model(name, family="test", protocol={"ptbxl": values})(one_record_net if name == "one_record" else net)
    yield entries
    for name in entries:
        registry._REGISTRY.pop(name, None)


@pytest.mark.parametrize("name, says", [("huge_lr", "--lr 500: 500 is outside (0, 10]"),
                                        ("negative_lr", "--lr -5: -5 is outside (0, 10]"),
                                        ("typo_key", "unknown setting 'lrr'"),
                                        ("text_lr", "--lr 'fast': 'fast' is not a number"),
                                        ("bool_epochs", "--epochs True: True is not an integer"),
                                        ("bool_lr", "--lr False: False is not a number"),
                                        ("sets_seed", "'seed' names the experiment, not how the architecture"),
                                        ("long_crop", "crop_seconds 100 is longer than the input (seconds 10)"),
                                        ("short_input", "seconds 0.2, crop_seconds 2.5 at 100 Hz give 20 samples; "
                                                        "short_input needs at least 32 (its min_samples)"),
                                        ("slow_crop", "seconds 10, crop_seconds 2.5 at 10 Hz give 25 samples; "
                                                      "slow_crop needs at least 32"),
                                        ("one_record", "batch_size 1: one_record batch-normalises pooled features"),
                                        ("freezes", "'freeze_epochs' finetunes a trained run, and protocol ptbxl "
                                                    "trains from scratch"),
                                        ("layerwise", "'discriminative_lrs' finetunes a trained run")])
def test_registry_protocol_values_are_checked_like_the_flags(bad_entries, name, says, tmp_path):
    where = f"architecture {name} (its registry entry, protocol ptbxl)"
    with pytest.raises(PipelineError) as e:
        architecture_settings(name, "ptbxl")
    assert str(e.value).startswith(f"{where}: {says}") and "\n" not in str(e.value)
    if name == "typo_key":  # the known settings listed are those an entry may set, never the experiment's
        known = str(e.value).split("(known: ")[1].rstrip(")").split(", ")
        assert "lr" in known and not set(known) & {"arch", "data_dir", "seed", "num_workers", "deterministic"}
    assert architecture_settings(name, None) == {}  # no protocol: nothing asked
    for command, argv in ((main, ["--data-dir", str(tmp_path), "--preset", "ptbxl", "--arch", name]),
                          (benchmark, ["--data-dir", str(tmp_path), "--models", f"fcn_wang,{name}"])):
        with pytest.raises(SystemExit) as e:
            command.main(argv)
        assert str(e.value.code).startswith(f"error: {where}: {says}")
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_a_registry_entry_freezing_more_epochs_than_it_trains_is_refused():
    import models.registry as registry

    register_model("overfrozen", family="test", protocol={"finetune": {"freeze_epochs": 61}})(
        lambda in_leads, num_classes: nn.Linear(1, num_classes))
    try:
        with pytest.raises(PipelineError, match=r"^architecture overfrozen \(its registry entry, protocol finetune\): "
                                                r"freeze_epochs 61 is above its epochs 60$"):
            architecture_settings("overfrozen", "finetune")
    finally:
        registry._REGISTRY.pop("overfrozen", None)


def test_builder_arguments_are_in_the_checkpoint_the_identity_and_every_later_stage(tiny, prepared, tmp_path):
    run = tmp_path / "k3"
    argv = ["--data-dir", str(prepared), *tiny, "--epochs", "1", "--limit", "60", "--run", str(run)]
    main.main([*argv, "--arch-arg", "kernel_size=3"])
    model, ckpt = load_checkpoint(run / "model.pth")
    assert ckpt["config"]["arch_args"] == {"kernel_size": 3, "width": 8}  # tiny's width, and the kernel
    assert {m.kernel_size for m in model.net.stages.modules() if isinstance(m, nn.Conv1d)} == {(1,), (3,)}
    table = predict.main(["--run", str(run), "--results-dir", str(tmp_path / "r"), "--n-bootstrap", "0",
                          "--num-workers", "0", "--no-figures"])
    assert len(table)
    with pytest.raises(SystemExit, match=r"other settings \(arch_args: \{'kernel_size': 3, 'width': 8\} -> "
                                                r"\{'kernel_size': 5, 'width': 8\}\)"):
        main.main([*argv, "--arch-arg", "kernel_size=5"])
    with pytest.raises(SystemExit,
                       match=r"other settings \(arch_args: \{'kernel_size': 3, 'width': 8\} -> \{'width': 8\}\)"):
        main.main(argv)


def test_an_architecture_s_own_minimum_input_applies(capsys):
    """The LSTM reads any length (min_samples 1): 10 samples are refused for the ResNet only."""
    args = main.parse_args(["--arch", "lstm", "--seconds", "0.1", "--sample-rate", "100"])
    assert (args.arch, args.seconds) == ("lstm", 0.1)
    args = main.parse_args(["--arch", "xresnet1d101", "--seconds", "1", "--sample-rate", "100", "--crop-seconds", "0.05"])
    assert args.crop_seconds == 0.05
    with pytest.raises(SystemExit):
        main.parse_args(["--arch", "resnet10", "--seconds", "0.1", "--sample-rate", "100"])
    assert "resnet10 needs inputs of at least 32 samples" in capsys.readouterr().err


@pytest.fixture
def other_protocol(monkeypatch):
    """A second protocol, a preset that follows it, and an architecture with settings under each name."""
    import models.registry as registry

    monkeypatch.setitem(PROTOCOLS, "slow", {"lr": 0.002, "epochs": 7})
    monkeypatch.setitem(PRESETS, "mine", {"train": {"protocol": "slow", "seconds": 5.0},
                                          "benchmark": {"protocol": "slow"}})

    def net(in_leads: int, num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Conv1d(in_leads, 4, 1), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(4, num_classes))

    register_model("picky", family="test", min_samples=1,
                   protocol={"slow": {"lr": 0.0005}, "ptbxl": {"clip_grad": 1.0}})(net)
    yield
    registry._REGISTRY.pop("picky", None)


def test_architecture_settings_are_keyed_by_the_protocol_a_preset_follows(other_protocol, tmp_path):
    args = main.parse_args(["--preset", "mine", "--arch", "picky"])
    assert (args.protocol, args.lr, args.epochs, args.seconds, args.clip_grad) == ("slow", 0.0005, 7, 5.0, None)
    assert main.parse_args(["--preset", "mine"]).lr == 0.002  # the protocol's own, for an architecture without
    assert main.parse_args(["--arch", "picky"]).lr == 1e-4    # no preset, no protocol: the defaults
    data = ["--data-dir", str(tmp_path)]
    args = benchmark.parse_args([*data, "--models", "picky,lstm"])  # the benchmark's own protocol
    assert args.protocol == "ptbxl" and args.own == {"picky": {"clip_grad": 1.0}, "lstm": {"lr": 1e-3, "clip_grad": 0.25}}
    args = benchmark.parse_args([*data, "--models", "picky,lstm", "--preset", "mine"])
    assert args.protocol == "slow" and args.own == {"picky": {"lr": 0.0005}, "lstm": {}}
    args = benchmark.parse_args([*data, "--models", "picky,lstm", "--preset", "demo", "--lr", "0.02"])
    assert args.protocol == "ptbxl" and args.own == {"picky": {"clip_grad": 1.0}, "lstm": {"clip_grad": 0.25}}
