"""Where results live and how they are read.

results/<name>/ belongs to exactly one database. Two preprocessed databases may share a folder name
(`s1/db`, `s2/db`); filing results by name alone would mix or overwrite them. The first database to write
results/<name>/ claims it (database.json records its folder's real path); any other database with that
name gets results/<name>-<8 hex of its path>/ instead, said once, so no database ever writes into
another's results.

Inside it, every evaluation (a run's own test fold, the run on another database, each baseline
classifier) is one folder whose file names are spelled here and nowhere else (`EvaluationFolder`):

    <evaluation>/    val_scores.csv, test_scores.csv    the scores the model handed to the evaluator
                     metrics.csv, metrics.json          per class + mean with CIs; thresholds, provenance
                     calibration.json                   temperature scaling, when asked for
                     roc.png, reliability.png, confusion_<class>.png
                     evaluated.json                     the manifest, written last
                     external/<other db>/               a run's evaluation on another database
    baselines/<tag>[/fold<k>]/<classifier>/             the same files for each baseline

`read_evaluation` is the one reader of such a folder, `Summary` the one row every table of several
evaluations is built from (report, cross-validation, lead study, cross-database matrix, baselines).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from utils.errors import MissingInputError, PipelineError
from utils.files import check_writable, write_json
from utils.manifest import manifest_mismatch, read_manifest
from utils.metrics import METRICS

__all__ = ["CLAIM_JSON", "SYNTHETIC_MARKER", "database_identity", "results_home", "same_database", "EvaluationFolder",
           "EVALUATED_JSON", "RESERVED", "thresholds_json", "parse_thresholds", "read_evaluation", "Summary",
           "baselines_folder", "baselines_evaluations"]

CLAIM_JSON = "database.json"
SYNTHETIC_MARKER = "synth_details.csv"  # synth.py writes it beside its records: the report says "synthetic"


def database_identity(data_dir: Path) -> str:
    """A database's identity: the real path of its preprocess folder (stable across re-preprocessing)."""
    return os.path.realpath(data_dir)


def same_database(a: Path, b: Path) -> bool:
    return database_identity(a) == database_identity(b)


def record_data(json_path: Path, data_dir: Path, outputs: Sequence[Path], evaluations: Sequence[Path] = ()) -> Path:
    """Beside a table of one database (its dataset table, cross-validation, lead study), the preprocess
    fingerprint of the data it was made from, its files' hashes and those of what its rows were read from
    (`evaluation_sources`): report.py shows it only while all of them hold."""
    from utils.cache import preprocess_manifest
    from utils.manifest import write_manifest

    return write_manifest(json_path, preprocess_manifest(data_dir)["fingerprint"], outputs, data_dir=str(data_dir),
                          sources=evaluation_sources(evaluations))


def record_databases(json_path: Path, data_dirs: Sequence[Path], outputs: Sequence[Path],
                     evaluations: Sequence[Path] = ()) -> Path:
    """`record_data` for a table of several databases (the cross-database matrix): each one's folder and
    preprocess fingerprint under its name. Every cell depends on the data of the databases it was trained
    or tested on, so a report checks them all."""
    from utils.cache import database_name, preprocess_manifest
    from utils.files import fingerprint
    from utils.manifest import write_manifest

    databases = {database_name(d): {"data_dir": os.path.realpath(d),
                                    "fingerprint": preprocess_manifest(d)["fingerprint"]} for d in data_dirs}
    return write_manifest(json_path, fingerprint([databases]), outputs, databases=databases,
                          sources=evaluation_sources(evaluations))


