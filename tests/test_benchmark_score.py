"""The PTB-XL benchmark's scoring: macro AUC, F_beta/G_beta and bootstrap percentiles against values worked
out by hand, the redraw rule, given resamples reproduced exactly, the ensemble and the results table
recomputed from its score files, and `benchmark.py score`'s exits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmark
from utils.comparison import write_benchmark_outputs
from utils.errors import PipelineError
from utils.evaluator import read_scores, scores_arrays, scores_table
from utils.metrics import auc_scores, challenge_scores, tune_gbeta_thresholds
from utils.ptbxl import (benchmark_table, bootstrap_indices, format_result, published, say_undefined_resamples,
                         score_predictions)

# 6 records, 2 classes. Class 0: positives 0, 1, 4 (scores .9 .4 .7) against negatives 2, 3, 5 (.5 .2 .4):
# .9 and .7 beat all three, .4 beats .2 and ties .4 -> (3 + 1.5 + 3) / 9 = 5/6. Class 1: positives 1, 2, 3, 5
# (.8 .6 .35 .2) against negatives 0, 4 (.3 .65): .8 -> 2, .6 -> 1, .35 -> 1, .2 -> 0 -> 4/8 = 1/2.
Y = np.array([[1, 0], [1, 1], [0, 1], [0, 1], [1, 0], [0, 1]])
P = np.array([[.9, .3], [.4, .8], [.5, .6], [.2, .35], [.7, .65], [.4, .2]])
AUC = (5 / 6 + 1 / 2) / 2
# Resample [0, 0, 1, 2, 3, 5]: class 0 positives .9 .9 .4 vs .5 .2 .4 -> 7.5/9; class 1 positives .8 .6 .35 .2
# vs .3 .3 -> 6/8.
IDS = np.array([[0, 1, 2, 3, 4, 5], [0, 0, 1, 2, 3, 5]])
AUC_2 = (5 / 6 + 3 / 4) / 2
# Thresholds .6 / .5: class 0 fires on 0, 4; class 1 on 1, 2, 4; record 3 (.2, .35) fires on none and gets its
# top class 1, record 5 (.4, .2) class 0. Record weights 1 / labels: record 1 has two labels (1/2).
# Class 0: TP 0, 4 = 2; FP 5 = 1; FN 1 = 1/2 -> F = 5*2 / (10 + 1 + 4/2) = 10/13, G = 2 / (2 + 1 + 2/2) = 1/2.
# Class 1: TP 1, 2, 3 = 2.5; FP 4 = 1; FN 5 = 1 -> F = 12.5 / 17.5 = 5/7, G = 2.5 / 5.5 = 5/11.
THRESHOLDS = np.array([.6, .5])
F_BETA, G_BETA = (10 / 13 + 5 / 7) / 2, (1 / 2 + 5 / 11) / 2


def test_macro_auc_fbeta_gbeta_and_percentiles_by_hand():
    f, g = challenge_scores(Y, [[1, 0], [0, 1], [0, 1], [0, 1], [1, 1], [1, 0]])
    assert np.allclose(f, [10 / 13, 5 / 7]) and np.allclose(g, [1 / 2, 5 / 11])
    r = score_predictions(Y, P, IDS, THRESHOLDS)
    assert list(r.index) == ["point", "mean", "lower", "upper"]
    assert list(r.columns) == ["macro_auc", "F_beta_macro", "G_beta_macro"]
    assert r.loc["point"].tolist() == pytest.approx([AUC, F_BETA, G_BETA])
    # two resamples: the 5th / 95th percentiles interpolate linearly between them
    assert r.loc["mean", "macro_auc"] == pytest.approx((AUC + AUC_2) / 2)
    assert r.loc["lower", "macro_auc"] == pytest.approx(AUC + 0.05 * (AUC_2 - AUC))
    assert r.loc["upper", "macro_auc"] == pytest.approx(AUC + 0.95 * (AUC_2 - AUC))
    with pytest.raises(ValueError, match="no label"):
        challenge_scores([[0, 0], [1, 0]], [[1, 0], [1, 0]])


def test_gbeta_thresholds_are_tuned_per_class():
    # one class: .9 and .6 positive, .5 and .3 negative. On the grid k/99 the lowest threshold keeping .5 out
    # is 50/99 (G = 1); 49/99 lets .5 in (G = 2/3). The second class has no positive: never predicted.
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    t = tune_gbeta_thresholds(y, np.array([[.9, .1], [.3, .2], [.6, .3], [.5, .4]]))
    assert t[0] == pytest.approx(50 / 99) and np.isnan(t[1])


def test_a_resample_lacking_a_positive_is_drawn_again():
    y = np.zeros((10, 2), bool)
    y[3, 0] = True              # one positive of class 0: about a third of the draws lack it
    y[:5, 1] = True
    drawn = bootstrap_indices(y, 20, seed=5)
    rng = np.random.default_rng(5)
    expected, rejected = [], 0
    while len(expected) < 20:
        idx = rng.integers(0, 10, 10)
        if y[idx, 0].any():
            expected.append(idx)
        else:
            rejected += 1
    assert rejected > 0 and np.array_equal(drawn, np.stack(expected))
    assert all(y[rows].any(0).all() for rows in drawn)
    # the resamples are scored as record counts; the same as scoring the resampled records themselves
    p = np.round(np.random.default_rng(0).random((10, 2)), 1)  # ties included
    r = score_predictions(y, p, drawn)
    assert r.loc["mean", "macro_auc"] == pytest.approx(np.mean([auc_scores(y[rows], p[rows]).mean() for rows in drawn]))
    with pytest.raises(PipelineError, match="class column 0 has no positive"):  # columns count from 0, as records
        bootstrap_indices(np.c_[np.zeros(4), [1, 0, 1, 0]], 3)


def test_score_reproduces_given_bootstrap_ids_exactly(tmp_path):
    for name, a in (("y", Y), ("p", P), ("ids", IDS)):
        np.save(tmp_path / f"{name}.npy", a)
    out = tmp_path / "te_results.csv"
    benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                    "--bootstrap-ids", str(tmp_path / "ids.npy"), "--out", str(out)])
    written = pd.read_csv(out, index_col=0)
    assert written.equals(score_predictions(Y, P, IDS))
    assert written.loc["lower", "macro_auc"] == pytest.approx(AUC + 0.05 * (AUC_2 - AUC))
    mixed = np.vstack([IDS, [[1, 1, 1, 1, 1, 4]]])  # one resample without a negative of class 0: left out of
    np.save(tmp_path / "mixed.npy", mixed)           # that class, as in a `--n-bootstrap` draw, not refused
    benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                    "--bootstrap-ids", str(tmp_path / "mixed.npy"), "--out", str(out)])
    assert pd.read_csv(out, index_col=0).equals(score_predictions(Y, P, mixed))
    # a score CSV holds labels and scores; thresholds tuned on validation records give F_beta and G_beta
    scores_table([f"r{i}" for i in range(6)], Y, P, ["A", "B"]).to_csv(tmp_path / "test.csv", index=False)
    scores_table(["v0", "v1", "v2"], [[1, 0], [0, 1], [1, 1]], [[.9, .2], [.3, .7], [.6, .55]],
                 ["A", "B"]).to_csv(tmp_path / "val.csv", index=False)
    r = benchmark.main(["score", "--scores", str(tmp_path / "test.csv"), "--val-scores", str(tmp_path / "val.csv"),
                        "--n-bootstrap", "7", "--seed", "3", "--out", str(out)])
    t = tune_gbeta_thresholds(np.array([[1, 0], [0, 1], [1, 1]]), np.array([[.9, .2], [.3, .7], [.6, .55]]))
    assert r.equals(score_predictions(Y, P, bootstrap_indices(Y, 7, 3), t))
    assert pd.read_csv(out, index_col=0).columns.tolist() == ["macro_auc", "F_beta_macro", "G_beta_macro"]
    scores_table(["v0", "r4", "v2"], [[1, 0], [0, 1], [1, 1]], [[.9, .2], [.3, .7], [.6, .55]],
                 ["A", "B"]).to_csv(tmp_path / "val.csv", index=False)
    with pytest.raises(SystemExit, match="val.csv shares 1 record.*r4"):  # never tuned on the scored records
        benchmark.main(["score", "--scores", str(tmp_path / "test.csv"), "--val-scores", str(tmp_path / "val.csv"),
                        "--out", str(out)])


def test_score_exits(tmp_path, capsys):
    np.save(tmp_path / "y.npy", Y)
    np.save(tmp_path / "p.npy", P)
    y, p = str(tmp_path / "y.npy"), str(tmp_path / "p.npy")
    bad = {"y2.npy": np.where(Y == 1, 2, 0), "nan.npy": np.where(P > .8, np.nan, P), "short.npy": P[:5],
           "ids.npy": np.array([[0, 1, 2, 3, 4, 6]]), "allpos.npy": np.array([[1] * 6, [1, 1, 1, 1, 1, 4]])}
    for name, a in bad.items():
        np.save(tmp_path / name, a)
    for argv, flag in ((["score", "--scores", p, "--out", "o.csv"], "--labels"),
                       (["score", "--labels", y, "--scores", "p.txt", "--out", "o.csv"], "--scores"),
                       (["score", "--labels", y, "--scores", p, "--bootstrap-ids", p, "--seed", "1", "--out", "o.csv"],
                        "--seed"),
                       (["score", "--labels", y, "--scores", p, "--n-bootstrap", "0", "--out", "o.csv"],
                        "--n-bootstrap"),
                       (["--tasks", "superdiagnostic,nosuch"], "--tasks"), (["--models", "lstm,lstm"], "--models")):
        with pytest.raises(SystemExit) as e:
            benchmark.main(argv)
        assert e.value.code == 2 and flag in capsys.readouterr().err
    out = str(tmp_path / "o.csv")
    for argv, message in ((["--labels", str(tmp_path / "y2.npy"), "--scores", p], "y2.npy: label 2 of record 0"),
                          (["--labels", y, "--scores", str(tmp_path / "nan.npy")], "nan.npy: score nan of record 0"),
                          (["--labels", y, "--scores", str(tmp_path / "short.npy")], r"labels of shape \(6, 2\)"),
                          (["--labels", y, "--scores", p, "--bootstrap-ids", str(tmp_path / "ids.npy")],
                           "ids.npy: index 6 in resample 0 is outside the 6 records"),
                          (["--labels", y, "--scores", p, "--bootstrap-ids", str(tmp_path / "allpos.npy")],
                           "allpos.npy: no resample has a negative record of class 0: its AUC has no interval")):
        with pytest.raises(SystemExit, match=f"^error: .*{message}"):  # script_main: one line, exit 1
            benchmark.main(["score", *argv, "--out", out])


def test_table_ensemble_and_published_values(tmp_path):
    ids = [f"r{i}" for i in range(6)]
    other = np.clip(P[::-1] * 0.8 + 0.1, 0, 1)
    files = {}
    for model, p in (("resnet1d_wang", P), ("mine", other)):
        files[model] = tmp_path / f"{model}.csv"
        scores_table(ids, Y, p, ["NORM", "MI"]).to_csv(files[model], index=False)
    rows = [{"task": "superdiagnostic", "model": m, "params": 10, "scores": f} for m, f in files.items()]
    table = benchmark_table(rows, tmp_path / "out", n_bootstrap=30, seed=1)
    assert table["model"].tolist() == ["resnet1d_wang", "mine", "ensemble"]
    assert table["params"].tolist() == [10, 10, 20] and (table["records"] == 6).all()
    ensemble = read_scores(table["scores"].iloc[2], ["NORM", "MI"])
    assert ensemble["patient_id"].tolist() == ids
    assert np.allclose(scores_arrays(ensemble, ["NORM", "MI"])[1], (P + other) / 2)
    written = write_benchmark_outputs(table, tmp_path / "out", 30)
    assert [w.name for w in written] == ["table.csv", "summary.csv", "compare.csv", "table.md", "auc.png"]
    # every number recomputes from the score file the row names
    saved = pd.read_csv(tmp_path / "out" / "table.csv")
    for row in saved.itertuples():
        y, p = scores_arrays(read_scores(row.scores, ["NORM", "MI"]), ["NORM", "MI"])
        r = score_predictions(y, p, bootstrap_indices(y, 30, 1))["macro_auc"]
        assert (row.auc, row.auc_lo, row.auc_hi) == pytest.approx((r["point"], r["lower"], r["upper"]))
    assert saved.loc[0, "auc"] == pytest.approx(AUC)
    assert (saved.loc[0, "published_auc"], saved.loc[0, "published_hi"]) == pytest.approx((0.930, 0.935))
    assert saved["published_auc"].isna().tolist() == [False, True, True]
    assert "| resnet1d_wang | 10 | 6 | 2/2 | 0.667(" in (tmp_path / "out" / "table.md").read_text()
    # a table of one model into the same folder: no ensemble row, and the earlier ensemble's scores go
    assert (tmp_path / "out" / "ensemble" / "superdiagnostic_test_scores.csv").exists()
    alone = benchmark_table(rows[:1], tmp_path / "out", n_bootstrap=30, seed=1)
    assert alone["model"].tolist() == ["resnet1d_wang"] and not list((tmp_path / "out" / "ensemble").iterdir())
    # the leaderboard's notation, on the reference's own te_results.csv (xresnet1d101, all statements)
    assert format_result(0.9254358590055028, 0.9173334466601515, 0.931885977264585) == "0.925(08)"
    # the leaderboard as printed: inception1d all 0.925(08); ICBEB xresnet1d101 G_beta 0.602(37)
    assert published("all", "inception1d") == (0.925, 0.008) and published("cpsc9", "xresnet1d101", "gbeta") == \
        (0.602, 0.037) and published("rhythm", "mine") is None
    # score files that disagree on labels or record order are refused
    scores_table(ids, Y[:, ::-1], P, ["NORM", "MI"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(PipelineError, match="bad.csv: label NORM of record r0 differs"):
        benchmark_table([*rows, {"task": "superdiagnostic", "model": "b", "params": 1, "scores": tmp_path / "bad.csv"}],
                        tmp_path / "out", n_bootstrap=5)
    scores_table(ids[::-1], Y, P, ["NORM", "MI"]).to_csv(tmp_path / "order.csv", index=False)
    with pytest.raises(PipelineError, match="same order"):
        benchmark_table([*rows, {"task": "superdiagnostic", "model": "b", "params": 1,
                                 "scores": tmp_path / "order.csv"}], tmp_path / "out", n_bootstrap=5)


# ---------------------------------------------------------------------------------------------
# The published values, the leaderboard's notation and the ICBEB thresholds, against the reference
# ---------------------------------------------------------------------------------------------
# The leaderboard of helme/ecg_ptbxl_benchmarking's README as printed there: one line per model, the six
# PTB-XL tables (all, diagnostic, subdiagnostic, superdiagnostic, form, rhythm), then ICBEB's AUC, F_beta=2
# and G_beta=2 points.
LEADERBOARD = """
inception1d   0.925(08) 0.931(09) 0.930(10) 0.921(06) 0.899(22) 0.953(13) 0.963 0.807 0.594
xresnet1d101  0.925(07) 0.937(08) 0.929(14) 0.928(05) 0.896(12) 0.957(19) 0.974 0.819 0.602
resnet1d_wang 0.919(08) 0.936(08) 0.928(10) 0.930(05) 0.880(15) 0.946(10) 0.969 0.803 0.586
fcn_wang      0.918(08) 0.926(10) 0.927(11) 0.925(06) 0.869(12) 0.931(08) 0.957 0.787 0.563
lstm_bidir    0.914(08) 0.932(07) 0.923(12) 0.921(06) 0.876(15) 0.949(11) 0.959 0.796 0.573
lstm          0.907(08) 0.927(08) 0.928(10) 0.927(05) 0.851(15) 0.953(09) 0.964 0.790 0.561
Wavelet+NN    0.849(13) 0.855(15) 0.859(16) 0.874(07) 0.757(29) 0.890(24) 0.905 0.665 0.405
"""
PTBXL_COLUMNS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")


def leaderboard() -> dict[tuple[str, str, str], tuple[float, float | None]]:
    """(task, model, metric) -> (point, half width in units, None where the line prints none)."""
    cells = {}
    for line in LEADERBOARD.strip().splitlines():
        model, *values = line.split()
        for task, text in zip(PTBXL_COLUMNS, values[:6]):
            point, half = text[:-1].split("(")
            cells[task, model, "auc"] = (float(point), int(half) / 1000)
        for metric, text in zip(("auc", "fbeta", "gbeta"), values[6:]):
            cells["cpsc9", model, metric] = (float(text), None)
    return cells


def test_every_published_value_is_the_leaderboard_s():
    """A value looked up one task column or one model row over is another printed number."""
    cells = leaderboard()
    assert len(cells) == 7 * 6 + 7 * 3
    for (task, model, metric), (point, half) in cells.items():
        got = published(task, model, metric)
        assert got is not None and got[0] == pytest.approx(point, abs=1e-12), (task, model, metric)
        if half is not None:
            assert got[1] == pytest.approx(half, abs=1e-12), (task, model)
    for task in PTBXL_COLUMNS:
        assert published(task, "xresnet1d50") is None and published(task, "ensemble") is None
        assert published(task, "lstm", "gbeta") is None


def reference_notation(point: float, lower: float, upper: float) -> str:
    """The reference's generate_ptbxl_summary_table: "%.3f(%.2d)" % (np.round(point, 3), int(half * 1000))."""
    return "%.3f(%.2d)" % (np.round(point, 3), int(max(upper - point, point - lower) * 1000))


