"""Training seeds, and which differences between the benchmark's models are real (docs/benchmark_seeds.md
says what each file holds and defines every number step by step).

With several seeds per (task, model), `seed_comparison` gives from the score file of every run alone:
summary.csv, one row per (task, model): the mean and sample sd of its seeds' macro AUCs and the interval of
the seed mean; compare.csv, one row per pair of models of a task: the difference of their seed-mean AUCs, its
90 % interval, the share of resamples in which A beats B, and whether it is called (the interval excludes 0).

The intervals come from a two-level bootstrap: the test records are resampled as table.csv's intervals are
(the same resample for every model and seed, so a pair is paired), then each model's seeds, independently,
so that both the test records and the training seeds vary. One seed: the plain paired bootstrap.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from utils.ptbxl import (assessable_classes, benchmark_markdown, bootstrap_indices, published, read_predictions,
                         resample_aucs)
from utils.errors import PipelineError
from utils.files import interval_errors, save_figure, write_csv, write_text
from utils.metrics import macro_auc
from utils.tables import Column, format_ci, format_mean_sd, markdown_table

__all__ = ["SUMMARY_COLUMNS", "COMPARE_COLUMNS", "Comparison", "seed_comparison", "comparison_markdown",
           "write_comparison", "write_benchmark_outputs"]

LOWER, UPPER = 5, 95  # percentiles: a 90 % interval, as the benchmark's
FAMILY_ALPHA = (LOWER + 100 - UPPER) / 100  # Holm's level over a task's pairs: the intervals' two tails


@dataclass
class Comparison:
    """summary: one row per (task, model); pairs: one row per pair of models of a task; skipped: tasks whose
    runs were not tested on the same records, with why (their summary rows have no interval)."""
    summary: pd.DataFrame
    pairs: pd.DataFrame
    skipped: dict[str, str]


def _sorted_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """A model's rows by ascending seed (a table without seeds: its one row)."""
    return rows.assign(_seed=rows["seed"].fillna(-1)).sort_values("_seed", kind="stable").drop(columns="_seed")


def _seed_list(rows: pd.DataFrame) -> str:
    return ",".join(str(int(s)) for s in rows["seed"] if pd.notna(s))


