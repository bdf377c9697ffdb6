"""The PTB-XL benchmark's training and scoring details, each against an independent computation of what
its reference code does: steps per epoch (fastai's drop_last), training crop offsets
(`random.randint(0, L - crop - 1)`), windows over whole records of any length (start every stride,
kept while inside the record), the standardisation over whole records, and the precision of scoring."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.scoring import score_records, scoring_amp
from models.inputs import ECGDataset, ECGModel, InputSpec, fit_standardization, make_loader, pad_batch, random_crop
from models.training import RunConfig, training_precision
from utils.cache import MANIFEST_JSON, SIGNALS_INDEX_CSV, SIGNALS_NPY, SignalCache, stream_signal_cache
from utils.manifest import write_manifest


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


class _WindowMean(torch.nn.Module):
    """A probe network: each window's score is the mean of its samples (one class)."""

    def forward(self, x):
        return x.mean(dim=(1, 2))[:, None]


def test_the_window_ending_at_a_record_s_last_sample_is_scored():
    """Ramps, so that each record's last window has the highest score: a record of 1000 samples scores its
    window 750..999 (the reference's start + 250 <= L), beside a longer record in the same batch."""
    model = ECGModel(_WindowMean(), InputSpec(("I",), 10.0, 100, 2.5, whole=True), 0.0, 1.0).eval()
    records = [torch.arange(n, dtype=torch.float32)[None] for n in (1000, 1375)]
    x, _, lengths = pad_batch([(r, torch.zeros(1)) for r in records])
    with torch.no_grad():
        out = model(x, lengths)[:, 0]
    assert out.tolist() == [(750 + 999) / 2, (1125 + 1374) / 2]


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
    fp32 = score_records(model, ECGDataset(SignalCache(folder), labels, spec, ["A"]), ["A"], cpu, 4, 0, None, amp=False)
    with torch.no_grad():
        x = torch.stack([ECGDataset(SignalCache(folder), labels, spec, ["A"])[i][0] for i in range(6)])
        exact = torch.sigmoid(model(x)).numpy()
    bf16 = score_records(model, ECGDataset(SignalCache(folder), labels, spec, ["A"]), ["A"], cpu, 4, 0, None, amp=True)
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


@pytest.fixture(scope="module")
def tiny_architectures():
    """tiny_a and tiny_b, registered for this file's tests only (one registry per process)."""
    import models.registry as registry
    from models.registry import register_model

    def tiny(in_leads: int, num_classes: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv1d(in_leads, 4, 5), torch.nn.ReLU(), torch.nn.AdaptiveMaxPool1d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(4, num_classes))

    register_model("tiny_a", family="test")(tiny)
    register_model("tiny_b", family="test")(tiny)
    yield
    for name in ("tiny_a", "tiny_b"):
        registry._REGISTRY.pop(name, None)


ICBEB_ARGS = ["--tasks", "cpsc9", "--models", "tiny_a,tiny_b", "--epochs", "1", "--batch-size", "16",
              "--num-workers", "0", "--n-bootstrap", "10"]


@pytest.fixture(scope="module")
def cpsc_benchmark(tiny_architectures, tmp_path_factory):
    import benchmark
    import synth

    root = tmp_path_factory.mktemp("icbeb")
    synth.main(["--out", str(root / "CPSC"), "--n", "70", "--seed", "4", "--max-seconds", "16"])
    table = benchmark.main(["--data-dir", str(root / "CPSC"), "--results-dir", str(root / "results"),
                            "--tasks-dir", str(root / "tasks"), *ICBEB_ARGS])
    return root, table


