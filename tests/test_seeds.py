"""Training seeds in the PTB-XL benchmark: one run folder per seed, a table row per seed, the mean and sd over
seeds, and the paired comparison recomputed here from the score files with numpy alone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import benchmark
from models.registry import register_model
from utils.comparison import holm, seed_comparison
from utils.evaluator import scores_table
from utils.manifest import file_sha

N_BOOTSTRAP = 40


def _cnn(width: int):
    def build(in_leads: int, num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Conv1d(in_leads, width, 7, padding=3), nn.ReLU(), nn.AdaptiveMaxPool1d(1),
                             nn.Flatten(), nn.Linear(width, num_classes))
    return build


@pytest.fixture(autouse=True, scope="module")
def seed_architectures():
    """Two small networks registered for this file's tests only."""
    import models.registry as registry

    register_model("seed_narrow", family="test")(_cnn(4))
    register_model("seed_wide", family="test")(_cnn(16))
    yield
    for name in ("seed_narrow", "seed_wide"):
        registry._REGISTRY.pop(name, None)


# ---------------------------------------------------------------------------------------------------------
# The comparison as its definition reads, with numpy only
# ---------------------------------------------------------------------------------------------------------
def read_score_file(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = pd.read_csv(path, dtype={"patient_id": str})
    classes = [c[2:] for c in table.columns if c.startswith("p_")]
    return table["patient_id"].to_numpy(), table[classes].to_numpy().astype(bool), table[
        ["p_" + c for c in classes]].to_numpy(float)


def pairwise_macro_auc(y: np.ndarray, p: np.ndarray) -> float:
    """The mean over classes of P(positive scored above negative) + P(tie) / 2, over every pair."""
    aucs = []
    for j in range(y.shape[1]):
        pos, neg = p[y[:, j], j], p[~y[:, j], j]
        wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
        aucs.append(wins / (len(pos) * len(neg)))
    return float(np.mean(aucs))


def record_resamples(y: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    rng, out = np.random.default_rng(seed), []
    while len(out) < n:
        idx = rng.integers(0, len(y), len(y))
        if y[idx].any(0).all():
            out.append(idx)
    return out


def recompute(table: pd.DataFrame, task: str, n: int, seed: int = 0) -> tuple[dict, dict, pd.DataFrame]:
    """(seed means of each model on all records, its 5th/95th percentile, the pairs) of one task."""
    rows = table[table["task"] == task]
    models = list(dict.fromkeys(rows["model"]))
    ids0, y0, _ = read_score_file(rows["scores"].iloc[0])
    keep = y0.any(0) & ~y0.all(0)
    resamples = record_resamples(y0[:, keep], n, seed)
    seed_rng = np.random.default_rng(seed + 1)
    mean, draws = {}, {}
    for model in models:
        runs = rows[rows["model"] == model].sort_values("seed")
        point, per_resample = [], []
        for path in runs["scores"]:
            ids, y, p = read_score_file(path)
            assert (ids == ids0).all() and (y == y0).all()
            y, p = y[:, keep], p[:, keep]
            point.append(pairwise_macro_auc(y, p))
            per_resample.append([pairwise_macro_auc(y[idx], p[idx]) for idx in resamples])
        per_resample = np.array(per_resample)  # seeds x resamples
        s = len(runs)
        picks = seed_rng.integers(0, s, (n, s))
        draws[model] = np.array([per_resample[picks[b], b].mean() for b in range(n)])
        mean[model] = np.mean(point)
    pairs = []
    for i, one in enumerate(models):
        for other in models[i + 1:]:
            a, b = (other, one) if mean[other] > mean[one] else (one, other)
            d = draws[a] - draws[b]
            lo, hi = np.percentile(d, 5), np.percentile(d, 95)
            pairs.append({"model_a": a, "model_b": b, "diff": mean[a] - mean[b], "diff_lo": lo, "diff_hi": hi,
                          "a_better": (d > 0).mean(), "called": lo > 0 or hi < 0,
                          "p": min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))})
    # Holm over the task's pairs at 10 %: the k-th smallest p (from 0) against 0.10 / (m - k), until one fails
    m, holding = len(pairs), True
    for k, pair in enumerate(sorted(pairs, key=lambda pair: pair["p"])):
        holding = holding and pair["p"] < 0.10 / (m - k)
        pair["called_holm"] = pair["called"] and holding
    intervals = {m: (np.percentile(draws[m], 5), np.percentile(draws[m], 95)) for m in models}
    return mean, intervals, pd.DataFrame(pairs)


