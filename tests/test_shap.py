"""shap_values.py and models/explain.py: shapes, caching, stale-cache detection, figures, thresholds, every
architecture, and expected gradients against shap's own GradientExplainer and against completeness."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import predict
import shap_values
from models.explain import explain, recurrent_gradients
from models.run import Run
from utils.labels import CLASSES, LEADS

FAST = ["--background", "8", "--n-explain", "4", "--n-samples", "8"]


def tune(run: Run, tmp) -> Run:
    """predict.py on `run` (no bootstrap, no figures): the thresholds SHAP's figure titles use."""
    predict.main(["--run", str(run), "--results-dir", str(tmp / "tuned"), "--n-bootstrap", "0", "--num-workers", "0",
                  "--no-figures", "--force"])
    return run


@pytest.fixture(scope="module")
def tuned(copy_run, trained, tmp_path_factory) -> Run:
    """A copy of the trained run with its thresholds tuned (the shared run stays untouched)."""
    tmp = tmp_path_factory.mktemp("shap")
    return tune(Run(copy_run(trained, tmp / "tiny")), tmp)


def run(model_path, tmp, *extra):
    """SHAP with its value cache in the run's shap/ and its figures in tmp/results/<db>/<run>/shap."""
    return shap_values.main(["--run", str(model_path), "--results-dir", str(tmp / "results"), *FAST, *extra])


def test_values_figures_and_cache(tuned, prepared, tmp_path, capsys):
    table = run(tuned, tmp_path)
    cache = tuned.shap_dir
    out = tmp_path / "results" / prepared.name / tuned.name / "shap"
    values = np.load(next(cache.glob("values_*.npy")))
    index = pd.read_csv(next(cache.glob("index_*.csv")), dtype={"patient_id": str})
    assert values.shape == (4, 12, 200) and values.dtype == np.float32 and np.isfinite(values).all()
    assert set(index["explained"]) <= set(CLASSES) and len(index) == 4
    assert ((index["score"] > 0) & (index["score"] < 1)).all()
    # the class each record's values explain is its top-scoring one (the test scores predict.py wrote),
    # named as such: it may lie below its threshold, so it is not called "predicted"
    evaluation = next(p for p in tuned.folder.parents if (p / "tuned").is_dir()) / "tuned"
    scores = pd.read_csv(next(evaluation.rglob("test_scores.csv")), dtype={"patient_id": str}).set_index("patient_id")
    top = scores.loc[index["patient_id"], [f"p_{c}" for c in CLASSES]].to_numpy().argmax(axis=1)
    assert index["explained"].tolist() == [CLASSES[k] for k in top] and "predicted" not in index
    for pid in index["patient_id"]:
        assert (out / "patients" / f"{pid}.png").stat().st_size > 0
    assert (out / "lead_importance.png").exists()
    saved = pd.read_csv(out / "lead_importance.csv", index_col="class")
    assert list(saved.columns) == list(table.columns) and "average" in saved.index
    shares = table.drop(index="average").to_numpy()
    np.testing.assert_allclose(np.nansum(shares, axis=1), 1.0, atol=1e-5)

    first = next(cache.glob("values_*.npy"))
    capsys.readouterr()
    run(tuned, tmp_path, "--n-samples", "9", "--n-explain", "2")  # other settings: a new entry replaces the old
    assert "reusing" not in capsys.readouterr().out
    assert [p.name for p in cache.glob("values_*.npy")] != [first.name]
    assert len(list(cache.glob("values_*.npy"))) == len(list(cache.glob("index_*.csv"))) == 1
    index = pd.read_csv(next(cache.glob("index_*.csv")), dtype={"patient_id": str})
    figures = sorted(p.name for p in (out / "patients").iterdir())
    assert figures == sorted(f"{pid}.png" for pid in index["patient_id"]) and len(figures) == 2  # none left over
    saved = pd.read_csv(out / "lead_importance.csv", index_col="class")
    run(tuned, tmp_path, "--n-samples", "9", "--n-explain", "2", "--batch-size", "5", "--no-figures")
    printed = capsys.readouterr().out  # the pass size is no part of the key: reused
    assert "reusing cached SHAP values" in printed and "patient figures" not in printed
    assert "wrote " + str(out) in printed  # the cached values and index are not said to be written again
    assert not list((out / "patients").iterdir())  # --no-figures: no figure per record, not even an earlier one,
    assert pd.read_csv(out / "lead_importance.csv", index_col="class").equals(saved)  # the same population view