@pytest.mark.slow
def test_the_icbeb_row_is_run_as_the_reference_runs_it(cpsc_benchmark):
    """cpsc9 under the protocol: 100 Hz, whole records (crops and windows over each), the benchmark's
    folds (train 1-8, validation 9, test 10), thresholds tuned on the training records' scores; the
    table says what differs from the published run and sets no published value beside it then."""
    from models.checkpoint import load_checkpoint
    from utils.ptbxl import bootstrap_indices, score_predictions
    from utils.cache import load_labels
    from utils.evaluator import read_scores, scores_arrays
    from utils.metrics import tune_gbeta_thresholds

    root, table = cpsc_benchmark
    folder = root / "tasks" / "CPSC_cpsc9"
    labels = load_labels(folder)
    row = table[table["model"] == "tiny_a"].iloc[0]
    assert row["thresholds"] == "train" and np.isnan(row["published_auc"])
    assert row["setup"].startswith("batch_size 16 (published: 128); epochs 1 (published: 50)")
    assert "folds" not in row["setup"] and "thresholds" not in row["setup"]
    assert "not CPSC2018 (layout" not in row["setup"]
    # synthetic records, 70 of them: not the data of the published values (test_protocol: the data checks)
    assert "data: synthetic" in row["setup"] and "data: 70 records found" in row["setup"]
    run = folder / "runs"
    model, ckpt = load_checkpoint(next(run.glob("tiny_a*")) / "model.pth")
    assert ckpt["config"]["whole_records"] and ckpt["config"]["sample_rate"] == 100
    assert ckpt["config"]["precision"] == "fp32" and ckpt["config"]["drop_last"]
    assert sorted(ckpt["split"]["test"]) == sorted(labels.loc[labels["fold"] == 10, "patient_id"])
    assert sorted(ckpt["split"]["train"]) == sorted(labels.loc[labels["fold"] <= 8, "patient_id"])
    # test scores: the maximum over 2.5-s windows every 1.25 s of each whole record
    cache = SignalCache(folder)
    classes = ckpt["label_set"]["classes"]
    test = read_scores(row["scores"], classes).set_index("patient_id")
    for pid in ckpt["split"]["test"][:4]:
        x = torch.from_numpy(cache.record(pid))
        windows = torch.stack([x[:, s:s + 250] for s in range(0, x.shape[1] - 250 + 1, 125)])
        with torch.no_grad():
            p = torch.sigmoid(model.net((windows - model.mean) / model.std)).amax(0).numpy()
        assert np.allclose(test.loc[pid, [f"p_{c}" for c in classes]].to_numpy(float), p, atol=1e-5)
    # F_beta / G_beta at thresholds tuned on the training records' scores
    train = root / "results" / "CPSC_cpsc9" / next(run.glob("tiny_a*")).name / "train_scores.csv"
    y_tr, p_tr = scores_arrays(read_scores(train, classes), classes)
    assert sorted(read_scores(train, classes)["patient_id"]) == sorted(ckpt["split"]["train"])
    y, p = scores_arrays(read_scores(row["scores"], classes), classes)
    keep = y.any(0) & ~y.all(0)
    expected = score_predictions(y[:, keep], p[:, keep], np.arange(len(y))[None],
                                 tune_gbeta_thresholds(y_tr[:, keep], p_tr[:, keep]))
    assert row["fbeta"] == pytest.approx(expected.loc["point", "F_beta_macro"], abs=1e-12)
    assert row["gbeta"] == pytest.approx(expected.loc["point", "G_beta_macro"], abs=1e-12)
    # the interval: the table's resamples of the test records are drawn with seed 0, whatever the runs' seed
    resampled = score_predictions(y[:, keep], p[:, keep], bootstrap_indices(y[:, keep], 10, 0))
    assert [row["auc_lo"], row["auc_hi"]] == pytest.approx(
        resampled.loc[["lower", "upper"], "macro_auc"].tolist(), abs=1e-12)
    md = (root / "results" / "CPSC" / "benchmark" / "table.md").read_text()
    assert "tuned on the training records' scores" in md and "Run otherwise than published" in md
    assert "\n\n**Paired comparison**" in md  # a paragraph of its own, not the last list item's continuation


def test_a_finished_icbeb_run_is_current_only_with_its_training_scores(cpsc_benchmark):
    """The runs' currency (what a rerun gathers without training or starting a worker or a SLURM job)
    counts the training records' scores the thresholds are tuned on: current with them, not without."""
    from models.checkpoint import peek_checkpoint
    from models.studies import finished_results
    from models.training import RunConfig

    root, _ = cpsc_benchmark
    run = next((root / "tasks" / "CPSC_cpsc9" / "runs").glob("tiny_a*"))
    cfg = dataclasses.replace(RunConfig.from_checkpoint(peek_checkpoint(run / "model.pth")), run_dir=str(run))
    results = root / "results"
    assert finished_results(cfg, results, 10, train_scores=True) == results / "CPSC_cpsc9" / run.name
    assert finished_results(cfg, results, 11, train_scores=True) is None  # another bootstrap: not current
    scores = results / "CPSC_cpsc9" / run.name / "train_scores.csv"
    scores.rename(scores.with_suffix(".kept"))
    try:
        assert finished_results(cfg, results, 10) == results / "CPSC_cpsc9" / run.name
        assert finished_results(cfg, results, 10, train_scores=True) is None
    finally:
        scores.with_suffix(".kept").rename(scores)


