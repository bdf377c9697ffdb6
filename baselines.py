"""Expert-feature baselines: wavelet and signal statistics per lead, then LR, RF, LightGBM and MLP.

    python baselines.py --data-dir data/CPSC --classifier all
    python baselines.py --data-dir data/CPSC --classifier RF --leads I,aVR,V5 --heart-rate

Features per lead, exactly the original's (utils.features): 53 per lead, 636 for 12 leads (+ 8 heart-rate
statistics with --heart-rate), computed once from the signal cache (a cache stored at another rate than 500 Hz is resampled to
500 Hz per record first, the rate the features were designed for) into features.csv, recomputed only when
the cache changes (or --force).

Classifiers as the original configured them (one-vs-rest LogisticRegression(lbfgs, max_iter 1000) on
unscaled features, RandomForest(300 trees, depth 10), LightGBM(100 trees); a native multi-label
MLPClassifier((100, 50), max_iter 500)), seeded with --seed; --standardize scales inputs for LR and MLP;
--trees N grows N trees in the forest and N boosting rounds (a quick look; the demo's preset uses 50).
Each classifier is a Scorer (trained on the training folds, it scores the validation and test records) and
goes through the same evaluator as the deep model (utils.evaluate_scorer): one threshold per class tuned on validation,
metrics with bootstrap 95 % CIs, ECE and Brier (and, with --calibrate, temperature scaling) on the test fold
(the same seeded 8/1/1 split as main.py; --test-fold k or --cv for cross-validation as in cross_validate.py).

Outputs, under results/<db>/ (<tag>: leads, then _hr with --heart-rate, _std with --standardize, _seed<N> for
a seed other than 42, _trees<N> with --trees and RF or LGB, so no two variants overwrite each other):
    baselines/<tag>/<classifier>/            the evaluator's files: val/test scores, metrics, figures, manifest
    baselines/<tag>/fold<k>/<classifier>/    the same for test fold k (--test-fold k, or fold k of --cv)
    baselines_<tag>.csv/.json                one row per classifier: F1 per class, mean F1 and AUC with CIs
    baselines_<tag>_fold<k>.csv/.json        the same for --test-fold k
    baselines_<tag>_cv.csv/.md               --cv: a row per fold and classifier; mean ± sd over folds
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm import tqdm

from utils.cache import data_label_set, data_split_rule, database_name, load_labels, preprocess_manifest
from utils.errors import PipelineError, script_main
from utils.evaluator import EvalOptions, Scores, evaluate_scorer, jsonable, scores_table
from utils.folds import N_FOLDS, refuse_empty_parts, split_labels
from utils.files import fingerprint, check_writable, write_csv, write_json, write_text
from utils.labels import leads_argument, leads_tag
from utils.results import Summary
from utils.tables import Column, ci_columns, format_mean_sd, markdown_table, table_frame
from utils.features import FEATURE_VERSION, feature_columns, load_or_compute_features
from utils.cli import MAX_WORKERS, bounded_int, flag_error, flag_given, folder_path, seed_int, usable_cpus
from utils.presets import parse_with_preset
from utils.results import EvaluationFolder, baselines_folder, record_data, results_home
from utils.defaults import DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR

CLASSIFIERS = ("LR", "RF", "LGB", "MLP")
ORIGINAL_TREES = {"RF": 300, "LGB": 100}  # the original's ensemble sizes: RF's trees, LightGBM's boosting rounds
DEFAULT_SEED = 42


def classifier_list(text: str) -> list[str]:
    """--classifier: LR, RF, LGB, MLP, a comma list of them, or all."""
    wanted = list(CLASSIFIERS) if text.strip().lower() == "all" else [c.strip().upper() for c in text.split(",")]
    unknown = [c for c in wanted if c not in CLASSIFIERS]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"unknown classifier(s) {unknown}; choose from {', '.join(CLASSIFIERS)} "
                                         f"or all")
    return list(dict.fromkeys(wanted))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=folder_path, default=DEFAULT_DATA_DIR, help="preprocess output folder")
    p.add_argument("--classifier", type=classifier_list, default="all",
                   help="LR, RF, LGB, MLP or all (comma lists work too)")
    p.add_argument("--leads", type=leads_argument, default="all", help="restrict the features to these leads")
    p.add_argument("--heart-rate", action="store_true", help="add heart-rate statistics from R-peak detection")
    p.add_argument("--seed", type=seed_int, default=DEFAULT_SEED, help="fold split and classifier seed, %(type)s")
    p.add_argument("--standardize", action="store_true",
                   help="standardise features for LR and MLP (the original fed them unscaled)")
    p.add_argument("--trees", type=bounded_int(1, 10_000), default=None,
                   help="RF's trees and LightGBM's boosting rounds (default: the original's, "
                        f"{ORIGINAL_TREES['RF']} and {ORIGINAL_TREES['LGB']}), %(type)s")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--test-fold", type=int, default=None, choices=range(1, N_FOLDS + 1), metavar="K",
                       help="cross-validation: test on fold K, validate on the next (default: the seeded 8/1/1 split)")
    split.add_argument("--cv", action="store_true", help="all ten test folds; writes baselines_<tag>_cv.csv/.md")
    p.add_argument("--n-bootstrap", type=bounded_int(0, 100_000), default=1000,
                   help="bootstrap resamples for the 95 %% CIs (0: none), %(type)s")
    p.add_argument("--calibrate", action="store_true",
                   help="also fit a temperature on validation and report ECE / Brier before and after")
    p.add_argument("--no-figures", action="store_true",
                   help="skip ROC, confusion and reliability figures (the folds of --cv never draw them)")
    p.add_argument("--num-workers", type=bounded_int(0, MAX_WORKERS), default=usable_cpus(),
                   help="processes computing features (0 or 1: this process), %(type)s")
    p.add_argument("--results-dir", type=folder_path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--force", action="store_true", help="recompute features.csv and refit every classifier")
    args = parse_with_preset(p, argv, "baselines")
    if not set(ORIGINAL_TREES) & set(args.classifier):
        if flag_given(p, argv, "--trees"):
            flag_error(p, "--trees", f"sizes RF and LGB, and --classifier {','.join(args.classifier)} runs neither")
        args.trees = None  # a preset's, where no ensemble runs: the same variant as without it
    return args


def ensemble_size(name: str, trees: int | None) -> int | None:
    """The trees (RF) or boosting rounds (LGB) classifier `name` grows: `trees`, else the original's; None
    for LR and MLP."""
    return (trees or ORIGINAL_TREES[name]) if name in ORIGINAL_TREES else None


def make_classifier(name: str, seed: int, standardize: bool = False, trees: int | None = None):
    """The original's classifiers and settings, seeded (the original set no seeds): one-vs-rest where the
    estimator is single-label, the MLP natively multi-label. `standardize` puts a StandardScaler in
    front of LR and MLP (the original fed them unscaled features); `trees` replaces the ensembles' sizes."""
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "LR":
        clf = OneVsRestClassifier(LogisticRegression(solver="lbfgs", max_iter=1000, random_state=seed))
    elif name == "RF":
        return OneVsRestClassifier(RandomForestClassifier(n_estimators=ensemble_size(name, trees), max_depth=10,
                                                          random_state=seed, n_jobs=-1))
    elif name == "LGB":
        return OneVsRestClassifier(LGBMClassifier(n_estimators=ensemble_size(name, trees), random_state=seed,
                                                  verbose=-1, n_jobs=2))
    elif name == "MLP":
        clf = MLPClassifier(hidden_layer_sizes=(100, 50), max_iter=500, random_state=seed)
    else:
        raise ValueError(name)
    return make_pipeline(StandardScaler(), clf) if standardize else clf