def test_without_tuned_thresholds_it_stops_naming_predict(copy_run, trained, tmp_path, capsys):
    """No silent 0.5: like predict.py --record, SHAP needs the run's tuned thresholds, and says how to
    get them in one line before explaining anything."""
    folder = copy_run(trained, tmp_path / "untuned")
    with pytest.raises(SystemExit, match=r"thresholds.json not found; run `python predict.py --run .*untuned`"):
        run(folder, tmp_path)
    assert "shap" not in capsys.readouterr().out and not (folder / "shap").exists()


def test_a_changed_model_never_reuses_stale_values(copy_run, trained, tmp_path, capsys):
    model_path = tune(Run(copy_run(trained, tmp_path / "copy")), tmp_path).model
    run(model_path, tmp_path, "--no-figures")
    first = np.load(next((tmp_path / "copy" / "shap").glob("values_*.npy")))
    ckpt = torch.load(model_path, weights_only=True)
    ckpt["model"]["net.fc.weight"] += 0.5  # a retrained model under the same name
    torch.save(ckpt, model_path)
    with pytest.raises(SystemExit, match="tuned for an earlier"):  # its thresholds are the old model's
        run(model_path, tmp_path, "--no-figures")
    tune(Run(model_path.parent), tmp_path)
    capsys.readouterr()
    run(model_path, tmp_path, "--no-figures")
    assert "reusing" not in capsys.readouterr().out
    files = sorted((tmp_path / "copy" / "shap").glob("values_*.npy"))
    assert len(files) == 1 and not np.array_equal(first, np.load(files[0]))


def test_record_explanation(tuned, prepared, synth_records, tmp_path, capsys):
    table = run(tuned, tmp_path, "--record", str(synth_records / "A0005.hea"))
    assert len(table) == 1 and table.loc[0, "explained"] in CLASSES
    figures = tmp_path / "results" / prepared.name / tuned.name / "shap" / "records"
    assert (figures / "A0005.png").exists()
    again = run(tuned, tmp_path, "--record", str(synth_records / "A0005.hea"), "--no-figures")
    pd.testing.assert_frame_equal(again, table)
    assert not (figures / "A0005.png").exists()  # the earlier figure is not left beside the new explanation
    import wfdb  # a record shorter than the model's input is explained, its doubt said as predict.py says it
    rec = wfdb.rdrecord(str(synth_records / "A0005"))
    wfdb.wrsamp("short", fs=250, units=["mV"] * 12, sig_name=rec.sig_name, p_signal=rec.p_signal[:500:2],
                fmt=["16"] * 12, write_dir=str(tmp_path))
    capsys.readouterr()
    assert len(run(tuned, tmp_path, "--record", str(tmp_path / "short.hea"), "--no-figures")) == 1
    assert f"warning: {tmp_path / 'short.hea'}: 1 s long, against the model's 2-s input" in capsys.readouterr().err


def small_problem(prepared, n_background=8, n_explain=4):
    """Background and explained inputs (2 s at 100 Hz, the `trained` model's) from the prepared records."""
    from models.inputs import ECGDataset, InputSpec
    from utils.cache import SignalCache, load_labels

    data = ECGDataset(SignalCache(prepared), load_labels(prepared), InputSpec(seconds=2, sample_rate=100), CLASSES)
    return (shap_values.stack_inputs(data, np.arange(0, 2 * n_background, 2)),
            shap_values.stack_inputs(data, np.arange(100, 100 + n_explain)))