def _run_aucs(task: str, rows: pd.DataFrame, n_bootstrap: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model (table order): its seeds' AUCs on all records (S,) and on every record resample (S, B). One
    score file in memory at a time. A PipelineError when the runs do not share their test records."""
    first = Path(rows["scores"].iloc[0])
    ref = read_predictions(first)
    keep = assessable_classes(ref.y)
    indices = bootstrap_indices(ref.y[:, keep], n_bootstrap, seed, str(first))
    out = {}
    for model, runs in rows.groupby("model", sort=False):
        points, draws = [], []
        for _, row in _sorted_seeds(runs).iterrows():
            path = row["scores"]
            run = ref if Path(path) == first else read_predictions(Path(path))
            if run.classes != ref.classes or run.ids != ref.ids or not np.array_equal(run.y, ref.y):
                raise PipelineError(f"task {task}: {path} does not hold the test records and labels of {first}, so "
                                    "no resample is the same for both (a split drawn per seed, e.g. with --limit "
                                    "or a database without a fixed split?)")
            y, p = run.y[:, keep], run.p[:, keep]
            points.append(macro_auc(y, p))
            _check_row_auc(task, row, points[-1])
            draws.append(resample_aucs(y, p, indices))
        out[model] = (np.array(points), np.stack(draws))
    return out


def _check_row_auc(task: str, row: pd.Series, auc: float) -> None:
    """A row that gives its AUC (table.csv's, to full precision) must get it from the score file it names:
    a file that gives another was written again after the table (its run trained or evaluated again), and
    would be compared in the place of the run the table describes."""
    tabled = pd.to_numeric(pd.Series([row.get("auc")]), errors="coerce").iloc[0]
    if pd.notna(tabled) and not abs(auc - tabled) <= 1e-9:
        seed = "" if pd.isna(row.get("seed")) else f", seed {row['seed']}"
        raise PipelineError(f"task {task}: {row['scores']} gives a macro AUC of {auc:.6f}, its row (model "
                            f"{row['model']}{seed}) says {tabled:.6f}: the file was written "
                            "again after the table (a run trained or evaluated again); compare the current table, "
                            "or leave the auc column out of a table made by hand")


def _seed_means(aucs: Mapping[str, tuple[np.ndarray, np.ndarray]], n_bootstrap: int,
                seed: int) -> dict[str, np.ndarray]:
    """M[m, b]: each model's seed mean on resample b, its seeds drawn with replacement (docs/benchmark_seeds.md,
    step 2)."""
    rng = np.random.default_rng(seed + 1)
    means = {}
    for model, (_, draws) in aucs.items():
        s = len(draws)
        j = rng.integers(0, s, (n_bootstrap, s))
        means[model] = draws[j, np.arange(n_bootstrap)[:, None]].mean(1)
    return means


def _percentiles(x: np.ndarray) -> tuple[float, float]:
    """5th and 95th percentiles of the resamples where the AUC is defined (a resample may draw no negative
    record of a class), as table.csv's intervals."""
    x = x[~np.isnan(x)]
    if not len(x):
        return math.nan, math.nan
    lo, hi = np.percentile(x, [LOWER, UPPER])
    return float(lo), float(hi)


def seed_comparison(table: pd.DataFrame, n_bootstrap: int = 100, seed: int = 0, strict: bool = True) -> Comparison:
    """summary.csv and compare.csv (docs/benchmark_seeds.md) from a results table's rows of `task`, `model`, `seed`
    (may be NA: one run) and `scores` (a test score file); `params`, `records` and `classes` are carried
    into the summary when present. A task whose runs hold different test records is an error, or with
    `strict=False` a warning: its summary has mean and sd but no interval, and it has no pairs."""
    if "seed" not in table:
        table = table.assign(seed=pd.NA)
    twice = table[table.duplicated(["task", "model", "seed"])]
    if len(twice):
        row = twice.iloc[0]
        raise PipelineError(f"task {row['task']}: model {row['model']} has two rows for seed {row['seed']}")
    summary, pairs, skipped = [], [], {}
    for task, rows in table.groupby("task", sort=False):
        models = list(dict.fromkeys(rows["model"]))
        try:
            aucs = _run_aucs(task, rows, n_bootstrap, seed)
        except PipelineError as e:
            if strict:
                raise
            print(f"warning: {e}; no interval over seeds and no paired comparison for it", file=sys.stderr)
            skipped[task] = str(e)
            aucs = None
        means = _seed_means(aucs, n_bootstrap, seed) if aucs else {}
        mean_auc = {}
        for model in models:
            runs = _sorted_seeds(rows[rows["model"] == model])
            points = aucs[model][0] if aucs else runs["auc"].to_numpy(float)
            mean_auc[model] = float(np.mean(points))
            lo, hi = _percentiles(means[model]) if aucs else (math.nan, math.nan)
            # the table's rows say whether the published value is comparable (other data, ICBEB2018 run otherwise)
            comparable = "published_auc" not in runs or runs["published_auc"].notna().all()
            pub = published(task, model) if comparable else None
            first = runs.iloc[0]
            summary.append({"task": task, "model": model, "seeds": _seed_list(runs), "n_seeds": len(runs),
                            "params": first.get("params"), "records": first.get("records"),
                            "classes": first.get("classes"), "auc_mean": mean_auc[model],
                            "auc_sd": float(np.std(points, ddof=1)) if len(points) > 1 else math.nan,
                            "auc_lo": lo, "auc_hi": hi, "published_auc": pub[0] if pub else math.nan,
                            "published_lo": pub[0] - pub[1] if pub else math.nan,
                            "published_hi": pub[0] + pub[1] if pub else math.nan})
        if not aucs:
            continue
        first = len(pairs)
        for i, one in enumerate(models):
            for other in models[i + 1:]:
                a, b = (other, one) if mean_auc[other] > mean_auc[one] else (one, other)
                d = means[a] - means[b]
                lo, hi = _percentiles(d)
                d = d[~np.isnan(d)]
                mean_d, share = (float(d.mean()), float((d > 0).mean())) if len(d) else (math.nan, math.nan)
                # two-sided: twice the share of resamples on the side of 0 the difference is least often on
                p = min(1.0, 2 * min(float((d <= 0).mean()), float((d >= 0).mean()))) if len(d) else math.nan
                better = a if lo > 0 else b if hi < 0 else ""
                pairs.append({"task": task, "model_a": a, "model_b": b, "n_seeds_a": len(aucs[a][0]),
                              "n_seeds_b": len(aucs[b][0]), "auc_a": mean_auc[a], "auc_b": mean_auc[b],
                              "diff": mean_auc[a] - mean_auc[b], "diff_mean": mean_d, "diff_lo": lo,
                              "diff_hi": hi, "a_better": share, "p": p, "called": bool(better), "better": better,
                              "resamples": n_bootstrap})
        # Holm over the task's pairs; a pair it keeps is also called by its interval (p < 0.10 leaves under
        # 5 % of the resamples on its losing side)
        family = pairs[first:]
        for pair, rejected in zip(family, holm([pair["p"] for pair in family], FAMILY_ALPHA)):
            pair["called_holm"] = rejected
    summary = pd.DataFrame(summary, columns=[c.key for c in SUMMARY_COLUMNS if c.key])
    summary["params"] = summary["params"].astype("Int64")
    return Comparison(summary, pd.DataFrame(pairs, columns=[c.key for c in COMPARE_COLUMNS if c.key]), skipped)


def holm(p_values: list[float], alpha: float) -> list[bool]:
    """Holm's step-down over one family of tests: which hypotheses are rejected while the chance of any
    false rejection stays at most `alpha` (the smallest p against alpha/m, the next against alpha/(m-1), and
    so on, stopping at the first that is not below). A p of NaN is never rejected."""
    p = np.array([math.inf if math.isnan(v) else v for v in p_values], dtype=float)
    rejected = [False] * len(p)
    for k, i in enumerate(np.argsort(p, kind="stable")):
        if not p[i] < alpha / (len(p) - k):
            break
        rejected[i] = True
    return rejected


def _signed(v: float) -> str:
    return f"{v:+.3f}"


SUMMARY_COLUMNS = (
    Column("task"), Column("model", "model", align="left"), Column("seeds", "seeds", align="left"),
    Column("n_seeds"), Column("params"), Column("records"), Column("classes"),
    Column("auc_mean", "AUC mean ± sd", lambda r: format_mean_sd(r["auc_mean"], r["auc_sd"])
           if pd.notna(r["auc_sd"]) else f"{r['auc_mean']:.3f}", align="left"),
    Column("auc_sd"),
    Column("auc_lo", "90 % interval of the mean", lambda r: f"[{r['auc_lo']:.3f}, {r['auc_hi']:.3f}]"
           if pd.notna(r["auc_lo"]) else "n/a", align="left"),
    Column("auc_hi"),
    Column("published_auc", "published", lambda r: format_ci(r["published_auc"], r["published_lo"],
                                                              r["published_hi"]) if pd.notna(r["published_auc"])
           else "-", align="left"),
    Column("published_lo"), Column("published_hi"))

COMPARE_COLUMNS = (
    Column("task"), Column("model_a", "A", align="left"), Column("model_b", "B", align="left"),
    Column("n_seeds_a"), Column("n_seeds_b"), Column("auc_a"), Column("auc_b"),
    Column("diff", "A - B", lambda r: _signed(r["diff"])), Column("diff_mean"),
    Column("diff_lo", "90 % interval", lambda r: f"[{_signed(r['diff_lo'])}, {_signed(r['diff_hi'])}]",
           align="left"),
    Column("diff_hi"),
    Column("a_better", "A beats B in", lambda r: f"{100 * r['a_better']:.0f} %"),
    Column("p", "p", lambda r: f"{r['p']:.3f}"),
    Column("called", "called", lambda r: f"yes: {r['better']}" if r["called"] else "no", align="left"),
    Column("better"),
    Column("called_holm", "called, Holm", lambda r: f"yes: {r['better']}" if r["called_holm"] else "no",
           align="left"),
    Column("resamples"))


def comparison_markdown(comparison: Comparison, task: str) -> str:
    """A task's section of table.md: over its seeds (when a model has several), then its pairs."""
    summary = comparison.summary[comparison.summary["task"] == task]
    pairs = comparison.pairs[comparison.pairs["task"] == task]
    lines = []
    if (summary["n_seeds"] > 1).any():
        lines += ["**Over training seeds**: the mean and standard deviation of the seeds' AUCs on all test records; "
                  "the interval of the mean from resamples of the test records and of the seeds.", "",
                  markdown_table(summary, SUMMARY_COLUMNS)]
    if task in comparison.skipped:
        lines += [f"No paired comparison: {comparison.skipped[task]}.", ""]
    elif len(pairs):
        n, seeds = int(pairs["resamples"].iloc[0]), (summary["n_seeds"] > 1).any()
        what, also = ("seed-mean AUCs", " and a resample of each model's seeds") if seeds else ("AUCs", "")
        lines += [f"**Paired comparison**: A - B, the difference of the {what}; its 90 % interval and the share of "
                  f"{n} resamples in which A beats B, each resample the same test records for both models{also}; "
                  "called only when the interval excludes 0. With several pairs some are called by chance (about one "
                  "pair in ten of those that do not differ): *called, Holm* keeps the calls that hold over the "
                  f"task's {len(pairs)} pair(s) at a family-wise {100 * FAMILY_ALPHA:.0f} % (Holm's step-down on p, "
                  "twice the share of resamples on the losing side).", "", markdown_table(pairs, COMPARE_COLUMNS)]
    return "\n".join(lines)


def write_comparison(comparison: Comparison, path: Path) -> list[Path]:
    """compare.csv at `path` and its markdown (every task's pairs) beside it as .md."""
    path = Path(path)
    md = "\n".join(f"### {task}\n\n{comparison_markdown(comparison, task)}"
                   for task in dict.fromkeys(comparison.summary["task"]))
    return [write_csv(comparison.pairs, path), write_text(md, path.with_suffix(".md"))]


def _plot(summary: pd.DataFrame, table: pd.DataFrame, path: Path) -> Path:
    """One panel per task: each model's seed-mean AUC with its interval, every seed's AUC as a dot, the
    published value and CI beside it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(summary["task"]))
    ncols = min(len(tasks), 3)
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 0.45 * summary.groupby("task").size().max() * nrows
                                                    + 1.2 * nrows), squeeze=False)
    seeds = (summary["n_seeds"] > 1).any()
    for ax, task in zip(axes.ravel(), tasks):
        rows = summary[summary["task"] == task].reset_index(drop=True)
        pos = np.arange(len(rows))
        ax.errorbar(rows["auc_mean"], pos, fmt="o", color="tab:blue", capsize=3,
                    xerr=interval_errors(rows["auc_mean"], rows["auc_lo"], rows["auc_hi"]),
                    label="this project: seed mean (5th-95th percentile)" if seeds else
                    "this project (5th-95th percentile)")
        runs = table[table["task"] == task]
        for i, model in enumerate(rows["model"]):
            aucs = runs.loc[runs["model"] == model, "auc"]
            if len(aucs) > 1:
                ax.plot(aucs, np.full(len(aucs), i - 0.2), "|", color="0.4", ms=6, label="each seed")
        known = rows["published_auc"].notna().to_numpy()
        if known.any():
            ax.errorbar(rows["published_auc"][known], pos[known] + 0.25,
                        xerr=(rows["published_auc"] - rows["published_lo"])[known], fmt="D", mfc="none",
                        color="tab:orange", capsize=3, label="published (CI)")
        ax.set_yticks(pos, rows["model"])
        ax.invert_yaxis()
        ax.set_title(task)
        ax.set_xlabel("macro AUC")
        ax.grid(axis="x", lw=0.4)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    legend = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.tight_layout()
    # above the panels, whatever the figure's height (inside it, a short figure's legend covered the titles);
    # the saved figure is cropped to what is drawn, the legend included
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=3, fontsize=9, bbox_to_anchor=(0.5, 1.0))
    return save_figure(fig, path)


# one benchmark folder's outputs, which agree with each other
TABLE_CSV, SUMMARY_CSV, COMPARE_CSV = "table.csv", "summary.csv", "compare.csv"
TABLE_MD, AUC_PNG = "table.md", "auc.png"
BENCHMARK_OUTPUTS = (TABLE_CSV, SUMMARY_CSV, COMPARE_CSV, TABLE_MD, AUC_PNG)


def write_benchmark_outputs(table: pd.DataFrame, out: Path, n_bootstrap: int, seed: int = 0,
                            figure: bool = True) -> list[Path]:
    """The benchmark's results in `out`: table.csv (one row per task, model and seed), summary.csv (one per
    task and model, over its seeds), compare.csv (every pair of models of a task), table.md (each task's
    rows beside the published values, then its seeds and pairs) and, with `figure`, auc.png (seed means)."""
    out = Path(out)
    comparison = seed_comparison(table, n_bootstrap, seed, strict=False)
    sections = {task: comparison_markdown(comparison, task) for task in dict.fromkeys(table["task"])}
    # the figure first: should it fail, the tables and the figure of the last run stay together
    figures = [_plot(comparison.summary, table, out / AUC_PNG)] if figure and len(table) else []
    return [write_csv(table, out / TABLE_CSV), write_csv(comparison.summary, out / SUMMARY_CSV),
            write_csv(comparison.pairs, out / COMPARE_CSV),
            write_text(benchmark_markdown(table, n_bootstrap, sections), out / TABLE_MD), *figures]
