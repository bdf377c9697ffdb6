"""models/ and main.py: architecture, training, resume, determinism, lead selection, DDP, bad input."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import main
import predict
import preprocess
import shap_values
from models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from models.inputs import augment
from models.registry import create_model as build_model
from models.run import Run
from models.training import RunConfig, deterministic_mode
from models.training import train as train_run
from utils.errors import PipelineError
from utils.labels import CLASSES, LEADS
from utils.locks import exclusive_lock


@pytest.fixture
def train(tiny):
    """train(prepared, tmp, name, *flags): main.py's tiny model in the run folder tmp/name."""
    def run(prepared: Path, tmp: Path, name: str, *extra: str) -> dict:
        return main.main(["--data-dir", str(prepared), *tiny, "--run", str(tmp / f"{name}"), *extra])
    return run


def test_resnet34_matches_the_paper():
    model = build_model("resnet34", 12, 9)
    assert sum(p.numel() for p in model.parameters()) == 16_610_185  # the paper's 16.6 M
    assert model(torch.randn(2, 12, 15000)).shape == (2, 9)
    assert build_model("resnet34", 1, 9)(torch.randn(2, 1, 3000)).shape == (2, 9)
    assert sum(p.numel() for p in build_model("resnet18", 12, 9).parameters()) < 9e6
    blocks = [len(stage) for stage in model.stages]
    assert blocks == [3, 4, 6, 3]


def test_training_reduces_loss_and_writes_outputs(trained):
    history = trained["history"]
    assert len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert trained["model_path"].exists() and trained["run"].last.exists()
    log = pd.read_csv(trained["run"].log)
    assert list(log["epoch"]) == [1, 2, 3] and {"val_f1", "val_auc", "val_loss"} <= set(log.columns)
    model, ckpt = load_checkpoint(trained["model_path"])
    assert ckpt["config"]["leads"] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert ckpt["best_f1"] == max(h["val_f1"] for h in history)


def test_checkpoint_holds_config_label_set_and_split_as_plain_data(trained):
    ckpt = torch.load(trained["model_path"], map_location="cpu", weights_only=True)
    assert ckpt["format"] == CHECKPOINT_FORMAT
    assert ckpt["label_set"] == {"name": "cpsc9", "classes": list(CLASSES)}
    assert set(ckpt["split"]) == {"train", "val", "test"}
    cfg = RunConfig.from_dict(ckpt["config"])  # rebuilt from the plain dict, equal field by field
    assert cfg.to_dict() == ckpt["config"] and cfg.arch == "resnet10" and cfg.sample_rate == 100
    assert cfg.label_set == "cpsc9" and cfg.leads == LEADS


def test_an_older_checkpoint_fails_naming_its_format(trained, tmp_path):
    ckpt = torch.load(trained["model_path"], map_location="cpu", weights_only=True)
    old = {k: v for k, v in ckpt.items() if k not in ("format", "config", "label_set")}
    old["args"] = {"arch": "resnet18"}
    (tmp_path / "old").mkdir()
    torch.save(old, tmp_path / "old" / "model.pth")
    with pytest.raises(PipelineError, match="checkpoint of format 1"):
        load_checkpoint(tmp_path / "old" / "model.pth")
    with pytest.raises(SystemExit, match="format 1.*retrain"):
        predict.main(["--run", str(tmp_path / "old")])


def test_train_takes_a_config_and_runs_default_to_the_data_folder(prepared, tmp_path):
    """train(cfg) is the library's training entry point; without --run a run lives in
    data/<db>/runs/<run>/ with its resume checkpoint and log."""
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    cfg = RunConfig(data_dir=str(data), arch="resnet10", seconds=2, sample_rate=100, epochs=1, lr=1e-3,
                    batch_size=16, num_workers=0, limit=60)
    out = train_run(dataclasses.replace(cfg, leads=("I", "V5")))
    run = data / "runs" / "resnet10_I-V5_42"
    assert out["model_path"] == run / "model.pth"
    assert {p.name for p in run.iterdir()} >= {"model.pth", "last.pth", "log.csv"}
    _, ckpt = load_checkpoint(run / "model.pth")
    assert ckpt["config"]["leads"] == ["I", "V5"] and ckpt["data"]["name"] == "data"


