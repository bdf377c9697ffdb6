"""Does it generalise? One configuration trained on each database and tested on every other.

    python cross_database.py --data-dirs data/CPSC data/Georgia data/Chapman data/PTBXL --preset paper
    python cross_database.py --data-dirs data/demo data/demo_b data/demo_c --preset demo --leave-one-out

Each database (preprocessed with the same label set) gets one run, data/<db>/runs/xdb_<arch>_<leads>_<seed>/,
trained on its own split (finished runs are reused, killed ones resume, --jobs trains several at once).
Every model is tested on its own test fold and on every record of every other database, always with the
thresholds tuned on its own validation fold. --leave-one-out also trains on all but one database pooled
(data/pooled/all_but_<db>/) and tests on the one left out (with two databases, "all but A" is the other
one: its cells repeat the plain ones, nothing is pooled or trained). --calibrate fits temperature scaling
on each model's validation fold and shows calibration before and after. Every database's split is
checked before any training; a cell's model equal to a finished run of its database (main.py's, say) is
that run, reused.

Writes results/cross_database/: matrix.csv (one row per (trained on, tested on) cell: records, the
classes the means cover, macro AUC and F1 with 95 % bootstrap CIs, ECE, Brier, and the path of the
cell's score file, so every number can be recomputed), per_class.csv, matrix.md, auc.png and f1.png.
A class with no positive record in a test set is shown as such (NaN) and left out of that cell's means.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from models.checkpoint import load_checkpoint
from models.scoring import EvalSettings, evaluate_external
from models.inputs import pick_device
from models.studies import run_all, study_parser
from models.training import RunConfig, architecture_settings, check_finetune, check_run_args, source_arch
from utils.cache import data_label_set, data_split_rule, database_name, load_labels, preprocess_manifest
from utils.errors import PipelineError, script_main
from utils.files import save_figure, write_csv, write_text
from utils.folds import refuse_empty_parts, split_labels
from utils.labels import leads_argument
from utils.results import EvaluationFolder, record_databases
from utils.tables import Column, ci_columns, markdown_table, table_frame
from utils.cli import flag_error, folder_path
from utils.preprocessed import pool_databases
from utils.launch import launcher_from_args
from utils.presets import parse_with_preset

OUT = "cross_database"
MATRIX = [Column("trained_on", "trained on", align="left"),
          Column("tested_on", "tested on", align="left",
                 show=lambda r: r["tested_on"] + (" (own test fold)" if r["trained_on"] == r["tested_on"] else "")),
          Column("records", "records"), Column("classes"),
          *ci_columns("auc", "macro AUC (95 % CI)"), *ci_columns("f1", "macro F1 (95 % CI)"),
          Column("ece", "ECE"), Column("ece_lo"), Column("ece_hi"), Column("brier", "Brier"), Column("brier_lo"),
          Column("brier_hi"), Column("scores"),
          Column("temperature"), Column("ece_calibrated"), Column("brier_calibrated")]  # the last three: --calibrate
MEANS = ("auc", "auc_lo", "auc_hi", "f1", "f1_lo", "f1_hi", "ece", "ece_lo", "ece_hi", "brier", "brier_lo", "brier_hi")


def parse_args(argv=None) -> argparse.Namespace:
    p = study_parser(__doc__)
    p.add_argument("--data-dirs", type=folder_path, nargs="+", required=True,
                   help="two or more preprocessed databases with the same label set")
    p.add_argument("--leads", type=leads_argument, default="all",
                   help="all, one lead, or a comma list such as I,aVR,V5")
    p.add_argument("--leave-one-out", action="store_true",
                   help="also train on all but one database pooled and test on the one left out")
    p.add_argument("--pool-dir", type=folder_path, default=Path("data/pooled"), help="where pooled databases are written")
    p.add_argument("--calibrate", action="store_true", help="temperature scaling fitted on each validation fold")
    p.add_argument("--no-figures", action="store_true", help="no ROC, confusion or reliability figure per cell")
    # each cell's model is the one main.py would train
    args = parse_with_preset(p, argv, "train", refine=lambda known: architecture_settings(
        source_arch(known.init_from) or known.arch, known.protocol))
    check_finetune(p, args, argv)  # --init-from: every database's run finetunes the source
    check_run_args(p, args, argv)
    args.launch = launcher_from_args(p, args, argv)
    if len(args.data_dirs) < 2:
        flag_error(p, "--data-dirs", "give two or more databases")
    names = [database_name(d) for d in args.data_dirs]
    if len(set(names)) < len(names):
        flag_error(p, "--data-dirs", f"two databases share a folder name ({', '.join(names)}); the matrix names them by it")
    args.lead_names = args.leads
    return args


def check_label_sets(data_dirs: list[Path]) -> list[str]:
    """The shared label set's classes; databases of different label sets cannot be compared."""
    sets = {d: data_label_set(d) for d in data_dirs}
    first = next(iter(sets.values()))
    if any(s != first for s in sets.values()):
        raise PipelineError("the databases were preprocessed with different label sets ("
                            + ", ".join(f"{d}: {s['name']}" for d, s in sets.items())
                            + "); preprocess them all with the same --labels")
    return list(first["classes"])


