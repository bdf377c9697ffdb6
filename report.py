"""Gather every table and figure of one database into results/<db>/report.md, beside the paper's values.

    python report.py --data-dir data/CPSC --run data/CPSC/runs/paper

Sections: dataset, baselines, deep model per class (with calibration), cross-validation, lead study,
confusion matrices, ROC curves, SHAP lead importance, external validation, cross-database matrix.
Evaluations are found through their manifests and read with the one reader (utils.EvaluationFolder);
one that is not of this very model.pth (retrained since, interrupted) is marked out of date instead of
shown. A section whose stage has not run says which command produces it. Only results filed under this
database are read, and a model trained on another database is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from models.checkpoint import read_checkpoint
from models.inputs import checkpoint_splits
from models.scoring import evaluation_problem, own_evaluation_problem, training_data_dir
from models.run import Run, run_argument
from utils.cache import MANIFEST_JSON, data_label_set, database_name, preprocess_manifest
from utils.ptbxl import published
from utils.labels import LEADS
from utils.errors import MissingInputError, PipelineError, script_main
from utils.files import read_records_csv, write_text
from utils.manifest import file_sha, read_manifest
from utils.results import EvaluationFolder, baselines_evaluations
from utils.tables import Column, ci_columns, markdown_table
from utils.cli import folder_path
from utils.results import SYNTHETIC_MARKER, recorded_data_problem, results_home, same_database
from utils.defaults import DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR

PAPER = {"mean_auc": 0.970, "mean_f1": 0.813, "best_single_leads": "I, aVR, V5"}
# the PTB-XL benchmark's models set beside a superdiagnostic run (their published macro AUC on strat_fold 10:
# utils.ptbxl's leaderboard, the one record of the published values)
PTBXL_BENCHMARK_MODELS = ("resnet1d_wang", "xresnet1d101", "inception1d")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=folder_path, default=DEFAULT_DATA_DIR)
    p.add_argument("--run", type=run_argument, required=True, help="the 12-lead run the report is about")
    p.add_argument("--results-dir", type=folder_path, default=DEFAULT_RESULTS_DIR)
    return p.parse_args(argv)


@dataclass(frozen=True)
class Report:
    """What every section needs: the database, the run, where their results are filed."""
    data_dir: Path
    run: Run
    results_dir: Path
    db_dir: Path        # results/<db>/
    classes: tuple[str, ...]
    problem: str | None  # why the run's own evaluation is not of this model.pth (None: it is)
    test_ids: frozenset[str] = frozenset()  # the run's own test records (its checkpoint's split)
    leads: tuple[str, ...] = tuple(LEADS)   # the leads the run reads

    @property
    def run_dir(self) -> Path:
        return self.db_dir / self.run.name

    @property
    def evaluation(self) -> EvaluationFolder:
        return EvaluationFolder(self.run_dir)

    @property
    def results_flag(self) -> str:
        """` --results-dir DIR` when the report reads other results than the default: the commands it
        suggests must write there."""
        return "" if Path(self.results_dir) == Path(DEFAULT_RESULTS_DIR) else f" --results-dir {self.results_dir}"

    @property
    def predict_command(self) -> str:
        """predict.py's command line that evaluates the run where this report reads it (these data, these
        results): a bare `--run` would evaluate the checkpoint's folder into the default results."""
        return f"python predict.py --run {self.run} --data-dir {self.data_dir}{self.results_flag}"

    def out_of_date(self, problem: str) -> str:
        return f"_Out of date: {problem}; rerun `{self.predict_command}`._\n"

    def not_evaluated(self) -> str:
        return f"_Not available yet: run `{self.predict_command}`._\n"


# the columns of a table of several evaluations: one Summary each (utils.results)
MEANS = [*ci_columns("f1", "mean F1"), *ci_columns("auc", "mean AUC"), Column("ece", "ECE"), Column("brier", "Brier")]


def summary_cells(s) -> dict:
    """The mean row of one evaluation, as `MEANS` shows it."""
    return {k: s.mean.get(k) for k in ("f1", "f1_lo", "f1_hi", "auc", "auc_lo", "auc_hi", "ece", "brier")}