@pytest.mark.slow
def script_validation_f1(monkeypatch, values: list[float]) -> None:
    """Each epoch's validation F1 (the one that chooses model.pth) taken in turn from `values`, the rest of the
    validation as computed."""
    from models import training

    real, scripted = training.validate, iter(values)
    monkeypatch.setattr(training, "validate",
                        lambda *args, **kwargs: {**real(*args, **kwargs), "val_f1": next(scripted)})


def test_resume_ends_where_an_uninterrupted_run_would(train, prepared, tmp_path, monkeypatch):
    """The same epochs, weights, and kept checkpoint: with validation F1s 0.5, 0.3, 0.2 (scripted) model.pth
    stays epoch 1's, the resumed run remembering the best F1 it reached before it stopped."""
    script_validation_f1(monkeypatch, [0.5, 0.3, 0.2] + [0.5, 0.3] + [0.2])  # full; part; resumed
    full = train(prepared, tmp_path, "full", "--epochs", "3")
    train(prepared, tmp_path, "part", "--epochs", "2")
    resumed = train(prepared, tmp_path, "part", "--epochs", "3", "--resume")
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    for name in ("last.pth", "model.pth"):
        a, b = (torch.load(tmp_path / run / name, weights_only=True) for run in ("full", "part"))
        assert a["epoch"] == b["epoch"] == (3 if name == "last.pth" else 1) and a["best_f1"] == b["best_f1"] == 0.5
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_differs(train, prepared, tmp_path):
    a = train(prepared, tmp_path, "a", "--epochs", "1")
    b = train(prepared, tmp_path, "b", "--epochs", "1")
    c = train(prepared, tmp_path, "c", "--epochs", "1", "--seed", "3")
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert strip(a["history"]) != strip(c["history"])


def test_each_seed_shuffles_and_drops_out_its_own_way_every_epoch():
    """An epoch's shuffle and dropout draws follow the run's seed and the epoch (other seeds: other draws;
    the same seed and epoch, as when a run resumes: the same draws)."""
    from torch.utils.data import DataLoader
    from models.training import RunConfig, _seed_epoch

    def draws(seed: int, epoch: int) -> tuple[list, list]:
        loader = DataLoader(list(range(50)), batch_size=50, shuffle=True, generator=torch.Generator())
        _seed_epoch(RunConfig(seed=seed), epoch, 0, loader, None)
        return next(iter(loader)).tolist(), torch.nn.functional.dropout(torch.ones(64), 0.5).tolist()

    assert draws(0, 1) == draws(0, 1)
    assert all(a != b for a, b in zip(draws(0, 1), draws(1, 1))) and all(a != b for a, b in zip(draws(0, 1), draws(0, 2)))


def test_lead_selection(train, prepared, tmp_path, capsys):
    out = train(prepared, tmp_path, "three", "--epochs", "1", "--leads", "v5,I,aVR")
    model, ckpt = load_checkpoint(out["model_path"])
    assert ckpt["config"]["leads"] == ["I", "aVR", "V5"] and model.net.stem[0].in_channels == 3
    with pytest.raises(SystemExit):
        train(prepared, tmp_path, "bad", "--leads", "I,V7")
    err = capsys.readouterr().err
    assert "V7" in err and "aVR" in err and "V6" in err


def test_augmentation_is_a_fair_coin():
    x = torch.ones(4000, 12, 10)
    y = augment(x, torch.Generator().manual_seed(0))
    scaled_or_shifted = (y != 1).any(dim=(1, 2)).float().mean().item()
    assert abs(scaled_or_shifted - 0.75) < 0.03  # P(scale or shift) = 1 - 0.5 * 0.5
    shift = (y - x)[:, :, 0] - (y - x)[:, :, 1]  # scaling keeps a constant; shift only moves it
    assert shift.abs().max() < 1e-5 and (y - 1).abs().max() < 0.6


def test_augmentation_shifts_by_whole_microvolts_from_minus_20_to_20_and_scales_by_n_1_0_1():
    """The original's per-lead augmentation, applied to every record (p = 1): on zeros only the shift shows,
    each whole µV from -20 to +20 inclusive and no other; on ones, the scale, N(1, 0.1)."""
    zeros = augment(torch.zeros(20_000, 12, 1), torch.Generator().manual_seed(0), p=1.0)
    microvolts = zeros * 1000
    assert (microvolts - microvolts.round()).abs().max() < 1e-3  # whole µV, up to float32 rounding
    assert set(microvolts.round().int().unique().tolist()) == set(range(-20, 21))
    # per lead: a record's 12 shifts are drawn apart (all equal by chance: 41 ** -11 each)
    assert (microvolts.round()[:, :, 0].std(dim=1) > 0).float().mean().item() > 0.999
    ones = augment(torch.ones(20_000, 12, 1), torch.Generator().manual_seed(1), p=1.0)
    scale = ones - augment(torch.zeros(20_000, 12, 1), torch.Generator().manual_seed(1), p=1.0)  # same draws
    assert abs(scale.mean().item() - 1) < 0.003 and abs(scale.std().item() - 0.1) < 0.003