def check_distinct(data_dirs: list[Path]) -> None:
    """Every database other data: a copy of one (the same preprocessed records, the same fingerprint) would
    have a model tested on its own database as an external one. Checked before the first model trains."""
    seen: dict[str, Path] = {}
    for d in data_dirs:
        key = preprocess_manifest(d)["fingerprint"]
        if key in seen:
            raise PipelineError(f"{d} holds the data of {seen[key]} (a copy: the same preprocessed records); a "
                                f"matrix needs other databases: leave one of them out of --data-dirs")
        seen[key] = d


def check_splits(cfgs: list[RunConfig]) -> None:
    """Every model's training, validation and test splits hold records: checked for all of them before
    the first is trained, not found out after hours of training the others."""
    for cfg in cfgs:
        splits = split_labels(load_labels(cfg.data_dir), cfg.seed, cfg.limit, cfg.test_fold,
                              data_split_rule(cfg.data_dir))
        refuse_empty_parts(splits, cfg.data_dir, "too few records for a model of the matrix: leave it out of "
                                                 "--data-dirs")


def training_configs(args: argparse.Namespace) -> list[tuple[str, RunConfig, list[Path]]]:
    """(trained-on name, configuration, databases it is tested on) for every model of the matrix, every
    split checked first (then the pooled databases are written and checked)."""
    base = dataclasses.replace(RunConfig.from_args(args, leads=args.lead_names), test_fold=None)
    names = [database_name(d) for d in args.data_dirs]
    plan = []
    for d, name in zip(args.data_dirs, names):
        cfg = dataclasses.replace(base, data_dir=str(d))
        runs = args.runs_dir / name if args.runs_dir else Path(d) / "runs"
        plan.append((name, dataclasses.replace(cfg, run_dir=str(runs / cfg.run_name("xdb_"))),
                     [o for o in args.data_dirs if o != d]))
    check_splits([cfg for _, cfg, _ in plan])
    if args.leave_one_out and len(args.data_dirs) == 2:
        print(f"--leave-one-out with two databases: all but {names[0]} is {names[1]} and all but {names[1]} is "
              f"{names[0]}; their cells repeat {names[1]} -> {names[0]} and {names[0]} -> {names[1]} "
              f"(nothing pooled or trained for them)")
    elif args.leave_one_out:
        pooled_plan = []
        for d, name in zip(args.data_dirs, names):
            others = [o for o in args.data_dirs if o != d]
            pooled = pool_databases(others, args.pool_dir / f"all_but_{name}", [database_name(o) for o in others])
            cfg = dataclasses.replace(base, data_dir=str(pooled))
            runs = args.runs_dir / pooled.name if args.runs_dir else pooled / "runs"
            pooled_plan.append((f"all but {name}", dataclasses.replace(cfg, run_dir=str(runs / cfg.run_name("xdb_"))),
                                [d]))
        check_splits([cfg for _, cfg, _ in pooled_plan])
        plan += pooled_plan
    return plan


def left_out_cells(rows: list[dict], per_class: list[pd.DataFrame], names: list[str]) -> None:
    """--leave-one-out with two databases: "all but A" is B, so its cell is the cell B -> A, repeated
    under its leave-one-out name (the same scores file, so the same numbers)."""
    for left_out, kept in ((names[0], names[1]), (names[1], names[0])):
        i = next(i for i, r in enumerate(rows) if r["trained_on"] == kept and r["tested_on"] == left_out)
        rows.append({**rows[i], "trained_on": f"all but {left_out}"})
        per_class.append(per_class[i].assign(trained_on=f"all but {left_out}"))


