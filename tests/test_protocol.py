"""The model contract and the PTB-XL protocol: an architecture registered in one place goes through every
stage; windows and their maximum; the standardisation fitted on training records only; random crops;
the one-cycle schedule; a diverging run stops without a checkpoint."""
from __future__ import annotations

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
from utils.cache import SignalCache, load_labels
from utils.folds import split_labels

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


@pytest.fixture(autouse=True, scope="module")
def test_architectures():
    """toy_cnn and nan_net registered for this file's tests only (the registry is one per process: other
    test files must not see them)."""
    import models.registry as registry

    register_model("toy_cnn", family="test")(toy_cnn)
    register_model("nan_net", family="test")(_NaN)
    register_model("long_input", family="test", min_samples=500)(toy_cnn)
    yield
    for name in ("toy_cnn", "nan_net", "long_input"):
        registry._REGISTRY.pop(name, None)


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


@pytest.fixture(scope="module")
def synthetic_ptbxl(tmp_path_factory):
    import synth

    out = tmp_path_factory.mktemp("ptbxl")
    synth.main(["--out", str(out), "--layout", "ptbxl", "--n", "160", "--seed", "5"])
    return out


def test_benchmark_table_recomputes_from_its_score_files(synthetic_ptbxl, tmp_path, capsys):
    import benchmark
    from utils.ptbxl import score_file_classes
    from utils.evaluator import read_scores, scores_arrays
    from utils.metrics import macro_auc

    argv = ["--data-dir", str(synthetic_ptbxl), "--preset", "demo", "--tasks", "superdiagnostic,rhythm",
            "--models", "fcn_wang,toy_cnn", "--epochs", "1", "--results-dir", str(tmp_path / "results"),
            "--tasks-dir", str(tmp_path / "tasks")]
    table = benchmark.main(argv)
    assert list(table["task"]) == ["superdiagnostic"] * 3 + ["rhythm"] * 3
    assert list(table["model"])[:3] == ["fcn_wang", "toy_cnn", "ensemble"]
    signals = [tmp_path / "tasks" / f"{synthetic_ptbxl.name}_{t}" / "signals.npy" for t in ("all", "superdiagnostic")]
    assert signals[0].stat().st_ino == signals[1].stat().st_ino  # one cache, shared
    for task, rows in table.groupby("task"):
        probs = []
        for r in rows.itertuples():
            classes = score_file_classes(r.scores)
            y, p = scores_arrays(read_scores(r.scores, classes), classes)
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