def test_a_rerun_keeps_a_finished_run_and_refuses_other_settings(train, tiny, prepared, tmp_path, capsys):
    """The run folder decides: same settings and finished -> kept, said in one line; other settings ->
    refused unless --force; --resume with nothing to resume -> refused."""
    first = train(prepared, tmp_path, "x", "--epochs", "1")
    weights = first["model_path"].read_bytes()
    again = train(prepared, tmp_path, "x", "--epochs", "1")
    assert again.get("skipped") and "current, nothing to train" in capsys.readouterr().out
    assert first["model_path"].read_bytes() == weights
    for extra in ([], ["--resume"]):
        with pytest.raises(SystemExit, match=r"other settings \(seconds: 2.0 -> 3.0\).*--force"):
            main.main(["--data-dir", str(prepared), *tiny, "--seconds", "3", "--epochs", "1",
                       "--run", str(tmp_path / "x"), *extra])
    with pytest.raises(SystemExit, match=r"other settings \(seed: 42 -> 7\).*--force"):  # another seed: another run
        train(prepared, tmp_path, "x", "--epochs", "1", "--seed", "7")
    forced = train(prepared, tmp_path, "x", "--epochs", "1", "--seconds", "3", "--force")
    assert not forced.get("skipped") and forced["model_path"].read_bytes() != weights
    with pytest.raises(SystemExit, match="no checkpoint"):
        train(prepared, tmp_path, "never", "--resume")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="run `python preprocess.py"):
        train(empty, tmp_path, "nocache")


@pytest.mark.slow
def test_ddp_two_gloo_processes_agree(tiny, prepared_100hz, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "main.py", "--", "--data-dir", str(prepared_100hz), *tiny, "--epochs", "1", "--limit", "80",
           "--run", str(tmp_path / "ddp")]  # after `--` torchrun leaves --run (else taken for its --run-path) alone
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}  # torchrun leaves a folder of its own
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]
    assert "DDP: 2 ranks agree" in proc.stdout, proc.stdout[-2000:]
    assert (tmp_path / "ddp" / "model.pth").exists()


def test_the_epoch_loss_is_the_mean_over_records_not_over_batches():
    """log.csv's train_loss (train_one_epoch) weighs each batch by its records: batches of 4, 4 and 2 give
    one binary cross-entropy over all ten (weights frozen at lr 0, a network without batch statistics),
    not the mean of the three batch means."""
    from torch.utils.data import DataLoader, TensorDataset

    from models.training import Step, train_one_epoch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8, 3))
    x, y = torch.randn(10, 2, 8), (torch.rand(10, 3) > 0.5).float()
    step = Step(torch.optim.SGD(net.parameters(), lr=0.0), augment=False)
    got = train_one_epoch(net, DataLoader(TensorDataset(x, y), batch_size=4), step, torch.device("cpu"),
                          torch.Generator(), "epoch")
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    with torch.no_grad():
        over_records = bce(net(x), y).item()
        over_batches = np.mean([bce(net(x[i:i + 4]), y[i:i + 4]).item() for i in (0, 4, 8)])
    assert got == pytest.approx(over_records, rel=1e-9) and got != pytest.approx(over_batches, rel=1e-6)


def test_every_epoch_trains_in_training_mode(prepared, tiny, tmp_path, monkeypatch):
    """Validation puts the model in eval mode after each epoch: the next epoch must switch back (batch norm
    statistics and dropout of training), not go on in eval mode from its second epoch."""
    from models import training

    real, modes = training.train_one_epoch, []

    def spy(model, *args, **kwargs):
        loss = real(model, *args, **kwargs)
        modes.append(model.training)
        return loss

    monkeypatch.setattr(training, "train_one_epoch", spy)
    main.main(["--data-dir", str(prepared), *tiny, "--epochs", "3", "--limit", "40", "--run", str(tmp_path / "r")])
    assert modes == [True, True, True]