@pytest.mark.slow
def test_three_seeds_give_a_row_each_their_mean_and_a_paired_comparison(synthetic_ptbxl, tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["--data-dir", str(synthetic_ptbxl), "--preset", "demo", "--tasks", "superdiagnostic",
            "--models", "seed_narrow,seed_wide", "--epochs", "1", "--n-bootstrap", str(N_BOOTSTRAP),
            "--results-dir", str(results), "--tasks-dir", str(tmp_path / "tasks")]
    table = benchmark.main([*argv, "--seeds", "2,0,1"])
    out = results / synthetic_ptbxl.name / "benchmark"

    # one run folder per (model, seed); one table row per (model, seed), the ensemble per seed
    runs = tmp_path / "tasks" / f"{synthetic_ptbxl.name}_superdiagnostic" / "runs"
    assert sorted(p.name.rsplit("_", 1)[1] for p in runs.iterdir() if (p / "model.pth").exists()) == \
        ["0", "0", "1", "1", "2", "2"]
    for model in ("seed_narrow", "seed_wide"):  # each seed trained a network of its own: none reused another's
        models = [next(runs.glob(f"{model}_*_{s}")) / "model.pth" for s in (0, 1, 2)]
        assert len({m.stat().st_ino for m in models}) == 3 and len({file_sha(m) for m in models}) == 3, model
        seeds = [torch.load(m, weights_only=True)["config"]["seed"] for m in models]
        assert seeds == [0, 1, 2]
    assert list(zip(table["model"], table["seed"])) == [(m, s) for m in ("seed_narrow", "seed_wide", "ensemble")
                                                        for s in (0, 1, 2)]
    assert table["scores"].nunique() == 9
    for s in (0, 1, 2):
        members = [read_score_file(p)[2] for p in table.loc[(table["seed"] == s) & (table["model"] != "ensemble"),
                                                             "scores"]]
        ensemble = read_score_file(table.loc[(table["seed"] == s) & (table["model"] == "ensemble"), "scores"].item())
        assert np.allclose(ensemble[2], np.mean(members, axis=0), atol=1e-6)
    saved = pd.read_csv(out / "table.csv")
    assert saved["seed"].tolist() == [0, 1, 2] * 3
    said = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("- seed_narrow: ")]
    assert len(said) == 1  # how a model was run otherwise than published: once, not once per seed
    for row in saved.itertuples():  # each row's AUC recomputes from its own score file
        _, y, p = read_score_file(row.scores)
        keep = y.any(0) & ~y.all(0)
        assert row.auc == pytest.approx(pairwise_macro_auc(y[:, keep], p[:, keep]), abs=1e-12)

    # mean and sd over seeds, the interval of the mean, and every pair, recomputed from the score files
    summary = pd.read_csv(out / "summary.csv")
    compare = pd.read_csv(out / "compare.csv")
    mean, intervals, pairs = recompute(saved, "superdiagnostic", N_BOOTSTRAP)
    assert summary["model"].tolist() == ["seed_narrow", "seed_wide", "ensemble"]
    assert summary["seeds"].tolist() == ["0,1,2"] * 3 and (summary["n_seeds"] == 3).all()
    for row in summary.itertuples():
        aucs = saved.loc[saved["model"] == row.model, "auc"].to_numpy()
        assert row.auc_mean == pytest.approx(mean[row.model], abs=1e-12) == pytest.approx(aucs.mean(), abs=1e-12)
        assert row.auc_sd == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
        assert (row.auc_lo, row.auc_hi) == pytest.approx(intervals[row.model], abs=1e-12)
    assert len(compare) == 3  # three models (the ensemble one of them): three pairs
    assert compare[["model_a", "model_b"]].values.tolist() == pairs[["model_a", "model_b"]].values.tolist()
    for column in ("diff", "diff_lo", "diff_hi", "a_better", "p"):
        assert compare[column].to_numpy() == pytest.approx(pairs[column].to_numpy(), abs=1e-12), column
    assert compare["called"].tolist() == pairs["called"].tolist()
    assert compare["called_holm"].tolist() == pairs["called_holm"].tolist()
    assert (compare["diff"] >= 0).all() and (compare["resamples"] == N_BOOTSTRAP).all()
    md = (out / "table.md").read_text()
    assert "| seed_narrow | 0 |" in md and "**Over training seeds**" in md and "**Paired comparison**" in md
    assert (out / "auc.png").stat().st_size > 0

    # `compare` recomputes the same file from table.csv alone; more resamples, another file
    capsys.readouterr()
    again = tmp_path / "again.csv"
    benchmark.main(["compare", "--table", str(out / "table.csv"), "--out", str(again), "--n-bootstrap",
                    str(N_BOOTSTRAP)])
    pd.testing.assert_frame_equal(pd.read_csv(again), compare)
    assert "| A | B | A - B | 90 % interval | A beats B in | p | called | called, Holm |" in \
        again.with_suffix(".md").read_text()
    more = benchmark.main(["compare", "--table", str(out / "table.csv"), "--out", str(tmp_path / "more.csv"),
                           "--n-bootstrap", "60"])
    _, _, pairs60 = recompute(saved, "superdiagnostic", 60)
    assert more["diff_lo"].to_numpy() == pytest.approx(pairs60["diff_lo"].to_numpy(), abs=1e-12)
    seven = benchmark.main(["compare", "--table", str(out / "table.csv"), "--out", str(tmp_path / "seven.csv"),
                            "--n-bootstrap", "60", "--seed", "7"])  # --seed draws other resamples
    _, _, pairs7 = recompute(saved, "superdiagnostic", 60, seed=7)
    assert seven["diff_lo"].to_numpy() == pytest.approx(pairs7["diff_lo"].to_numpy(), abs=1e-12)
    assert not np.allclose(seven["diff_lo"].to_numpy(), more["diff_lo"].to_numpy())

    # fewer seeds reuse their runs: nothing is trained; the seeds given are the table's
    capsys.readouterr()
    two = benchmark.main([*argv, "--seeds", "0,1"])
    assert capsys.readouterr().out.count("current, nothing to train") == 4
    assert sorted(set(two["seed"])) == [0, 1] and len(two) == 6