def test_cpsc9_on_ptbxl_data_is_refused(tmp_path, capsys):
    import benchmark
    import synth

    synth.main(["--out", str(tmp_path / "PTBXL"), "--layout", "ptbxl", "--n", "12", "--seed", "1"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--data-dir", str(tmp_path / "PTBXL"), "--results-dir", str(tmp_path / "r"),
                        "--tasks-dir", str(tmp_path / "t"), "--tasks", "cpsc9", "--epochs", "1"])
    message = str(e.value.code)  # script_main exits with the one `error:` line (exit status 1)
    assert message.startswith("error: --tasks cpsc9 is the ICBEB2018") and "holds PTB-XL" in message
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("table.csv"))


def test_a_ptbxl_task_on_records_of_another_layout_is_refused_naming_the_layout(synth_records, tmp_path):
    """The PTB-XL tasks are statements of ptbxl_database.csv: a CPSC-layout folder is refused before any
    preparation, naming its layout and the task it takes, not with an error of the preprocessing."""
    import benchmark

    with pytest.raises(SystemExit) as e:
        benchmark.main(["--data-dir", str(synth_records), "--results-dir", str(tmp_path / "r"), "--tasks-dir",
                        str(tmp_path / "t"), "--tasks", "superdiagnostic,form", "--epochs", "1"])
    assert str(e.value.code) == (f"error: --tasks superdiagnostic,form: PTB-XL's label tasks need PTB-XL as downloaded "
                                 f"(ptbxl_database.csv, scp_statements.csv); {synth_records} holds records of the wfdb "
                                 f"layout (a CPSC2018 folder takes --tasks cpsc9)")
    assert not (tmp_path / "t").exists()
    import synth  # a subfolder of PTB-XL given for PTB-XL itself: the folder to give is named

    synth.main(["--out", str(tmp_path / "PTBXL"), "--layout", "ptbxl", "--n", "12", "--seed", "1"])
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--data-dir", str(tmp_path / "PTBXL" / "records500"), "--results-dir", str(tmp_path / "r"),
                        "--tasks-dir", str(tmp_path / "t"), "--tasks", "rhythm", "--epochs", "1"])
    assert str(e.value.code).endswith(f"it lies inside PTB-XL's folder {(tmp_path / 'PTBXL').resolve()}: give that "
                                      f"folder")


@pytest.mark.slow
def test_cpsc9_on_other_records_is_not_set_beside_icbeb(tiny_architectures, tmp_path):
    """Records that are not CPSC2018's (another database's names), thresholds from validation: run, but
    the table names both differences and sets no published value beside any row."""
    import benchmark
    import synth

    synth.main(["--out", str(tmp_path / "src"), "--n", "40", "--seed", "6", "--max-seconds", "12"])
    other = tmp_path / "GEORGIA"
    other.mkdir()
    for hea in sorted((tmp_path / "src").glob("*.hea")):
        new = "E" + hea.stem[1:]
        (other / f"{new}.hea").write_text(hea.read_text().replace(hea.stem, new))
        (other / f"{new}.mat").write_bytes(hea.with_suffix(".mat").read_bytes())
    table = benchmark.main(["--data-dir", str(other), "--results-dir", str(tmp_path / "results"),
                            "--tasks-dir", str(tmp_path / "tasks"), "--thresholds-from", "val", *ICBEB_ARGS])
    assert table["published_auc"].isna().all() and (table["thresholds"] == "val").all()
    for setup in table["setup"]:
        assert "data: not CPSC2018 (layout wfdb, records such as E0" in setup
        assert "thresholds tuned on the validation records (published: the training records)" in setup
    assert not list((tmp_path / "results").rglob("train_scores.csv"))