def missing(r: "Report", command: str) -> str:
    """The section's note when its stage has not run: the command that fills it, writing where this report
    reads (the report's --results-dir)."""
    return f"_Not available yet: run `{command}{r.results_flag}`._\n"


def image(path: Path, relative_to: Path, alt: str) -> str:
    return f"![{alt}]({os.path.relpath(path, relative_to)})"


def stale(r: Report, json_path: Path, command: str, then: str = "") -> str | None:
    """The section's note when its table is not of this folder's data as it is now (None when it is);
    `then` follows the command (e.g. which flags)."""
    problem = recorded_data_problem(json_path, r.data_dir)
    return None if problem is None else f"_Out of date: {problem}; rerun `{command}{r.results_flag}`{then}._\n"


def dataset_section(r: Report) -> str:
    md = r.db_dir / "dataset_table.md"
    command = f"python statistic.py --data-dir {r.data_dir}"
    if not md.exists():
        return missing(r, command)
    note = stale(r, r.db_dir / "dataset_table.json", command)
    if note:
        return note
    paper = "; the last column is the published CPSC2018 count" if "CPSC2018 N" in md.read_text() else ""
    return f"Per class{paper}.\n\n" + md.read_text()


def baselines_section(r: Report) -> str:
    """Every baseline evaluation of the seeded split found through its manifest, one table per variant."""
    folders = baselines_evaluations(r.db_dir)
    if not folders:
        return missing(r, f"python baselines.py --data-dir {r.data_dir}")
    parts = ["Test fold, thresholds tuned on validation (single seeded split); 95 % bootstrap CIs.\n"]
    columns = [Column("classifier", "classifier", align="left"), *MEANS]
    other_records = []
    data = preprocess_manifest(r.data_dir).get("fingerprint")  # the data the folder holds now
    for tag in dict.fromkeys(f.folder.parent.name for f in folders):
        rows = []
        for folder in (f for f in folders if f.folder.parent.name == tag):
            saved = folder.read()
            tested = _tested_records(folder)
            if r.test_ids and tested is not None and tested != r.test_ids:
                other_records.append(f"{tag}/{folder.name}: {len(tested)} records, {len(tested & r.test_ids)} of "
                                     f"them in the deep model's {len(r.test_ids)}")
            problem = saved["problem"] or _other_data(saved["info"], r, tag, data)
            rows.append([folder.name, f"_out of date: {problem}_"] if problem else
                        {"classifier": folder.name, **summary_cells(folder.summary())})
        parts.append(f"**{tag}**\n\n" + markdown_table(rows, columns))
    if other_records:  # e.g. the folder preprocessed again with another --seed after the model was trained
        parts.insert(1, "_Not on the deep model's test records: " + "; ".join(other_records) +
                     ". These rows and the deep model's are not a comparison on the same records._\n")
    for cv in sorted(r.db_dir.glob("baselines_*_cv.md")):
        variant = cv.stem[len("baselines_"):-len("_cv")]
        flags = f" with the flags of variant {variant}" if variant != "all" else ""
        note = stale(r, cv.with_suffix(".json"), f"python baselines.py --data-dir {r.data_dir} --cv", flags)
        parts.append(f"10-fold cross-validation ({variant}):\n\n{note or cv.read_text()}")
    return "\n".join(parts)


def _other_data(info: dict, r: Report, tag: str, data: str | None) -> str | None:
    """Why a baseline evaluation (of variant `tag`) is not of the data the report's folder holds now, its
    fingerprint `data` (None when it is)."""
    rerun = f"rerun `python baselines.py --data-dir {r.data_dir}{r.results_flag}`" + (
        f" with the flags of variant {tag}" if tag != "all" else "")
    if info.get("data_fingerprint") is None:
        return f"it does not say which data it was made from; {rerun}"
    if info["data_fingerprint"] != data:
        return f"made from other data than {r.data_dir} holds now (preprocessed again since); {rerun}"
    return None