def test_one_seed_is_the_default_and_keeps_its_run_names(tmp_path):
    args = benchmark.parse_args(["--data-dir", str(tmp_path), "--tasks", "rhythm", "--models", "seed_narrow"])
    assert args.seeds == [42]
    runs = list(benchmark.run_configs(args, {"rhythm": tmp_path / "rhythm"}))
    assert [(r.task, r.model, r.seed, Path(r.cfg.run_dir).name) for r in runs] == \
        [("rhythm", "seed_narrow", 42, "seed_narrow_all_42")]
    args = benchmark.parse_args(["--data-dir", str(tmp_path), "--tasks", "rhythm,form",
                                 "--models", "seed_narrow,seed_wide", "--seeds", "3,1"])
    runs = list(benchmark.run_configs(args, {"rhythm": tmp_path / "rhythm", "form": tmp_path / "form"}))
    assert [(r.task, r.model, r.seed) for r in runs][:4] == [("rhythm", "seed_narrow", 1), ("rhythm", "seed_narrow", 3),
                                                             ("rhythm", "seed_wide", 1), ("rhythm", "seed_wide", 3)]
    assert len({r.cfg.run_dir for r in runs}) == 8 and all(r.cfg.seed == r.seed for r in runs)


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,0"], "argument --seeds: seed 0 is given twice"),
    (["--seeds=-1"], "argument --seeds: seed -1 is outside"),
    (["--seeds", "x"], "argument --seeds: seed 'x' is not an integer"),
    (["--seeds", ""], "argument --seeds"),
    (["--seeds", "1", "--seed", "2"], "--seeds: give --seed N"),
    (["compare", "--table", "t.txt", "--out", "c.csv"], "--table: t.txt is not a .csv"),
    (["compare", "--table", "t.csv", "--out", "c.md"], "--out: c.md is not a .csv"),
    (["compare", "--table", "t.csv", "--out", "c.csv", "--n-bootstrap", "0"], "argument --n-bootstrap"),
])
def test_bad_seed_and_compare_flags_exit_2_naming_them(tmp_path, argv, message, capsys):
    if argv[0] != "compare":
        argv = ["--data-dir", str(tmp_path), *argv]
    with pytest.raises(SystemExit) as e:
        benchmark.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_compare_refuses_runs_tested_on_other_records(tmp_path):
    """Seeds that drew their own test records (no fixed split) have no common resample to pair on."""
    rng = np.random.default_rng(0)
    y = rng.random((30, 2)) < 0.4
    rows = []
    for model in ("a", "b"):
        for s, ids in ((0, [f"r{i}" for i in range(30)]), (1, [f"q{i}" for i in range(30)])):
            path = tmp_path / f"{model}_{s}.csv"
            scores_table(ids, y, rng.random((30, 2)), ["NORM", "MI"]).to_csv(path, index=False)
            rows.append({"task": "superdiagnostic", "model": model, "seed": s, "scores": str(path)})
    pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)
    with pytest.raises(SystemExit, match=r"^error: task superdiagnostic: .*a_1.csv does not hold the test records"):
        benchmark.main(["compare", "--table", str(tmp_path / "table.csv"), "--out", str(tmp_path / "c.csv")])
    assert not (tmp_path / "c.csv").exists()
    # the same records under other labels (another label version): no resample means the same for both
    other = y.copy()
    other[0] = ~other[0]
    scores_table([f"r{i}" for i in range(30)], other, rng.random((30, 2)), ["NORM", "MI"]).to_csv(
        tmp_path / "b_1.csv", index=False)
    pd.DataFrame([rows[0], rows[2], {**rows[3], "scores": str(tmp_path / "b_1.csv")}]).to_csv(  # a_0, b_0, b_1
        tmp_path / "table.csv", index=False)
    with pytest.raises(SystemExit, match=r"^error: task superdiagnostic: .*b_1.csv does not hold the test records "
                                         r"and labels"):
        benchmark.main(["compare", "--table", str(tmp_path / "table.csv"), "--out", str(tmp_path / "c.csv")])