def test_the_interval_digits_are_truncated_as_the_reference_prints_them():
    assert format_result(0.9, 0.8921, 0.905) == "0.900(07)"   # 7.9 thousandths: 07, not 08
    assert format_result(0.9, 0.899, 0.9159) == "0.900(15)"
    rng = np.random.default_rng(0)
    for point, below, above in zip(rng.uniform(0.6, 0.99, 300), rng.uniform(0, 0.05, 300), rng.uniform(0, 0.05, 300)):
        assert format_result(point, point - below, point + above) == reference_notation(point, point - below,
                                                                                        point + above)


def test_an_interval_of_whole_thousandths_keeps_its_digit():
    """A half-width of exactly 58 thousandths prints (58): the float subtraction 0.563 - 0.505 falls just
    below 0.058, and truncating that would print (57) (the digit is the exact decimal one, on a grid of
    thousandths checked with decimal arithmetic)."""
    from decimal import Decimal

    assert format_result(0.505, 0.447, 0.563) == "0.505(58)"
    rng = np.random.default_rng(4)
    for point, below, above in rng.integers([500, 0, 0], [990, 80, 80], (2000, 3)):
        p, lo, hi = point / 1000, (point - below) / 1000, (point + above) / 1000
        half = max(Decimal(str(hi)) - Decimal(str(p)), Decimal(str(p)) - Decimal(str(lo)))
        assert format_result(p, lo, hi) == f"{p:.3f}({int(half * 1000):02d})", (p, lo, hi)