def _tested_records(folder: EvaluationFolder) -> frozenset[str] | None:
    """The records an evaluation scored on its test fold (None when its score file is not there)."""
    try:
        return frozenset(read_records_csv(folder.test_scores, usecols=["patient_id"])["patient_id"])
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def model_section(r: Report) -> str:
    if not r.evaluation.exists():
        return r.not_evaluated()
    if r.problem:
        return r.out_of_date(r.problem)
    saved = r.evaluation.read()
    t = saved["metrics"]
    columns = [Column("class", "class", align="left"), Column("precision", "precision"), Column("recall", "recall"),
               *ci_columns("f1", "F1 (95 % CI)"), *ci_columns("auc", "AUC (95 % CI)"), Column("ece", "ECE"),
               Column("brier", "Brier"),
               Column("threshold", "threshold", lambda row: "untunable" if row["class"] in saved["untunable"]
                      else "" if not np.isfinite(row["threshold"]) else f"{row['threshold']:.2f}"),
               Column("support", "n positive", lambda row: str(int(row["support"])))]
    mean = t.loc["mean"]
    text = markdown_table(t.reset_index(names="class"), columns)
    if saved["calibration"]:
        c = saved["calibration"]
        text += (f"\nTemperature scaling (T = {c['temperature']:.3f}, fitted on the validation records): mean ECE "
                 f"{c['before']['mean']['ece']:.3f} -> {c['after']['mean']['ece']:.3f}, mean Brier "
                 f"{c['before']['mean']['brier']:.3f} -> {c['after']['mean']['brier']:.3f}.\n")
    if r.evaluation.reliability.exists():
        text += "\n" + image(r.evaluation.reliability, r.db_dir, "reliability") + "\n"
    if set(r.leads) != set(LEADS):  # a lead-subset run: its numbers are not the 12-lead model's
        return (f"_This run reads lead(s) {', '.join(r.leads)}, not the 12 leads: its test fold below is not "
                f"set beside the 12-lead published values._\n\n" + text)
    if "NORM" in t.index and "CD" in t.index:  # the superdiagnostic label set: compare with the PTB-XL benchmark
        return text + ("\n| | macro AUC (PTB-XL superdiagnostic, test fold 10) |\n| --- | ---: |\n"
                       f"| this run | {mean['auc']:.3f} |\n"
                       + "".join(f"| *{name} (benchmark)* | *{published('superdiagnostic', name)[0]:.3f}* |\n"
                                 for name in PTBXL_BENCHMARK_MODELS))
    return text + (f"\n| | this run | paper (Zhang et al. 2021) |\n| --- | ---: | ---: |\n"
                   f"| mean F1 | {mean['f1']:.3f} | {PAPER['mean_f1']:.3f} |\n"
                   f"| mean AUC | {mean['auc']:.3f} | {PAPER['mean_auc']:.3f} |\n")


def cv_section(r: Report) -> str:
    runs = sorted(r.db_dir.glob("cv_*.md"))
    command = f"python cross_validate.py --data-dir {r.data_dir}"
    if not runs:
        return missing(r, command)
    parts = [f"### {md.stem[3:]}\n\n" + (stale(r, md.with_suffix(".json"), command)
                                         or f"{md.read_text()}\n{image(md.with_suffix('.png'), r.db_dir, md.stem)}\n")
             for md in runs]
    return ("The tables above and below use one seeded train/validation/test split (as the original code); "
            "the paper's supplement reports 10-fold cross-validation, shown here.\n\n" + "\n".join(parts))


def lead_section(r: Report) -> str:
    md = r.db_dir / "lead_study.md"
    command = f"python lead_study.py --data-dir {r.data_dir}"
    if not md.exists():
        return missing(r, command)
    note = stale(r, r.db_dir / "lead_study.json", command)
    if note:
        return note
    return (f"Paper: all 12 leads beat any single lead; the best single leads were {PAPER['best_single_leads']}. "
            f"The study trains its own runs (study_*), apart from the model above.\n\n"
            + md.read_text() + "\n" + image(r.db_dir / "lead_study.png", r.db_dir, "lead study") + "\n")