@dataclasses.dataclass(frozen=True)
class BaselineRun:
    """What one baselines.py run evaluates and where it files it (the settings the classifiers, the
    evaluator and the output names depend on)."""
    data_dir: Path
    results_dir: Path
    classes: tuple[str, ...]
    classifiers: tuple[str, ...]
    leads: tuple[str, ...]
    heart_rate: bool = False
    standardize: bool = False
    seed: int = DEFAULT_SEED
    trees: int | None = None  # RF's and LightGBM's size when not the original's (None also where neither runs)
    fixed_split: dict | None = None  # the database's own split (utils.data_split_rule), else the seeded one
    n_bootstrap: int = 1000
    calibrate: bool = False
    figures: bool = True
    force: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BaselineRun":
        return cls(data_dir=args.data_dir, results_dir=args.results_dir,
                   classes=tuple(data_label_set(args.data_dir)["classes"]), classifiers=tuple(args.classifier),
                   leads=tuple(args.leads), heart_rate=args.heart_rate, standardize=args.standardize, seed=args.seed,
                   trees=args.trees,
                   fixed_split=data_split_rule(args.data_dir), n_bootstrap=args.n_bootstrap, calibrate=args.calibrate,
                   figures=not args.no_figures, force=args.force)

    @property
    def tag(self) -> str:
        """leads, _hr, _std, _seed<N>, _trees<N>: one name per variant, so variants never overwrite each other."""
        parts = [leads_tag(self.leads), "_hr" if self.heart_rate else "", "_std" if self.standardize else "",
                 f"_seed{self.seed}" if self.seed != DEFAULT_SEED else "", f"_trees{self.trees}" if self.trees else ""]
        return "".join(parts)

    @property
    def db_dir(self) -> Path:
        return results_home(self.results_dir, self.data_dir)

    def summary_path(self, suffix: str = "") -> Path:
        """results/<db>/baselines_<tag><suffix> (add .csv / .json / .md)."""
        return self.db_dir / f"baselines_{self.tag}{suffix}"

    def folder(self, classifier: str, test_fold: int | None) -> EvaluationFolder:
        """The evaluator's folder of one classifier on one split."""
        return baselines_folder(self.db_dir, self.tag, classifier, test_fold)