def test_compare_refuses_a_table_whose_score_file_was_written_again(tmp_path):
    """table.csv names each run's score file and the AUC it gave: a run trained or evaluated again in
    place after a copy of the table was kept gives another AUC, and comparing the kept table would compare
    the new run under the old one's name. Refused (exit 1) naming the file and its row, before anything is
    written; a table made by hand without the auc column is compared as it is."""
    from utils.ptbxl import benchmark_table

    rng = np.random.default_rng(7)
    rows = _score_files(tmp_path, {(m, s): rng.random((40, 3)) for m in ("a", "b") for s in (0, 1)})
    benchmark_table(rows, tmp_path / "bench", n_bootstrap=20).to_csv(tmp_path / "table.csv", index=False)
    argv = ["compare", "--table", str(tmp_path / "table.csv"), "--out", str(tmp_path / "c.csv"), "--n-bootstrap", "20"]
    benchmark.main(argv)
    kept = (tmp_path / "c.csv").read_bytes()
    retrained = pd.read_csv(tmp_path / "b_1.csv")
    pos, neg = retrained.loc[retrained["MI"] == 1, "p_MI"], retrained.loc[retrained["MI"] == 0, "p_MI"]
    lowest, above = pos.idxmin(), neg[neg > pos.min()].idxmin()  # one pair of MI's ranks swapped: b, seed 1,
    retrained.loc[[lowest, above], "p_MI"] = retrained.loc[[above, lowest], "p_MI"].to_numpy()  # a hair off
    retrained.to_csv(tmp_path / "b_1.csv", index=False)
    with pytest.raises(SystemExit, match=r"^error: task superdiagnostic: .*b_1.csv gives a macro AUC of 0\.\d+, its "
                                         r"row \(model b, seed 1\) says 0\.\d+: the file was written again"):
        benchmark.main(argv)
    assert (tmp_path / "c.csv").read_bytes() == kept
    pd.read_csv(tmp_path / "table.csv").drop(columns="auc").to_csv(tmp_path / "table.csv", index=False)
    benchmark.main(argv)  # by hand: the files as they are
    assert (tmp_path / "c.csv").read_bytes() != kept


