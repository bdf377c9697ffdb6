"""python -m models import --from fastai: a checkpoint of the benchmark's own modules, saved as its fastai
code saves it, gives this project's run with the reference's outputs; its scaler is read without running
code; the imported run is evaluated and finetuned like any run."""
from __future__ import annotations

import functools
import os
import pickle

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly
from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler

import main
import models.__main__ as models_command
import predict
from fastai_reference import BUILDERS, randomise, reference_layer_groups
from models.checkpoint import load_checkpoint
from models.fastai_import import read_standard_scaler
from models.registry import create_model
from models.transfer import layer_groups
from utils.cache import SignalCache
from utils.labels import CLASSES
from utils.errors import PipelineError
from utils.labels import PTBXL_ALL_STATEMENTS


pytestmark = pytest.mark.usefixtures("one_thread")


def save_fastai(model: torch.nn.Module, path, with_opt: bool) -> None:
    """As fastai v1's `learn.save` (with the optimiser: its settings beside the weights), or a bare state dict."""
    state = model.state_dict()
    if with_opt:
        state = {"model": state, "opt": {"opt_state": {"state": {}, "param_groups": []}, "lr": [1e-2], "wd": [1e-2],
                                         "opt_func": functools.partial(torch.optim.Adam, betas=(0.9, 0.99)),
                                         "true_wd": True, "bn_wd": True}}
    torch.save(state, path)


def save_scaler(path, seed: int = 0) -> StandardScaler:
    """The benchmark's scaler: one feature, every sample of every lead of the training records."""
    x = np.random.default_rng(seed).normal(0.05, 0.3, size=(5, 1000, 12))
    scaler = StandardScaler().fit(x.reshape(-1)[:, None])
    path.write_bytes(pickle.dumps(scaler, protocol=3))
    return scaler


def reference_scores(model: torch.nn.Module, scaler: StandardScaler, x: np.ndarray) -> np.ndarray:
    """The benchmark's prediction: standardise, 2.5-s windows every 1.25 s, sigmoid, maximum over windows."""
    z = scaler.transform(x.reshape(-1, 1)).reshape(x.shape).astype(np.float32)
    with torch.no_grad():
        windows = [torch.sigmoid(model(torch.from_numpy(z[..., s:s + 250]))) for s in range(0, 751, 125)]
    return torch.stack(windows).amax(0).numpy()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_an_imported_checkpoint_gives_the_reference_modules_outputs(name, tmp_path):
    reference = randomise(BUILDERS[name](5), seed=len(name)).eval()
    save_fastai(reference, tmp_path / "model.pth", with_opt=name != "fcn_wang")
    scaler = save_scaler(tmp_path / "standard_scaler.pkl")
    run = models_command.main(["import", "--from", "fastai", str(tmp_path / "model.pth"), "--arch", name,
                               "--classes", "A,B,C,D,E", "--scaler", str(tmp_path / "standard_scaler.pkl"),
                               "--out", str(tmp_path / "run")])
    model, ckpt = load_checkpoint(run.model)
    x = np.random.default_rng(1).normal(0, 0.5, size=(2, 12, 1000)).astype(np.float32)
    with torch.no_grad():
        ours = torch.sigmoid(model(torch.from_numpy(x))).numpy()
    expected = reference_scores(reference, scaler, x)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
    # the check can see the network's structure: the reference's scores follow the input's time order
    assert np.abs(reference_scores(reference, scaler, x[..., ::-1].copy()) - expected).max() > 1e-3
    # in training mode too (batch statistics, dropout where the reference drops: the same masks from one seed)
    window = torch.from_numpy(x[..., :250].copy())
    outputs = []
    for net in (model.net, reference):
        torch.manual_seed(0)
        with torch.no_grad():
            outputs.append(net.train()(window))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
    assert ckpt["config"]["sample_rate"] == 100 and ckpt["config"]["crop_seconds"] == 2.5
    assert ckpt["label_set"]["classes"] == list("ABCDE")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_layer_groups_are_the_references_split(name):
    reference = BUILDERS[name](5)
    ours = layer_groups(create_model(name, 12, 5), name)

    def sizes(groups):
        return [sum(p.numel() for m in g for p in m.parameters(recurse=True)) for g in groups]

    assert sizes(ours) == sizes(reference_layer_groups(name, reference))