@dataclasses.dataclass(frozen=True)
class FeatureClassifier:
    """One classifier on the expert features of one split, as a Scorer: trained on the training records,
    it scores the validation and test records."""
    name: str
    splits: dict[str, pd.DataFrame]   # train / val / test rows of labels.csv merged with the features
    columns: list[str]                # the feature columns it sees
    classes: tuple[str, ...]
    seed: int
    standardize: bool = False
    trees: int | None = None

    def score(self) -> Scores:
        import warnings

        X = {k: v[self.columns].to_numpy() for k, v in self.splits.items()}
        Y = {k: v[list(self.classes)].to_numpy().astype(int) for k, v in self.splits.items()}
        clf = make_classifier(self.name, self.seed, self.standardize, self.trees)
        with warnings.catch_warnings():  # a class absent from a small training fold; MLP iteration limits
            warnings.simplefilter("ignore")
            clf.fit(X["train"], Y["train"])
            val, test = clf.predict_proba(X["val"]), clf.predict_proba(X["test"])
        return Scores(test=scores_table(self.splits["test"]["patient_id"], Y["test"], test, self.classes),
                      val=scores_table(self.splits["val"]["patient_id"], Y["val"], val, self.classes))


def summary_columns(classes: Sequence[str]) -> list[Column]:
    """The summary table of the classifiers: test F1 per class (the paper's table), mean F1 and AUC with
    their CIs, AUC per class, mean ECE and Brier, untunable classes, where its files are."""
    return [Column("classifier", "classifier", align="left"), *[Column(c, c) for c in classes],
            *ci_columns("mean_f1", "mean F1"), *ci_columns("mean_auc", "mean AUC"),
            *[Column(f"auc_{c}") for c in classes], Column("mean_ece"), Column("mean_brier"), Column("untunable"),
            Column("results")]


