"""The PTB-XL benchmark's training and scoring details, each against an independent computation of what
its reference code does: steps per epoch (fastai's drop_last), training crop offsets
(`random.randint(0, L - crop - 1)`), windows over whole records of any length (start every stride,
kept while inside the record), the standardisation over whole records, and the precision of scoring."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.evaluation import score_records, scoring_amp
from models.inputs import ECGDataset, ECGModel, InputSpec, fit_standardization, make_loader, pad_batch, random_crop
from models.registry import create_model
from models.training import RunConfig, training_precision
from utils.cache import MANIFEST_JSON, SIGNALS_INDEX_CSV, SIGNALS_NPY, SignalCache, stream_signal_cache
from utils.io import write_manifest


def write_cache_folder(folder, lengths, sample_rate=100, seed=0):
    """A signal cache of random int16 records of the given lengths, as preprocess.py stores them; the
    labels rows (patient_id, class A) and each record's signal in mV."""
    import pandas as pd

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    signals = [rng.normal(300, 500, (12, n)).astype(np.int16) for n in lengths]
    ids = [f"R{i}" for i in range(len(lengths))]
    stream_signal_cache(folder, zip(ids, signals))
    write_manifest(folder / MANIFEST_JSON, "test", [folder / SIGNALS_NPY, folder / SIGNALS_INDEX_CSV],
                   sample_rate=sample_rate)
    labels = pd.DataFrame({"patient_id": ids, "A": [i % 2 for i in range(len(ids))]})
    return folder, labels, [s.astype(np.float64) / 1000 for s in signals]


def test_an_epoch_drops_the_last_incomplete_batch_only_when_asked():
    data = torch.utils.data.TensorDataset(torch.zeros(300, 1), torch.zeros(300, 1))
    assert len(make_loader(data, 128, True, 0, drop_last=True)) == 300 // 128 == 2
    assert len(make_loader(data, 128, True, 0)) == 3                 # the project's own rule keeps it
    assert len(make_loader(data, 128, False, 0, drop_last=True)) == 3  # scoring never drops a record
    small = torch.utils.data.TensorDataset(torch.zeros(50, 1), torch.zeros(50, 1))
    assert len(make_loader(small, 128, True, 0, drop_last=True)) == 1  # no complete batch: the one there is


def test_training_crops_start_where_the_reference_s_start():
    """A record of L samples, crop c: offsets 0 .. L - c - 1, each about equally often; L == c: offset 0."""
    x = torch.arange(1000, dtype=torch.float32).add(1).view(1, 1, 1000).expand(4000, 1, 1000)
    g = torch.Generator().manual_seed(0)
    starts = random_crop(x, 250, g)[:, 0, 0].long() - 1
    assert int(starts.min()) == 0 and int(starts.max()) == 749
    counts = np.bincount(starts.numpy(), minlength=750)
    assert counts[750:].sum() == 0 and (counts > 0).sum() > 740
    assert torch.equal(random_crop(x[:2, :, :250], 250, g), x[:2, :, :250])
    # whole records padded at the end: offsets within each record's own length
    whole = torch.zeros(3000, 1, 1000)
    lengths = torch.tensor([600, 1000, 250] * 1000)
    for i, n in enumerate(lengths.tolist()):
        whole[i, 0, :n] = torch.arange(1, n + 1)
    starts = random_crop(whole, 250, g, lengths)[:, 0, 0].long() - 1
    for n in (600, 1000, 250):
        mine = starts[lengths == n]
        assert int(mine.min()) == 0 and int(mine.max()) == max(n - 250 - 1, 0)


