"""The model contract and the PTB-XL protocol: an architecture registered in one place goes through every
stage; windows and their maximum; the standardisation fitted on training records only; random crops;
the one-cycle schedule; a diverging run stops without a checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import main
import predict
import report
import shap_values
from models.checkpoint import load_checkpoint
from models.inputs import ECGDataset, ECGModel, InputSpec, random_crop, window_starts
from models.registry import create_model, list_models, model_entry, protocol_settings, register_model
from models.training import make_step
from utils.cache import SignalCache, fit_length, load_labels
from utils.folds import split_labels
from utils.labels import CLASSES, LEADS

PROTOCOL = ["--seconds", "4", "--sample-rate", "100", "--crop-seconds", "1", "--standardize", "--no-augment",
            "--optimizer", "adamw", "--beta2", "0.99", "--weight-decay", "0.01", "--schedule", "onecycle",
            "--keep", "last", "--batch-size", "32", "--num-workers", "0", "--lr", "0.01"]


def toy_cnn(in_leads: int, num_classes: int) -> nn.Module:
    """One convolution, global average pooling, a linear layer: registered here and nowhere else."""
    return nn.Sequential(nn.Conv1d(in_leads, 8, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))


class _NaN(nn.Module):
    def __init__(self, in_leads: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_leads, num_classes)

    def forward(self, x):
        return self.fc(x.mean(-1)) * float("nan")


class _Recording(nn.Module):
    """toy_cnn keeping a copy of every input it is given in training mode (in `seen`)."""
    seen: list[torch.Tensor] = []

    def __init__(self, in_leads: int, num_classes: int):
        super().__init__()
        self.net = toy_cnn(in_leads, num_classes)

    def forward(self, x):
        if self.training:
            _Recording.seen.append(x.detach().clone())
        return self.net(x)


class _Flat(nn.Module):
    """Every score below 0.5 whatever it learns (validation F1 at 0.5 stays 0, so the first epoch is the
    best one), with a weight that training moves (each epoch's weights differ)."""

    def __init__(self, in_leads: int, num_classes: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        return torch.tanh(self.w * x.mean(dim=(1, 2))[:, None]) - 5


class _Prior(nn.Module):
    """One logit per class whatever the input (`in_training`: whether the last call was in training mode)."""

    def __init__(self, in_leads: int, num_classes: int):
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(num_classes))

    in_training = False

    def forward(self, x):
        _Prior.in_training = self.training
        return self.logit.expand(len(x), -1)


class _NaNWhenEvaluated(nn.Module):
    """Trains normally (a finite loss) and returns NaN in eval mode: the validation scores are not numbers."""

    def __init__(self, in_leads: int, num_classes: int):
        super().__init__()
        self.net = toy_cnn(in_leads, num_classes)

    def forward(self, x):
        out = self.net(x)
        return out if self.training else out * float("nan")


TEST_ARCHITECTURES = {"toy_cnn": (toy_cnn, 32), "nan_net": (_NaN, 32), "nan_in_eval": (_NaNWhenEvaluated, 32),
                      "long_input": (toy_cnn, 500),
                      "spy_cnn": (_Recording, 32), "flat_net": (_Flat, 1), "prior_net": (_Prior, 1)}


@pytest.fixture(autouse=True, scope="module")
def test_architectures():
    """The architectures above, registered for this file's tests only (the registry is one per process:
    other test files must not see them)."""
    import models.registry as registry

    for name, (builder, shortest) in TEST_ARCHITECTURES.items():
        register_model(name, family="test", min_samples=shortest)(builder)
    yield
    for name in TEST_ARCHITECTURES:
        registry._REGISTRY.pop(name, None)


@pytest.mark.slow
def test_a_toy_architecture_goes_through_every_stage(prepared, tmp_path):
    """Registered in this file only: trained with the protocol, evaluated, explained and reported."""
    assert "toy_cnn" in list_models()
    run = tmp_path / "toy"
    out = main.main(["--data-dir", str(prepared), "--arch", "toy_cnn", "--epochs", "2", "--run", str(run),
                     *PROTOCOL])
    model, ckpt = load_checkpoint(out["model_path"])
    assert ckpt["config"]["arch"] == "toy_cnn" and isinstance(model.net, nn.Sequential)
    results = tmp_path / "results"
    table = predict.main(["--run", str(run), "--results-dir", str(results), "--n-bootstrap", "20",
                          "--num-workers", "0", "--no-figures"])
    assert len(table) and np.isfinite(table.loc["mean", "auc"])
    shap = shap_values.main(["--run", str(run), "--results-dir", str(results), "--background", "4",
                             "--n-explain", "3", "--n-samples", "4"])
    assert len(shap) > 0
    text = report.main(["--data-dir", str(prepared), "--run", str(run), "--results-dir", str(results)]).read_text()
    assert "toy_cnn" in text or run.name in text


def test_seven_windows_and_their_maximum():
    assert window_starts(1000, 250, 125) == [0, 125, 250, 375, 500, 625, 750]
    assert window_starts(1001, 250, 125)[-1] == 751  # the end is always covered
    spec = InputSpec(("I", "II"), 10.0, 100, 2.5)
    assert (spec.window_samples, spec.stride_samples) == (250, 125)
    torch.manual_seed(0)
    net = create_model("toy_cnn", 2, 3).eval()
    model = ECGModel(net, spec, mean=0.1, std=2.0).eval()
    x = torch.randn(4, 2, 1000)
    with torch.no_grad():
        per_window = torch.stack([net((x[..., s:s + 250] - 0.1) / 2.0) for s in range(0, 751, 125)], dim=1)
        assert per_window.shape[1] == 7
        expected = per_window.max(dim=1).values
        assert torch.allclose(model(x), expected, atol=1e-6)
        assert torch.allclose(torch.sigmoid(model(x)), torch.sigmoid(per_window).max(dim=1).values, atol=1e-6)
        assert torch.allclose(model(x[..., :250]), net((x[..., :250] - 0.1) / 2.0), atol=1e-6)  # one window


def test_a_record_of_zeros_keeps_its_windows():
    """Windows of zero-padding take no part in the maximum, but a record that is zero throughout (a blank or
    lead-off recording) is scored on its windows like any other, not given a score of 0 for every class."""
    torch.manual_seed(0)
    net = create_model("toy_cnn", 2, 3).eval()
    model = ECGModel(net, InputSpec(("I", "II"), 10.0, 100, 2.5), mean=0.1, std=2.0).eval()
    x = torch.randn(2, 2, 1000)
    x[1] = 0
    with torch.no_grad():
        out = model(x)
        assert torch.isfinite(out).all()
        assert torch.allclose(out[1:], net((torch.zeros(1, 2, 250) - 0.1) / 2.0), atol=1e-6)


def test_random_crops_are_windows_of_each_record():
    x = torch.arange(3 * 2 * 20, dtype=torch.float32).view(3, 2, 20)
    g = torch.Generator().manual_seed(0)
    crops = random_crop(x, 5, g)
    assert crops.shape == (3, 2, 5)
    for b in range(3):
        start = int(crops[b, 0, 0] - x[b, 0, 0])
        assert torch.equal(crops[b], x[b, :, start:start + 5])
    starts = {int(random_crop(x, 5, g)[0, 0, 0]) for _ in range(50)}
    assert len(starts) > 5  # a new window each time


def test_standardisation_is_fitted_on_training_records_only(prepared, tmp_path):
    out = main.main(["--data-dir", str(prepared), "--arch", "toy_cnn", "--epochs", "1", "--run",
                     str(tmp_path / "std"), *PROTOCOL])
    model, ckpt = load_checkpoint(out["model_path"])
    spec = InputSpec.from_checkpoint(ckpt)
    cache, labels = SignalCache(prepared), load_labels(prepared)
    classes = ckpt["label_set"]["classes"]

    def stats(part: pd.DataFrame) -> tuple[float, float]:
        x = np.concatenate([xi.numpy().ravel() for xi, _ in ECGDataset(cache, part, spec, classes)]).astype(np.float64)
        return x.mean(), x.std()

    train_ids = ckpt["split"]["train"]
    mean, std = stats(labels.set_index("patient_id").loc[train_ids].reset_index())
    assert float(model.mean) == pytest.approx(mean, rel=1e-6) and float(model.std) == pytest.approx(std, rel=1e-6)
    every = stats(labels)  # fitted on every record instead: a leak of validation and test records
    assert abs(every[0] - mean) > 1e-7 * abs(mean) and float(model.mean) != pytest.approx(every[0], rel=1e-9)
    splits = split_labels(labels, 42, None, None, None)
    assert sorted(splits["train"]["patient_id"]) == sorted(train_ids)


def test_one_cycle_schedule_and_decoupled_weight_decay():
    from models.training import RunConfig

    cfg = RunConfig(lr=0.01, epochs=10, optimizer="adamw", weight_decay=0.01, beta2=0.99, schedule="onecycle")
    model = create_model("toy_cnn", 12, 5)
    step = make_step(cfg, model, steps_per_epoch=10, cuda=False)
    assert isinstance(step.optimizer, torch.optim.AdamW) and step.optimizer.param_groups[0]["weight_decay"] == 0.01
    lrs, betas = [], []
    for _ in range(100):
        lrs.append(step.optimizer.param_groups[0]["lr"])
        betas.append(step.optimizer.param_groups[0]["betas"])
        step.optimizer.step()
        step.scheduler.step()
    assert lrs[0] == pytest.approx(0.01 / 25) and max(lrs) == pytest.approx(0.01, rel=1e-3)
    assert int(np.argmax(lrs)) in (29, 30) and lrs[-1] < 0.01 / 25 / 100  # 30 % warm-up, down to lr/25e4
    assert betas[0] == (0.95, 0.99) and min(b[0] for b in betas) == pytest.approx(0.85)


def test_registry_protocol_settings_reach_main(prepared):
    assert protocol_settings("lstm", "ptbxl") == {"lr": 1e-3, "clip_grad": 0.25}
    assert model_entry("xresnet1d101").protocol == {}
    args = main.parse_args(["--data-dir", str(prepared), "--preset", "ptbxl", "--arch", "lstm"])
    assert (args.lr, args.clip_grad, args.schedule, args.crop_seconds) == (1e-3, 0.25, "onecycle", 2.5)
    args = main.parse_args(["--data-dir", str(prepared), "--preset", "ptbxl", "--arch", "lstm", "--lr", "0.005"])
    assert args.lr == 0.005  # a flag given wins over the architecture's setting
    assert main.parse_args(["--data-dir", str(prepared), "--preset", "ptbxl"]).lr == 0.01


def test_a_diverging_run_stops_with_one_line_and_no_checkpoint(prepared, tmp_path, capsys):
    run = tmp_path / "nan"
    with pytest.raises(SystemExit) as e:
        main.main(["--data-dir", str(prepared), "--arch", "nan_net", "--epochs", "2", "--run", str(run), *PROTOCOL])
    err = capsys.readouterr().err
    assert e.value.code != 0 and "diverged" in str(e.value.code) + err
    assert not (run / "model.pth").exists() and not (run / "last.pth").exists()


def test_a_forced_retraining_that_fails_before_its_first_epoch_leaves_the_old_run(prepared, tmp_path, capsys):
    """--force replaces the run's files once the new run's first epoch is saved, not before: a retraining
    that diverges in its first epoch leaves the old run, files and bytes, as it was. One that trains
    keeps nothing of the old run (its thresholds.json included)."""
    run = tmp_path / "run"
    flags = ["--data-dir", str(prepared), "--epochs", "1", "--run", str(run), *PROTOCOL]
    main.main(["--arch", "toy_cnn", *flags])
    (run / "thresholds.json").write_text("{}")  # where predict.py leaves the thresholds it tuned for model.pth
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert {"model.pth", "last.pth", "log.csv", "thresholds.json"} <= set(before)
    with pytest.raises(SystemExit, match="diverged"):
        main.main(["--arch", "nan_net", *flags, "--force"])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    main.main(["--arch", "toy_cnn", *flags, "--seed", "7", "--force"])
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after["model.pth"] != before["model.pth"] and "thresholds.json" not in after
    # the old run's files go once, at the first epoch: a later epoch that is not kept leaves the kept one
    main.main(["--arch", "toy_cnn", *flags, "--epochs", "3", "--keep", "best", "--lr", "1e-9", "--force"])
    log = pd.read_csv(run / "log.csv")
    assert len(log) == 3 and log["val_f1"].nunique() == 1  # no epoch better than the first: the first is kept
    assert torch.load(run / "model.pth", weights_only=True)["epoch"] == 1
    capsys.readouterr()


def test_non_finite_validation_outputs_stop_the_run_before_any_checkpoint(prepared, tmp_path):
    """A network whose training loss is finite but whose evaluated outputs are NaN: one line, no model.pth
    (validation F1 and AUC of NaN scores would otherwise be 0 and a checkpoint kept)."""
    run = tmp_path / "nan_eval"
    with pytest.raises(SystemExit, match=r"^error: the model's outputs on \d+ of \d+ validation records are not "
                                         r"finite \(NaN or inf\) after this epoch; no checkpoint of it was saved"):
        main.main(["--data-dir", str(prepared), "--arch", "nan_in_eval", "--epochs", "2", "--run", str(run),
                   *PROTOCOL])
    assert not (run / "model.pth").exists() and not (run / "last.pth").exists()


def test_a_killed_one_cycle_run_resumes_where_it_would_have_been(prepared, tmp_path, monkeypatch):
    """The optimizer's and the schedule's state are in last.pth: a run killed after epoch 1 and rerun ends
    with the weights of an uninterrupted run."""
    import models.training as training

    argv = ["--data-dir", str(prepared), "--arch", "toy_cnn", "--epochs", "2", *PROTOCOL]
    whole = main.main([*argv, "--run", str(tmp_path / "whole")])
    real, calls = training.train_one_epoch, []

    def dies_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        main.main([*argv, "--run", str(tmp_path / "killed")])
    monkeypatch.setattr(training, "train_one_epoch", real)
    resumed = main.main([*argv, "--run", str(tmp_path / "killed")])
    a, b = load_checkpoint(whole["model_path"])[0], load_checkpoint(resumed["model_path"])[0]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.slow
def test_benchmark_table_recomputes_from_its_score_files(synthetic_ptbxl, tmp_path, capsys):
    import benchmark
    from utils.evaluator import read_scores, scores_arrays
    from utils.metrics import macro_auc
    from utils.ptbxl import score_file_classes

    argv = ["--data-dir", str(synthetic_ptbxl), "--preset", "demo", "--tasks", "superdiagnostic,rhythm",
            "--models", "fcn_wang,toy_cnn", "--epochs", "1", "--results-dir", str(tmp_path / "results"),
            "--tasks-dir", str(tmp_path / "tasks")]
    table = benchmark.main(argv)
    assert list(table["task"]) == ["superdiagnostic"] * 3 + ["rhythm"] * 3
    assert list(table["model"])[:3] == ["fcn_wang", "toy_cnn", "ensemble"]
    signals = [tmp_path / "tasks" / f"{synthetic_ptbxl.name}_{t}" / "signals.npy" for t in ("all", "superdiagnostic")]
    assert signals[0].stat().st_ino == signals[1].stat().st_ino  # one cache, shared
    database = pd.read_csv(synthetic_ptbxl / "ptbxl_database.csv")
    fold_10 = set(database.loc[database["strat_fold"] == 10, "ecg_id"].astype(str))
    for task, rows in table.groupby("task"):
        probs = []
        task_ids = set(load_labels(tmp_path / "tasks" / f"{synthetic_ptbxl.name}_{task}")["patient_id"])
        for r in rows.itertuples():
            classes = score_file_classes(r.scores)
            scored = read_scores(r.scores, classes)
            assert set(scored["patient_id"]) == fold_10 & task_ids  # the test fold, PTB-XL's fold 10
            y, p = scores_arrays(scored, classes)
            keep = y.any(0) & ~y.all(0)
            assert r.auc == pytest.approx(macro_auc(y[:, keep], p[:, keep]), abs=1e-12)
            assert r.records == len(y) and r.classes == f"{keep.sum()}/{len(classes)}"
            assert r.auc_lo <= r.auc_hi
            if r.model != "ensemble":
                probs.append(p)
                assert r.params == sum(x.numel() for x in create_model(r.model, 12, len(classes)).parameters())
            else:
                assert np.allclose(p, np.mean(probs, axis=0), atol=1e-6)
    assert (tmp_path / "results" / synthetic_ptbxl.name / "benchmark" / "table.md").exists()
    capsys.readouterr()
    again = benchmark.main(argv)  # every run current: nothing trained, the same table
    assert capsys.readouterr().out.count("current, nothing to train") == 4
    pd.testing.assert_frame_equal(again, table)


def test_a_preparation_that_hits_a_lock_is_one_error_line(synthetic_ptbxl, tmp_path, capfd):
    import benchmark
    from utils.locks import exclusive_lock

    tasks = tmp_path / "tasks"
    with exclusive_lock(tasks / f"{synthetic_ptbxl.name}_all" / ".lock", "a preprocess folder"):
        with pytest.raises(SystemExit, match=r"^error: preprocessing .* failed: .* is being written by another "
                                             r"process") as e:
            benchmark.main(["--data-dir", str(synthetic_ptbxl), "--tasks", "rhythm", "--models", "fcn_wang",
                            "--tasks-dir", str(tasks), "--results-dir", str(tmp_path / "results")])
    assert "\n" not in str(e.value.code)
    err = capfd.readouterr().err
    assert not [line for line in err.splitlines() if "error:" in line], err  # said once, by the SystemExit


def test_padding_never_makes_a_window_or_a_crop():
    """A record shorter than the input is zero-padded in front: its padding-only windows take no part in
    the maximum, and no training crop is padding alone."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 1000)
    x[1, :, :400] = 0   # a 6-s record in a 10-s input
    x[2, :, :900] = 0   # shorter than one window
    net = create_model("toy_cnn", 2, 3).eval()
    model = ECGModel(net, InputSpec(("I", "II"), 10.0, 100, 2.5)).eval()
    with torch.no_grad():
        out = model(x)
        for i in range(3):
            starts = [s for s in window_starts(1000, 250, 125) if (x[i, :, s:s + 250] != 0).any()]
            expected = torch.stack([net(x[i:i + 1, :, s:s + 250]) for s in starts]).amax(dim=0)
            assert torch.allclose(out[i:i + 1], expected, atol=1e-6), i
    g = torch.Generator().manual_seed(1)
    crops = torch.stack([random_crop(x, 250, g) for _ in range(100)])
    assert (crops[:, 1] != 0).flatten(1).any(1).all() and (crops[:, 2] != 0).flatten(1).any(1).all()
    assert torch.equal(crops[:, 2], x[2, :, 750:].expand(100, 2, 250))  # the last window: all the signal there is


def test_an_architecture_s_shortest_input_is_an_argument_error(prepared, capsys):
    with pytest.raises(SystemExit) as e:
        main.parse_args(["--data-dir", str(prepared), "--arch", "long_input", "--seconds", "4", "--sample-rate", "100"])
    assert e.value.code == 2 and "long_input needs inputs of at least 500 samples" in capsys.readouterr().err
    assert main.parse_args(["--data-dir", str(prepared), "--arch", "long_input", "--seconds", "5",
                            "--sample-rate", "100"]).arch == "long_input"


# ---------------------------------------------------------------------------------------------
# The reference's protocol, pinned: what the benchmark command configures and what training then does
# ---------------------------------------------------------------------------------------------
# helme/ecg_ptbxl_benchmarking, code/models/fastai_model.py and its fastai v1 defaults: 10 s at 100 Hz,
# random 2.5-s crops, one StandardScaler fitted on the training signals, no augmentation, fit_one_cycle to
# lr 1e-2 with AdamW (betas (0.9, 0.99), weight decay 1e-2), batch 128, 50 epochs, the last epoch's weights;
# the LSTMs (configs/fastai_configs.py) at lr 1e-3 with gradient clipping 0.25.
REFERENCE_PROTOCOL = {"seconds": 10.0, "sample_rate": 100, "crop_seconds": 2.5, "standardize": True,
                      "augment": False, "optimizer": "adamw", "beta2": 0.99, "weight_decay": 0.01,
                      "schedule": "onecycle", "lr": 0.01, "batch_size": 128, "epochs": 50, "keep": "last",
                      "clip_grad": None}
REFERENCE_LSTM = {"lr": 1e-3, "clip_grad": 0.25}
# the reference's finetuning (fastai_model.fit, pretrained): fit_one_cycle(30, lr) with the body frozen (batch
# norms training), then unfreeze() and fit_one_cycle(30, slice(lr / 1000, lr / 10)), over its protocol
REFERENCE_FINETUNE = {**REFERENCE_PROTOCOL, "epochs": 60, "freeze_epochs": 30, "discriminative_lrs": True}


def test_the_finetuning_protocol_is_the_reference_s_two_cycles_of_30_epochs():
    from utils.presets import PROTOCOLS

    finetune = PROTOCOLS["finetune"]
    settings = {k: (not finetune["no_augment"] if k == "augment" else finetune.get(k)) for k in REFERENCE_FINETUNE}
    assert settings == REFERENCE_FINETUNE


@pytest.mark.parametrize("preset", [None, "ptbxl", "demo"])
def test_the_benchmark_trains_every_model_under_the_reference_protocol(preset, tmp_path):
    """With no preset, `--preset ptbxl` and `--preset demo` (shorter: 2 epochs of batch 32) alike; the
    LSTMs with their own lr and clipping under each, unless the flag is given."""
    import benchmark

    argv = ["--data-dir", str(tmp_path), "--tasks", "rhythm", "--models", "fcn_wang,lstm,lstm_bidir,xresnet1d101"]
    argv += ["--preset", preset] if preset else []
    expected = dict(REFERENCE_PROTOCOL, **({"epochs": 2, "batch_size": 32} if preset == "demo" else {}))
    runs = list(benchmark.run_configs(benchmark.parse_args(argv), {"rhythm": tmp_path / "rhythm"}))  # a generator
    assert sorted(run[-1].arch for run in runs) == ["fcn_wang", "lstm", "lstm_bidir", "xresnet1d101"]
    for *_, cfg in runs:
        own = REFERENCE_LSTM if cfg.arch.startswith("lstm") else {}
        assert {k: getattr(cfg, k) for k in expected} == {**expected, **own}, cfg.arch
    runs = list(benchmark.run_configs(benchmark.parse_args([*argv, "--lr", "0.005"]), {"rhythm": tmp_path / "rhythm"}))
    assert {(cfg.arch, cfg.lr, cfg.clip_grad) for *_, cfg in runs} == {
        ("fcn_wang", 0.005, None), ("lstm", 0.005, 0.25), ("lstm_bidir", 0.005, 0.25), ("xresnet1d101", 0.005, None)}


PTBXL_SMALL = ["--preset", "ptbxl", "--batch-size", "32", "--num-workers", "0", "--limit", "60"]


def test_protocol_training_inputs_are_standardised_crops_without_augmentation(prepared, tmp_path):
    """Under the protocol (main.py --preset ptbxl) every input the network is trained on is a 2.5-s window
    (250 samples at 100 Hz) of one training record's 10-s input, standardised with the training records'
    mean and std, and nothing else: no amplitude scaling, no baseline shift, each record once an epoch."""
    _Recording.seen.clear()
    out = main.main(["--data-dir", str(prepared), "--arch", "spy_cnn", "--epochs", "1", *PTBXL_SMALL,
                     "--run", str(tmp_path / "spy")])
    train_ids = load_checkpoint(out["model_path"])[1]["split"]["train"]
    cache = SignalCache(prepared)
    part = load_labels(prepared).set_index("patient_id").loc[train_ids].reset_index()
    whole = np.stack([x.numpy() for x, _ in ECGDataset(cache, part, InputSpec(seconds=10.0, sample_rate=100),
                                                       ["AF"])]).astype(np.float64)
    assert whole.shape == (len(train_ids), 12, 1000)
    whole = (whole - whole.mean()) / whole.std()
    seen = torch.cat(_Recording.seen).double().numpy()
    assert seen.shape[1:] == (12, 250) and len(seen) >= 32
    matched = []
    for crop in seen:
        first = np.abs(whole - crop[None, :, :1]).max(axis=1)[:, :751]          # (records, starts)
        hits = [(r, s) for r, s in zip(*np.nonzero(first < 1e-4))
                if np.allclose(whole[r, :, s:s + 250], crop, rtol=0, atol=1e-4)]
        assert hits, "a training input that is no standardised 2.5-s window of a training record"
        matched.append(hits[0][0])
    assert len(set(matched)) == len(matched)  # each record once in the epoch


def test_the_protocol_keeps_the_last_epoch(prepared, tmp_path):
    """model.pth under the protocol is the last epoch's, also when an earlier epoch validated best."""
    argv = ["--data-dir", str(prepared), "--arch", "flat_net", "--epochs", "2", *PTBXL_SMALL]
    main.main([*argv, "--run", str(tmp_path / "last")])
    main.main([*argv, "--keep", "best", "--run", str(tmp_path / "best")])
    kept, last = (load_checkpoint(tmp_path / "last" / name)[1] for name in ("model.pth", "last.pth"))
    assert [row["val_f1"] for row in last["history"]] == [0.0, 0.0]
    assert kept["epoch"] == 2 and torch.equal(kept["model"]["net.w"], last["model"]["net.w"])
    best = load_checkpoint(tmp_path / "best" / "model.pth")[1]  # the case tells the two apart
    assert best["epoch"] == 1 and not torch.equal(best["model"]["net.w"], last["model"]["net.w"])


def test_gradient_clipping_reaches_the_optimizer_step(prepared, tmp_path):
    """With --clip-grad C, the gradient every optimizer step is given has norm at most C."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    norms: list[float] = []

    def record(optimizer, *_):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    argv = ["--data-dir", str(prepared), "--arch", "toy_cnn", "--epochs", "1", "--limit", "60", *PROTOCOL]
    handle = register_optimizer_step_pre_hook(record)
    try:
        main.main([*argv, "--run", str(tmp_path / "free")])
        free, norms[:] = list(norms), []
        main.main([*argv, "--clip-grad", "0.001", "--run", str(tmp_path / "clipped")])
    finally:
        handle.remove()
    assert len(norms) == len(free) > 0 and min(free) > 0.001   # the case tells the two apart
    assert max(norms) <= 0.001 * (1 + 1e-5)


def test_one_cycle_anneals_with_fastai_s_cosine():
    """fastai v1's fit_one_cycle (the reference's): over n steps, the first 30 % anneal lr from lr/25 up
    to lr and beta1 from 0.95 to 0.85, the rest lr down to lr/25e4 and beta1 back, each along
    annealing_cos(start, end, pct) = end + (start - end) / 2 * (1 + cos(pi * pct))."""
    from models.training import RunConfig

    def annealing_cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2 * (1 + np.cos(np.pi * pct))

    n, lr = 1000, 0.01
    up = int(0.3 * n)
    expected_lr = [annealing_cos(lr / 25, lr, i / up) if i <= up else annealing_cos(lr, lr / 25e4, (i - up) / (n - up))
                   for i in range(n)]
    expected_beta1 = [annealing_cos(0.95, 0.85, i / up) if i <= up else annealing_cos(0.85, 0.95, (i - up) / (n - up))
                      for i in range(n)]
    cfg = RunConfig(lr=lr, epochs=10, optimizer="adamw", weight_decay=0.01, beta2=0.99, schedule="onecycle")
    step = make_step(cfg, nn.Linear(2, 1), steps_per_epoch=n // 10, cuda=False)
    lrs, beta1 = [], []
    for _ in range(n):
        lrs.append(step.optimizer.param_groups[0]["lr"])
        beta1.append(step.optimizer.param_groups[0]["betas"][0])
        step.optimizer.step()
        step.scheduler.step()
    linear = [lr / 25 + (lr - lr / 25) * i / up if i <= up else lr + (lr / 25e4 - lr) * (i - up) / (n - up)
              for i in range(n)]
    assert np.abs(np.subtract(linear, expected_lr)).max() > 0.1 * lr  # the case tells the two apart
    np.testing.assert_allclose(lrs, expected_lr, rtol=0, atol=0.005 * lr)   # within one step of fastai's
    # the ends, which the tolerance above cannot see: from lr/25 (div_factor 25) down to lr/25e4 (fastai's
    # final_div 1e4 of the starting rate)
    assert lrs[0] == pytest.approx(lr / 25, rel=1e-9) and min(lrs) == pytest.approx(lr / 25e4, rel=1e-6)
    np.testing.assert_allclose(beta1, expected_beta1, rtol=0, atol=0.001)


def test_training_targets_and_scores_share_one_class_order(prepared, tmp_path, monkeypatch):
    """The targets the loss is given in training are the records' labels in the checkpoint's class order
    (their sums over an epoch are the training records' class counts), and predict.py's p_<class> column
    is the model's output for that class (a model of one logit per class: p_C = sigmoid(logit of C)). The
    classes are not in sorted order, so targets or scores ordered by name would show."""
    targets = []
    real = torch.nn.functional.binary_cross_entropy_with_logits

    def loss(logits, y, *args, **kwargs):
        if _Prior.in_training:
            targets.append(y.detach().clone())
        return real(logits, y, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits", loss)
    run = tmp_path / "prior"
    main.main(["--data-dir", str(prepared), "--arch", "prior_net", "--seconds", "2", "--sample-rate", "100",
               "--epochs", "1", "--lr", "0.1", "--batch-size", "16", "--num-workers", "0", "--run", str(run)])
    ckpt = load_checkpoint(run / "model.pth")[1]
    classes = ckpt["label_set"]["classes"]
    train = load_labels(prepared).set_index("patient_id").loc[ckpt["split"]["train"], classes].to_numpy()
    assert list(classes) != sorted(classes) and len(train) % 16 == 0
    counts = train.sum(0)
    assert not np.array_equal(counts[np.argsort(classes)], counts)  # the case tells the two apart
    np.testing.assert_array_equal(torch.cat(targets).sum(0).numpy(), counts)
    predict.main(["--run", str(run), "--results-dir", str(tmp_path / "results"), "--n-bootstrap", "0",
                  "--num-workers", "0", "--no-figures"])
    logit = ckpt["model"]["net.logit"].numpy()
    assert len(np.unique(logit.round(4))) == len(classes)
    [scores] = (tmp_path / "results").rglob("test_scores.csv")
    p = pd.read_csv(scores)[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(p, np.broadcast_to(1 / (1 + np.exp(-logit)), p.shape), rtol=0, atol=1e-6)


# Exactly the cache rows of the asked leads reach the model
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("leads", [("V5",), ("I", "aVR", "V5")])
def test_dataset_reads_the_cache_rows_of_its_leads(prepared, leads):
    cache = SignalCache(prepared)
    labels = load_labels(prepared).head(4)
    rows = [LEADS.index(lead) for lead in leads]
    spec = InputSpec(leads, seconds=2.0, sample_rate=int(cache.sample_rate))
    dataset = ECGDataset(cache, labels, spec, CLASSES)
    for i, pid in enumerate(labels["patient_id"]):
        whole = cache.record(pid)
        for r in rows:  # each asked lead differs from its neighbours, so a shifted row would show
            assert not np.allclose(whole[r], whole[r - 1]) and not np.allclose(whole[r], whole[(r + 1) % 12])
        x, y = dataset[i]
        expected = fit_length(cache.record(pid, rows), spec.n_samples)
        np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6, atol=1e-7)
        assert y.numpy().tolist() == labels.loc[i, list(CLASSES)].astype(float).tolist()
class _FixedLength(nn.Module):
    """Flattens exactly 200 samples (2 s at 100 Hz) into a linear layer: no 1-s crop fits it."""

    def __init__(self, in_leads: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_leads * 200, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _wrong_shape(in_leads: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv1d(in_leads, num_classes + 1, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten())


def test_broken_networks_fail_their_own_runs_in_one_line_and_the_others_go_on(prepared, tmp_path, capsys):
    import dataclasses

    import models.registry as registry
    from models.studies import run_all
    from models.training import RunConfig
    from utils.errors import PipelineError

    register_model("fixed_length", family="test")(_FixedLength)
    register_model("wrong_shape", family="test")(_wrong_shape)
    try:
        base = RunConfig(data_dir=str(prepared), seconds=2.0, sample_rate=100, crop_seconds=1.0, epochs=1,
                         batch_size=16, limit=60, num_workers=0)
        cfgs = [dataclasses.replace(base, arch=a, run_dir=str(tmp_path / a))
                for a in ("fixed_length", "wrong_shape", "toy_cnn")]
        with pytest.raises(PipelineError, match=r"^2 of 3 runs failed: \S*fixed_length \(architecture fixed_length fails "
                                                r"on a batch of 2 input\(s\) of 12 lead\(s\) x 100 samples.*"
                                                r"wrong_shape \(architecture "
                                                r"wrong_shape returns \(2, \d+\) for a batch of 2 record\(s\)"):
            run_all(cfgs, tmp_path / "results", 5)
        err = capsys.readouterr().err
        assert [line.split(":")[0] for line in err.splitlines() if line.startswith("failed:")] == ["failed"] * 2
        assert "Traceback" not in err and (tmp_path / "toy_cnn" / "model.pth").exists()  # the third run went on
        with pytest.raises(SystemExit,
                           match=r"^error: architecture fixed_length fails on a batch of 2 input\(s\) of 12 lead"):
            main.main(["--data-dir", str(prepared), "--arch", "fixed_length", "--run", str(tmp_path / "one"),
                       *PROTOCOL[:4], "--epochs", "1", "--num-workers", "0", "--limit", "40"])
    finally:
        for name in ("fixed_length", "wrong_shape"):
            registry._REGISTRY.pop(name, None)


def test_a_benchmark_run_is_as_published_only_at_the_reference_s_settings(tmp_path):
    """settings_differences reads the run's checkpointed settings: the LSTM at its own lr 1e-3 and clipping
    0.25 is as published; at the protocol's lr, unclipped, as a variant (--arch-arg), finetuned or on a
    fraction of the training records, it is set apart naming the setting."""
    import benchmark
    from models.training import RunConfig

    argv = ["--data-dir", str(tmp_path), "--tasks", "rhythm", "--models", "lstm"]
    (*_, cfg), = benchmark.run_configs(benchmark.parse_args(argv), {"rhythm": tmp_path / "rhythm"})
    for change, expected in (({}, []), ({"lr": 0.01}, ["lr 0.01 (published: 0.001)"]),
                             ({"clip_grad": None}, ["clip_grad None (published: 0.25)"]),
                             ({"arch_args": {"hidden": 64}}, ["arch_args {'hidden': 64} (published: {})"]),
                             ({"source": "r:1", "freeze_epochs": 2}, ["source r:1 (published: None)",
                                                                      "freeze_epochs 2 (published: 0)"]),
                             ({"train_fraction": 0.5}, ["train_fraction 0.5 (published: 1.0)"]),
                             ({"whole_records": True}, ["whole_records True (published: False)"])):
        saved = dict(RunConfig.to_dict(cfg), precision="fp32", processes=1, **change)
        assert benchmark.settings_differences("rhythm", "lstm", saved) == expected


def test_every_identity_setting_of_a_run_is_checked_against_the_reference():
    """A setting added to RunConfig that makes runs different runs is either compared with the reference's
    value or named as not the protocol's (which network, seed, data): a new one cannot pass unseen."""
    import benchmark
    from models.training import RunConfig

    for task in ("superdiagnostic", "cpsc9"):
        checked = set(benchmark.protocol_expected(task, "fcn_wang")) | set(benchmark.NOT_PROTOCOL)
        if task == "cpsc9":
            checked.add("seconds")  # whole records: the input is each record, not its last N seconds
        assert set(RunConfig.identity()) <= checked, set(RunConfig.identity()) - checked


def test_the_data_of_a_benchmark_row_must_be_the_published_results_data(synthetic_ptbxl, tmp_path, monkeypatch):
    """data_differences: synthetic records (found from the benchmark's --data-dir wherever the folder was
    prepared from), a partial database and unreadable records each say so; the same folder counted as the
    whole database, without synth.py's marker and with every record read is the published data."""
    import shutil

    import benchmark
    from utils import ptbxl
    from utils.preprocessed import PreprocessRequest, preprocess

    raw = tmp_path / "PTBXL"
    shutil.copytree(synthetic_ptbxl, raw)
    damaged = sorted(raw.glob("records500/*/*.hea"))[0]  # the rate this preprocessing reads
    damaged.write_text("not a header\n")
    monkeypatch.chdir(tmp_path)  # prepared from a relative path, as a user types it
    preprocess(PreprocessRequest(Path("PTBXL"), Path("task"), labels="superdiagnostic", num_workers=1))
    folder = tmp_path / "task"
    monkeypatch.chdir(folder)
    n = len(list(raw.glob("records100/*/*.hea")))
    other = f"data: {n} records found (published: the whole PTB-XL, 21,837 or 21,799 records)"
    unread = "data: 1 record(s) could not be read"
    assert benchmark.data_differences("superdiagnostic", folder) == [other, unread]  # the marker not found from here
    differs = benchmark.data_differences("superdiagnostic", folder, raw)
    assert differs == [f"data: synthetic ({raw} was written by synth.py), not PTB-XL", other, unread]
    (raw / "synth_details.csv").unlink()
    monkeypatch.setitem(ptbxl.PUBLISHED_RECORDS, "PTB-XL", (n,))
    monkeypatch.setattr(benchmark, "PUBLISHED_RECORDS", ptbxl.PUBLISHED_RECORDS)
    assert benchmark.data_differences("superdiagnostic", folder, raw) == [unread]
    shutil.copy(synthetic_ptbxl / damaged.relative_to(raw), damaged)
    preprocess(PreprocessRequest(raw, folder, labels="superdiagnostic", num_workers=1))
    assert benchmark.data_differences("superdiagnostic", folder, raw) == []
    # a row on other data gets no published value, even on a PTB-XL task (where other settings still do)
    assert not ptbxl.comparable_with_published("superdiagnostic", differs[0])
    assert ptbxl.comparable_with_published("superdiagnostic", "epochs 1 (published: 50)")
    assert not ptbxl.comparable_with_published("cpsc9", "epochs 1 (published: 50)")


def test_every_step_moves_the_one_cycle_and_every_parameter_decays(prepared, tmp_path):
    """fastai's fit_one_cycle steps its schedule after every batch, to the cycle's end at the last one, and
    (bn_wd=True, true_wd) decays every parameter, biases and batch norms included; the training records
    come shuffled (fastai's training DataLoader)."""
    import torch.utils.data as tud
    from models.inputs import ECGDataset
    from models.training import RunConfig, _loaders
    from utils.cache import SignalCache, load_labels

    run = tmp_path / "cycle"
    main.main(["--data-dir", str(prepared), "--arch", "toy_cnn", "--epochs", "2", "--run", str(run), *PROTOCOL])
    last = torch.load(run / "last.pth", weights_only=True)
    schedule = last["scheduler"]
    assert schedule["last_epoch"] == schedule["total_steps"] > 2  # more than one step an epoch, all taken
    cfg = RunConfig(lr=0.01, epochs=2, optimizer="adamw", weight_decay=0.01, beta2=0.99, schedule="onecycle",
                    num_workers=0)
    net = create_model("toy_cnn", 12, 9)
    groups = make_step(cfg, net, steps_per_epoch=4, cuda=False).optimizer.param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.01 for p in g["params"]}
    assert decayed == {id(p) for p in net.parameters()}
    data = ECGDataset(SignalCache(prepared), load_labels(prepared).head(40), cfg.spec, list(CLASSES))
    _, train_loader, val_loader = _loaders(cfg, data, data, 1, 0, torch.device("cpu"), False)
    assert isinstance(train_loader.sampler, tud.RandomSampler)
    assert isinstance(val_loader.sampler, tud.SequentialSampler)