def test_the_comparison_does_not_depend_on_the_order_of_the_table_s_rows(tmp_path):
    """compare reads any table: rows of seeds and models in another order give the same summary and pairs
    (each model's seeds are drawn in ascending order, as docs/benchmark_seeds.md's step 2 says)."""
    rng = np.random.default_rng(11)
    rows = _score_files(tmp_path, {(m, s): rng.random((40, 3)) * w for m, w in (("a", 0.5), ("b", 0.9))
                                   for s in (0, 1, 2)})
    table = pd.DataFrame(rows)
    shuffled = table.iloc[[2, 0, 1, 5, 3, 4]].reset_index(drop=True)  # a2 a0 a1 b2 b0 b1
    one, other = seed_comparison(table, 50), seed_comparison(shuffled, 50)
    pd.testing.assert_frame_equal(one.pairs, other.pairs)
    pd.testing.assert_frame_equal(one.summary, other.summary)


def _score_files(tmp_path: Path, runs: dict[tuple[str, int | None], np.ndarray], ids: dict | None = None,
                 n: int = 40) -> list[dict]:
    """Hand-made test score files of the same labelled records: one per (model, seed)."""
    y = np.random.default_rng(1).random((n, 3)) < 0.35
    y[:3] = np.eye(3, dtype=bool)
    rows = []
    for (model, s), noise in runs.items():
        path = tmp_path / f"{model}_{s}.csv"
        record_ids = (ids or {}).get(s, [f"r{i}" for i in range(n)])
        scores_table(record_ids, y, np.clip(y * 0.3 + noise, 0, 1), ["NORM", "MI", "CD"]).to_csv(path, index=False)
        rows.append({"task": "superdiagnostic", "model": model, "params": 5, "scores": path,
                     **({"seed": s} if s is not None else {})})
    return rows