def summary_row(name: str, s: Summary, db_dir: Path) -> dict:
    """One classifier's row of the summary (see `summary_columns`), and its thresholds for the JSON."""
    ci = lambda m: {f"mean_{m}_{e}": s.mean[f"{m}_{e}"] for e in ("lo", "hi") if f"{m}_{e}" in s.mean}  # noqa: E731
    return {"classifier": name, **{c: float(s.per_class.loc[c, "f1"]) for c in s.classes},
            "mean_f1": s.mean["f1"], **ci("f1"), "mean_auc": s.mean["auc"], **ci("auc"),
            **{f"auc_{c}": float(s.per_class.loc[c, "auc"]) for c in s.classes},
            "mean_ece": s.mean["ece"], "mean_brier": s.mean["brier"], "untunable": ",".join(s.untunable),
            "results": os.path.relpath(s.folder, db_dir), "thresholds": s.thresholds}


def _figures(run: BaselineRun, test_fold: int | None) -> bool:
    return run.figures and test_fold is None  # ten folds' figures would cost more than their fits


EVALUATION_RECORD = "data_fingerprint"  # what an evaluation's info records (older ones did not): not reused


def evaluation_key(run: BaselineRun, name: str, test_fold: int | None, n_features: int) -> str:
    """What one classifier's evaluation depends on: it is reused (or kept in a summary) only for this key."""
    return fingerprint([preprocess_manifest(run.data_dir)["fingerprint"], FEATURE_VERSION, name, run.tag, run.seed,
                        test_fold, run.n_bootstrap, run.calibrate, _figures(run, test_fold), n_features,
                        EVALUATION_RECORD])


def kept_rows(run: BaselineRun, test_fold: int | None, n_features: int) -> list[dict]:
    """Summary rows of the classifiers this command did not run but an earlier one did, under the same tag
    and settings, whose evaluations are current: a rerun with fewer classifiers keeps them in the table
    (as the report does), and one of other settings leaves them out."""
    rows = []
    for name in (name for name in CLASSIFIERS if name not in run.classifiers):
        folder = run.folder(name, test_fold)
        try:
            if folder.current(evaluation_key(run, name, test_fold, n_features)):
                rows.append(summary_row(name, folder.summary(), run.db_dir))
                print(f"{folder}: {name}'s current evaluation kept in the summary")
        except PipelineError as e:  # damaged: not this command's to fail on, and not a row to show
            print(f"note: {name}'s earlier evaluation is left out of the summary ({e})", file=sys.stderr)
    return rows


def fold_splits(data: pd.DataFrame, run: BaselineRun, test_fold: int | None) -> dict[str, pd.DataFrame]:
    """The train/val/test records of one split (see utils.split_folds), each part refused empty before any
    classifier is fitted."""
    splits = split_labels(data, run.seed, test_fold=test_fold, fixed=run.fixed_split)
    refuse_empty_parts(splits, f"{run.data_dir}{f' with test fold {test_fold}' if test_fold else ''}")
    return splits


def evaluate_split(data: pd.DataFrame, cols: list[str], run: BaselineRun,
                   test_fold: int | None) -> tuple[list[dict], int]:
    """Every chosen classifier on one train/val/test split (see utils.split_folds), each through the
    evaluator into its own folder; summary rows and test size."""
    splits = fold_splits(data, run, test_fold)
    desc = f"test fold {test_fold}" if test_fold else "classifiers"
    rows = []
    for name in tqdm(run.classifiers, desc=desc, file=sys.stdout):
        folder = run.folder(name, test_fold)
        info = {"classifier": name, "data_dir": str(run.data_dir), "database": database_name(run.data_dir),
                "data_fingerprint": preprocess_manifest(run.data_dir)["fingerprint"], "test_fold": test_fold,
                "leads": list(run.leads), "heart_rate": run.heart_rate, "standardize": run.standardize,
                "features": len(cols),
                **({"trees": ensemble_size(name, run.trees)} if name in ORIGINAL_TREES else {})}
        options = EvalOptions(folder, run.classes, n_bootstrap=run.n_bootstrap, seed=run.seed,
                              figures=_figures(run, test_fold), calibrate=run.calibrate, info=info,
                              title=f"{name}, {desc if test_fold else 'test fold'}",
                              key=evaluation_key(run, name, test_fold, len(cols)))
        scorer = FeatureClassifier(name, splits, cols, run.classes, run.seed, run.standardize, run.trees)
        evaluate_scorer(scorer, options, force=run.force, what=f"{name} on these features and split (not refitted)")
        rows.append(summary_row(name, folder.summary(), run.db_dir))
    return rows, len(splits["test"])