def test_values_are_shaps_and_do_not_depend_on_the_records_explained_with_them(trained, prepared):
    """shap's GradientExplainer, one record per call (the old loop), gives the same values and classes;
    explaining the records together, one at a time or in other passes changes nothing."""
    import shap
    from models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(trained["model_path"])
    background, x = small_problem(prepared)
    cpu = torch.device("cpu")
    values, top = explain(model, background, x, nsamples=8, batch_size=4, seed=3, device=cpu)
    assert values.shape == (4, 12, 200) and np.abs(values).max() > 0

    explainer = shap.GradientExplainer(model, background, batch_size=4)
    for i in range(len(x)):
        v, idx = explainer.shap_values(x[i:i + 1], nsamples=8, ranked_outputs=1, rseed=3 + i)
        assert int(idx[0, 0]) == top[i]
        np.testing.assert_allclose(values[i], np.asarray(v)[0, ..., 0], rtol=1e-6, atol=1e-7 * np.abs(v).max())

    alone = [explain(model, background, x[i:i + 1], 8, 4, 3 + i, cpu) for i in range(len(x))]
    np.testing.assert_array_equal(np.concatenate([v for v, _ in alone]), values)  # bit for bit, by construction
    assert [int(c[0]) for _, c in alone] == top.tolist()
    other, other_top = explain(model, background, x, 8, 5, 3, cpu)  # passes of another shape,
    np.testing.assert_array_equal(other_top, top)                                # across records: rounding at most
    np.testing.assert_allclose(other, values, rtol=1e-5, atol=1e-6 * np.abs(values).max())
    reseeded, _ = explain(model, background, x[:1], 8, 4, 4, cpu)  # the draws follow the seed
    assert not np.array_equal(reseeded[0], values[0])


def test_patient_figures_drawn_in_parallel_equal_the_serial_ones(tmp_path):
    """More figures than draw_patients draws serially (4), so a pool of 2 draws them; the
    PNG files are byte for byte those drawn one at a time in this process (checked on figures from
    either end and the middle), each under its own record's name."""
    rng = np.random.default_rng(0)
    n = 7
    x = rng.normal(size=(n, 12, 1500)).astype(np.float32)
    values = rng.normal(size=(n, 12, 1500)).astype(np.float32)
    names = [f"R{i:03d}" for i in range(n)]
    titles = [f"{name}: SHAP for AF" for name in names]
    leads = [f"L{k}" for k in range(12)]
    shap_values.draw_patients(x, values, titles, [tmp_path / "pool" / f"{m}.png" for m in names], leads, 100, 3, 2)
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == [f"{m}.png" for m in names]
    for i in (0, 3, n - 1):
        alone = tmp_path / "one" / f"{names[i]}.png"
        shap_values.draw_patients(x[i:i + 1], values[i:i + 1], titles[i:i + 1], [alone], leads, 100, 3, 1)
        assert alone.read_bytes() == (tmp_path / "pool" / f"{names[i]}.png").read_bytes()
    assert (tmp_path / "pool" / "R000.png").read_bytes() != (tmp_path / "pool" / "R001.png").read_bytes()


def test_expected_gradients_sum_to_output_minus_background_mean(trained, prepared):
    """Completeness: averaged over records, the SHAP sum equals f(x) - E[f(background)] for the
    explained output (expected gradients is unbiased for it; nsamples controls the Monte Carlo error)."""
    from models.inputs import ECGDataset, InputSpec
    from models.checkpoint import load_checkpoint
    from utils.cache import SignalCache, load_labels

    model, _ = load_checkpoint(trained["model_path"])
    data = ECGDataset(SignalCache(prepared), load_labels(prepared), InputSpec(seconds=2, sample_rate=100), CLASSES)
    background = shap_values.stack_inputs(data, np.arange(0, 60, 2))
    x = shap_values.stack_inputs(data, np.arange(100, 108))
    values, top = explain(model, background, x, nsamples=300, batch_size=100, seed=0,
                                      device=torch.device("cpu"))
    with torch.no_grad():
        fx = model(x).numpy()[np.arange(len(x)), top]
        fb = model(background).numpy()[:, top].mean(0)
    gap = fx - fb
    sums = values.reshape(len(x), -1).sum(1)
    assert np.abs(gap).mean() > 0.01  # a real difference to explain
    assert abs(sums.mean() - gap.mean()) < 0.15 * np.abs(gap).mean() + 0.01, (sums, gap)
    assert np.corrcoef(sums, gap)[0, 1] > 0.8