def test_one_seed_summary_repeats_the_table_and_compare_is_the_paired_bootstrap(tmp_path):
    from utils.ptbxl import benchmark_table
    from utils.comparison import write_benchmark_outputs

    rng = np.random.default_rng(3)
    rows = _score_files(tmp_path, {(m, 42): rng.random((40, 3)) * w
                                   for m, w in (("a", 0.6), ("b", 1.2), ("resnet1d_wang", 2.0))})
    out = tmp_path / "out"
    table = benchmark_table(rows, out, n_bootstrap=50)
    write_benchmark_outputs(table, out, 50)
    saved, summary, compare = (pd.read_csv(out / f"{name}.csv") for name in ("table", "summary", "compare"))
    assert summary["model"].tolist() == ["a", "b", "resnet1d_wang", "ensemble"] and (summary["n_seeds"] == 1).all()
    # the leaderboard's resnet1d_wang on superdiagnostic, 0.930(05), beside it; no published value for the others
    published = summary.set_index("model")[["published_auc", "published_lo", "published_hi"]]
    assert published.loc["resnet1d_wang"].tolist() == pytest.approx([0.930, 0.925, 0.935])
    assert published.drop(index="resnet1d_wang").isna().all().all()
    assert summary["auc_sd"].isna().all()
    for mine, own in (("auc_mean", "auc"), ("auc_lo", "auc_lo"), ("auc_hi", "auc_hi")):  # one seed: the run's own
        assert summary[mine].to_numpy() == pytest.approx(saved[own].to_numpy(), abs=1e-12)
    mean, intervals, pairs = recompute(saved, "superdiagnostic", 50)
    assert len(compare) == 6 and compare["model_a"].tolist() == pairs["model_a"].tolist()
    for column in ("diff", "diff_lo", "diff_hi", "a_better", "p"):
        assert compare[column].to_numpy() == pytest.approx(pairs[column].to_numpy(), abs=1e-12), column
    assert compare["called"].tolist() == pairs["called"].tolist()
    assert compare["called_holm"].tolist() == pairs["called_holm"].tolist() and compare["called"].any()
    called = compare[compare["called"]].iloc[0]
    assert called["better"] == (called["model_a"] if called["diff_lo"] > 0 else called["model_b"])
    assert "| seed |" not in (out / "table.md").read_text()  # one seed: the table as it always was


def test_two_runs_of_equal_scores_are_a_tie_never_one_beating_the_other(tmp_path):
    """A beats B in a resample only where A's AUC is higher: of equal scores, neither beats the other in
    any resample, the difference is 0 and nothing is called."""
    from utils.comparison import seed_comparison

    noise = np.random.default_rng(5).random((40, 3))
    pairs = seed_comparison(pd.DataFrame(_score_files(tmp_path, {("a", 0): noise, ("b", 0): noise})), 30).pairs
    assert len(pairs) == 1 and pairs.loc[0, "diff"] == 0 and pairs.loc[0, "a_better"] == 0
    assert (pairs.loc[0, "model_a"], pairs.loc[0, "model_b"]) == ("a", "b")  # a tie: A is the first in the table
    assert not pairs.loc[0, "called"]
    assert pairs.loc[0, "p"] == 1 and not pairs.loc[0, "called_holm"]  # every resample a tie: on both sides


def test_seeds_tested_on_other_records_get_mean_and_sd_but_no_pairs(tmp_path, capsys):
    from utils.ptbxl import benchmark_table
    from utils.comparison import write_benchmark_outputs

    rng = np.random.default_rng(4)
    runs = {(m, s): rng.random((40, 3)) for m in ("a", "b") for s in (0, 1)}
    rows = _score_files(tmp_path, runs, ids={1: [f"q{i}" for i in range(40)]})
    out = tmp_path / "out"
    table = benchmark_table(rows, out, n_bootstrap=20)
    assert list(zip(table["model"], table["seed"])) == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("ensemble", 0),
                                                        ("ensemble", 1)]
    write_benchmark_outputs(table, out, 20)
    assert "no interval over seeds and no paired comparison" in capsys.readouterr().err
    summary = pd.read_csv(out / "summary.csv")
    assert summary["auc_sd"].to_numpy() == pytest.approx([np.std(table.loc[table["model"] == m, "auc"], ddof=1)
                                                          for m in ("a", "b", "ensemble")])
    assert summary["auc_lo"].isna().all() and len(pd.read_csv(out / "compare.csv")) == 0
    assert "No paired comparison: task superdiagnostic" in (out / "table.md").read_text()