def cross_validate_classifiers(data: pd.DataFrame, cols: list[str], run: BaselineRun) -> pd.DataFrame:
    """All ten test folds: per-fold rows (CSV) and per classifier mean ± sd over folds (markdown)."""
    rows = []
    for k in range(1, N_FOLDS + 1):
        rows += [{"fold": k, **r} for r in evaluate_split(data, cols, run, k)[0]]
    out = run.summary_path("_cv")
    folds = table_frame(rows, [Column("fold"), *summary_columns(run.classes)])
    write_csv(folds, out.with_suffix(".csv"))
    shown = [*run.classes, "mean_f1", "mean_auc"]
    stats = folds.groupby("classifier", sort=False)[shown].agg(["mean", "std"])
    columns = [Column("classifier", "classifier", align="left")]
    columns += [Column(None, c, lambda r, c=c: format_mean_sd(r[(c, "mean")], r[(c, "std")])) for c in shown]
    md = (f"Test-fold F1 per class, mean F1 and mean AUC: mean ± sd over {N_FOLDS} folds.\n\n"
          + markdown_table([{"classifier": name, **r} for name, r in stats.iterrows()], columns))
    write_text(md, out.with_suffix(".md"))
    record_data(out.with_suffix(".json"), run.data_dir, [out.with_suffix(".csv"), out.with_suffix(".md")],
                [run.folder(name, k).folder for k in range(1, N_FOLDS + 1) for name in run.classifiers])
    print(md.rstrip("\n"))
    print(f"wrote {out}.csv, .md and .json; each fold's evaluation in {run.db_dir / 'baselines' / run.tag}/fold<k>/")
    return stats


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    run = BaselineRun.from_args(args)
    # checked before minutes of feature extraction, not after (the data folder, where features.csv is
    # written, by load_or_compute_features when it computes it)
    check_writable(run.db_dir, "pass --results-dir DIR with a writable DIR")
    labels = load_labels(run.data_dir)
    for test_fold in range(1, N_FOLDS + 1) if args.cv else [args.test_fold]:  # each split's parts, before all
        fold_splits(labels, run, test_fold)
    features = load_or_compute_features(run.data_dir, run.heart_rate, args.num_workers, args.force)
    cols = feature_columns(list(run.leads), run.heart_rate)
    data = labels.merge(features, on="patient_id", how="left", validate="one_to_one")
    print(f"{len(cols)} features ({','.join(run.leads)}{' + heart rate' if run.heart_rate else ''}); "
          f"{len(data)} records")
    if args.cv:
        return cross_validate_classifiers(data, cols, run)
    rows, n_test = evaluate_split(data, cols, run, args.test_fold)
    rows = sorted(rows + kept_rows(run, args.test_fold, len(cols)), key=lambda r: CLASSIFIERS.index(r["classifier"]))
    out = run.summary_path(f"_fold{args.test_fold}" if args.test_fold else "")
    table = pd.DataFrame(rows)
    write_csv(table_frame(rows, summary_columns(run.classes)), out.with_suffix(".csv"))
    write_json(jsonable({"data_dir": str(run.data_dir), "seed": run.seed, "test_fold": args.test_fold,
                         "leads": list(run.leads), "heart_rate": run.heart_rate, "standardize": run.standardize,
                         "trees": run.trees, "n_test": n_test, "n_bootstrap": run.n_bootstrap, "results": rows}),
               out.with_suffix(".json"))
    print(f"test-fold F1 per class ({n_test} records; thresholds tuned on validation), as in the paper's table"
          f"{'; mean F1 and AUC with 95 % bootstrap CIs' if run.n_bootstrap else ''}:")
    print(markdown_table(rows, summary_columns(run.classes)), end="")
    print(f"wrote {out}.csv and .json; each classifier's evaluation in {run.folder('<classifier>', args.test_fold)}/")
    return table


if __name__ == "__main__":
    main()