def test_lead_importance_counts_only_positive_evidence():
    values = np.zeros((3, 2, 5), np.float32)
    values[0, 0] = 1.0       # record 0 (AF): all evidence in lead 0
    values[1, 1] = 2.0       # record 1 (AF): lead 1 twice as strong
    values[1, 0] = -5.0      # negative evidence is clipped, not subtracted from the share
    values[2, 1] = 1.0       # record 2 (PVC)
    table = shap_values.lead_importance(values, np.array([1, 1, 6]), ["I", "II"], list(CLASSES))
    assert list(table.index) == ["AF", "PVC", "average"]
    np.testing.assert_allclose(table.loc["AF"].to_numpy(), [0.0, 1.0])
    np.testing.assert_allclose(table.loc["PVC"].to_numpy(), [0.0, 1.0])


class RecurrentNet(nn.Module):
    """conv -> batch norm -> 2-layer LSTM with inter-layer dropout -> dropout -> linear: every layer whose
    behaviour differs between training and eval mode, around the layer cuDNN only differentiates in training."""

    def __init__(self, leads: int = 12, classes: int = 9):
        super().__init__()
        self.conv, self.bn = nn.Conv1d(leads, 8, 5, stride=4), nn.BatchNorm1d(8)
        self.lstm = nn.LSTM(8, 6, num_layers=2, dropout=0.5, batch_first=True)
        self.drop, self.fc = nn.Dropout(0.5), nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(torch.relu(self.bn(self.conv(x))).transpose(1, 2))
        return self.fc(self.drop(h[:, -1]))


def test_recurrent_layers_are_differentiated_as_they_score():
    """Inside recurrent_gradients the LSTM is in training mode (what cuDNN's backward needs) but the model
    computes exactly its eval-mode output (no dropout, batch norm on running statistics); afterwards every
    module is back in its own mode; and explain() on it gives shap's own values."""
    import shap

    torch.manual_seed(0)
    model = RecurrentNet()
    model.bn.running_mean += 0.3  # running statistics that differ from any batch's
    model.eval()
    x, background = torch.randn(2, 12, 64), torch.randn(6, 12, 64)
    with torch.no_grad():
        scored = model(x)
    with recurrent_gradients(model):
        assert model.lstm.training and model.lstm.dropout == 0 and not model.bn.training and not model.drop.training
        with torch.no_grad():
            torch.testing.assert_close(model(x), scored, rtol=0, atol=0)
    assert not any(m.training for m in model.modules()) and model.lstm.dropout == 0.5

    values, top = explain(model, background, x, nsamples=4, batch_size=4, seed=1, device=torch.device("cpu"))
    assert not any(m.training for m in model.modules())
    explainer = shap.GradientExplainer(model, background, batch_size=4)
    for i in range(len(x)):
        v, idx = explainer.shap_values(x[i:i + 1], nsamples=4, ranked_outputs=1, rseed=1 + i)
        assert int(idx[0, 0]) == top[i]
        np.testing.assert_allclose(values[i], np.asarray(v)[0, ..., 0], rtol=1e-6, atol=1e-7 * np.abs(v).max())