def test_a_narrower_rerun_says_which_runs_its_table_no_longer_holds(tmp_path):
    """Each benchmark command tables its own runs: the runs of an earlier, wider table that the new one
    lacks are named (seeds read back from the CSV as floats or integers alike)."""
    pd.DataFrame({"task": ["rhythm"] * 4, "model": ["a", "b", "a", "ensemble"], "seed": [0.0, 0.0, 1.0, 0.0],
                  "scores": ["s"] * 4}).to_csv(tmp_path / "table.csv", index=False)
    now = pd.DataFrame({"task": ["rhythm"] * 2, "model": ["a", "ensemble"], "seed": [0, 0]})
    assert benchmark.runs_left_out(tmp_path / "table.csv", now) == ["rhythm/b/seed 0", "rhythm/a/seed 1"]
    assert benchmark.runs_left_out(tmp_path / "none.csv", now) == []


def test_holm_steps_down_and_stops_at_the_first_p_that_fails():
    """Worked by hand at 10 % over four pairs: 0.001 < 0.10/4; 0.04 is not below 0.10/3, so neither it nor
    the larger ones are rejected (though 0.045 < 0.10/2 and 0.049 < 0.10); a p of NaN never is."""
    assert holm([0.001, 0.04, 0.045, 0.049], 0.10) == [True, False, False, False]
    assert holm([0.01, 0.04, 0.03, 0.5], 0.10) == [True, True, True, False]  # 0.01 < .025, .03 < .033, .04 < .05
    assert holm([float("nan"), 0.0], 0.10) == [False, True] and holm([], 0.10) == []
    # "below": a p on the boundary is not rejected (p moves in steps of 0.02 over the benchmark's 100 resamples,
    # and 0.10 / 5 is 0.02)
    assert holm([0.02] * 5, 0.10) == [False] * 5 and holm([0.05, 0.05], 0.10) == [False, False]
    from utils.comparison import FAMILY_ALPHA
    assert FAMILY_ALPHA == pytest.approx(0.10)  # the family-wise 10 % of docs/benchmark_seeds.md and table.md


def test_holm_s_family_is_each_task_s_pairs(tmp_path):
    """Two tasks of three models each: each task's calls under Holm are Holm's over that task's three pairs.
    Over all six pairs at once they would differ here (a p of 0.06 is below 0.10 / 1, not 0.10 / 2)."""
    rng = np.random.default_rng(6)
    y = rng.random((60, 3)) < 0.35
    y[:3] = np.eye(3, dtype=bool)
    rows = []
    for task in ("t", "u"):
        base = rng.random(y.shape)
        for model, p in (("a", np.clip(y * 0.3 + base, 0, 1)),
                         ("b", np.clip(y * rng.normal(0.25, 0.1, y.shape) + base + rng.normal(0, 0.1, y.shape), 0, 1)),
                         ("c", rng.random(y.shape))):
            path = tmp_path / f"{task}_{model}.csv"
            scores_table([f"r{i}" for i in range(60)], y, p, ["A", "B", "C"]).to_csv(path, index=False)
            rows.append({"task": task, "model": model, "seed": 0, "scores": str(path)})
    pairs = seed_comparison(pd.DataFrame(rows), n_bootstrap=200, seed=0).pairs
    per_task = [c for _, g in pairs.groupby("task", sort=False) for c in holm(list(g["p"]), 0.10)]
    assert pairs["called_holm"].tolist() == per_task
    assert per_task != holm(list(pairs["p"]), 0.10)  # the data tell the two families apart