def figures_section(r: Report, pngs: list[Path], intro: str) -> str:
    if not all(p.exists() for p in pngs):
        return r.not_evaluated()
    if r.problem:
        return r.out_of_date(r.problem)
    return intro + " ".join(image(p, r.db_dir, p.stem) for p in pngs) + "\n"


def shap_section(r: Report) -> str:
    out = r.run_dir / "shap"
    manifest = read_manifest(out / "shap.json")
    if manifest is None:
        return missing(r, f"python shap_values.py --run {r.run}")
    if manifest.get("model_sha") != file_sha(r.run.model):
        return (f"_Out of date: {r.run.model} changed after it was explained; rerun `python shap_values.py --run "
                f"{r.run}{r.results_flag}`._\n")
    table = pd.read_csv(out / "lead_importance.csv")
    columns = [Column("class", "class", align="left"), *[Column(lead, lead, digits=2) for lead in table.columns[1:]]]
    return ("Share of net positive SHAP evidence per lead, by top-scoring class (the class whose SHAP values "
            "each record's row adds to, which may lie below its threshold; held-out records; background from "
            "the training records).\n\n" + markdown_table(table, columns) + "\n"
            + image(out / "lead_importance.png", r.db_dir, "SHAP heatmap") + "\n")


def external_section(r: Report) -> str:
    """Every external evaluation of this model, beside its own test fold; stale ones are marked."""
    found = r.evaluation.externals()
    if not found:
        return missing(r, f"python predict.py --run {r.run} --external-data-dir data/OTHER")
    columns = [Column("tested on", "tested on", align="left"), Column("records", "records"),
               *ci_columns("f1", "mean F1 (95 % CI)"), *ci_columns("auc", "mean AUC (95 % CI)"), Column("ece", "ECE"),
               Column("brier", "Brier")]
    rows = []
    for folder in ([r.evaluation] if r.evaluation.exists() else []) + found:
        problem = evaluation_problem(folder.folder, r.run)
        try:
            saved = folder.read()
        except (MissingInputError, PipelineError) as e:
            rows.append([folder.name, "", f"_unreadable: {e}_"])
            continue
        name = saved["info"].get("database", folder.name) + (" (own test fold)" if folder == r.evaluation else "")
        if problem:
            rows.append([name, str(saved["n_test"]), f"_out of date: {problem}_"])
            continue
        summary = folder.summary()
        rows.append({"tested on": name, "records": summary.records, **summary_cells(summary)})
    return ("Trained on this database; every labelled record of each other database scored with the thresholds "
            "tuned on this database's validation records.\n\n" + markdown_table(rows, columns))


def cross_database_section(r: Report) -> str:
    md = r.results_dir / "cross_database" / "matrix.md"
    command = f"python cross_database.py --data-dirs {r.data_dir} data/OTHER ..."
    if not md.exists():
        return missing(r, command)
    tested = set(pd.read_csv(md.with_suffix(".csv"), usecols=["tested_on"], dtype=str,  # a database "NA" or "007"
                             keep_default_na=False)["tested_on"])
    if database_name(r.data_dir) not in tested:  # the results root's one matrix, of other databases only
        return (f"_Not available: {md.parent} holds the matrix of {', '.join(sorted(tested))}, not of "
                f"{database_name(r.data_dir)}; run `{command}{r.results_flag}`._\n")
    note = stale(r, md.with_suffix(".json"), command)
    if note:
        return note
    folder = md.parent
    return (md.read_text() + "\n" + image(folder / "auc.png", r.db_dir, "AUC matrix") + " "
            + image(folder / "f1.png", r.db_dir, "F1 matrix") + "\n")