def cell(trained_on: str, tested_on: str, out: Path) -> tuple[dict, pd.DataFrame]:
    """One matrix row and its per-class rows, read through the one summary of an evaluation."""
    ev = EvaluationFolder(out)
    s = ev.summary()
    row = {"trained_on": trained_on, "tested_on": tested_on, "records": s.records, "classes": ",".join(s.assessed),
           **{k: s.mean.get(k, np.nan) for k in MEANS}, "scores": os.path.abspath(ev.test_scores)}
    if s.calibration:  # --calibrate: the same means after temperature scaling
        after = s.calibration["after"]["mean"]
        row.update({"temperature": s.calibration["temperature"], "ece_calibrated": after["ece"],
                    "brier_calibrated": after["brier"]})
    per_class = s.per_class.reset_index(names="class")
    per_class.insert(0, "tested_on", tested_on)
    per_class.insert(0, "trained_on", trained_on)
    return row, per_class


def plot_matrix(matrix: pd.DataFrame, metric: str, path: Path) -> None:
    """Trained-on x tested-on heatmap of one macro metric; the diagonal is each model's own test fold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = matrix.pivot(index="trained_on", columns="tested_on", values=metric)
    grid = grid.reindex(index=list(dict.fromkeys(matrix["trained_on"])), columns=list(dict.fromkeys(matrix["tested_on"])))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * grid.shape[1], 1.2 + 0.7 * grid.shape[0]))
    im = ax.imshow(grid.to_numpy(float), cmap="viridis", vmin=0.5 if metric == "auc" else 0.0, vmax=1.0)
    for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="white" if v < 0.8 else "black", fontsize=9)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title(f"macro {metric.upper()} (diagonal: own test fold)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    save_figure(fig, path)


def to_markdown(matrix: pd.DataFrame) -> str:
    return markdown_table(matrix, MATRIX)


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    classes = check_label_sets(args.data_dirs)
    check_distinct(args.data_dirs)
    plan = training_configs(args)
    own = run_all([cfg for _, cfg, _ in plan], args.results_dir, args.n_bootstrap, args.launch,
                  calibrate=args.calibrate)
    rows, per_class = [], []
    device = pick_device(args.use_gpu)
    for (name, cfg, tests), own_out in zip(plan, own):
        if not name.startswith("all but"):
            r, pc = cell(name, name, own_out)
            rows.append(r), per_class.append(pc)
        model, ckpt = load_checkpoint(cfg.run.model, map_location=device)
        for other in tests:
            settings = EvalSettings(n_bootstrap=args.n_bootstrap, num_workers=0, calibrate=args.calibrate,
                                    figures=not args.no_figures)
            _, out, _ = evaluate_external(model.to(device), ckpt, cfg.run, other, args.results_dir, device, settings,
                                       force=args.force)
            r, pc = cell(name, database_name(other), out)
            rows.append(r), per_class.append(pc)
    if args.leave_one_out and len(args.data_dirs) == 2:
        left_out_cells(rows, per_class, [database_name(d) for d in args.data_dirs])
    matrix = table_frame(rows, MATRIX)
    out = args.results_dir / OUT
    write_csv(matrix, out / "matrix.csv")
    write_csv(pd.concat(per_class, ignore_index=True), out / "per_class.csv")
    md = to_markdown(matrix)
    write_text(f"Label set classes: {', '.join(classes)}. Thresholds: each model's own validation fold.\n\n" + md,
               out / "matrix.md")
    for metric in ("auc", "f1"):
        plot_matrix(matrix, metric, out / f"{metric}.png")
    record_databases(out / "matrix.json", args.data_dirs,
                     [out / name for name in ("matrix.csv", "per_class.csv", "matrix.md", "auc.png", "f1.png")],
                     list(dict.fromkeys(Path(r["scores"]).parent for r in rows)))
    print(md)
    print(f"wrote {out}/matrix.csv, per_class.csv, matrix.md, auc.png, f1.png, matrix.json (the data of each)")
    return matrix


if __name__ == "__main__":
    main()
