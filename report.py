"""Gather every table and figure of one database into results/<db>/report.md, beside the paper's values.

    python report.py --data-dir data/CPSC --run data/CPSC/runs/resnet34_all_42

Sections: dataset, baselines, deep model per class, cross-validation, lead study, confusion matrices,
ROC curves, SHAP lead importance, external validation (the model tested on other databases). A
section whose stage has not run says which command produces it. Only results filed under this
database are read, and a model trained on another database is refused.
"""
from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from models.checkpoint import read_checkpoint
from models.evaluation import evaluation_problem, training_data_dir
from models.run import Run, run_argument
from utils import MANIFEST_JSON, PipelineError, data_label_set, script_main, write_text
from utils.results import results_home, same_database

PAPER = {"mean_auc": 0.970, "mean_f1": 0.813, "best_single_leads": "I, aVR, V5"}
# PTB-XL benchmark (Strodthoff et al., IEEE JBHI 2021), superdiagnostic task, macro AUC on strat_fold 10
PTBXL_BENCHMARK = {"resnet1d_wang": 0.930, "xresnet1d101": 0.928, "inception1d": 0.921}
SECTIONS = ("Dataset", "Expert-feature baselines", "Deep model (12 leads), test fold", "Cross-validation",
            "Lead study", "Confusion matrices", "ROC curves", "SHAP lead importance", "External validation")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/CPSC"))
    p.add_argument("--run", type=run_argument, required=True, help="the 12-lead run the report is about")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    return p.parse_args(argv)


def markdown_table(table: pd.DataFrame, digits: int) -> str:
    """A DataFrame as a markdown table (index first), numbers to `digits` places."""
    cell = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join([str(table.index.name or ""), *map(str, table.columns)]) + " |",
             "| --- |" + " ---: |" * table.shape[1]]
    lines += ["| " + " | ".join([str(i), *map(cell, row)]) + " |" for i, row in zip(table.index, table.to_numpy())]
    return "\n".join(lines) + "\n"


def missing(command: str) -> str:
    return f"_Not available yet: run `{command}`._\n"


def image(path: Path, relative_to: Path, alt: str) -> str:
    return f"![{alt}]({os.path.relpath(path, relative_to)})"


def dataset_section(args) -> str:
    md = args.db_dir / "dataset_table.md"
    if not md.exists():
        return missing(f"python statistic.py --data-dir {args.data_dir}")
    paper = "; the last column is the published CPSC2018 count" if "CPSC2018 N" in md.read_text() else ""
    return f"Per class{paper}.\n\n" + md.read_text()


def baselines_section(args) -> str:
    path = args.db_dir / "baselines_all.csv"
    if not path.exists():
        return missing(f"python baselines.py --data-dir {args.data_dir}")
    table = pd.read_csv(path).set_index("classifier")[[*args.classes, "mean_f1", "mean_auc"]]
    cv = args.db_dir / "baselines_all_cv.md"
    cv_text = (cv.read_text() if cv.exists() else missing(f"python baselines.py --data-dir {args.data_dir} --cv"))
    return ("Test-fold F1 per class (thresholds tuned on validation), mean F1 and mean AUC; single seeded split.\n\n"
            + markdown_table(table, 3) + "\n10-fold cross-validation:\n\n" + cv_text)


def stale(args) -> str | None:
    """A line saying the run's evaluation outputs are not of this checkpoint (None when they are)."""
    if args.evaluation_problem is None:
        return None
    return f"_Out of date: {args.evaluation_problem}; rerun `python predict.py --run {args.run}`._\n"


