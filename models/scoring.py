"""The network's scores, handed to the one evaluator (utils.evaluator) like any model's: a `RunScorer`
scores the run's own validation and test records, or every record of another database (external
validation), and `evaluate_scorer` does the rest.

Thresholds are tuned on the run's validation records only (one per class, maximising F1) and saved in
the run folder, tied to the checkpoint's bytes; the test records, and any external database, are scored
with them. Results go to results/<db>/<run>/ (<db>: the database the model was trained on, by identity),
external ones to results/<db>/<run>/external/<other db>/, so two databases never overwrite or mix each
other's results. Each evaluation's manifest records what it depends on (the checkpoint's hash, the data,
the settings): it is redone only when one of them changed, and the report never shows a stale one.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from models.inputs import ECGDataset, InputSpec, checkpoint_splits, make_loader, score
from models.run import Run, load_thresholds
from models.training import RunConfig
from utils.cache import SignalCache, data_label_set, data_split_rule, database_name, load_labels, preprocess_manifest
from utils.cli import usable_cpus
from utils.errors import MissingInputError, PipelineError
from utils.evaluator import EvalOptions, Scores, evaluate, read_scores, scores_table
from utils.folds import split_folds
from utils.files import check_writable, fingerprint
from utils.locks import exclusive_lock
from utils.manifest import file_sha
from utils.results import EvaluationFolder
from utils.files import write_csv
from utils.manifest import outputs_current, write_manifest
from utils.results import results_home, same_database

__all__ = ["training_data_dir", "results_folder", "scoring_amp", "score_records", "EvalSettings",
           "score_training_records", "RunScorer", "evaluation_key", "evaluation_current", "evaluation_problem",
           "own_evaluation_problem", "evaluate_run", "external_folder", "evaluate_external", "EVAL_WORKERS"]

# data-loading processes of an evaluation: 2, or 1 where the process may use one CPU (torch warns beyond)
EVAL_WORKERS = min(2, usable_cpus())


def training_data_dir(ckpt: dict) -> Path:
    """The preprocess folder a checkpoint was trained on, by its real path (utils.results.database_identity)."""
    return Path(ckpt["data"]["identity"])


def results_folder(results_dir: Path, ckpt: dict, run: Run) -> Path:
    """results/<training database>/<run name>/ (the database's own results folder, utils.results)."""
    return results_home(results_dir, training_data_dir(ckpt)) / run.name


def scoring_amp(ckpt: dict) -> bool:
    """Whether a run's records are scored under bf16 autocast: exactly when it was trained so (--no-amp,
    and the ptbxl preset, train and score in fp32), on whatever device scores them."""
    return RunConfig.from_checkpoint(ckpt).precision == "bf16"


def score_records(model: torch.nn.Module, records: ECGDataset, classes: Sequence[str], device: torch.device,
                  batch_size: int, num_workers: int, desc: str | None, amp: bool = False) -> pd.DataFrame:
    """The scores table (patient_id, 0/1 labels, p_<class>) of the dataset's records, in their order."""
    loader = make_loader(records, batch_size, False, num_workers)
    probs, y, _ = score(model, loader, device, amp=amp, progress=desc)
    return scores_table(list(records.ids), y.astype(bool), probs, classes)


@dataclass(frozen=True)
class EvalSettings:
    """What a caller chooses about an evaluation (the run and its data fix the rest of the EvalOptions):
    the bootstrap size, figures and calibration go into EvalOptions, the loader settings into RunScorer."""
    n_bootstrap: int = 1000
    batch_size: int = 64
    num_workers: int = EVAL_WORKERS
    figures: bool = True
    calibrate: bool = False


def _training_scores_key(ckpt: dict, run: Run) -> str:
    """What the training records' scores depend on: the model, the data, how they are scored."""
    data_dir = Path(ckpt["config"]["data_dir"])
    return fingerprint([file_sha(run.model), preprocess_manifest(data_dir)["fingerprint"], "train", _scored_in(ckpt)])


def training_scores_current(ckpt: dict, run: Run, results_dir: Path) -> bool:
    """Whether `score_training_records` would only reuse its file (read from the files alone)."""
    out = EvaluationFolder(results_folder(results_dir, ckpt, run))
    return outputs_current(out.train_manifest, _training_scores_key(ckpt, run))


def score_training_records(model: torch.nn.Module, ckpt: dict, run: Run, results_dir: Path, device: torch.device,
                           batch_size: int = 64, num_workers: int = 0) -> Path:
    """results/<db>/<run>/train_scores.csv: the run's training records scored as its test records are
    (eval mode, every window, its precision) -- what the PTB-XL benchmark tunes its ICBEB2018 F_beta /
    G_beta thresholds on. Redone only when the checkpoint or the data changed."""
    out = EvaluationFolder(results_folder(results_dir, ckpt, run))
    data_dir = Path(ckpt["config"]["data_dir"])
    key = _training_scores_key(ckpt, run)
    if outputs_current(out.train_manifest, key):
        return out.train_scores
    check_writable(out.folder, "pass --results-dir DIR with a writable DIR")
    part = checkpoint_splits(ckpt, data_dir)["train"]
    classes = list(ckpt["label_set"]["classes"])
    records = ECGDataset(SignalCache(data_dir), part, InputSpec.from_checkpoint(ckpt), classes)
    table = score_records(model, records, classes, device, batch_size, num_workers, "score train", scoring_amp(ckpt))
    with exclusive_lock(run.lock, f"run {run}"):  # the run's results folder: one writer
        out.train_manifest.unlink(missing_ok=True)
        write_csv(table, out.train_scores)
        write_manifest(out.train_manifest, key, [out.train_scores], model_sha=file_sha(run.model))
    return out.train_scores


@dataclass(frozen=True)
class RunScorer:
    """The network as a Scorer (utils.evaluator): it scores the `test` rows of labels.csv of `data_dir`
    and the `val` rows, or reads the validation scores from `val_scores` (a run's own validation scores,
    written when its own records were evaluated)."""
    model: torch.nn.Module
    ckpt: dict
    device: torch.device
    data_dir: Path
    test: pd.DataFrame
    val: pd.DataFrame | None = None
    val_scores: Path | None = None
    batch_size: int = 64
    num_workers: int = EVAL_WORKERS

    def score(self) -> Scores:
        classes = list(self.ckpt["label_set"]["classes"])
        cache, spec = SignalCache(self.data_dir), InputSpec.from_checkpoint(self.ckpt)

        def scored(part: pd.DataFrame, name: str) -> pd.DataFrame:
            return score_records(self.model, ECGDataset(cache, part, spec, classes), classes, self.device,
                                 self.batch_size, self.num_workers, f"score {name}", scoring_amp(self.ckpt))

        val = (scored(self.val, "val") if self.val is not None
               else read_scores(self.val_scores, classes) if self.val_scores is not None else None)
        return Scores(test=scored(self.test, "test" if self.val is not None else "external"), val=val)


def evaluation_key(run: Run, ckpt: dict, n_bootstrap: int, calibrate: bool = False,
                   data_dir: Path | None = None) -> str:
    """What an evaluation on the run's own records depends on: the checkpoint's bytes, the data it reads
    as they are now (the preprocess fingerprint of `data_dir`, default the checkpoint's folder: a folder
    preprocessed again since the checkpoint was written is other data), the settings, the precision the
    records are scored in."""
    data = preprocess_manifest(data_dir or ckpt["config"]["data_dir"])["fingerprint"]
    return fingerprint([file_sha(run.model), data, n_bootstrap, calibrate, _scored_in(ckpt)])


def _scored_in(ckpt: dict) -> str:
    return "bf16 scores" if scoring_amp(ckpt) else "fp32 scores"


def _claim(out: Path, run: Run) -> None:
    """results/<db>/<run name>/ belongs to one run folder: another run folder of the same name is refused
    (its evaluation would replace this one's)."""
    try:
        owner = EvaluationFolder(out).read()["info"].get("run")
    except (MissingInputError, PipelineError):
        return
    if owner and owner != os.path.realpath(run.folder):
        raise PipelineError(f"{out} holds the evaluation of another run folder named {run.name} ({owner}); "
                            f"rename this run's folder or pass another --results-dir")


def evaluation_current(run: Run, ckpt: dict, results_dir: Path, n_bootstrap: int, calibrate: bool = False) -> bool:
    """True when results/<db>/<run>/ holds a complete evaluation of exactly this checkpoint and settings."""
    return EvaluationFolder(results_folder(results_dir, ckpt, run)).current(evaluation_key(run, ckpt, n_bootstrap,
                                                                                           calibrate))


def evaluation_problem(out: Path, run: Run) -> str | None:
    """Why `out` does not hold a complete evaluation of this very model.pth (None when it does): what
    the report checks before it shows any evaluation of the run, own or external."""
    ev = EvaluationFolder(out)
    try:
        saved = ev.read()
    except MissingInputError:
        return f"{ev.metrics_json} is missing (evaluation not run)"
    if saved["problem"]:
        return saved["problem"]
    if saved["manifest"].get("model_sha") != file_sha(run.model):
        return f"{run.model} changed after it was evaluated"
    return None


def own_evaluation_problem(out: Path, run: Run, ckpt: dict, data_dir: Path) -> str | None:
    """`evaluation_problem`, and for the run's evaluation on its own records also whether it was computed
    from the data `data_dir` holds now (its key, as predict.py checks it: a folder preprocessed again from
    changed records is other data, even where every label stayed)."""
    problem = evaluation_problem(out, run)
    if problem:
        return problem
    manifest = EvaluationFolder(out).read()["manifest"]
    key = evaluation_key(run, ckpt, manifest.get("n_bootstrap"), bool(manifest.get("calibrate")), data_dir)
    if manifest.get("fingerprint") != key:
        return f"{out} was computed from {data_dir} as it was before it was preprocessed again (or with other settings)"
    return None


def evaluate_run(model: torch.nn.Module, ckpt: dict, run: Run, results_dir: Path, device: torch.device,
                 data_dir: Path | None = None, settings: EvalSettings = EvalSettings()) -> tuple[pd.DataFrame, Path]:
    """Score the run's validation and test records, tune the thresholds on validation, evaluate the test
    records; returns the metrics table and the results folder."""
    cfg = ckpt["config"]
    classes = list(ckpt["label_set"]["classes"])
    data_dir = Path(data_dir or cfg["data_dir"])
    out = results_folder(results_dir, ckpt, run)
    _claim(out, run)
    check_writable(out, "pass --results-dir DIR with a writable DIR")
    check_writable(run.folder, "the thresholds are saved in the run folder")
    splits = checkpoint_splits(ckpt, data_dir)
    _, val_folds, test_folds = split_folds(int(cfg["seed"]), cfg.get("test_fold"), data_split_rule(data_dir))
    for name in ("val", "test"):
        if splits[name].empty:
            raise PipelineError(f"no records in the {name} split of {data_dir}")
    scores = RunScorer(model, ckpt, device, data_dir, splits["test"], splits["val"], batch_size=settings.batch_size,
                       num_workers=settings.num_workers).score()
    info = {"model": str(run.model), "model_sha": file_sha(run.model), "run": os.path.realpath(run.folder),
            "data_dir": str(data_dir), "database": ckpt["data"]["name"], "test_folds": test_folds,
            "val_folds": val_folds, "leads": list(InputSpec.from_checkpoint(ckpt).leads),
            "label_set": ckpt["label_set"]["name"]}
    n_bootstrap, calibrate = settings.n_bootstrap, settings.calibrate
    options = EvalOptions(out, classes, n_bootstrap=n_bootstrap, seed=int(cfg["seed"]), figures=settings.figures,
                          calibrate=calibrate, title="test fold", info=info,
                          key=evaluation_key(run, ckpt, n_bootstrap, calibrate, data_dir), thresholds_file=run.thresholds,
                          tuned_on=f"validation fold(s) {val_folds}: {len(splits['val'])} records")
    with exclusive_lock(run.lock, f"run {run}"):  # the thresholds go into the run folder: one writer
        if info["model_sha"] != file_sha(run.model):
            raise PipelineError(f"{run.model} changed while it was being evaluated (is it still training?)")
        table = evaluate(scores, options)
    print(f"test fold(s) {test_folds}: {len(splits['test'])} records; thresholds tuned on validation fold(s) "
          f"{val_folds} ({len(splits['val'])} records)")
    return table, out


def external_folder(results_dir: Path, ckpt: dict, run: Run, external_dir: Path) -> Path:
    """results/<db>/<run>/external/<other db>/."""
    return EvaluationFolder(results_folder(results_dir, ckpt, run)).external(external_dir).folder


def _external_key(run: Run, ckpt: dict, external_dir: Path, n_bootstrap: int, calibrate: bool) -> str:
    return fingerprint([file_sha(run.model), file_sha(run.thresholds), preprocess_manifest(external_dir)["fingerprint"],
                        n_bootstrap, calibrate, _scored_in(ckpt)])


def evaluate_external(model: torch.nn.Module, ckpt: dict, run: Run, external_dir: Path, results_dir: Path,
                      device: torch.device, settings: EvalSettings = EvalSettings(),
                      force: bool = False) -> tuple[pd.DataFrame, Path, bool]:
    """Score every labelled record of another preprocessed database with the thresholds tuned on the
    run's own validation records (redone only when the model, its thresholds, the other database or the
    settings changed): the metrics, their folder, and whether they were computed now (False: reused)."""
    classes = list(ckpt["label_set"]["classes"])
    theirs = data_label_set(external_dir)
    if list(theirs["classes"]) != classes:
        raise PipelineError(f"{external_dir} was preprocessed with label set {theirs['name']} "
                            f"({', '.join(theirs['classes'])}), the model predicts {ckpt['label_set']['name']} "
                            f"({', '.join(classes)}); rerun preprocess.py there with --labels "
                            f"{ckpt['label_set']['name']}")
    if same_database(external_dir, training_data_dir(ckpt)) or \
            preprocess_manifest(external_dir).get("fingerprint") == ckpt["data"]["fingerprint"]:
        raise PipelineError(f"{external_dir} is the database the model was trained on; evaluate it with "
                            f"`python predict.py --run {run}` (its own test records)")
    thresholds = load_thresholds(run, classes)
    own = EvaluationFolder(results_folder(results_dir, ckpt, run))
    out = own.external(external_dir)
    n_bootstrap, calibrate = settings.n_bootstrap, settings.calibrate
    options = EvalOptions(out, classes, n_bootstrap=n_bootstrap, seed=int(ckpt["config"]["seed"]),
                          figures=settings.figures,
                          calibrate=calibrate, title=f"external: {database_name(external_dir)}",
                          info={"model": str(run.model), "model_sha": file_sha(run.model),
                                "run": os.path.realpath(run.folder), "data_dir": str(external_dir),
                                "database": database_name(external_dir), "trained_on": ckpt["data"]["name"],
                                "label_set": ckpt["label_set"]["name"]},
                          key=_external_key(run, ckpt, external_dir, n_bootstrap, calibrate), thresholds=thresholds,
                          tuned_on=f"{ckpt['data']['name']}'s validation records")
    if not force and out.current(options.key, "external evaluation of this very model"):
        return out.read()["metrics"], out.folder, False
    check_writable(out.folder, "pass --results-dir DIR with a writable DIR")
    part = load_labels(external_dir)
    trained_on = set(ckpt["split"]["train"]) | set(ckpt["split"]["val"])
    shared = [pid for pid in part["patient_id"] if pid in trained_on]
    if shared:  # the same records under another folder would not be an external test
        print(f"warning: {len(shared)} of the {len(part)} records of {external_dir} have the ids of records this "
              f"model was trained or validated on (e.g. {shared[0]}); if they are the same ECGs this is not an "
              f"external test", file=sys.stderr)
    scorer = RunScorer(model, ckpt, device, external_dir, part, val_scores=own.val_scores if calibrate else None,
                       batch_size=settings.batch_size, num_workers=settings.num_workers)
    table = evaluate(scorer.score(), options)
    print(f"external validation on {external_dir}: all {len(part)} labelled records; thresholds tuned on "
          f"{ckpt['data']['name']}'s validation records")
    return table, out.folder, True