def evaluation_sources(folders: Sequence[Path]) -> dict[str, dict]:
    """What a table's rows were read from, described as a manifest describes its files: each evaluation's
    manifest (its scores, settings and the model's hash) and the model it evaluated. A run trained again,
    or evaluated again with other settings, after the table was written changes one of them: the table
    then shows numbers its runs no longer give."""
    from utils.manifest import describe_file

    sources = {}
    for folder in folders:
        evaluation = EvaluationFolder(folder)
        info = read_manifest(evaluation.manifest) or {}
        # in the run's folder, recorded as a real path (the model's own path is recorded as typed: maybe relative)
        model = Path(info["run"]) / Path(info["model"]).name if info.get("run") and info.get("model") else None
        for path in (evaluation.manifest, *([model] if model is not None and model.is_file() else [])):
            sources[os.path.abspath(path)] = describe_file(path)
    return sources


def _sources_problem(manifest: dict) -> str | None:
    """Why a table's rows are no longer what their evaluations and models give (None when they are)."""
    from utils.manifest import file_mismatch

    for path, described in (manifest.get("sources") or {}).items():
        why = file_mismatch(Path(path), described if isinstance(described, dict) else {}, name=path)
        if why:
            return f"a run or evaluation it was made from changed since ({why})"
    return None


def recorded_data_problem(json_path: Path, data_dir: Path) -> str | None:
    """Why the table `json_path` records is not one of `data_dir` as it is now (None when it is): no record
    (written by a version that kept none), other data (the folder preprocessed again since), or a file of
    it changed since. A table of several databases: any of them preprocessed again, or gone."""
    from utils.cache import preprocess_manifest

    manifest = read_manifest(json_path)
    if manifest is None:
        return f"{json_path} is missing: the table does not say which data it was made from"
    if "databases" in manifest:
        return (_databases_problem(manifest["databases"], data_dir) or manifest_mismatch(json_path)
                or _sources_problem(manifest))
    if manifest.get("fingerprint") != preprocess_manifest(data_dir).get("fingerprint"):
        return f"made from other data than {data_dir} holds now (preprocessed again since)"
    return manifest_mismatch(json_path) or _sources_problem(manifest)


def _databases_problem(databases: dict, data_dir: Path) -> str | None:
    """`recorded_data_problem` of each database a table of several records (`data_dir` for its own)."""
    from utils.cache import database_name, preprocess_manifest

    own = database_name(data_dir)
    if not isinstance(databases, dict) or not all(isinstance(v, dict) for v in databases.values()):
        return "its record of the databases is damaged"
    if own not in databases:
        return f"its record names no data of {own}"
    for name, recorded in sorted(databases.items()):
        folder = Path(data_dir) if name == own else Path(recorded.get("data_dir") or "")
        try:
            now = preprocess_manifest(folder).get("fingerprint")
        except PipelineError:
            return f"made from {name} at {folder}, which holds no preprocessed database now"
        if now != recorded.get("fingerprint"):
            return f"made from other data than {folder} holds now ({name} preprocessed again since)"
    return None