def test_resamples_are_drawn_again_only_for_a_missing_positive_and_undefined_ones_left_out(capsys):
    """The benchmark redraws a resample that lacks a positive of some class, not one that lacks a negative
    (the draws equal a literal loop over default_rng(seed)); a resample where a class has no negative has no
    macro AUC (the benchmark drops no class) and is left out of the mean and the percentiles, computed here
    with sklearn on each resample's records."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(8)
    y = rng.random((40, 2)) < 0.4
    y[:, 1] = True
    y[0, 1] = False  # one negative: about a third of the resamples miss it
    y[1, 0] = True
    p = rng.random((40, 2)) + 0.3 * y
    draws, literal = np.random.default_rng(3), []
    while len(literal) < 300:
        idx = draws.integers(0, 40, 40)
        if y[idx].any(0).all():
            literal.append(idx)
    indices = bootstrap_indices(y, 300, 3)
    assert np.array_equal(indices, np.stack(literal))
    aucs = np.array([roc_auc_score(y[rows], p[rows], average="macro") if (~y[rows]).any(0).all() else np.nan
                     for rows in indices])
    assert 50 < np.isnan(aucs).sum() < 250
    got = score_predictions(y, p, indices)["macro_auc"]
    assert got["mean"] == pytest.approx(np.nanmean(aucs), abs=1e-12)
    assert (got["lower"], got["upper"]) == pytest.approx((np.nanpercentile(aucs, 5), np.nanpercentile(aucs, 95)),
                                                         abs=1e-12)
    # said, with the class that lacks its negative there (B, never A), counted as sklearn's undefined AUCs
    left_out = int(np.isnan(aucs).sum())
    capsys.readouterr()
    say_undefined_resamples(y, indices, "y.npy", ["A", "B"])
    assert capsys.readouterr().err == (f"note: y.npy: {left_out} of 300 resamples have no macro AUC (no negative "
                                       f"record of class(es) B): the AUC's mean and 5-95 % interval are over the "
                                       f"other {300 - left_out}\n")
    say_undefined_resamples(y, indices[~np.isnan(aucs)], "y.npy")
    assert capsys.readouterr().err == ""  # every resample defined: nothing to say
    # given resamples (--bootstrap-ids) need not hold a positive: the note names what each class lacks,
    # counted here record by record
    given = np.vstack([indices[~np.isnan(aucs)][:5], np.zeros((2, 40), int)])  # record 0 alone, twice
    lacks = {kind: sorted({c for rows in given for j, c in enumerate("AB")
                           if not any(y[r, j] == (kind == "positive") for r in rows)})
             for kind in ("negative", "positive")}
    assert lacks["positive"]  # record 0 is no B
    say_undefined_resamples(y, given, "ids.csv", ["A", "B"])
    why = "; ".join(f"no {kind} record of class(es) {', '.join(c)}" for kind, c in lacks.items() if c)
    assert capsys.readouterr().err == (f"note: ids.csv: 2 of 7 resamples have no macro AUC ({why}): the AUC's mean "
                                       f"and 5-95 % interval are over the other 5\n")


def test_the_table_says_resamples_left_out_once_per_task_naming_the_task(tmp_path, capsys):
    """Every seed's models of a task share its records and resamples: one note for the task, however many
    seeds and models, naming the task rather than one model's scores."""
    rng = np.random.default_rng(4)
    y = np.zeros((40, 2), bool)
    y[:15, 0] = True
    y[1:, 1] = True  # MI: one negative record, missing from about a third of the resamples
    rows = []
    for seed in (0, 1, 2):
        for model in ("a", "b"):
            path = tmp_path / f"{model}_{seed}.csv"
            scores_table(_ids("r", 40), y, rng.random((40, 2)), ["NORM", "MI"]).to_csv(path, index=False)
            rows.append({"task": "superdiagnostic", "model": model, "seed": seed, "scores": path})
    capsys.readouterr()
    benchmark_table(rows, tmp_path / "out", n_bootstrap=30)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith(f"note: task superdiagnostic ({tmp_path / 'a_0.csv'} and its "
                                                   "other runs): ") and "no negative record of class(es) MI" in notes[0]


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_the_table_shows_each_task_and_model_s_published_value(tmp_path):
    """benchmark_table's published columns and table.md's cells for two tasks and two models, each a
    different printed number; a row's AUC cell in the leaderboard's notation."""
    rng = np.random.default_rng(1)
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0], [0, 1], [1, 0], [0, 0]])
    rows = []
    for task in ("form", "rhythm"):
        for model in ("fcn_wang", "lstm"):
            path = tmp_path / f"{task}_{model}.csv"
            scores_table(_ids("r", 8), y, rng.random(y.shape), ["A", "B"]).to_csv(path, index=False)
            rows.append({"task": task, "model": model, "params": 1, "scores": path})
    table = benchmark_table(rows, tmp_path / "out", n_bootstrap=20, ensemble=False)
    cells = leaderboard()
    for row in table.itertuples():
        point, half = cells[row.task, row.model, "auc"]
        assert (row.published_auc, row.published_lo, row.published_hi) == pytest.approx(
            (point, point - half, point + half), abs=1e-12), (row.task, row.model)
    table.loc[0, ["auc", "auc_lo", "auc_hi"]] = [0.9, 0.8921, 0.905]
    write_benchmark_outputs(table, tmp_path / "out", 20, figure=False)
    text = (tmp_path / "out" / "table.md").read_text()
    assert "| fcn_wang | 1 | 8 | 2/2 | 0.900(07) | [0.892, 0.905] | 0.869(12) |" in text
    for task, model in (("form", "lstm"), ("rhythm", "fcn_wang"), ("rhythm", "lstm")):
        point, half = cells[task, model, "auc"]
        assert f"| {reference_notation(point, point - half, point + half)} |" in text


def reference_challenge(y: np.ndarray, pred: np.ndarray, beta: float = 2.0, single: bool = False
                        ) -> tuple[float, float]:
    """The reference's challenge_metrics (utils.py), loop for loop: macro F_beta and G_beta, each record
    weighing 1 / its number of labels (1 when tuning one class)."""
    weights = np.ones(len(y)) if single else y.sum(1)
    f = g = 0.0
    for k in range(y.shape[1]):
        tp = fp = fn = 0.0
        for i in range(len(y)):
            if y[i, k] == pred[i, k] == 1:
                tp += 1 / weights[i]
            if pred[i, k] == 1 and y[i, k] != pred[i, k]:
                fp += 1 / weights[i]
            if pred[i, k] == 0 and y[i, k] != pred[i, k]:
                fn += 1 / weights[i]
        f += (1 + beta ** 2) * tp / ((1 + beta ** 2) * tp + fp + beta ** 2 * fn)
        g += tp / (tp + fp + beta * fn)
    return f / y.shape[1], g / y.shape[1]