def model_section(args) -> str:
    path = args.run_dir / "metrics.csv"
    if not path.exists():
        return missing(f"python predict.py --run {args.run}")
    if stale(args):
        return stale(args)
    t = pd.read_csv(path).set_index("class")
    rows = ["| class | precision | recall | F1 (95 % CI) | AUC (95 % CI) | accuracy | n positive |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def ci(r: pd.Series, m: str) -> str:
        return f"{r[m]:.3f} [{r[f'{m}_lo']:.3f}, {r[f'{m}_hi']:.3f}]" if f"{m}_lo" in r else f"{r[m]:.3f}"

    for cls, r in t.iterrows():
        rows.append(f"| {cls} | {r['precision']:.3f} | {r['recall']:.3f} | {ci(r, 'f1')} | {ci(r, 'auc')} | "
                    f"{r['accuracy']:.3f} | {int(r['support'])} |")
    mean = t.loc["mean"]
    if "NORM" in t.index and "CD" in t.index:  # the superdiagnostic label set: compare with the PTB-XL benchmark
        compare = ("\n| | macro AUC (PTB-XL superdiagnostic, test fold 10) |\n| --- | ---: |\n"
                   f"| this run | {mean['auc']:.3f} |\n"
                   + "".join(f"| *{name} (benchmark)* | *{auc:.3f}* |\n" for name, auc in PTBXL_BENCHMARK.items()))
        return "\n".join(rows) + "\n" + compare
    compare = (f"\n| | this run | paper (Zhang et al. 2021) |\n| --- | ---: | ---: |\n"
               f"| mean F1 | {mean['f1']:.3f} | {PAPER['mean_f1']:.3f} |\n"
               f"| mean AUC | {mean['auc']:.3f} | {PAPER['mean_auc']:.3f} |\n")
    return "\n".join(rows) + "\n" + compare


def cv_section(args) -> str:
    runs = sorted(args.db_dir.glob("cv_*.md"))
    if not runs:
        return missing(f"python cross_validate.py --data-dir {args.data_dir}")
    parts = [f"### {md.stem[3:]}\n\n{md.read_text()}\n{image(md.with_suffix('.png'), args.db_dir, md.stem)}\n"
             for md in runs]
    return ("The tables above and below use one seeded train/validation/test split (as the original code); "
            "the paper's supplement reports 10-fold cross-validation, shown here.\n\n" + "\n".join(parts))


def lead_section(args) -> str:
    md = args.db_dir / "lead_study.md"
    if not md.exists():
        return missing(f"python lead_study.py --data-dir {args.data_dir}")
    plot = args.db_dir / "lead_study.png"
    return (f"Paper: all 12 leads beat any single lead; the best single leads were {PAPER['best_single_leads']}.\n\n"
            + md.read_text() + "\n" + image(plot, args.db_dir, "lead study") + "\n")


def confusion_section(args) -> str:
    pngs = [args.run_dir / f"confusion_{c}.png" for c in args.classes]
    if all(p.exists() for p in pngs) and stale(args):
        return stale(args)
    if not all(p.exists() for p in pngs):
        return missing(f"python predict.py --run {args.run}")
    return "Row-normalised, test fold, at the validation-tuned thresholds.\n\n" + " ".join(
        image(p, args.db_dir, p.stem) for p in pngs) + "\n"


def roc_section(args) -> str:
    png = args.run_dir / "roc.png"
    if png.exists() and stale(args):
        return stale(args)
    return image(png, args.db_dir, "ROC") + "\n" if png.exists() else missing(
        f"python predict.py --run {args.run}")


def shap_section(args) -> str:
    out = args.run_dir / "shap"
    csv, png = out / "lead_importance.csv", out / "lead_importance.png"
    if not csv.exists():
        return missing(f"python shap_values.py --run {args.run}")
    table = pd.read_csv(csv).set_index("class")
    return ("Share of net positive SHAP evidence per lead, by predicted class (held-out records).\n\n"
            + markdown_table(table, 2) + "\n" + image(png, args.db_dir, "SHAP heatmap") + "\n")


def external_section(args) -> str:
    """Every `predict.py --external-data-dir` evaluation of this model: mean metrics beside its own test."""
    found = sorted((args.run_dir / "external").glob("*/metrics.json"))
    if not found:
        return missing(f"python predict.py --run {args.run} --external-data-dir data/OTHER")
    rows = ["| tested on | records | mean F1 (95 % CI) | mean AUC (95 % CI) |", "| --- | ---: | ---: | ---: |"]
    own = args.run_dir / "metrics.json"
    for path in ([own] if own.exists() else []) + found:
        saved = json.loads(path.read_text())
        m = saved["metrics"]["mean"]
        ci = lambda k: (f"{m[k]:.3f} [{m[k + '_lo']:.3f}, {m[k + '_hi']:.3f}]"  # noqa: E731
                        if m.get(k + "_lo") is not None else f"{m[k]:.3f}")
        name = f"{saved['database']} (own test fold)" if path == own else saved["database"]
        rows.append(f"| {name} | {saved['n_test']} | {ci('f1')} | {ci('auc')} |")
    return ("Trained on this database; every labelled record of each other database scored with the thresholds "
            "tuned on this database's validation records.\n\n" + "\n".join(rows) + "\n")


def data_source(data_dir: Path) -> str:
    manifest = data_dir / MANIFEST_JSON
    if not manifest.exists():
        return f"`{data_dir}`"
    source = Path(json.loads(manifest.read_text())["data_dir"])
    synthetic = (source / "synth_details.csv").exists()
    return f"`{source}`" + (" — **synthetic demo data**: numbers show the pipeline works, they are not comparable "
                            "with the paper's CPSC2018 results" if synthetic else "")


@script_main
def main(argv=None) -> Path:
    args = parse_args(argv)
    args.db_dir = results_home(args.results_dir, args.data_dir)
    args.run_dir = args.db_dir / args.run.name
    args.classes = data_label_set(args.data_dir)["classes"]
    settings, args.evaluation_problem = "", None
    if args.run.model.exists():
        ckpt = read_checkpoint(args.run.model)
        if not same_database(training_data_dir(ckpt), args.data_dir):
            raise PipelineError(f"{args.run} was trained on {ckpt['data']['name']}, not on {args.data_dir}; "
                                f"a report covers one database (pass that model's --data-dir)")
        args.evaluation_problem = evaluation_problem(args.run, ckpt, args.results_dir)
        a = ckpt["config"]
        settings = (f"Model: `{args.run}` ({a['arch']}, {a['seconds']:g} s at {a['sample_rate']} Hz, "
                    f"{a['epochs']} epochs, lr {a['lr']:g}, batch {a['batch_size']}, seed {a['seed']}; label set "
                    f"{ckpt['label_set']['name']}).\n\n")
    builders = (dataset_section, baselines_section, model_section, cv_section, lead_section, confusion_section,
                roc_section, shap_section, external_section)
    parts = [f"# Reproduction report\n\nGenerated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. "
             f"Data: {data_source(args.data_dir)}.\n\n{settings}"]
    parts += [f"## {title}\n\n{build(args)}" for title, build in zip(SECTIONS, builders)]
    path = args.db_dir / "report.md"
    write_text("\n".join(parts), path)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