def test_pairs_called_over_records_keep_their_call_under_holm_only_where_it_holds(tmp_path):
    """Three models on the same 300 records: one informative, two noise. The two pairs against the
    informative model are called, by interval and by Holm; each call under Holm is a call by interval whose p
    (twice the share of resamples on the losing side) passes Holm's step-down over the task's three pairs."""
    rng = np.random.default_rng(1)
    y = rng.random((300, 3)) < 0.3
    rows = []
    for model, p in (("good", np.clip(y + rng.normal(0, 0.4, y.shape), 0, 1)), ("noise1", rng.random(y.shape)),
                     ("noise2", rng.random(y.shape))):
        path = tmp_path / f"{model}.csv"
        scores_table([f"r{i}" for i in range(300)], y, p, ["A", "B", "C"]).to_csv(path, index=False)
        rows.append({"task": "t", "model": model, "seed": 0, "scores": str(path)})
    pairs = seed_comparison(pd.DataFrame(rows), n_bootstrap=200, seed=0).pairs
    good = pairs[pairs["model_a"] == "good"]
    assert len(good) == 2 and good["called"].all() and good["called_holm"].all() and (good["p"] == 0).all()
    m, holding = len(pairs), True
    for k, (_, pair) in enumerate(pairs.sort_values("p", kind="stable").iterrows()):
        holding = holding and pair["p"] < 0.10 / (m - k)
        assert pair["called_holm"] == holding and (pair["called"] or not holding), pair


def test_the_summary_sets_the_published_value_beside_a_model_only_where_its_table_rows_do(tmp_path):
    """summary.csv (and table.md's rows over seeds) follow table.csv: a model run on other data than the
    published results' (its setup says "data: ...") has no published value there either."""
    from utils.comparison import write_benchmark_outputs
    from utils.ptbxl import AS_PUBLISHED, benchmark_table, published

    rng = np.random.default_rng(3)
    rows = _score_files(tmp_path, {(m, s): rng.random((40, 3)) for m in ("fcn_wang", "lstm") for s in (0, 1)})
    setups = {"fcn_wang": AS_PUBLISHED, "lstm": "epochs 1 (published: 50); data: synthetic (x)"}
    table = benchmark_table([{**r, "setup": setups[r["model"]]} for r in rows], tmp_path / "out", n_bootstrap=10)
    write_benchmark_outputs(table, tmp_path / "out", 10, figure=False)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("model")
    assert table.loc[table["model"] == "lstm", "published_auc"].isna().all()
    assert summary.loc["fcn_wang", "published_auc"] == published("superdiagnostic", "fcn_wang")[0]
    assert np.isnan(summary.loc["lstm", "published_auc"])


@pytest.mark.parametrize("case", ["no positive", "one negative"])
def test_a_class_the_table_scores_without_or_in_part_gives_the_summary_the_table_s_intervals(case, tmp_path):
    """A class without a positive test record is left out (as in table.csv: "2/3" classes); a class of one
    negative record leaves some resamples undefined, left out of the percentiles (as in table.csv). With one
    seed per model the summary's intervals are then each run's own table.csv interval, and the pair exists."""
    from utils.comparison import write_benchmark_outputs
    from utils.ptbxl import benchmark_table

    y = np.random.default_rng(1).random((40, 3)) < 0.35
    y[:3] = np.eye(3, dtype=bool)
    y[:, 2] = False if case == "no positive" else np.arange(40) != 5
    rng = np.random.default_rng(3)
    rows = []
    for model, w in (("a", 0.6), ("b", 1.5)):
        path = tmp_path / f"{model}.csv"
        scores_table([f"r{i}" for i in range(40)], y, np.clip(y * 0.3 + rng.random((40, 3)) * w, 0, 1),
                     ["NORM", "MI", "CD"]).to_csv(path, index=False)
        rows.append({"task": "superdiagnostic", "model": model, "params": 5, "scores": path, "seed": 0})
    out = tmp_path / "out"
    table = benchmark_table(rows, out, n_bootstrap=40, ensemble=False)
    write_benchmark_outputs(table, out, 40, figure=False)
    summary = pd.read_csv(out / "summary.csv")
    assert (table["classes"] == ("2/3" if case == "no positive" else "3/3")).all()
    assert np.isfinite(summary[["auc_lo", "auc_hi"]].to_numpy()).all()
    for mine, own in (("auc_mean", "auc"), ("auc_lo", "auc_lo"), ("auc_hi", "auc_hi")):
        assert summary[mine].to_numpy() == pytest.approx(table[own].to_numpy(), abs=1e-12), mine
    assert len(pd.read_csv(out / "compare.csv")) == 1
