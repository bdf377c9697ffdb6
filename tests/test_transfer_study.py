"""transfer.py: both arms on the same nested subsets, evaluated on the whole test fold; every number of
the table recomputes from its score file; nested subsets as a property of the split; bad flags exit 2."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import main
import models.__main__ as models_command
import transfer
from fastai_reference import BUILDERS, randomise
from utils.cache import load_labels
from utils.evaluator import read_scores
from utils.folds import nested_order, nested_subset
from utils.labels import CLASSES
from utils.metrics import auc_scores
from utils.results import read_evaluation


@pytest.fixture(scope="module")
def source(tmp_path_factory, prepared):
    """A benchmark-style fcn_wang (100 Hz, 2.5-s windows), imported: a source in no time."""
    work = tmp_path_factory.mktemp("source")
    torch.save(randomise(BUILDERS["fcn_wang"](len(CLASSES)), seed=5).state_dict(), work / "m.pth")
    return models_command.main(["import", "--from", "fastai", str(work / "m.pth"), "--arch", "fcn_wang",
                                "--classes", ",".join(CLASSES), "--out", str(work / "run")]).folder


@pytest.mark.slow
def test_the_study_table_recomputes_and_its_subsets_are_nested_and_shared(source, prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --results-dir: the table's score files are still found from its folder
    table = transfer.main(["--source", str(source), "--data-dir", str(prepared), "--fractions", "0.5,0.25",
                           "--seeds", "3", "--epochs", "1", "--freeze-epochs", "1", "--batch-size", "16", "--seconds", "5",
                           "--num-workers", "0", "--n-bootstrap", "20", "--runs-dir", str(tmp_path / "runs"),
                           "--results-dir", "results"])
    out = tmp_path / "results" / prepared.name / "transfer"
    monkeypatch.chdir(out)
    assert (out / "auc.png").stat().st_size > 0 and "training records" in (out / "table.md").read_text()
    saved = pd.read_csv(out / "table.csv")
    assert list(saved.columns) == ["fraction", "records", "seed", "arm", "auc", "auc_lo", "auc_hi", "f1", "scores"]
    assert sorted(zip(saved["fraction"], saved["arm"])) == sorted(
        (f, a) for f in (0.5, 0.25) for a in ("scratch", "finetuned"))
    labels = load_labels(prepared)
    test_ids = None
    train = {}
    for row in saved.itertuples():
        scores = read_scores(row.scores, list(CLASSES))
        y = scores[list(CLASSES)].to_numpy(bool)
        p = scores[[f"p_{c}" for c in CLASSES]].to_numpy(float)
        assert np.nanmean(auc_scores(y, p)) == pytest.approx(row.auc)
        folder = tmp_path / "results" / prepared.name / f"{row.arm}_fcn_wang_f{row.fraction:g}_s3"
        evaluation = read_evaluation(folder)
        thresholds = evaluation["thresholds"]
        mean = evaluation["metrics"].loc["mean"]  # the row is its run's evaluation, each bound in its column
        assert row.auc_lo < row.auc_hi and (row.auc_lo, row.auc_hi) == pytest.approx((mean["auc_lo"], mean["auc_hi"]))
        pred = p > np.where(np.isnan(thresholds), np.inf, thresholds)
        valid = y.any(0) & ~y.all(0)
        f1 = 2 * (y & pred).sum(0) / np.maximum(y.sum(0) + pred.sum(0), 1)
        assert np.mean(f1[valid]) == pytest.approx(row.f1)
        test_ids = test_ids or set(scores["patient_id"])
        assert set(scores["patient_id"]) == test_ids  # every row on the whole test fold
        ckpt = torch.load(tmp_path / "runs" / f"{row.arm}_fcn_wang_f{row.fraction:g}_s3" / "model.pth",
                          weights_only=True)
        train[(row.fraction, row.arm)] = set(ckpt["split"]["train"])
        # the scratch arm starts from no source: only the finetuned arm names one
        assert (ckpt["config"]["init_from"] is None) == (row.arm == "scratch"), (row.arm, ckpt["config"]["init_from"])
        assert row.records == len(ckpt["split"]["train"])
    assert train[(0.5, "scratch")] == train[(0.5, "finetuned")] and train[(0.25, "scratch")] == train[(0.25, "finetuned")]
    assert train[(0.25, "scratch")] < train[(0.5, "scratch")]
    assert not (test_ids & train[(0.5, "scratch")]) and len(test_ids) < len(labels)
    assert len(table) == 4


def test_both_arms_build_the_source_s_network_with_its_builder_arguments(trained, prepared, tmp_path, capsys):
    """The scratch arm is the source's network, builder arguments included (the tiny ResNet10's width=8),
    trained from fresh weights: the same parameters as the finetuned arm. Other builder arguments are the
    other network: --arch-arg exits 2 before anything trains, in transfer.py and in main.py."""
    runs = tmp_path / "runs"
    flags = ["--source", str(trained["model_path"]), "--data-dir", str(prepared), "--fractions", "0.5", "--seeds", "0",
             "--epochs", "1", "--batch-size", "16", "--num-workers", "0", "--n-bootstrap", "0", "--runs-dir", str(runs),
             "--results-dir", str(tmp_path / "results")]
    for argv in (["transfer", *flags], ["main", "--data-dir", str(prepared), "--init-from", str(trained["model_path"]),
                                        "--run", str(tmp_path / "one")]):
        command = transfer if argv[0] == "transfer" else main
        with pytest.raises(SystemExit) as e:
            command.main([*argv[1:], "--arch-arg", "width=16"])
        assert e.value.code == 2 and "--arch-arg: {'width': 16} differs from the source's builder arguments " \
                                      "{'width': 8}" in capsys.readouterr().err
    assert not runs.exists() and not (tmp_path / "one").exists()
    transfer.main(flags)
    arms = {arm: torch.load(runs / f"{arm}_resnet10_f0.5_s0" / "model.pth", weights_only=True)
            for arm in ("scratch", "finetuned")}
    assert [c["config"]["arch_args"] for c in arms.values()] == [{"width": 8}, {"width": 8}]
    shapes = [{k: v.shape for k, v in c["model"].items()} for c in arms.values()]
    assert shapes[0] == shapes[1] == {k: v.shape for k, v in torch.load(trained["model_path"], weights_only=True)[
        "model"].items()}


def test_nested_subsets_are_stratified_prefixes(prepared):
    labels = load_labels(prepared)
    classes = list(CLASSES)
    sizes, previous = [], None
    for fraction in (0.125, 0.25, 0.5, 1.0):
        subset = nested_subset(labels, classes, fraction, seed=4)
        ids = set(subset["patient_id"])
        if previous is not None:
            assert previous < ids
        previous = ids
        sizes.append(len(subset))
        share = subset[classes].mean().to_numpy()
        assert np.all(np.abs(share - labels[classes].mean().to_numpy()) <= 0.04), fraction
    assert sizes == [25, 50, 100, 200]
    # ceil(fraction x 200) records (0.07 x 200 is 14, not 14.000000000000002 rounded up), at least 2, in the
    # order labels.csv lists them (the training's shuffle starts from it)
    for fraction, n in ((0.0625, 13), (0.07, 14), (0.003, 2)):
        subset = nested_subset(labels, classes, fraction, seed=4)
        assert len(labels) == 200 and len(subset) == n, fraction
        position = {pid: i for i, pid in enumerate(labels["patient_id"])}
        assert [position[pid] for pid in subset["patient_id"]] == sorted(position[pid] for pid in subset["patient_id"])
    assert set(nested_subset(labels, classes, 0.25, seed=5)["patient_id"]) != set(
        nested_subset(labels, classes, 0.25, seed=4)["patient_id"])


@pytest.mark.parametrize("flags, named", [
    (["--fractions", "0"], "--fractions"),
    (["--fractions", "1.5"], "--fractions"),
    (["--fractions", "0.5,0.5"], "--fractions"),
    (["--fractions", "0.5,0.5000000001"], "--fractions"),  # one run folder, f0.5, for both
    (["--seeds", "-1"], "--seeds"),
    (["--seeds", "a"], "--seeds"),
    (["--seeds", "4294967296"], "--seeds"),  # over numpy's seeds (2**32): a run folder was left, exit 1
    (["--seeds", "0,,1"], "--seeds"),  # an empty item is a typo, not two seeds
    (["--fractions", "0.5,,0.25"], "--fractions"),
    (["--source", __file__], "--source"),
    (["--train-fraction", "0"], "--train-fraction"),
    (["--leads", "II"], "--leads"),  # the source's leads, always: given, it is refused, not a traceback
    (["--leads", "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"], "--leads"),
])
def test_bad_study_flags_exit_2_naming_the_flag(source, prepared, tmp_path, capsys, flags, named):
    base = {"--source": str(source), "--data-dir": str(prepared), "--results-dir": str(tmp_path / "r")}
    base.update(dict(zip(flags[::2], flags[1::2])))
    with pytest.raises(SystemExit) as e:
        transfer.main([a for kv in base.items() for a in kv])
    assert e.value.code == 2 and f"argument {named}:" in capsys.readouterr().err


def test_fractions_that_draw_as_many_records_are_one_point_of_the_curve():
    """Tiny fractions of a small database may each draw the least subset: the verdict reads them as one
    training-set size (the mean of their AUCs) instead of failing after the tables were written."""
    summary = pd.DataFrame({"fraction": [0.5, 0.5, 0.001, 0.001, 0.0001, 0.0001], "records": [48, 48, 2, 2, 2, 2],
                            "arm": ["scratch", "finetuned"] * 3, "auc": [0.8, 0.7, 0.5, 0.6, 0.5, 0.7]})
    assert transfer.crossing(summary) == ("the curves cross between 2 and 48 training records: below, finetuning "
                                          "has the higher mean AUC")
    assert transfer.crossing(summary[summary["arm"] == "scratch"]) == "no fraction has both arms"


def test_train_fraction_on_main_exits_2_for_a_bad_value(prepared, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main.main(["--data-dir", str(prepared), "--train-fraction", "1.5", "--run", str(tmp_path / "r")])
    assert e.value.code == 2 and "argument --train-fraction:" in capsys.readouterr().err


def follows_the_rule(y: np.ndarray, order: np.ndarray, weight: np.ndarray) -> bool:
    """Whether each record of `order` is, when it comes, one that brings the prefix's class counts closest to
    their share of the whole (squared deviations times `weight`), every record not yet taken a candidate."""
    share, counts, left = y.mean(0), np.zeros(y.shape[1]), set(range(len(y)))
    for k, i in enumerate(order, start=1):
        deviation = {j: (((counts + y[j] - share * k) ** 2) * weight).sum() for j in left}
        if deviation[i] > min(deviation.values()) + 1e-12:
            return False
        left.remove(i)
        counts = counts + y[i]
    return True


def test_nested_order_weights_each_class_by_its_inverse_prevalence():
    """On 40 records of three classes (about 60, 30 and 10 %), with the window over them all, each next record is
    one the documented greedy rule picks with inverse-prevalence weights (which keep the rare class on its
    share), and the order is not one that prevalence weights would give (these records tell them apart)."""
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < [0.6, 0.3, 0.1]).astype(float)
    labels = pd.DataFrame(y, columns=["A", "B", "C"]).assign(patient_id=[f"r{i}" for i in range(40)])
    order = nested_order(labels, ["A", "B", "C"], seed=3, window=64)
    assert sorted(order) == list(range(40))
    assert follows_the_rule(y, order, 1 / y.mean(0)) and not follows_the_rule(y, order, y.mean(0))