def test_drop_last_leaves_out_the_incomplete_batch(prepared, tiny, tmp_path):
    """--drop-last (the benchmark's protocol): an epoch of N training records takes N // batch optimizer steps,
    without it the incomplete batch is one more (counted by the optimizer's own step counts)."""
    for flags, steps in (([], lambda n: -(-n // 16)), (["--drop-last"], lambda n: n // 16)):
        run = tmp_path / f"run{len(flags)}"
        main.main(["--data-dir", str(prepared), *tiny, "--epochs", "1", "--limit", "60", *flags, "--run", str(run)])
        last = torch.load(run / "last.pth", weights_only=True)
        n_train = len(last["split"]["train"])
        assert n_train % 16, n_train  # an incomplete batch to drop
        assert {int(s["step"]) for s in last["optimizer"]["state"].values()} == {steps(n_train)}


def test_the_order_records_are_trained_in_follows_the_seed(prepared, tiny, tmp_path, monkeypatch):
    """The shuffling is seeded by the run's seed (and the epoch): two seeds draw the same training records
    in other orders, and one seed the same order again. (The seed also draws the split: held at seed 1's
    here, so that the orders alone differ.)"""
    from models import training
    from models.inputs import ECGDataset
    from utils.folds import split_labels

    monkeypatch.setattr(training, "split_labels", lambda labels, seed, *args, **kwargs:
                        split_labels(labels, 1, *args, **kwargs))

    real_epoch, real_item, drawn, inside = training.train_one_epoch, ECGDataset.__getitem__, [], [False]

    def epoch(*args, **kwargs):
        inside[0] = True
        try:
            return real_epoch(*args, **kwargs)
        finally:
            inside[0] = False

    def item(self, i):
        if inside[0]:
            drawn.append(self.ids[i])
        return real_item(self, i)

    monkeypatch.setattr(training, "train_one_epoch", epoch)
    monkeypatch.setattr(ECGDataset, "__getitem__", item)
    orders = []
    for i, seed in enumerate((1, 2, 1)):
        drawn.clear()
        main.main(["--data-dir", str(prepared), *tiny, "--epochs", "1", "--seed", str(seed),
                   "--run", str(tmp_path / f"run{i}")])
        orders.append(list(drawn))
    assert sorted(orders[0]) == sorted(orders[1]) and len(orders[0]) > 100
    assert orders[0] != orders[1] and orders[0] == orders[2]


@pytest.mark.slow
def test_deterministic_runs_repeat_exactly_across_processes(prepared_100hz, tmp_path):
    """Two separate processes at a realistic depth (ResNet34 at half the paper's channels, 12 leads, 5 s at
    100 Hz, 2 epochs): a fresh one, and this test's own, which has run other tests before (other seeds,
    threads and settings). With --deterministic their logs and weights are bit-identical."""
    flags = ["--data-dir", str(prepared_100hz), "--arch", "resnet34", "--arch-arg", "width=32", "--seconds", "5",
             "--sample-rate", "100", "--epochs", "2", "--lr", "1e-3", "--batch-size", "16", "--num-workers", "0",
             "--limit", "40", "--deterministic"]
    fresh = subprocess.Popen([sys.executable, "main.py", *flags, "--run", str(tmp_path / "run0")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    main.main([*flags, "--run", str(tmp_path / "run1")])
    out, _ = fresh.communicate(timeout=400)
    assert fresh.returncode == 0, out[-2000:]
    logs = [pd.read_csv(tmp_path / f"run{i}" / "log.csv").drop(columns="seconds") for i in range(2)]
    assert len(logs[0]) == 2
    pd.testing.assert_frame_equal(logs[0], logs[1], check_exact=True)
    weights = [torch.load(tmp_path / f"run{i}" / "last.pth", weights_only=True)["model"] for i in range(2)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    _, ckpt = load_checkpoint(tmp_path / "run0" / "model.pth")
    assert ckpt["config"]["deterministic"] is True


def test_deterministic_mode_restores_the_callers_settings():
    before = torch.get_num_threads()
    with deterministic_mode(True, torch.device("cpu")):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.get_num_threads() == before and not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shards_are_disjoint_and_cover_the_training_split(prepared, world):
    """What each rank trains on, through the sampler _train builds: disjoint ids per epoch whose union is
    the training split (padding repeats at most world - 1 records), reshuffled from epoch to epoch."""
    from models.inputs import ECGDataset, InputSpec
    from models.training import shard_sampler
    from utils.cache import SignalCache, load_labels
    from utils.folds import split_labels

    train_part = split_labels(load_labels(prepared), 42)["train"]
    ds = ECGDataset(SignalCache(prepared), train_part, InputSpec(seconds=2, sample_rate=100), list(CLASSES))
    assert shard_sampler(ds, 1, 0, 42) is None
    orders = []
    for epoch in (1, 2):
        shards = []
        for rank in range(world):
            sampler = shard_sampler(ds, world, rank, 42)
            sampler.set_epoch(epoch)
            shards.append([ds.ids[i] for i in sampler])
        seen = [pid for shard in shards for pid in shard]
        assert set(seen) == set(train_part["patient_id"])
        assert len(seen) - len(set(seen)) == (-len(ds)) % world  # only the padding repeats
        assert len({len(s) for s in shards}) == 1
        orders.append(seen)
    assert orders[0] != orders[1]


def test_one_writer_per_run_folder(tiny, prepared, tmp_path):
    """A second main.py on a run that is being trained is refused at once, naming the holder."""
    run = Run(tmp_path / "busy")
    with exclusive_lock(run.lock, f"run {run}"):
        with pytest.raises(SystemExit, match=f"is being written by another process .pid {os.getpid()}"):
            main.main(["--data-dir", str(prepared), *tiny, "--epochs", "1", "--run", str(run)])
    assert not run.model.exists() and not run.last.exists()


def test_a_run_is_never_written_into_a_preprocessed_data_folder(tiny, prepared, capsys):
    """main.py --run, like `models import --out`, naming a preprocessed folder (the data's own): a run's
    files would mix with the database's records and cache. Refused (exit 2) before anything is written."""
    import models.__main__ as models_command

    before = sorted(p.name for p in prepared.iterdir())
    for command, argv, flag in ((main, ["--data-dir", str(prepared), *tiny, "--epochs", "1", "--run", str(prepared)],
                                 "--run"),
                                (models_command, ["import", "--from", "fastai", str(prepared / "labels.csv"), "--arch",
                                                  "fcn_wang", "--classes", "A,B", "--out", str(prepared)], "--out")):
        with pytest.raises(SystemExit) as e:
            command.main(argv)
        assert e.value.code == 2 and f"argument {flag}: {prepared} is a preprocessed data folder; name a run " \
                                     f"folder, e.g. {prepared / 'runs' / 'NAME'}" in capsys.readouterr().err
    assert sorted(p.name for p in prepared.iterdir()) == before


def test_unwritable_folders_fail_before_any_work(tiny, copy_run, trained, prepared, tmp_path, capsys):
    """A run or results folder that cannot be written (here: under a file, which stops root too) fails at
    once with one line, not after the first epoch or the scoring."""
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with pytest.raises(SystemExit) as e:  # so is a run folder under a file
        main.main(["--data-dir", str(prepared), *tiny, "--epochs", "1", "--run", str(blocked / "x")])
    captured = capsys.readouterr()
    assert e.value.code == 2 and f"argument --run: {blocked / 'x'} cannot be a folder" in captured.err
    assert "epoch" not in captured.out
    run = copy_run(trained, tmp_path / "m")
    with pytest.raises(SystemExit) as e:  # a results folder under a file is a bad argument
        predict.main(["--run", str(run), "--results-dir", str(blocked / "r"), "--n-bootstrap", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument --results-dir: {blocked / 'r'} cannot be a folder" in err
    assert "score" not in err


def test_a_split_without_test_records_is_refused_before_any_training(tiny, tmp_path, capsys):
    """PTB-XL's split is fixed (test: strat_fold 10); 25 synthetic records of this seed have none in fold 10,
    so the run could never be evaluated: refused at once, not after its training (a benchmark would train
    every run before failing each)."""
    import synth

    synth.main(["--out", str(tmp_path / "raw"), "--layout", "ptbxl", "--n", "25", "--seed", "9"])
    assert 10 not in set(pd.read_csv(tmp_path / "raw" / "ptbxl_database.csv")["strat_fold"])
    preprocess.main(["--data-dir", str(tmp_path / "raw"), "--out", str(tmp_path / "d"), "--num-workers", "1"])
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"^error: no records in the test split of .*d "
                                         r"\(train \d+, val \d+, test 0 records\); too few records\?$"):
        main.main(["--data-dir", str(tmp_path / "d"), *tiny, "--epochs", "1", "--run", str(run)])
    assert "epoch" not in capsys.readouterr().out and not list(run.glob("*.pth"))


@pytest.mark.slow
def test_seconds_longer_than_every_record_is_said(tiny, prepared, tmp_path, capsys):
    main.main(["--data-dir", str(prepared), *tiny, "--seconds", "20", "--epochs", "1", "--limit", "60",
               "--run", str(tmp_path / "long")])
    assert "longer than every training record (longest 12.0 s)" in capsys.readouterr().err


QUIET = ["--n-bootstrap", "0", "--num-workers", "0", "--no-figures"]


def test_a_run_on_other_data_of_the_same_folder_is_neither_current_nor_reused(one, small, tmp_path, capsys):
    data = tmp_path / "E"
    shutil.copytree(small["data"], data)
    run = tmp_path / "m"
    main.main(["--data-dir", str(data), *one, "--run", str(run)])
    weights = (run / "model.pth").read_bytes()
    evaluate = ["--run", str(run), "--results-dir", str(tmp_path / "r"), *QUIET]
    predict.main(evaluate)
    preprocess.main(["--data-dir", str(small["raw"]), "--out", str(data), "--num-workers", "1", "--seed", "5"])
    with pytest.raises(SystemExit, match=r"other settings \(data: \w+ -> \w+\).*--force"):
        main.main(["--data-dir", str(data), *one, "--run", str(run)])
    assert (run / "model.pth").read_bytes() == weights
    capsys.readouterr()
    predict.main(evaluate)  # same model, but the records it reads changed: evaluated again
    assert "is current" not in capsys.readouterr().out


def test_a_model_copied_in_from_another_run_is_refused(one, trained, prepared, tmp_path):
    run = tmp_path / "m"
    main.main(["--data-dir", str(prepared), *one, "--run", str(run)])
    shutil.copy(trained["model_path"], run / "model.pth")
    both = rf"{run / 'model.pth'} \(run id \w+\) and {run / 'last.pth'} \(run id \w+\) belong to different runs"
    with pytest.raises(SystemExit, match=both):
        main.main(["--data-dir", str(prepared), *one, "--run", str(run), "--epochs", "2"])
    with pytest.raises(SystemExit, match=both):
        predict.main(["--run", str(run), "--results-dir", str(tmp_path / "r"), *QUIET])
    with pytest.raises(SystemExit, match=both):
        shap_values.main(["--run", str(run), "--results-dir", str(tmp_path / "r")])


def test_batches_of_one_record_train_where_the_network_allows_it(tiny, prepared, tmp_path):
    out = main.main(["--data-dir", str(prepared), *tiny, "--batch-size", "1", "--limit", "30", "--epochs", "1",
                     "--run", str(tmp_path / "one")])
    assert len(out["history"]) == 1 and out["model_path"].exists()


def test_a_one_record_validation_fold_has_no_auc_and_no_warning():
    import math
    import warnings

    from torch.utils.data import DataLoader, TensorDataset

    from models.training import validate

    loader = DataLoader(TensorDataset(torch.randn(1, 12, 200), torch.tensor([[1.0, 0.0, 0.0]])), batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would be one
        row = validate(build_model("resnet18", 12, 3), loader, torch.device("cpu"), False)
    assert math.isnan(row["val_auc"]) and row["val_f1"] in (0.0, 1 / 3, 2 / 3, 1.0)


def test_inputs_are_made_once_per_process_and_kept_within_a_memory_bound(prepared, monkeypatch):
    """A record read again (the next epoch, another run of a study, another lead of it) is the kept input,
    bit for bit what resampling its leads alone gives; what a caller does to the tensor it got never
    reaches the kept one; past the memo's bound the rest are made afresh, for their own leads only."""
    import models.inputs as inputs
    from models.inputs import ECGDataset, InputMemo, InputSpec
    from utils.cache import SignalCache, load_labels

    labels = load_labels(prepared).head(6)
    cache = SignalCache(prepared)

    def alone(leads: tuple, pid: str) -> torch.Tensor:  # the input made directly, nothing kept
        spec = InputSpec(leads, 2.0, 100)
        rows = [LEADS.index(lead) for lead in leads]
        return torch.from_numpy(spec.to_model_rate(cache.window(pid, rows, 2 * int(cache.sample_rate)),
                                                   cache.sample_rate))

    made = []
    real = ECGDataset._made
    monkeypatch.setattr(ECGDataset, "_made", lambda self, rows, i: made.append((len(rows), i)) or real(self, rows, i))
    monkeypatch.setattr(inputs, "INPUTS", InputMemo())
    every = ECGDataset(cache, labels, InputSpec(seconds=2, sample_rate=100), list(CLASSES))
    first = [every[i][0] for i in range(6)]
    assert made == [(12, i) for i in range(6)]
    assert all(torch.equal(x, alone(LEADS, pid)) for x, pid in zip(first, labels["patient_id"]))
    first[0].fill_(7.0)
    v5 = ECGDataset(SignalCache(prepared), labels, InputSpec(("V5",), 2, 100), list(CLASSES))  # the same file
    assert all(torch.equal(v5[i][0], alone(("V5",), pid)) for i, pid in enumerate(labels["patient_id"]))
    assert torch.equal(every[0][0], alone(LEADS, labels["patient_id"][0]))
    assert len(made) == 6  # nothing made again

    made.clear()
    monkeypatch.setattr(inputs, "INPUTS", InputMemo(max_bytes=2 * first[1].numel() * 4))
    for _ in range(2):
        assert all(torch.equal(v5[i][0], alone(("V5",), pid)) for i, pid in enumerate(labels["patient_id"]))
    assert made == [(12, 0), (12, 1), *[(1, i) for i in range(2, 6)] * 2]

    monkeypatch.setattr(inputs, "INPUTS", InputMemo())  # at the cache's own rate nothing is resampled: nothing kept
    native = ECGDataset(cache, labels, InputSpec(("V5",), 2, int(cache.sample_rate)), list(CLASSES))
    assert native[0][0].shape == (1, 2 * int(cache.sample_rate)) and inputs.INPUTS.kept == {}


def test_a_checkpoint_is_unpickled_once_until_it_is_replaced(trained, tmp_path, monkeypatch):
    """peek_checkpoint reads an unchanged file once (a study peeks at every run folder for each of its runs),
    hands out a new dict each time, and reads the file again once it was replaced."""
    from models.checkpoint import peek_checkpoint, read_checkpoint, save_checkpoint

    path = tmp_path / "model.pth"
    shutil.copy(trained["model_path"], path)
    loads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    first = peek_checkpoint(path)
    first["epoch"] = -1
    second = peek_checkpoint(path)
    assert len(loads) == 1 and second["epoch"] == 3 and second["run_id"] == first["run_id"]
    ckpt = read_checkpoint(path)
    save_checkpoint(path, {**ckpt, "epoch": 99})
    assert peek_checkpoint(path)["epoch"] == 99 and len(loads) == 3


def test_model_pth_is_the_first_epoch_of_the_best_validation_f1_or_the_last(prepared, tiny, tmp_path, monkeypatch):
    """With validation F1s 0.3, 0.5, 0.5, 0.4 (scripted), model.pth is epoch 2's: the best, its first
    epoch on a tie; with --keep last it is epoch 4's. last.pth is always the last epoch's."""
    script_validation_f1(monkeypatch, [0.3, 0.5, 0.5, 0.4] * 2)
    for keep, kept in (("best", 2), ("last", 4)):
        main.main(["--data-dir", str(prepared), *tiny, "--epochs", "4", "--limit", "40", "--keep", keep,
                   "--run", str(tmp_path / keep)])
        model, last = (torch.load(tmp_path / keep / name, weights_only=True) for name in ("model.pth", "last.pth"))
        assert (model["epoch"], last["epoch"]) == (kept, 4), keep
        assert [round(r["val_f1"], 2) for r in last["history"]] == [0.3, 0.5, 0.5, 0.4]


def test_standardisation_is_fitted_on_the_training_records_alone(prepared_100hz, tiny, tmp_path):
    """--standardize: the model's mean and sd are those of every sample of every lead of its training
    records' inputs (their last 2 s at 100 Hz, here from the cache with numpy), never of validation ones."""
    from utils.cache import SignalCache

    out = main.main(["--data-dir", str(prepared_100hz), *tiny, "--epochs", "1", "--limit", "60", "--standardize",
                     "--run", str(tmp_path / "std")])
    ckpt = torch.load(out["model_path"], weights_only=True)
    cache = SignalCache(prepared_100hz)

    def inputs(ids):
        return np.concatenate([cache.record(pid, dtype=np.float64)[:, -200:].ravel() for pid in ids])

    train, val = inputs(ckpt["split"]["train"]), inputs(ckpt["split"]["val"])
    fitted = (float(ckpt["model"]["mean"]), float(ckpt["model"]["std"]))
    assert fitted == pytest.approx((train.mean(), train.std()), rel=1e-4)
    assert fitted != pytest.approx((val.mean(), val.std()), rel=1e-3)


def test_the_log_s_validation_auc_is_the_kept_model_s_on_its_validation_records(evaluated_copy, trained, prepared,
                                                                                 tmp_path):
    """log.csv's val_auc of the epoch model.pth holds is the mean class AUC (sklearn) of that model's scores on
    the run's validation records, as predict.py scores them: the validation is on those records, not others."""
    from sklearn.metrics import roc_auc_score

    from models.checkpoint import peek_checkpoint
    from utils.evaluator import read_scores

    run, _ = evaluated_copy(trained, prepared, tmp_path)
    val = read_scores(next((tmp_path / "r").rglob("val_scores.csv")), CLASSES)
    ckpt = peek_checkpoint(run.model)
    assert val["patient_id"].tolist() == list(ckpt["split"]["val"])
    aucs = [roc_auc_score(val[c], val[f"p_{c}"]) for c in CLASSES if 0 < val[c].sum() < len(val)]
    log = pd.read_csv(Path(trained["model_path"]).parent / "log.csv").set_index("epoch")  # the copy has no log
    assert log.loc[ckpt["epoch"], "val_auc"] == pytest.approx(np.mean(aucs), abs=1e-6)


def test_a_training_fraction_is_the_seed_s_own_nested_subset(prepared):
    """--train-fraction 0.5 trains on nested_subset(the split's training records, 0.5, --seed): each seed its
    own subset (the spread over seeds of a learning curve is that of the subsets too)."""
    from models.training import run_splits
    from utils.cache import SignalCache, data_label_set, data_split_rule, load_labels
    from utils.folds import nested_subset, split_labels

    classes = data_label_set(prepared)["classes"]
    for seed in (1, 2):
        cfg = RunConfig(data_dir=str(prepared), seed=seed, train_fraction=0.5)
        train = run_splits(cfg, None, SignalCache(prepared), warn=False)["train"]["patient_id"].tolist()
        whole = split_labels(load_labels(prepared), seed, None, None, data_split_rule(prepared))["train"]
        assert train == nested_subset(whole, classes, 0.5, seed)["patient_id"].tolist()
        assert train != nested_subset(whole, classes, 0.5, 0)["patient_id"].tolist()


def test_one_cache_read_at_two_model_rates_gives_each_rate_its_own_inputs(prepared):
    """Inputs resampled from the cache are kept in memory (models.inputs.INPUTS): a process reading one
    record at 100 Hz and then at 250 Hz (a study, a benchmark, a test session) gets each rate's own input,
    the cache's record resampled by scipy (up to the window's first samples), never the first rate's."""
    from scipy.signal import resample_poly

    from models.inputs import ECGDataset, InputSpec
    from utils.cache import SignalCache, load_labels

    cache, labels = SignalCache(prepared), load_labels(prepared).iloc[:1]
    pid = labels["patient_id"].iloc[0]
    for rate in (100, 250):
        x, _ = ECGDataset(cache, labels, InputSpec(seconds=2.0, sample_rate=rate), CLASSES)[0]
        whole = resample_poly(cache.record(pid, dtype=np.float64), rate, 500, axis=1)
        assert x.shape == (12, 2 * rate)
        # the window is resampled with a margin, not the whole record: its first samples see the filter's edge
        np.testing.assert_allclose(x.numpy()[:, 10:], whole[:, -2 * rate + 10:], atol=2e-3)


def test_more_epochs_on_a_finished_one_cycle_run_is_another_run(train, prepared, tmp_path, capsys):
    """A one-cycle schedule spans its epochs: 2 epochs are not 1 epoch resumed for one more (the cycle would
    have to be other from the start). Refused as other settings, naming epochs, unless --force."""
    train(prepared, tmp_path, "cycle", "--epochs", "1", "--schedule", "onecycle", "--limit", "40")
    with pytest.raises(SystemExit, match=r"other settings \(.*epochs: 1 -> 2"):
        train(prepared, tmp_path, "cycle", "--epochs", "2", "--schedule", "onecycle", "--limit", "40")