def test_the_scaler_is_the_references_and_no_other_pickle_is_run(tmp_path):
    scaler = save_scaler(tmp_path / "ss.pkl")
    assert read_standard_scaler(tmp_path / "ss.pkl") == (pytest.approx(float(scaler.mean_[0])),
                                                         pytest.approx(float(scaler.scale_[0])))
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(PipelineError, match="posix.system|os.system"):
        read_standard_scaler(tmp_path / "evil.pkl")
    assert not marker.exists()
    values = np.random.default_rng(1).normal(3.0, 2.0, size=(200, 1))  # a scaler that only scales (or only centres)
    for kwargs, expected in (({"with_mean": False}, (0.0, values.std())), ({"with_std": False}, (values.mean(), 1.0))):
        (tmp_path / "part.pkl").write_bytes(pickle.dumps(StandardScaler(**kwargs).fit(values)))
        assert read_standard_scaler(tmp_path / "part.pkl") == pytest.approx(expected), kwargs
    per_lead = StandardScaler().fit(np.random.default_rng(0).normal(size=(50, 12)))
    (tmp_path / "lead.pkl").write_bytes(pickle.dumps(per_lead))
    with pytest.raises(PipelineError, match="12 features"):
        read_standard_scaler(tmp_path / "lead.pkl")


def test_71_classes_are_the_benchmarks_all_task_in_binarizer_order():
    assert models_command.class_list("71") == list(PTBXL_ALL_STATEMENTS)
    binarizer = MultiLabelBinarizer().fit([list(reversed(PTBXL_ALL_STATEMENTS))])
    assert list(binarizer.classes_) == list(PTBXL_ALL_STATEMENTS) and len(PTBXL_ALL_STATEMENTS) == 71


@pytest.mark.parametrize("flags, named", [
    (["--classes", "70"], "--classes"),
    (["--classes", "A,,B"], "--classes"),
    (["--arch", "resnet9000"], "--arch"),
    (["--scaler", "/nonexistent.pkl"], "--scaler"),
    (["--from", "keras"], "--from"),
    (["--out", "DATA"], "--out"),
])
def test_bad_import_flags_exit_2_naming_the_flag(tmp_path, capsys, flags, named):
    torch.save(BUILDERS["fcn_wang"](5).state_dict(), tmp_path / "m.pth")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "preprocess.json").write_text("{}")  # a preprocessed folder: no place for a run
    base = {"--from": "fastai", "--arch": "fcn_wang", "--classes": "A,B,C,D,E", "--out": str(tmp_path / "run")}
    base.update({k: v.replace("DATA", str(tmp_path / "data")) for k, v in zip(flags[::2], flags[1::2])})
    with pytest.raises(SystemExit) as e:
        models_command.main(["import", str(tmp_path / "m.pth"), *[a for kv in base.items() for a in kv]])
    assert e.value.code == 2 and f"argument {named}:" in capsys.readouterr().err


def test_a_checkpoint_of_another_architecture_is_refused_in_one_line(tmp_path):
    torch.save({"model": BUILDERS["fcn_wang"](5).state_dict()}, tmp_path / "m.pth")
    with pytest.raises(SystemExit) as e:
        models_command.main(["import", "--from", "fastai", str(tmp_path / "m.pth"), "--arch", "resnet1d_wang",
                             "--classes", "A,B,C,D,E", "--out", str(tmp_path / "run")])
    assert str(e.value.code).startswith("error: ") and "\n" not in str(e.value.code)