def results_home(results_root: Path, data_dir: Path, create: bool = True) -> Path:
    """results/<name>/ of this database (see the module docstring); with `create`, claimed if unclaimed."""
    identity = database_identity(data_dir)
    name = Path(identity).name
    for folder in (Path(results_root) / name,
                   Path(results_root) / f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"):
        claim = folder / CLAIM_JSON
        if claim.exists():
            try:
                owner = json.loads(claim.read_text())["data_dir"]
            except (ValueError, KeyError, TypeError):
                raise PipelineError(f"{claim} is damaged; remove it if {folder} holds results of {identity}") from None
            if owner == identity:
                return folder
            continue
        if create:
            if folder.name != name:
                print(f"note: {Path(results_root) / name} holds results of another database named {name}; "
                      f"results of {identity} go to {folder}")
            check_writable(folder, "pass --results-dir DIR with a writable DIR")
            write_json({"data_dir": identity}, claim)
        return folder
    raise PipelineError(f"results of two other databases named {name} already fill {results_root}")


# ---------------------------------------------------------------------------------------------
# One evaluation's folder
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationFolder:
    """The handle of one evaluation: its folder. Every file of it is named here, so writers (the
    evaluator) and readers (report, studies, predict.py) cannot disagree on a name."""
    folder: Path

    VAL_SCORES = "val_scores.csv"
    TEST_SCORES = "test_scores.csv"
    TRAIN_SCORES = "train_scores.csv"      # the training records' scores (the ICBEB2018 thresholds' records)
    TRAIN_MANIFEST = "train_scored.json"
    METRICS_CSV = "metrics.csv"
    METRICS_JSON = "metrics.json"
    CALIBRATION = "calibration.json"
    MANIFEST = "evaluated.json"
    ROC = "roc.png"
    RELIABILITY = "reliability.png"
    EXTERNAL = "external"
    RECORDS = "records.csv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def val_scores(self) -> Path:
        return self.folder / self.VAL_SCORES

    @property
    def test_scores(self) -> Path:
        return self.folder / self.TEST_SCORES

    @property
    def train_scores(self) -> Path:
        return self.folder / self.TRAIN_SCORES

    @property
    def train_manifest(self) -> Path:
        return self.folder / self.TRAIN_MANIFEST

    @property
    def metrics_csv(self) -> Path:
        return self.folder / self.METRICS_CSV

    @property
    def metrics_json(self) -> Path:
        return self.folder / self.METRICS_JSON

    @property
    def calibration(self) -> Path:
        return self.folder / self.CALIBRATION

    @property
    def manifest(self) -> Path:
        return self.folder / self.MANIFEST

    @property
    def roc(self) -> Path:
        return self.folder / self.ROC

    @property
    def reliability(self) -> Path:
        return self.folder / self.RELIABILITY

    @property
    def records(self) -> Path:
        """predict.py --record's diagnoses of new records (not part of the evaluation)."""
        return self.folder / self.RECORDS

    def confusion(self, cls: str) -> Path:
        return self.folder / f"confusion_{cls}.png"

    def figures(self, classes: Sequence[str]) -> list[Path]:
        """Every figure an evaluation with figures draws."""
        return [self.roc, self.reliability, *[self.confusion(c) for c in classes]]

    def external(self, data_dir: Path, create: bool = True) -> "EvaluationFolder":
        """external/<other db>/: this model's evaluation on another database, filed by its identity."""
        return EvaluationFolder(results_home(self.folder / self.EXTERNAL, data_dir, create))

    def externals(self) -> list["EvaluationFolder"]:
        """Every external evaluation of this model that got as far as its manifest, by folder name."""
        return [EvaluationFolder(m.parent) for m in sorted((self.folder / self.EXTERNAL).glob(f"*/{self.MANIFEST}"))]

    def exists(self) -> bool:
        """Whether an evaluation was written here (complete or not: `read` says)."""
        return self.metrics_json.exists()

    def read(self, key: str | None = None) -> dict:
        return read_evaluation(self.folder, key)

    def current(self, key: str, what: str | None = None) -> bool:
        """True when this folder holds a complete, unchanged evaluation written for `key` (the manifest's
        fingerprint: what the evaluation depends on). With `what`, a current one is said in one line."""
        if not self.exists() or not self.read(key)["current"]:
            return False
        if what:
            print(f"{self.folder}: {what} is current; nothing to do (--force redoes it)")
        return True

    def summary(self) -> "Summary":
        return Summary.of(self.read())

    def __str__(self) -> str:
        return str(self.folder)


EVALUATED_JSON = EvaluationFolder.MANIFEST


def baselines_folder(db_dir: Path, tag: str, classifier: str, test_fold: int | None = None) -> EvaluationFolder:
    """results/<db>/baselines/<tag>[/fold<k>]/<classifier>/: one baseline classifier on one split."""
    return EvaluationFolder(Path(db_dir).joinpath("baselines", tag, *([f"fold{test_fold}"] if test_fold else []),
                                                  classifier))


def baselines_evaluations(db_dir: Path) -> list[EvaluationFolder]:
    """Every baseline evaluation of the seeded split (not the folds) that got as far as its manifest."""
    return [EvaluationFolder(m.parent) for m in sorted((Path(db_dir) / "baselines").glob(f"*/*/{EVALUATED_JSON}"))]


# ---------------------------------------------------------------------------------------------
# What metrics.json and a thresholds file hold
# ---------------------------------------------------------------------------------------------
# metrics.json keys the evaluator writes itself; `info` may not use them (n_test is always the test rows)
RESERVED = ("classes", "metrics", "thresholds", "untunable", "tuned_on", "n_val", "n_bootstrap", "seed", "calibration",
            "calibrate", "figures", "fingerprint", "files")


def thresholds_json(classes: Sequence[str], thresholds: np.ndarray, tuned_on: str, **provenance) -> dict:
    """The thresholds file's content: a number in [0, 1] per class, or null for an untunable class (no
    positive record to tune on: never predicted), which is also listed under "untunable"."""
    thresholds = np.asarray(thresholds, float)
    if thresholds.shape != (len(classes),) or ((thresholds < 0) | (thresholds > 1)).any():
        raise ValueError(f"thresholds_json: {thresholds.tolist()} for classes {list(classes)}")
    clash = set(provenance) & {"classes", "thresholds", "untunable", "tuned_on"}
    if clash:
        raise ValueError(f"thresholds_json: provenance may not set {sorted(clash)}")
    return {"classes": list(classes),
            "thresholds": {c: None if np.isnan(t) else float(t) for c, t in zip(classes, thresholds)},
            "untunable": [c for c, t in zip(classes, thresholds) if np.isnan(t)],
            "tuned_on": tuned_on, **provenance}


def parse_thresholds(obj: dict, classes: Sequence[str], path: Path | str) -> np.ndarray:
    """Thresholds in `classes` order from a thresholds_json object, NaN for an untunable class. Refuses
    (PipelineError naming `path`) another class list, a missing class, a non-number, NaN, inf, or a
    number outside [0, 1]; null is accepted only for a class listed under "untunable"."""
    saved = obj.get("thresholds") if isinstance(obj, dict) else None
    if not isinstance(saved, dict):
        raise PipelineError(f"{path} holds no \"thresholds\" object (class -> threshold)")
    untunable = obj.get("untunable", [])
    if not isinstance(untunable, list) or not all(isinstance(c, str) for c in untunable):
        raise PipelineError(f"{path}: \"untunable\" is {untunable!r}, not a list of class names")
    listed = obj.get("classes", list(saved))
    others = sorted(set(listed) ^ set(classes)) + sorted(set(saved) - set(classes))
    missing = [c for c in classes if c not in saved]
    if others or missing:
        raise PipelineError(f"{path} holds thresholds for {', '.join(map(str, listed))}; expected one per class "
                            f"{', '.join(classes)}" + (f" (missing: {', '.join(missing)})" if missing else ""))
    out = []
    for c in classes:
        v = saved[c]
        if v is None:
            if c not in untunable:
                raise PipelineError(f"{path}: the threshold of {c} is null, but {c} is not listed under "
                                    f"\"untunable\"")
            out.append(np.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise PipelineError(f"{path}: the threshold of {c} is {v!r}, not a number")
        if not (math.isfinite(v) and 0 <= v <= 1):
            raise PipelineError(f"{path}: the threshold of {c} is {v}, not a number in [0, 1]")
        if c in untunable:
            raise PipelineError(f"{path}: {c} is listed under \"untunable\" but has the threshold {v}")
        out.append(float(v))
    return np.array(out)


# ---------------------------------------------------------------------------------------------
# The one reader
# ---------------------------------------------------------------------------------------------
def read_evaluation(out: Path, key: str | None = None) -> dict:
    """The one reader of an evaluation folder. Returns a dict:

    folder, classes, metrics (DataFrame: per class + "mean", NaN for n/a), thresholds (array, NaN =
    untunable), untunable, tuned_on, n_test, n_val, n_bootstrap, seed, calibration (calibration.json's
    content or None), info (the caller's fields: model, database, ...), manifest (dict or None), and
    problem: why the outputs are not a complete, unchanged evaluation (for `key`, when given), None when
    they are; current = problem is None.
    Raises MissingInputError when metrics.json is absent, PipelineError when it is not an evaluation."""
    ev = EvaluationFolder(out)
    path = ev.metrics_json
    if not path.exists():
        raise MissingInputError(f"{path} not found (no evaluation in {ev.folder})")
    try:
        saved = json.loads(path.read_text())
        classes = list(saved["classes"])
        table = pd.DataFrame.from_dict(saved["metrics"], orient="index")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{path} is not an evaluation's metrics.json ({type(e).__name__}: {e})") from None
    if list(table.index) != [*classes, "mean"]:
        raise PipelineError(f"{path}: metrics rows {list(table.index)}, expected {[*classes, 'mean']}")
    numeric = [c for c in table.columns if c != "untunable"]
    table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")  # null -> NaN
    thresholds = parse_thresholds(saved, classes, path)
    calibration = None
    if ev.calibration.exists():
        try:
            calibration = json.loads(ev.calibration.read_text())
        except (OSError, ValueError) as e:
            raise PipelineError(f"{ev.calibration} is not readable JSON ({e})") from None
    manifest = read_manifest(ev.manifest)
    if manifest is None:
        problem = f"{ev.manifest} is missing or unreadable (evaluation not run to the end, or interrupted)"
    elif key is not None and manifest.get("fingerprint") != key:
        problem = f"{ev.manifest} describes an evaluation of other scores or settings"
    else:
        problem = manifest_mismatch(ev.manifest)
    return {"folder": ev.folder, "classes": classes, "metrics": table, "thresholds": thresholds,
            "untunable": [c for c, t in zip(classes, thresholds) if np.isnan(t)], "tuned_on": saved.get("tuned_on"),
            "n_test": saved.get("n_test"), "n_val": saved.get("n_val"), "n_bootstrap": saved.get("n_bootstrap"),
            "seed": saved.get("seed"), "calibration": calibration,
            "info": {k: v for k, v in saved.items() if k not in RESERVED and k != "n_test"},
            "manifest": manifest, "problem": problem, "current": problem is None}


@dataclass(frozen=True)
class Summary:
    """One evaluation as one row of a table of several: what every such table (report, cross-validation,
    lead study, cross-database matrix, baselines) takes from an evaluation, read in one place."""
    folder: Path
    records: int                 # test records
    classes: list[str]
    assessed: list[str]          # classes with a positive and a negative test record: those the means cover
    mean: dict[str, float]       # each metric of the mean row; its _lo/_hi only where bootstrapped
    per_class: pd.DataFrame      # the metrics table's class rows
    thresholds: dict[str, float | None]  # None: untunable
    untunable: list[str]
    calibration: dict | None     # calibration.json's content

    @classmethod
    def of(cls, saved: dict) -> "Summary":
        """The summary of a `read_evaluation` result."""
        table, classes = saved["metrics"], saved["classes"]
        metric_columns = [c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi") if c in table]
        mean = table.loc["mean"]
        return cls(folder=Path(saved["folder"]), records=int(saved["n_test"]), classes=list(classes),
                   assessed=[c for c in classes if np.isfinite(table.loc[c, "auc"])],
                   mean={c: float(mean[c]) for c in metric_columns}, per_class=table.loc[classes],
                   thresholds={c: None if np.isnan(t) else float(t) for c, t in zip(classes, saved["thresholds"])},
                   untunable=list(saved["untunable"]), calibration=saved["calibration"])