SECTIONS = (("Dataset", dataset_section), ("Expert-feature baselines", baselines_section),
            ("Deep model (12 leads), test fold", model_section), ("Cross-validation", cv_section),
            ("Lead study", lead_section),
            ("Confusion matrices", lambda r: figures_section(
                r, [r.evaluation.confusion(c) for c in r.classes],
                "Row-normalised, test fold, at the validation-tuned thresholds.\n\n")),
            ("ROC curves", lambda r: figures_section(r, [r.evaluation.roc], "")),
            ("SHAP lead importance", shap_section), ("External validation", external_section),
            ("Cross-database matrix", cross_database_section))
TITLES = tuple(title for title, _ in SECTIONS)


def data_source(data_dir: Path) -> str:
    manifest = data_dir / MANIFEST_JSON
    if not manifest.exists():
        return f"`{data_dir}`"
    source = Path(json.loads(manifest.read_text())["data_dir"])
    synthetic = (source / SYNTHETIC_MARKER).exists()
    return f"`{source}`" + (" — **synthetic demo data**: numbers show the pipeline works, they are not comparable "
                            "with the paper's CPSC2018 results" if synthetic else "")


@script_main
def main(argv=None) -> Path:
    args = parse_args(argv)
    problem = None
    if not args.run.model.exists():  # a mistyped --run would otherwise replace the report with empty sections
        raise MissingInputError(f"{args.run.model} not found: --run {args.run} is not a trained run; train it with "
                                f"`python main.py --run {args.run}` or pass the run folder the report is about")
    ckpt = read_checkpoint(args.run.model)
    if not same_database(training_data_dir(ckpt), args.data_dir):
        raise PipelineError(f"{args.run} was trained on {ckpt['data']['name']}, not on {args.data_dir}; "
                            f"a report covers one database (pass that model's --data-dir)")
    trained_on, now = ckpt["label_set"], data_label_set(args.data_dir)
    if (trained_on["name"], list(trained_on["classes"])) != (now["name"], list(now["classes"])):
        raise PipelineError(f"{args.run} was trained on label set {trained_on['name']}, but {args.data_dir} now holds "
                            f"label set {now['name']} (preprocessed again since): its evaluations are of a task the "
                            f"data no longer have; retrain the run on these data, or preprocess them again with "
                            f"--labels {trained_on['name']}")
    if any(ckpt["split"].values()):  # the run's records as it trained on them, as predict.py checks them
        try:
            checkpoint_splits(ckpt, args.data_dir)
        except PipelineError as e:
            raise PipelineError(f"{args.run}: {e}; its evaluations are not of the data {args.data_dir} now "
                                f"holds") from None
    db_dir = results_home(args.results_dir, args.data_dir)
    if EvaluationFolder(db_dir / args.run.name).exists():
        problem = own_evaluation_problem(db_dir / args.run.name, args.run, ckpt, args.data_dir)
    a = ckpt["config"]
    run_leads = tuple(a.get("leads", LEADS))
    leads = "12 leads" if set(run_leads) == set(LEADS) else f"lead(s) {', '.join(run_leads)}"
    settings = (f"Model: `{args.run}` ({a['arch']}, {leads}, {a['seconds']:g} s at {a['sample_rate']} Hz, "
                f"{a['epochs']} epochs, lr {a['lr']:g}, batch {a['batch_size']}, seed {a['seed']}; label set "
                f"{ckpt['label_set']['name']}).\n\n")
    r = Report(args.data_dir, args.run, args.results_dir, results_home(args.results_dir, args.data_dir),
               tuple(now["classes"]), problem, frozenset(map(str, ckpt["split"].get("test", []))), run_leads)
    parts = [f"# Reproduction report\n\nGenerated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. "
             f"Data: {data_source(args.data_dir)}.\n\n{settings}"]
    parts += [f"## {title}\n\n{build(r)}" for title, build in SECTIONS]
    path = r.db_dir / "report.md"
    write_text("\n".join(parts), path)
    print(f"wrote {path}")
    if problem:  # shown in the sections, and said here, where a user running the command looks
        print(f"note: the deep model's sections show no numbers: {problem}; rerun `{r.predict_command}`",
              file=sys.stderr)
    return path


if __name__ == "__main__":
    main()