def reference_thresholds(y: np.ndarray, p: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """find_optimal_cutoff_thresholds_for_Gbeta: per class, the first of linspace(0, 1, 100) maximising
    that class's unweighted G_beta."""
    grid = np.linspace(0, 1, 100)
    return np.array([grid[np.argmax([reference_challenge(y[:, [k]], (p[:, [k]] > t).astype(int), beta, True)[1]
                                     for t in grid])] for k in range(y.shape[1])])


def reference_apply(p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """apply_thresholds: score > threshold, a record above none getting its top class."""
    pred = (p > thresholds).astype(int)
    for i in np.flatnonzero(pred.sum(1) == 0):
        pred[i, np.argmax(p[i])] = 1
    return pred


def icbeb_case(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n records of 3 classes, each with one or two labels, and noisy scores on the thresholds' grid (so
    that `score > threshold` and `score >= threshold` differ)."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 3), int)
    y[np.arange(n), rng.integers(0, 3, n)] = 1
    y[rng.random((n, 3)) < 0.15] = 1
    return y, np.linspace(0, 1, 100)[np.clip(np.round((0.35 * y + rng.random((n, 3)) * 0.7) * 99), 0, 99).astype(int)]


def test_icbeb_f_and_g_beta_use_thresholds_tuned_on_validation_for_g_beta_2(tmp_path):
    """F_beta=2 and G_beta=2 of the table's cpsc9 rows (and of `score --val-scores`) equal the reference's
    computation with thresholds tuned on the validation records for G_beta=2; thresholds tuned on the
    test records, or for beta 1, give other values."""
    y_val, p_val = icbeb_case(3, 40)
    y, p = icbeb_case(4, 30)
    noise = np.random.default_rng(5)
    p2 = np.clip(p + noise.normal(0, 0.1, p.shape), 0, 1)
    p_val2 = np.clip(p_val + noise.normal(0, 0.1, p_val.shape), 0, 1)
    classes = ["NORM", "AFIB", "PAC"]
    rows = []
    for model, (scores, val) in {"xresnet1d101": (p, p_val), "fcn_wang": (p2, p_val2)}.items():
        test_csv, val_csv = tmp_path / f"{model}_test.csv", tmp_path / f"{model}_val.csv"
        scores_table(_ids("t", 30), y, scores, classes).to_csv(test_csv, index=False)
        scores_table(_ids("v", 40), y_val, val, classes).to_csv(val_csv, index=False)
        rows.append({"task": "cpsc9", "model": model, "params": 1, "scores": test_csv, "val_scores": val_csv})
    table = benchmark_table(rows, tmp_path / "out", n_bootstrap=10).set_index("model")
    for model, scores, val in (("xresnet1d101", p, p_val), ("fcn_wang", p2, p_val2),
                               ("ensemble", (p + p2) / 2, (p_val + p_val2) / 2)):
        expected = reference_challenge(y, reference_apply(scores, reference_thresholds(y_val, val)))
        on_test = reference_challenge(y, reference_apply(scores, reference_thresholds(y, scores)))
        beta_1 = reference_challenge(y, reference_apply(scores, reference_thresholds(y_val, val, beta=1)))
        assert on_test[1] != pytest.approx(expected[1], abs=1e-3) and beta_1[1] != pytest.approx(expected[1], abs=1e-3)
        assert table.loc[model, ["fbeta", "gbeta"]].tolist() == pytest.approx(expected, rel=1e-12), model
    assert (table["thresholds"] == "val").all()  # the rows name no thresholds_from: the validation scores' own
    write_benchmark_outputs(table.reset_index(), tmp_path / "out", 10, figure=False)
    text = (tmp_path / "out" / "table.md").read_text()
    assert "thresholds tuned on the validation records' scores" in text and "tuned on the training" not in text
    cells = leaderboard()
    for model in ("xresnet1d101", "fcn_wang"):
        auc, f, g = (cells["cpsc9", model, metric][0] for metric in ("auc", "fbeta", "gbeta"))
        assert f"| {f:.3f} / {g:.3f} |" in text and f"| {auc:.3f}(" in text
    # a cpsc9 row run otherwise than the reference ran it gets no published value beside it; one as published does
    from utils.ptbxl import AS_PUBLISHED
    setups = {"xresnet1d101": AS_PUBLISHED, "fcn_wang": "epochs 1 (published: 50)"}
    table = benchmark_table([{**r, "setup": setups[r["model"]]} for r in rows], tmp_path / "out2",
                            n_bootstrap=10).set_index("model")
    assert table.loc["xresnet1d101", "published_auc"] == cells["cpsc9", "xresnet1d101", "auc"][0]
    assert table.loc[["fcn_wang", "ensemble"], "published_auc"].isna().all()
    out = tmp_path / "te.csv"
    r = benchmark.main(["score", "--scores", str(rows[0]["scores"]), "--val-scores", str(rows[0]["val_scores"]),
                        "--n-bootstrap", "5", "--out", str(out)])
    assert r.loc["point", ["F_beta_macro", "G_beta_macro"]].tolist() == pytest.approx(
        reference_challenge(y, reference_apply(p, reference_thresholds(y_val, p_val))), rel=1e-12)


def test_fbeta_gbeta_intervals_are_the_percentiles_of_each_resample_s_reference_values(tmp_path):
    """The F_beta/G_beta mean, lower and upper (score) and fbeta_lo/hi, gbeta_lo/hi (the table): the mean and
    the 5th and 95th percentiles of the reference's challenge_metrics (beta 2) on each resample, F apart from G."""
    y_val, p_val = icbeb_case(3, 40)
    y, p = icbeb_case(4, 30)
    thresholds = reference_thresholds(y_val, p_val)
    indices = bootstrap_indices(y, 30, 0)
    pred = reference_apply(p, thresholds)
    per = np.array([reference_challenge(y[rows], pred[rows]) for rows in indices])  # (resamples, F and G)
    assert not np.allclose(per[:, 0], per[:, 1])
    r = score_predictions(y, p, indices, thresholds)
    for j, column in enumerate(("F_beta_macro", "G_beta_macro")):
        assert r.loc[["mean", "lower", "upper"], column].tolist() == pytest.approx(
            [per[:, j].mean(), *np.percentile(per[:, j], [5, 95])], rel=1e-12), column
    classes = ["NORM", "AFIB", "PAC"]
    scores_table(_ids("t", 30), y, p, classes).to_csv(tmp_path / "test.csv", index=False)
    scores_table(_ids("v", 40), y_val, p_val, classes).to_csv(tmp_path / "val.csv", index=False)
    row = benchmark_table([{"task": "cpsc9", "model": "fcn_wang", "params": 1, "scores": tmp_path / "test.csv",
                            "val_scores": tmp_path / "val.csv"}], tmp_path / "out", n_bootstrap=30,
                          ensemble=False).iloc[0]
    assert row[["fbeta_lo", "fbeta_hi", "gbeta_lo", "gbeta_hi"]].tolist() == pytest.approx(
        [*np.percentile(per[:, 0], [5, 95]), *np.percentile(per[:, 1], [5, 95])], rel=1e-12)


def test_a_row_on_other_data_is_never_beside_the_published_value_whatever_its_setup_s_order():
    from utils.ptbxl import comparable_with_published

    assert comparable_with_published("all", "epochs 1 (published: 50)")  # a PTB-XL variant: set beside it
    for setup in ("data: synthetic (x)", "epochs 1 (published: 50); data: synthetic (x)",
                  "epochs 1 (published: 50); lr 0.1 (published: 0.01); data: 40 of 21799 records"):
        assert not comparable_with_published("all", setup), setup
    assert not comparable_with_published("cpsc9", "epochs 1 (published: 50)")  # ICBEB2018: only as published


def test_only_classes_with_a_positive_and_a_negative_record_are_scored():
    """A class that every test record has, like one that none has, has no AUC: it is left out of the macro."""
    from utils.ptbxl import assessable_classes

    y = np.array([[1, 1, 0, 1], [0, 1, 0, 1], [1, 1, 0, 0]], bool)
    assert assessable_classes(y).tolist() == [0, 3]


def test_score_leaves_out_a_class_without_a_positive_as_the_table_does(tmp_path, capsys):
    """A score file with a class no test record has (or every one has): `score` leaves it out of the macro
    AUC and says so, as the benchmark table does, so the table's own score files give its rows; given
    thresholds keep their classes' places. Without any class with an AUC: one error line."""
    rng = np.random.default_rng(4)
    y = np.column_stack([rng.random(30) < 0.4, np.zeros(30, bool), rng.random(30) < 0.5, np.ones(30, bool)])
    y[:, 0] |= ~y[:, 2]  # every record a label among the scored classes (F_beta/G_beta weigh records by them)
    y[:2, 2] = False
    p = rng.random((30, 4))
    scores_table([f"r{i}" for i in range(30)], y, p, ["A", "B", "C", "D"]).to_csv(tmp_path / "s.csv", index=False)
    row = benchmark_table([{"task": "t", "model": "m", "scores": tmp_path / "s.csv"}], tmp_path / "b",
                          n_bootstrap=20, ensemble=False).iloc[0]
    capsys.readouterr()
    got = benchmark.main(["score", "--scores", str(tmp_path / "s.csv"), "--n-bootstrap", "20", "--seed", "0",
                          "--out", str(tmp_path / "te.csv")])
    out, err = capsys.readouterr()
    assert "class(es) B, D lack a positive or a negative test record: left out of its macro AUC (2 of 4 classes" in err
    assert "30 records, 2 of 4 classes scored, 20 resamples" in out
    assert got.loc["point", "macro_auc"] == row["auc"] == pytest.approx(np.mean(auc_scores(y[:, [0, 2]], p[:, [0, 2]])))
    assert (got.loc["lower", "macro_auc"], got.loc["upper", "macro_auc"]) == (row["auc_lo"], row["auc_hi"])
    np.save(tmp_path / "t.npy", np.array([0.5, 0.1, 0.9, 0.2]))  # one per class of the file, B and D unread
    got = benchmark.main(["score", "--scores", str(tmp_path / "s.csv"), "--thresholds", str(tmp_path / "t.npy"),
                          "--n-bootstrap", "20", "--out", str(tmp_path / "te.csv")])
    kept = score_predictions(y[:, [0, 2]], p[:, [0, 2]], bootstrap_indices(y[:, [0, 2]], 20, 0), np.array([0.5, 0.9]))
    assert got.equals(kept)
    scores_table([f"r{i}" for i in range(30)], y[:, [1, 3]], p[:, [1, 3]], ["B", "D"]).to_csv(
        tmp_path / "none.csv", index=False)
    with pytest.raises(SystemExit, match=r"^error: .*none.csv: class B has no positive record"):
        benchmark.main(["score", "--scores", str(tmp_path / "none.csv"), "--out", str(tmp_path / "te2.csv")])


def test_the_ensemble_is_the_mean_of_its_models_scores(tmp_path):
    """Three models (with two, a median would be the mean too): the ensemble row scores the records' mean
    score, and its AUC is scikit-learn's macro AUC of that mean."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0], [0, 1], [1, 0], [0, 0], [1, 0], [0, 1]])
    probs = [np.clip(0.3 * y + rng.random(y.shape) ** k, 0, 1) for k in (1, 2, 4)]
    rows = []
    for model, p in zip(("fcn_wang", "lstm", "inception1d"), probs):
        path = tmp_path / f"{model}.csv"
        scores_table(_ids("r", 10), y, p, ["A", "B"]).to_csv(path, index=False)
        rows.append({"task": "rhythm", "model": model, "params": 1, "scores": path})
    table = benchmark_table(rows, tmp_path / "out", n_bootstrap=10).set_index("model")
    mean = np.mean(probs, axis=0)
    assert not np.allclose(np.median(probs, axis=0), mean)  # the case tells the two apart
    written = read_scores(table.loc["ensemble", "scores"], ["A", "B"])
    np.testing.assert_allclose(scores_arrays(written, ["A", "B"])[1], mean, rtol=0, atol=1e-9)
    assert table.loc["ensemble", "auc"] == pytest.approx(roc_auc_score(y, mean, average="macro"), abs=1e-12)
    for model, p in zip(rows, probs):
        assert table.loc[model["model"], "auc"] == pytest.approx(roc_auc_score(y, p, average="macro"), abs=1e-12)


def _logit_case(seed: int = 0, n: int = 120, c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels (every record with one) and logits that rank them better than chance."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(int)
    y[np.arange(n), rng.integers(0, c, n)] = 1
    return y, rng.normal(0, 1.5, (n, c)) + 2 * y


def test_logits_give_the_fbeta_gbeta_of_their_sigmoid_or_a_refusal(tmp_path):
    (y, z), (yv, zv) = _logit_case(0), _logit_case(1)
    z[0, 0], z[1, 0] = 40.0, 50.0  # sigmoid(40) == sigmoid(50) == 1.0 in float64: only the logits rank them
    arrays = {"y": y, "z": z, "yv": yv, "zv": zv, "z10": 10 / (1 + np.exp(-z))}
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    f = {name: str(tmp_path / f"{name}.npy") for name in arrays}
    out = str(tmp_path / "o.csv")
    for scores in ("z", "z10"):  # logits, or probabilities x 10: thresholds on 0..1 would not span them
        with pytest.raises(SystemExit, match=rf"^error: .*{scores}.npy: score .* is outside \[0, 1\].*--logits"):
            benchmark.main(["score", "--labels", f["y"], "--scores", f[scores], "--val-scores", f["zv"],
                            "--val-labels", f["yv"], "--out", out])
    r = benchmark.main(["score", "--labels", f["y"], "--scores", f["z"], "--val-scores", f["zv"], "--val-labels",
                        f["yv"], "--logits", "--n-bootstrap", "20", "--out", out])
    # independently: the sigmoid's probabilities, thresholds tuned on the validation probabilities
    p, pv = 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-zv))
    expected = score_predictions(y, p, bootstrap_indices(y, 20, 0), tune_gbeta_thresholds(yv, pv))
    assert r[["F_beta_macro", "G_beta_macro"]].to_numpy() == pytest.approx(
        expected[["F_beta_macro", "G_beta_macro"]].to_numpy())
    assert r.loc["point", "macro_auc"] == pytest.approx(auc_scores(y, z).mean())  # the logits' own ranking
    assert r.loc["point", "macro_auc"] != pytest.approx(auc_scores(y, p).mean())
    np.save(tmp_path / "t.npy", np.array([0.5, 0.0, 1.0]))
    r = benchmark.main(["score", "--labels", f["y"], "--scores", f["z"], "--thresholds", str(tmp_path / "t.npy"),
                        "--logits", "--n-bootstrap", "5", "--out", out])
    expected = score_predictions(y, p, bootstrap_indices(y, 5, 0), np.array([0.5, 0.0, 1.0]))
    assert r.loc["point", "F_beta_macro"] == pytest.approx(expected.loc["point", "F_beta_macro"])
    np.save(tmp_path / "pv.npy", pv)  # probabilities given as logits: their sigmoid would be thresholded
    probabilities = str(tmp_path / "pv.npy")
    for scores, thresholds in ((f["z"], ["--val-scores", probabilities, "--val-labels", f["yv"]]),
                               (probabilities, ["--val-scores", f["zv"], "--val-labels", f["yv"]]),
                               (probabilities, ["--thresholds", str(tmp_path / "t.npy")])):
        with pytest.raises(SystemExit, match=r"^error: .*pv.npy: --logits, but every score is in \[0, 1\]"):
            benchmark.main(["score", "--labels", f["y"], "--scores", scores, *thresholds, "--logits", "--out", out])


def test_a_nan_threshold_is_said_as_a_class_never_predicted(tmp_path, capsys):
    """A NaN in --thresholds (a mistake, or a class tuned on a validation set without its positives) lowers
    F_beta and G_beta: scored as never predicted, and said in one warning line naming the class."""
    np.save(tmp_path / "y.npy", Y)
    np.save(tmp_path / "p.npy", P)
    common = ["score", "--scores", str(tmp_path / "p.npy"), "--labels", str(tmp_path / "y.npy"), "--n-bootstrap", "5",
              "--out", str(tmp_path / "o.csv")]
    np.save(tmp_path / "t.npy", np.array([0.5, np.nan]))
    r = benchmark.main([*common, "--thresholds", str(tmp_path / "t.npy")])
    assert capsys.readouterr().err.splitlines() == [f"warning: {tmp_path / 't.npy'}: the threshold of class(es) 1 "
                                                    "(0-based) is NaN: never predicted, and scored so"]
    expected = score_predictions(Y.astype(bool), P, bootstrap_indices(Y, 5, 0), np.array([0.5, np.nan]))
    assert r.loc["point", "F_beta_macro"] == pytest.approx(expected.loc["point", "F_beta_macro"])
    np.save(tmp_path / "t.npy", np.array([0.5, 0.5]))
    benchmark.main([*common, "--thresholds", str(tmp_path / "t.npy")])
    assert "warning" not in capsys.readouterr().err


def test_a_class_without_a_validation_positive_gets_no_threshold_and_is_said(tmp_path, capsys):
    """score --val-scores: a class the validation labels never carry has no threshold to tune; a warning
    names it, and the test records' predictions give it only by the at-least-one rule (a record above no
    threshold gets its top class). F_beta and G_beta computed here from the definitions."""
    (y, p), (yv, pv) = _logit_case(2), _logit_case(3)
    p, pv = 1 / (1 + np.exp(-p)), 1 / (1 + np.exp(-pv))
    yv[:, 1] = 0
    for name, a in {"y": y, "p": p, "yv": yv, "pv": pv}.items():
        np.save(tmp_path / f"{name}.npy", a)
    r = benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                        "--val-scores", str(tmp_path / "pv.npy"), "--val-labels", str(tmp_path / "yv.npy"),
                        "--n-bootstrap", "5", "--out", str(tmp_path / "o.csv")])
    assert (f"warning: {tmp_path / 'yv.npy'}: class column 1 has no positive record, so its F_beta/G_beta threshold "
            "cannot be tuned; it is predicted only for a record above no other class's") in capsys.readouterr().err
    # the thresholds of the other classes by the benchmark's search: unweighted G_beta, strictly above, lowest tie
    grid, t = np.linspace(0, 1, 100), np.full(3, np.nan)
    for j in (0, 2):
        g = [((pv[:, j] > u) & (yv[:, j] == 1)).sum() / max(1, ((pv[:, j] > u) & (yv[:, j] == 1)).sum()
             + ((pv[:, j] > u) & (yv[:, j] == 0)).sum() + 2 * ((pv[:, j] <= u) & (yv[:, j] == 1)).sum()) for u in grid]
        t[j] = grid[int(np.argmax(g))]
    pred = np.column_stack([p[:, j] > t[j] if j != 1 else np.zeros(len(p), bool) for j in range(3)])
    for i in np.flatnonzero(~pred.any(1)):
        pred[i, p[i].argmax()] = True
    assert pred[:, 1].any()  # the untuned class still predicted here and there, by the at-least-one rule
    w = 1 / y.sum(1)
    tp, fp, fn = w @ (pred & (y == 1)), w @ (pred & (y == 0)), w @ (~pred & (y == 1))
    assert r.loc["point", "F_beta_macro"] == pytest.approx(np.mean(5 * tp / (5 * tp + fp + 4 * fn)), abs=1e-12)
    assert r.loc["point", "G_beta_macro"] == pytest.approx(np.mean(tp / (tp + fp + 2 * fn)), abs=1e-12)


def test_a_score_column_without_its_label_column_is_refused(tmp_path):
    table = scores_table([f"r{i}" for i in range(6)], np.c_[Y, 1 - Y[:, :1]], np.c_[P, P[:, :1]], ["A", "B", "C"])
    table.rename(columns={"C": "c"}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(SystemExit, match=r"^error: .*s.csv: score column\(s\) p_C have no 0/1 label column C"):
        benchmark.main(["score", "--scores", str(tmp_path / "s.csv"), "--out", str(tmp_path / "o.csv")])


@pytest.mark.parametrize("renamed,said", [
    ({"p_C": "pC"}, r"column\(s\) C, pC are neither a class with its p_<class> column nor a score "
                    r"\(classes found: A, B\)"),
    ({"p_C": "C_score"}, r"column\(s\) C, C_score are neither a class with its p_<class> column nor a score"),
    ({"p_C": "P_C"}, r"column\(s\) C, P_C are neither a class with its p_<class> column nor a score"),
    ({"p_C": "p_c"}, r"score column\(s\) p_c have no 0/1 label column c beside them")])
def test_a_label_column_without_its_score_column_is_refused(renamed, said, tmp_path):
    """A misspelt p_<class> left the class's 0/1 column without a score: the class was silently scored
    out of the macro AUC. Any column that is neither a class (with its score) nor a score is refused."""
    table = scores_table([f"r{i}" for i in range(6)], np.c_[Y, 1 - Y[:, :1]], np.c_[P, P[:, :1]], ["A", "B", "C"])
    table.rename(columns=renamed).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(SystemExit, match=rf"^error: .*s.csv: {said}"):
        benchmark.main(["score", "--scores", str(tmp_path / "s.csv"), "--out", str(tmp_path / "o.csv")])
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("extra", ["q_A", "P_A", "Unnamed: 0"])
def test_any_other_column_beside_the_classes_and_scores_is_refused(extra, tmp_path):
    table = scores_table([f"r{i}" for i in range(6)], Y, P, ["A", "B"])
    table.insert(0, extra, P[:, 0])
    table.to_csv(tmp_path / "s.csv", index=False)
    hint = "; an unnamed column is a saved pandas index" if extra.startswith("Unnamed") else ""
    with pytest.raises(SystemExit, match=rf"^error: .*s.csv: column\(s\) {extra} are neither .*nothing else{hint}"):
        benchmark.main(["score", "--scores", str(tmp_path / "s.csv"), "--out", str(tmp_path / "o.csv")])


def test_a_repeated_label_column_is_refused(tmp_path):
    """pandas would read a second `A` as `A.1` and score with the first: which one counts is refused."""
    table = scores_table([f"r{i}" for i in range(6)], Y, P, ["A", "B"])
    text = table.to_csv(index=False).splitlines()
    header = text[0].split(",")
    rows = [line + "," + str(1 - int(line.split(",")[header.index("A")])) for line in text[1:]]
    (tmp_path / "s.csv").write_text("\n".join([text[0] + ",A", *rows]) + "\n")
    with pytest.raises(SystemExit, match=r"^error: .*s.csv: column\(s\) A appear more than once in its header"):
        benchmark.main(["score", "--scores", str(tmp_path / "s.csv"), "--out", str(tmp_path / "o.csv")])


def test_out_never_overwrites_an_input_and_is_a_file(tmp_path, capsys):
    np.save(tmp_path / "y.npy", Y)
    np.save(tmp_path / "p.npy", P)
    before = {n: (tmp_path / n).read_bytes() for n in ("y.npy", "p.npy")}
    (tmp_path / "link.npy").symlink_to(tmp_path / "y.npy")
    for out, flag in ((tmp_path / "p.npy", "--scores"), (tmp_path / "sub" / ".." / "y.npy", "--labels"),
                      (tmp_path / "link.npy", "--labels")):
        with pytest.raises(SystemExit) as e:
            benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                            "--out", str(out)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"is the {flag} file, which it would overwrite" in err
    np.save(tmp_path / "other.npy", P)  # an array that is no input of this call: not replaced by a table either
    before["other.npy"] = (tmp_path / "other.npy").read_bytes()
    with pytest.raises(SystemExit) as e:
        benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                        "--out", str(tmp_path / "other.npy")])
    assert e.value.code == 2 and "--out" in (err := capsys.readouterr().err) and "is not a .csv file" in err
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    with pytest.raises(SystemExit) as e:
        benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                        "--out", str(tmp_path)])
    assert e.value.code == 2 and "--out" in (err := capsys.readouterr().err) and "is a folder" in err


def test_acceptance_probability_is_exact_and_hopeless_redraws_are_refused(tmp_path):
    import itertools

    from utils.ptbxl import acceptance_probability

    rng = np.random.default_rng(3)
    for _ in range(3):  # every resample of 5 records enumerated
        y = rng.random((5, 3)) < 0.3
        y[rng.integers(0, 5, 3), np.arange(3)] = True
        every = [y[list(rows)].any(0).all() for rows in itertools.product(range(5), repeat=5)]
        assert acceptance_probability(y) == pytest.approx(np.mean(every), abs=1e-12)
    assert acceptance_probability(np.eye(1000, 1, dtype=bool) | np.eye(1000, 1, -500, dtype=bool)) == \
        pytest.approx(1 - (1 - 2 / 1000) ** 1000)
    # twelve classes of one positive record each in 30: 1 resample in about 550 holds all twelve
    y = np.zeros((30, 12), int)
    y[np.arange(12), np.arange(12)] = 1
    y[12:, 0] = 0
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "p.npy", np.random.default_rng(0).random((30, 12)))
    import time
    start = time.process_time()
    with pytest.raises(SystemExit, match=r"^error: .*y.npy: a resample holds a positive record of every class with "
                                         r"probability 0.00\d+ \(class \d+ has 1 positive"):
        benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                        "--n-bootstrap", "100000", "--out", str(tmp_path / "o.csv")])
    assert time.process_time() - start < 5  # refused up front, not after hours of draws
    r = benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                        "--n-bootstrap", "20", "--out", str(tmp_path / "o.csv")])
    assert np.isfinite(r.loc["lower", "macro_auc"])


def test_figure_and_tables_stay_in_step_when_a_point_lies_outside_its_interval(tmp_path):
    ids = [f"r{i}" for i in range(6)]
    scores_table(ids, Y, P, ["NORM", "MI"]).to_csv(tmp_path / "a.csv", index=False)
    rows = [{"task": "superdiagnostic", "model": "a", "params": 1, "scores": tmp_path / "a.csv"}]
    out = tmp_path / "out"
    write_benchmark_outputs(benchmark_table(rows, out, n_bootstrap=30), out, 30)
    old = {n: (out / n).read_bytes() for n in ("table.csv", "table.md", "auc.png")}
    table = benchmark_table(rows, out, n_bootstrap=1, seed=0)  # one resample: its AUC is the whole interval
    assert not table.loc[0, "auc_lo"] <= table.loc[0, "auc"] <= table.loc[0, "auc_hi"]
    written = write_benchmark_outputs(table, out, 1)
    assert sorted(w.name for w in written) == ["auc.png", "compare.csv", "summary.csv", "table.csv", "table.md"]
    assert all((out / n).read_bytes() != b for n, b in old.items())


def test_labels_beside_a_score_csv_must_agree_with_its_own(tmp_path):
    """A score CSV holds its records' labels: --labels (an array or another CSV) that says otherwise is
    refused, not silently scored instead of them; the same labels are accepted."""
    ids = [f"r{i}" for i in range(6)]
    scores_table(ids, Y, P, ["A", "B"]).to_csv(tmp_path / "s.csv", index=False)
    np.save(tmp_path / "same.npy", Y)
    np.save(tmp_path / "other.npy", Y[::-1])
    scores_table(ids, Y[::-1], P, ["A", "B"]).to_csv(tmp_path / "other.csv", index=False)
    common = ["score", "--scores", str(tmp_path / "s.csv"), "--n-bootstrap", "3", "--out", str(tmp_path / "o.csv")]
    assert benchmark.main([*common, "--labels", str(tmp_path / "same.npy")]).loc["point", "macro_auc"] == pytest.approx(AUC)
    for other in ("other.npy", "other.csv"):  # a pipeline error: "error: ..." (exit 1 from the command line)
        with pytest.raises(SystemExit, match=rf"^error: .*{other}.* disagrees? with the 0/1 columns"):
            benchmark.main([*common, "--labels", str(tmp_path / other)])


def test_validation_classes_are_matched_by_name_and_other_classes_named_as_the_file_that_holds_them(tmp_path):
    """.npy scores take their classes (and their columns' order) from the labels' CSV. Validation files
    naming the same classes in another order are matched by name: the thresholds, and so F_beta and
    G_beta, are those of the same files in the test's order. Other classes are refused naming the file
    that holds them (not the arrays, which name no class)."""
    ids, val_ids = [f"r{i}" for i in range(6)], [f"v{i}" for i in range(6)]
    Pv = np.array([[.8, .1], [.3, .9], [.35, .7], [.6, .4], [.75, .2], [.1, .55]])
    scores_table(ids, Y, P, ["A", "B"]).to_csv(tmp_path / "p.csv", index=False)
    scores_table(val_ids, Y, Pv, ["A", "B"]).to_csv(tmp_path / "pv.csv", index=False)
    scores_table(val_ids, Y[:, ::-1], Pv[:, ::-1], ["B", "A"]).to_csv(tmp_path / "pv_ba.csv", index=False)
    np.save(tmp_path / "p.npy", P)
    np.save(tmp_path / "pv.npy", Pv)
    np.save(tmp_path / "pv_ba.npy", Pv[:, ::-1])

    def score(*argv: str) -> pd.DataFrame:
        return benchmark.main(["score", *argv, "--n-bootstrap", "5", "--out", str(tmp_path / "o.csv")])

    same = score("--scores", str(tmp_path / "p.csv"), "--val-scores", str(tmp_path / "pv.csv"))
    scores_table(val_ids, Y[:, ::-1], Pv[:, ::-1], ["A", "B"]).to_csv(tmp_path / "pv_swapped.csv", index=False)
    swapped = score("--scores", str(tmp_path / "p.csv"), "--val-scores", str(tmp_path / "pv_swapped.csv"))
    assert not swapped.equals(same)  # these records' thresholds depend on which class is which
    reordered = score("--scores", str(tmp_path / "p.csv"), "--val-scores", str(tmp_path / "pv_ba.csv"))
    pd.testing.assert_frame_equal(reordered, same)
    pd.testing.assert_frame_equal(score("--scores", str(tmp_path / "p.npy"), "--labels", str(tmp_path / "p.csv"),
                                        "--val-scores", str(tmp_path / "pv_ba.npy"), "--val-labels",
                                        str(tmp_path / "pv_ba.csv")), same)
    scores_table(ids, Y[:, ::-1], P[:, ::-1], ["B", "A"]).to_csv(tmp_path / "p_ba.csv", index=False)
    pd.testing.assert_frame_equal(score("--scores", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "p_ba.csv"),
                                        "--val-scores", str(tmp_path / "pv.csv")), same)  # labels in another order
    # three classes in a cyclic order: the columns taken by name, not by the inverse of the order
    (y3, p3), (y3v, p3v) = icbeb_case(4, 30), icbeb_case(3, 40)
    scores_table(_ids("t", 30), y3, p3, ["A", "B", "C"]).to_csv(tmp_path / "t3.csv", index=False)
    scores_table(_ids("v", 40), y3v, p3v, ["A", "B", "C"]).to_csv(tmp_path / "v3.csv", index=False)
    cyclic = [2, 0, 1]
    scores_table(_ids("v", 40), y3v[:, cyclic], p3v[:, cyclic], ["C", "A", "B"]).to_csv(tmp_path / "v3_cab.csv",
                                                                                      index=False)
    by_name = score("--scores", str(tmp_path / "t3.csv"), "--val-scores", str(tmp_path / "v3_cab.csv"))
    pd.testing.assert_frame_equal(by_name, score("--scores", str(tmp_path / "t3.csv"), "--val-scores",
                                                 str(tmp_path / "v3.csv")))
    scores_table(val_ids, Y, Pv, ["A", "C"]).to_csv(tmp_path / "yv_ac.csv", index=False)
    with pytest.raises(SystemExit, match=r"^error: .*yv_ac.csv has classes \['A', 'C'\], .*p.csv has \['A', 'B'\]$"):
        score("--labels", str(tmp_path / "p.csv"), "--scores", str(tmp_path / "p.npy"),
              "--val-scores", str(tmp_path / "pv.npy"), "--val-labels", str(tmp_path / "yv_ac.csv"))
    # a score CSV names its own classes: that file is named, not labels given as an array beside it
    np.save(tmp_path / "y.npy", Y)
    with pytest.raises(SystemExit, match=r"^error: .*yv_ac.csv has classes \['A', 'C'\], .*p.csv has \['A', 'B'\]$"):
        score("--scores", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "y.npy"),
              "--val-scores", str(tmp_path / "yv_ac.csv"))


def test_validation_scores_hard_linked_to_the_test_scores_are_refused(tmp_path, capsys):
    import os
    np.save(tmp_path / "y.npy", Y)
    np.save(tmp_path / "p.npy", P)
    os.link(tmp_path / "p.npy", tmp_path / "val.npy")
    with pytest.raises(SystemExit) as e:
        benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                        "--val-scores", str(tmp_path / "val.npy"), "--val-labels", str(tmp_path / "y.npy"),
                        "--out", str(tmp_path / "o.csv")])
    assert e.value.code == 2 and "--val-scores: thresholds tuned on the scored records" in capsys.readouterr().err


def test_compare_never_overwrites_its_table_or_a_score_file_and_reads_from_any_folder(tmp_path, capsys, monkeypatch):
    """--out hard-linked to the table, naming (with its .md) a run's score file or an output of the table's
    benchmark folder, is refused (exit 2) and leaves those files as they were; table.csv names its score
    files so that compare runs from another working folder; a seed that is no whole number is one line."""
    import os
    import shutil
    from utils.ptbxl import benchmark_table
    from utils.comparison import write_benchmark_outputs

    rng = np.random.default_rng(0)
    y = rng.random((30, 2)) < 0.4
    y[:2] = np.eye(2, dtype=bool)
    monkeypatch.chdir(tmp_path)
    rows = []
    for model in ("007", "b"):  # a model named 007 is a name, not the number 7
        (tmp_path / "runs" / model).mkdir(parents=True)
        scores_table([f"r{i}" for i in range(30)], y, rng.random((30, 2)), ["NORM", "MI"]).to_csv(
            f"runs/{model}/test_scores.csv", index=False)
        rows.append({"task": "superdiagnostic", "model": model, "seed": 0, "scores": Path("runs") / model / "test_scores.csv"})
    write_benchmark_outputs(benchmark_table(rows, Path("out"), n_bootstrap=20), Path("out"), 20, figure=False)
    table = tmp_path / "out" / "table.csv"
    os.link(table, tmp_path / "hard.csv")
    before = {p: p.read_bytes() for p in (table, tmp_path / "runs" / "007" / "test_scores.csv")}
    with pytest.raises(SystemExit) as e:
        benchmark.main(["compare", "--table", str(tmp_path / "hard.csv"), "--out", str(table)])
    assert e.value.code == 2 and "is the --table itself" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        benchmark.main(["compare", "--table", str(table), "--out", "runs/007/test_scores.csv"])
    assert e.value.code == 2 and "--out: runs/007/test_scores.csv would replace " in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    # the benchmark folder's own outputs (compare.csv too: table.md's comparison would no longer match it)
    own = {name: (tmp_path / "out" / name).read_bytes() for name in ("summary.csv", "compare.csv", "table.md")}
    for out in ("out/summary.csv", "out/compare.csv", "out/table.csv", str(tmp_path / "out" / "summary.csv")):
        with pytest.raises(SystemExit) as e:
            benchmark.main(["compare", "--table", str(table), "--out", out])
        assert e.value.code == 2 and f"--out: {out} " in capsys.readouterr().err, out
    assert {n: (tmp_path / "out" / n).read_bytes() for n in own} == own
    # the same outputs named through the table's links, or beside a table copied into the folder
    os.symlink(table, tmp_path / "t_link.csv")
    shutil.copy(table, tmp_path / "out" / "edited.csv")
    for table_given, out in (("t_link.csv", "out/summary.csv"), ("out/edited.csv", "out/compare.csv"),
                             ("hard.csv", "out/compare.csv")):
        with pytest.raises(SystemExit) as e:
            benchmark.main(["compare", "--table", table_given, "--out", out])
        assert e.value.code == 2 and "an output of a benchmark folder" in capsys.readouterr().err, out
    (tmp_path / "out" / "edited.csv").unlink()
    assert {n: (tmp_path / "out" / n).read_bytes() for n in own} == own
    (tmp_path / "copy").mkdir()  # a table copied under another name has no benchmark folder around it
    shutil.copy(table, tmp_path / "copy" / "mytable.csv")
    benchmark.main(["compare", "--table", str(tmp_path / "copy" / "mytable.csv"), "--out", "copy/compare.csv",
                    "--n-bootstrap", "5"])
    assert (tmp_path / "copy" / "compare.csv").exists() and (tmp_path / "copy" / "compare.md").exists()
    # the markdown beside --out: a folder there, or the table itself, is refused before anything is written
    (tmp_path / "notes.md").mkdir()
    (tmp_path / "folder.csv").mkdir()
    os.link(table, tmp_path / "linked.md")
    for out, says in (("notes.csv", "--out: notes.md is a folder"), ("folder.csv", "--out: folder.csv is a folder"),
                      ("linked.csv", "--out: linked.md is the --table itself")):
        with pytest.raises(SystemExit) as e:
            benchmark.main(["compare", "--table", str(table), "--out", out])
        assert e.value.code == 2 and says in capsys.readouterr().err, out
    assert not (tmp_path / "notes.csv").exists() and {p: p.read_bytes() for p in before} == before
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    pairs = benchmark.main(["compare", "--table", str(table), "--out", "c.csv", "--n-bootstrap", "20"])
    assert set(pairs["model_a"]) | set(pairs["model_b"]) == {"007", "b", "ensemble"} and (elsewhere / "c.csv").exists()
    # a file of the markdown's name that no comparison wrote (a user's notes) is never overwritten; the
    # markdown of an earlier comparison is replaced with it
    (elsewhere / "mine.md").write_text("my notes\n")
    with pytest.raises(SystemExit) as e:
        benchmark.main(["compare", "--table", str(table), "--out", "mine.csv", "--n-bootstrap", "5"])
    assert e.value.code == 2 and "--out: mine.md exists and is not the markdown of an earlier comparison" in \
        capsys.readouterr().err
    assert (elsewhere / "mine.md").read_text() == "my notes\n" and not (elsewhere / "mine.csv").exists()
    pd.read_csv(elsewhere / "c.csv").drop(columns=["p", "called_holm"]).to_csv(elsewhere / "c.csv", index=False)
    benchmark.main(["compare", "--table", str(table), "--out", "c.csv", "--n-bootstrap", "5"])  # an older layout too
    assert (elsewhere / "c.md").read_text().startswith("### ") and "p" in pd.read_csv(elsewhere / "c.csv")
    bad = pd.read_csv(table).astype({"seed": float})
    bad.loc[0, "seed"] = 0.5
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SystemExit, match=r"^error: .*bad.csv: seed '0.5' is not a whole number"):
        benchmark.main(["compare", "--table", str(tmp_path / "bad.csv"), "--out", "c2.csv"])
    for column, line in (("scores", 2), ("model", 3), ("task", 2)):  # an empty cell: one line, nothing written
        empty = pd.read_csv(table)
        empty.loc[line - 2, column] = None if column != "task" else " "
        empty.to_csv(tmp_path / "empty.csv", index=False)
        with pytest.raises(SystemExit, match=rf"^error: .*empty.csv: line {line} has no {column}; every run needs"):
            benchmark.main(["compare", "--table", str(tmp_path / "empty.csv"), "--out", "c3.csv"])
    assert not (elsewhere / "c3.csv").exists()


def test_the_default_resamples_are_the_benchmark_s_100(tmp_path):
    """The reference's intervals come from 100 bootstrap resamples of the test fold, for its table and for
    `score` alike (more would narrow nothing but change the published interval's digits)."""
    assert benchmark.parse_args(["--data-dir", str(tmp_path)]).n_bootstrap == 100
    args = benchmark.parse_args(["score", "--labels", "y.npy", "--scores", "p.npy", "--out", str(tmp_path / "o.csv")])
    assert args.n_bootstrap == 100


def test_resampled_aucs_are_computed_in_bounded_parts_and_the_resamples_bounded(tmp_path, monkeypatch):
    """Each resample's macro AUC is the AUC of its own records (sklearn on the resampled records), also
    when the resamples are taken in several parts (here 20,000 counts a part: 10 resamples of 2,000
    records); resamples whose indices would exceed 2 GiB are refused up front, naming how many fit, rather
    than exhausting memory (score exits with that one line)."""
    from sklearn.metrics import roc_auc_score
    from utils import ptbxl

    rng = np.random.default_rng(5)
    y = rng.random((3000, 3)) < 0.3
    p = rng.random((3000, 3)) + 0.4 * y
    indices = bootstrap_indices(y[:2000], 25, 1)
    whole = ptbxl.resample_aucs(y[:2000], p[:2000], indices)
    monkeypatch.setattr(ptbxl, "AUC_PART_COUNTS", 20_000)
    aucs = ptbxl.resample_aucs(y[:2000], p[:2000], indices)
    assert aucs.shape == (25,) and np.array_equal(aucs, whole)
    for i in (0, 9, 10, 19, 20, 24):  # the first and last of each part
        rows = indices[i]
        assert aucs[i] == pytest.approx(roc_auc_score(y[rows], p[rows], average="macro"), abs=1e-12)
    with pytest.raises(PipelineError, match=r"100,000 resamples of 3,000 records are 300,000,000 record indices "
                                            r"\(2\.2 GiB\); at most 268,435,456 are held \(2 GiB\): ask for at most "
                                            r"89,478 resamples"):
        bootstrap_indices(y, 100_000, 0)
    np.save(tmp_path / "y.npy", y.astype(int))
    np.save(tmp_path / "p.npy", p / 1.4)
    with pytest.raises(SystemExit, match=r"^error: .*y.npy: 100,000 resamples of 3,000 records"):
        benchmark.main(["score", "--labels", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "p.npy"),
                        "--n-bootstrap", "100000", "--out", str(tmp_path / "o.csv")])
    assert not (tmp_path / "o.csv").exists()