def test_an_imported_run_is_evaluated_and_finetuned(prepared, tmp_path):
    reference = randomise(BUILDERS["fcn_wang"](len(CLASSES)), seed=3)
    save_fastai(reference, tmp_path / "model.pth", with_opt=True)
    scaler = save_scaler(tmp_path / "ss.pkl")
    run = models_command.main(["import", "--from", "fastai", str(tmp_path / "model.pth"), "--arch", "fcn_wang",
                               "--classes", ",".join(CLASSES), "--scaler", str(tmp_path / "ss.pkl"),
                               "--data-dir", str(prepared), "--out", str(tmp_path / "imported")])
    table = predict.main(["--run", str(run.folder), "--n-bootstrap", "10", "--no-figures", "--num-workers", "0",
                          "--results-dir", str(tmp_path / "results")])
    assert len(table) > 0 and run.thresholds.exists()
    out = main.main(["--data-dir", str(prepared), "--init-from", str(run.folder), "--epochs", "1",
                     "--freeze-epochs", "1", "--limit", "40", "--batch-size", "16", "--num-workers", "0",
                     "--run", str(tmp_path / "ft")])
    _, ckpt = load_checkpoint(out["model_path"])
    assert ckpt["config"]["arch"] == "fcn_wang" and ckpt["config"]["crop_seconds"] == 2.5
    assert ckpt["config"]["sample_rate"] == 100
    # the finetuned network reads its inputs as the source learnt them: standardised by the benchmark's scaler
    source_scale = (float(scaler.mean_[0]), float(scaler.scale_[0]))
    assert (float(ckpt["model"]["mean"]), float(ckpt["model"]["std"])) == pytest.approx(source_scale, rel=1e-6)
    # --restandardize fits them on the target's training records instead: every sample of every lead of
    # their inputs, the source's last 30 s at 100 Hz, zero-padded in front (here from the cache, with scipy)
    out = main.main(["--data-dir", str(prepared), "--init-from", str(run.folder), "--epochs", "1", "--restandardize",
                     "--freeze-epochs", "1", "--limit", "40", "--batch-size", "16", "--num-workers", "0",
                     "--run", str(tmp_path / "restandardized")])
    _, ckpt = load_checkpoint(out["model_path"])
    cache = SignalCache(prepared)
    assert ckpt["config"]["seconds"] == 30
    last = [resample_poly(cache.record(pid), 100, int(cache.sample_rate), axis=-1)[:, -3000:]
            for pid in ckpt["split"]["train"]]
    inputs = np.concatenate([np.pad(x, ((0, 0), (3000 - x.shape[1], 0))).ravel() for x in last])
    fitted = (float(ckpt["model"]["mean"]), float(ckpt["model"]["std"]))
    assert fitted == pytest.approx((inputs.mean(), inputs.std()), rel=1e-3)
    assert abs(fitted[1] - source_scale[1]) > 0.1 * source_scale[1]


def test_an_imported_run_without_data_says_how_to_evaluate_it(prepared, tmp_path):
    torch.save(BUILDERS["fcn_wang"](5).state_dict(), tmp_path / "m.pth")
    run = models_command.main(["import", "--from", "fastai", str(tmp_path / "m.pth"), "--arch", "fcn_wang",
                               "--classes", "A,B,C,D,E", "--out", str(tmp_path / "run")])
    for extra in ([], ["--data-dir", str(prepared)]):  # a data folder given does not make the run's split
        with pytest.raises(SystemExit) as e:
            predict.main(["--run", str(run.folder), "--results-dir", str(tmp_path / "results"), *extra])
        said = str(e.value.code)
        assert "no records of its own" in said and "models import ... --data-dir" in said
        assert "preprocess" not in said, said  # never: preprocess the run folder


def test_an_import_into_a_folder_holding_a_run_is_refused_or_replaces_all_of_it(prepared, tmp_path, capsys):
    """A folder holding a run's files (here a training stopped before its model.pth) is refused (exit 2,
    naming them); with --force none of the old run's files stays beside the imported model, which is
    then evaluated as any run (its model.pth and an old last.pth would be taken for two runs)."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("last.pth", "log.csv", "thresholds.json"):
        (out / name).write_text("the old run's\n")
    torch.save(BUILDERS["fcn_wang"](len(CLASSES)).state_dict(), tmp_path / "m.pth")
    argv = ["import", "--from", "fastai", str(tmp_path / "m.pth"), "--arch", "fcn_wang", "--classes", ",".join(CLASSES),
            "--data-dir", str(prepared), "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        models_command.main(argv)
    assert e.value.code == 2 and "holds a run already (last.pth, log.csv, thresholds.json" in capsys.readouterr().err
    torch.save(BUILDERS["lstm"](len(CLASSES)).state_dict(), tmp_path / "other.pth")  # not an fcn_wang: refused
    with pytest.raises(SystemExit):
        models_command.main([*argv[:3], str(tmp_path / "other.pth"), *argv[4:], "--force"])
    assert (out / "last.pth").read_text() == "the old run's\n"  # a failed import leaves the old run whole
    models_command.main([*argv, "--force"])
    assert not [p.name for p in out.iterdir() if p.name in ("last.pth", "log.csv", "thresholds.json")]
    table = predict.main(["--run", str(out), "--n-bootstrap", "0", "--no-figures", "--num-workers", "0",
                          "--results-dir", str(tmp_path / "results")])
    assert len(table) > 0