def test_every_registered_architecture_can_be_explained():
    """explain() needs nothing of a model but the registry's contract (batch, leads, samples) -> logits;
    one architecture of each family (a family shares its layers) keeps the test fast."""
    from models.registry import create_model, list_models, model_entry

    for name in {model_entry(m).family: m for m in reversed(list_models())}.values():
        torch.manual_seed(0)
        model = create_model(name, 12, 9).eval()
        n = max(64, model_entry(name).min_samples)
        x, background = torch.randn(2, 12, n), torch.randn(3, 12, n)
        values, top = explain(model, background, x, nsamples=2, batch_size=4, seed=0, device=torch.device("cpu"))
        assert values.shape == (2, 12, n) and np.isfinite(values).all() and np.abs(values).max() > 0, name
        assert set(top) <= set(range(9)) and not any(m.training for m in model.modules()), name


@pytest.mark.parametrize("seconds,shown", [(5, "5"), (2.5, "2.5"), (30, "10")])
def test_patient_figure_says_how_many_seconds_it_shows(seconds, shown, monkeypatch, tmp_path):
    """The figure draws the last 10 s of the model input, or all of a shorter one, and its axis says which."""
    drawn = []
    monkeypatch.setattr(shap_values, "save_figure", lambda fig, path, **kwargs: drawn.append(fig))
    fs = 100
    n = int(seconds * fs)
    x = np.random.default_rng(0).normal(size=(12, n))
    shap_values.plot_patient(x, x * 0.01, list(LEADS), fs, "t", 2, tmp_path / "p.png")
    axis = drawn[0].axes[-1]
    assert axis.get_xlabel() == f"time (s), last {shown} s of the model input"
    assert axis.lines[0].get_xdata()[-1] == pytest.approx(min(seconds, 10) - 1 / fs)
    import matplotlib.pyplot as plt
    plt.close(drawn[0])


@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (0.01, 0.0), (3000.0, 0.0), (0.001, 1000.0), (2e-6, -8e-4)])
def test_patient_figure_keeps_every_label_inside_it(scale, offset, monkeypatch, tmp_path):
    """The figure is drawn once, at margins fixed in inches (no tight crop): the lead names, tick labels of
    any width (a nearly flat lead, values in the thousands, an axis offset) and a title of any length stay
    inside it."""
    drawn = []
    monkeypatch.setattr(shap_values, "save_figure", lambda fig, path, **kwargs: drawn.append(fig))
    rng = np.random.default_rng(0)
    x = offset + scale * rng.normal(size=(12, 1000)).cumsum(axis=1)
    title = shap_values.patient_title("R" * 150 + "_with_a_long_name", "AF", 0.93, "AF,RBBB,PAC,PVC,STD", "AF,RBBB")
    shap_values.plot_patient(x, rng.normal(size=(12, 1000)), list(LEADS), 100, title, 3, tmp_path / "p.png")
    fig = drawn[0]
    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    for ax in fig.axes:  # what each panel draws: its tick labels, offset, lead name, title, time axis
        drawn_box = ax.get_tightbbox(renderer)
        assert box.x0 <= drawn_box.x0 and drawn_box.x1 <= box.x1 and box.y0 <= drawn_box.y0 <= drawn_box.y1 <= box.y1
    texts = [t.get_text() for ax in fig.axes for t in [*ax.texts, ax.title]]
    assert sum(t.endswith(" (mV)") for t in texts) == 3
    for ax in fig.axes:  # the lead's name lies under the trace and its red marks, never over them
        assert all(t.get_zorder() < min(a.get_zorder() for a in [*ax.lines, *ax.collections]) for t in ax.texts)
    [shown] = [t for t in texts if "SHAP for AF" in t]
    assert len(shown.splitlines()) > 1 and "".join(shown.split()) == "".join(title.split())  # wrapped, all of it
    import matplotlib.pyplot as plt
    plt.close(fig)


@pytest.mark.parametrize("flag,value", [("--top-leads", "2"), ("--num-workers", "0")])
def test_a_figure_setting_with_no_figures_exits_2_naming_it(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        shap_values.parse_args(["--run", "m", "--no-figures", flag, value])
    assert e.value.code == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and f"argument {flag}" in errors[0] and "--no-figures draws none" in errors[0]
    assert shap_values.parse_args(["--run", "m", flag, value]).no_figures is False  # alone, accepted