def small_net(n_leads: int = 2, n_classes: int = 3) -> torch.nn.Module:
    """A network of any input length (the benchmark's pooling head), small enough for many windows."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(n_leads, 8, 5), torch.nn.ReLU(), torch.nn.AdaptiveMaxPool1d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, n_classes)).eval()


def _whole_model(n_leads: int = 2):
    net = small_net(n_leads)
    return net, ECGModel(net, InputSpec(("I", "II")[:n_leads], 10.0, 100, 2.5, whole=True), 0.1, 2.0).eval()


def test_whole_records_are_scored_on_the_reference_s_windows():
    """The reference's windows of a record of L samples: starts 0, 125, ... while start + 250 <= L (no
    window ending at the last sample), the record's score the maximum over them."""
    net, model = _whole_model()
    records = [torch.randn(2, n) for n in (1000, 1234, 600, 250, 3000)]
    x, _, lengths = pad_batch([(r, torch.zeros(3)) for r in records])
    with torch.no_grad():
        out = model(x, lengths)
        for i, r in enumerate(records):
            n = r.shape[-1]
            starts = list(range(0, n - 250 + 1, 125))
            expected = torch.stack([net(((r[:, s:s + 250] - 0.1) / 2.0)[None]) for s in starts]).amax(dim=0)
            assert torch.allclose(out[i:i + 1], expected, atol=1e-5), n
            assert torch.allclose(model(r[None]), expected, atol=1e-5)  # one record alone: the same
    assert [len(range(0, n - 250 + 1, 125)) for n in (1000, 1234)] == [7, 8]


def test_standardisation_over_whole_records_ignores_the_padding(tmp_path):
    lengths = [600, 1500, 700, 2000]
    folder, labels, signals = write_cache_folder(tmp_path / "db", lengths, sample_rate=100)
    spec = InputSpec(("I", "II"), 10.0, 100, 2.5, whole=True)
    ds = ECGDataset(SignalCache(folder), labels, spec, ["A"])
    mean, std = fit_standardization(ds, batch_size=3)
    every = np.concatenate([s[:2] for s in signals], axis=1).astype(np.float64)
    assert mean == pytest.approx(every.mean(), rel=1e-9) and std == pytest.approx(every.std(), rel=1e-9)


def test_scoring_runs_in_the_precision_the_run_was_trained_in(tmp_path):
    """--no-amp (and the ptbxl preset) score in fp32: exactly the fp32 network; a bf16 run under bf16
    autocast, on the CPU as on a GPU."""
    folder, labels, _ = write_cache_folder(tmp_path / "db", [1000] * 6, sample_rate=100)
    spec = InputSpec(("I", "II"), 10.0, 100, 2.5)
    model = ECGModel(small_net(2, 1), spec).eval()
    cpu = torch.device("cpu")
    fp32 = score_records(model, SignalCache(folder), labels, spec, ["A"], cpu, 4, 0, None, amp=False)
    with torch.no_grad():
        x = torch.stack([ECGDataset(SignalCache(folder), labels, spec, ["A"])[i][0] for i in range(6)])
        exact = torch.sigmoid(model(x)).numpy()
    bf16 = score_records(model, SignalCache(folder), labels, spec, ["A"], cpu, 4, 0, None, amp=True)
    assert np.array_equal(fp32["p_A"].to_numpy(np.float32), exact[:, 0])
    assert not np.array_equal(bf16["p_A"].to_numpy(np.float32), exact[:, 0])
    assert np.allclose(bf16["p_A"], exact[:, 0], atol=0.05)
    cfg = RunConfig(amp=False, use_gpu=True)
    assert training_precision(cfg) == "fp32" and training_precision(dataclasses.replace(cfg, use_gpu=False)) == "fp32"
    assert scoring_amp({"config": {**cfg.to_dict(), "precision": "fp32"}}) is False
    assert scoring_amp({"config": {**cfg.to_dict(), "precision": "bf16"}}) is True
    # checkpoints written before the precision was recorded: what amp and the device gave
    old = {k: v for k, v in RunConfig(amp=True, use_gpu=True).to_dict().items() if k != "precision"}
    assert scoring_amp({"config": old}) is True
    assert scoring_amp({"config": {**old, "use_gpu": False}}) is False


def test_ptbxl_preset_trains_in_fp32_and_drops_the_last_batch_unless_told(prepared):
    import main

    args = main.parse_args(["--data-dir", str(prepared), "--preset", "ptbxl"])
    cfg = RunConfig.from_args(args)
    assert cfg.amp is False and cfg.drop_last is True
    assert RunConfig.from_args(main.parse_args(["--data-dir", str(prepared), "--preset", "ptbxl", "--amp"])).amp
    paper = RunConfig.from_args(main.parse_args(["--data-dir", str(prepared)]))
    assert paper.amp is True and paper.drop_last is False and paper.whole_records is False
