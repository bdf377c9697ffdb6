"""The PTB-XL benchmark (Strodthoff et al., IEEE JBHI 2021): its tasks x architectures, its protocol, scored
the benchmark's way, beside the published leaderboard.

    python benchmark.py --data-dir data/PTBXL --preset ptbxl                  # 6 tasks x 7 architectures, GPU
    python benchmark.py --data-dir data/PTBXL --tasks superdiagnostic --models xresnet1d101,lstm --jobs 2
    python benchmark.py --data-dir data/CPSC --tasks cpsc9 --preset ptbxl      # the ICBEB2018 experiment
    python benchmark.py --data-dir data/PTBXL --preset ptbxl --seeds 0,1,2     # each run once per seed

The default mode takes the database as downloaded (PTB-XL's own layout; for cpsc9 any layout
preprocess.py reads), prepares each label task into <data-dir>/tasks/<db>_<task>/ (the first task decodes
the records once, at --sample-rate; the others share its signal cache), trains every architecture on every
task, once per training seed (--seeds, default --seed; runs in <task folder>/runs/<model>_<leads>_<seed>/,
reused when finished with the same settings), evaluates each on its test fold with thresholds from its
validation fold (results/<db>_<task>/<run>/, as predict.py), and writes results/<db>/benchmark/: table.csv
(one row per task, model and seed, plus an ensemble row per task and seed: the mean of that seed's models'
test scores), summary.csv (per task and model: the mean and sd of its seeds' AUCs, the interval of the
mean), compare.csv (every pair of models of a task: the difference of their seed-mean AUCs on the same
resamples of the same test records, its 90 % interval, called when it excludes 0, and whether the call
holds over the task's pairs by Holm's step-down at 10 %), table.md beside the
published values, auc.png (docs/benchmark_seeds.md). Architectures that the benchmark trains otherwise
(the LSTMs: lr 0.001, gradient clipping 0.25) get their registry entry's settings unless the flag is given.
cpsc9 (ICBEB2018) runs as the reference runs it: whole records, the
benchmark's folds (preprocess.py --folds benchmark), F_beta/G_beta thresholds tuned on the training
records' scores (--thresholds-from); table.csv's `setup` says "as published" or what differs, and a cpsc9
row is set beside the published values only when run as published (docs/benchmark-reference.md).

    python benchmark.py score --scores results/PTBXL/paper/test_scores.csv --out te_results.csv
    python benchmark.py score --labels y_test.npy --scores y_test_pred.npy --bootstrap-ids test_ids.npy --out te.csv
    python benchmark.py score --scores test_scores.csv --val-scores val_scores.csv --out te_results.csv

`score` scores anyone's predictions: labels and scores as .npy arrays (records x classes) or one of this
project's score CSVs (patient_id, a 0/1 column per class, p_<class>; it holds both). Scores are
probabilities in [0, 1]; .npy logits take --logits (thresholds are then compared as logit(threshold),
which gives the F_beta/G_beta of their sigmoid). Macro AUC over every
class on all records (point) and over 100 bootstrap resamples (a resample lacking a positive of any class is
drawn again): their mean and 5th / 95th percentiles. --bootstrap-ids takes the resamples themselves (an
integer array, resamples x records, such as the benchmark's test_bootstrap_ids saved as .npy), so that a
published interval is reproduced exactly. With --val-scores (thresholds tuned per class for G_beta=2 on
those records, never on the scored ones) or --thresholds, also F_beta=2 and G_beta=2 as the benchmark
reports them for ICBEB2018. --out is written in the benchmark's te_results.csv layout (rows point, mean,
lower, upper; columns macro_auc, F_beta_macro, G_beta_macro).

    python benchmark.py compare --table results/PTBXL/benchmark/table.csv --out compare.csv --n-bootstrap 1000

`compare` recomputes compare.csv (and its markdown, .md beside it) from the score files a table.csv names.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import pandas as pd

from models.checkpoint import peek_checkpoint
from models.registry import count_parameters, create_model, list_models
from models.studies import run_all
from models.training import RunConfig, architecture_settings, check_run_args, refuse_finetune_flags
from utils.ptbxl import (benchmark_table, bootstrap_indices, probability_logits, read_bootstrap_ids, read_predictions,
                         read_threshold_array, say_undefined_resamples, score_predictions, scored_classes,
                         tuned_gbeta_thresholds, write_te_results)
from utils.cache import data_label_set, database_name
from utils.cli import (bounded_int, file_path, flag_error, flag_given, folder_path, seed_int, seed_list,
                       usable_cpus)
from utils.comparison import (BENCHMARK_OUTPUTS, COMPARE_COLUMNS, TABLE_CSV, seed_comparison,
                              write_benchmark_outputs, write_comparison)
from utils.errors import MissingInputError, PipelineError, script_main
from utils.files import check_writable, same_file
from utils.labels import LABEL_SETS
from utils.metrics import THRESHOLD_GRID
from utils.presets import BENCHMARK_MODELS, BENCHMARK_PROTOCOL, BENCHMARK_TASKS, PROTOCOLS, parse_with_preset
from utils.launch import add_launcher_arguments, launcher_from_args
from utils.defaults import DEFAULT_PTBXL_DIR, DEFAULT_RESULTS_DIR
from utils.ptbxl import AS_PUBLISHED, ICBEB_TASK, OTHER_DATA, PUBLISHED_RECORDS
from utils.cache import load_labels, preprocess_manifest
from utils.labels import LEADS
from utils.layouts import PTBXL_DATABASE, detect_layout
from utils.preprocessed import PreprocessRequest, derive_label_task, preprocess
from utils.results import SYNTHETIC_MARKER, EvaluationFolder, results_home

MODES = ("run", "score", "compare")  # run: the default, without a mode word
N_BOOTSTRAP = 100  # the benchmark's number of resamples


def score_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="benchmark.py score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scores", type=Path, required=True,
                   help="scores: .npy (records x classes, a class per column in the order of --labels: an array "
                        "names none) or a score CSV")
    p.add_argument("--labels", type=Path, help="0/1 labels: .npy or a score CSV (default: the --scores CSV)")
    p.add_argument("--bootstrap-ids", type=Path, help="resamples x records integer indices (.npy) to use as they are")
    p.add_argument("--n-bootstrap", type=bounded_int(1, 100_000), help=f"resamples to draw (default {N_BOOTSTRAP}), %(type)s")
    p.add_argument("--seed", type=seed_int, help="seed of the resamples (default 0), %(type)s")
    p.add_argument("--val-scores", type=Path, help="validation scores to tune G_beta thresholds on (.npy or score CSV)")
    p.add_argument("--val-labels", type=Path, help="validation labels (default: the --val-scores CSV)")
    p.add_argument("--thresholds", type=Path, help="per-class thresholds (.npy vector) for F_beta and G_beta")
    p.add_argument("--logits", action="store_true",
                   help="the .npy scores are logits: thresholds are compared with them on the logit scale, as "
                        "with their sigmoid (by default .npy scores must be probabilities in [0, 1])")
    p.add_argument("--out", type=file_path, required=True, metavar="FILE",
                   help="results file in the te_results.csv layout")
    return p


SCORE_INPUTS = ("scores", "labels", "bootstrap_ids", "val_scores", "val_labels", "thresholds")


def check_score_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Argument errors (exit 2, naming the flag) before any file is read."""
    for flag in ("scores", "labels", "val_scores", "val_labels"):
        path = getattr(args, flag)
        if path is not None and path.suffix not in (".npy", ".csv"):
            p.error(f"--{flag.replace('_', '-')}: {path} is neither a .npy array nor a score .csv")
    for flag in ("bootstrap_ids", "thresholds"):
        path = getattr(args, flag)
        if path is not None and path.suffix != ".npy":
            p.error(f"--{flag.replace('_', '-')}: {path} is not a .npy array")
    if args.scores.suffix == ".npy" and args.labels is None:
        p.error("--labels: required when --scores is a .npy array (it holds no labels)")
    if args.bootstrap_ids is not None and (args.n_bootstrap is not None or args.seed is not None):
        p.error(f"--{'n-bootstrap' if args.n_bootstrap is not None else 'seed'}: the resamples are the ones "
                "--bootstrap-ids gives")
    if args.thresholds is not None and args.val_scores is not None:
        p.error("--thresholds: give thresholds or --val-scores to tune them on, not both")
    if args.val_labels is not None and args.val_scores is None:
        p.error("--val-labels: give --val-scores too")
    if args.val_scores is not None and args.val_scores.suffix == ".npy" and args.val_labels is None:
        p.error("--val-labels: required when --val-scores is a .npy array")
    if same_file(args.val_scores, args.scores):
        p.error("--val-scores: thresholds tuned on the scored records would flatter F_beta and G_beta; "
                "give other records' scores (validation)")
    if args.logits:
        csv = [f for f in ("scores", "val_scores") if getattr(args, f) is not None and getattr(args, f).suffix == ".csv"]
        if csv:
            p.error(f"--logits: --{csv[0].replace('_', '-')} is a score CSV, whose scores are probabilities; "
                    "--logits is for .npy logits")
    if args.out.is_dir():
        p.error(f"--out: {args.out} is a folder; name the results file, e.g. {args.out / 'te_results.csv'}")
    for flag in SCORE_INPUTS:
        path = getattr(args, flag)
        if path is not None and same_file(path, args.out):
            p.error(f"--out: {args.out} is the --{flag.replace('_', '-')} file, which it would overwrite; "
                    "name another results file")
    if args.out.suffix != ".csv":  # the results are a CSV table: any other name could be an array it replaces
        p.error(f"--out: {args.out} is not a .csv file; name the results table, e.g. te_results.csv")
    args.n_bootstrap = N_BOOTSTRAP if args.n_bootstrap is None else args.n_bootstrap
    args.seed = 0 if args.seed is None else args.seed
    return args


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="benchmark.py compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, required=True, metavar="FILE",
                   help="a benchmark's table.csv (task, model, seed and the score file of each run)")
    p.add_argument("--n-bootstrap", type=bounded_int(1, 100_000), default=N_BOOTSTRAP,
                   help="resamples of the test records (and of the seeds), %(type)s")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the resamples, %(type)s")
    p.add_argument("--out", type=file_path, required=True, metavar="FILE",
                   help="the comparison as CSV (compare.csv's layout), its markdown beside it as .md")
    return p


def check_compare_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Argument errors (exit 2, naming the flag) before anything is written: --out (or the markdown beside
    it) must be a new file, not the table, not an output of a benchmark folder (its outputs would be left
    out of step), nor a score file the table names."""
    for flag in ("table", "out"):
        if getattr(args, flag).suffix != ".csv":
            p.error(f"--{flag}: {getattr(args, flag)} is not a .csv file")
    scores = _table_score_files(args.table)
    for out in (args.out, args.out.with_suffix(".md")):  # the markdown beside it too, before either is written
        if out.is_dir():
            p.error(f"--out: {out} is a folder; name the comparison's file, e.g. {args.out.parent / 'compare.csv'} "
                    f"(its markdown goes beside it as .md)")
        if same_file(out, args.table):
            p.error(f"--out: {out} is the --table itself")
        own = benchmark_folder_output(out, args.table)
        if own is not None:
            p.error(f"--out: {out} is {own}, an output of a benchmark folder, whose files agree with each other; "
                    f"name a file elsewhere")
        named = next((path for path in scores if same_file(out, path)), None)
        if named is not None:
            p.error(f"--out: {out} would replace {named}, a score file the table names; name another file")
    markdown = args.out.with_suffix(".md")
    if markdown.exists() and not _earlier_comparison(args.out):
        p.error(f"--out: {markdown} exists and is not the markdown of an earlier comparison ({args.out} beside it "
                f"is not one); name another --out, or move that file")
    return args


def _earlier_comparison(csv: Path) -> bool:
    """Whether `csv` is a comparison this command wrote (compare.csv's leading columns, as every version
    wrote them): its markdown beside it may be replaced; a file of that name that is not (a user's notes)
    is never overwritten."""
    try:
        columns = list(pd.read_csv(csv, nrows=0).columns)
    except (OSError, ValueError, pd.errors.ParserError):
        return False
    return columns[:3] == [c.key for c in COMPARE_COLUMNS[:3]] and {"diff", "diff_lo", "diff_hi"} <= set(columns)


def benchmark_folder_output(out: Path, table: Path) -> Path | None:
    """The output of a benchmark folder (a folder holding table.csv) that `out` names, through any link:
    one of the folder `out` is in, or (a hard link elsewhere) of the folder of the table, followed through
    links; None otherwise (a table copied elsewhere under another name has no such folder around it)."""
    real = Path(os.path.realpath(out))
    if real.name in BENCHMARK_OUTPUTS and (real.parent / TABLE_CSV).exists():
        return real
    folder = Path(os.path.realpath(table)).parent
    if not (folder / TABLE_CSV).exists():
        return None
    return next((folder / name for name in BENCHMARK_OUTPUTS if same_file(out, folder / name)), None)


def _table_score_files(table: Path) -> list[str]:
    """The score files a benchmark table names, as far as it can be read (compare reports what cannot)."""
    try:
        return [str(s) for s in pd.read_csv(table, usecols=["scores"])["scores"].dropna()]
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError):
        return []


def run_parser() -> argparse.ArgumentParser:
    """The training flags of main.py (as overrides of the protocol), plus what the benchmark spans."""
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                conflict_handler="resolve")
    RunConfig.add_arguments(p)
    p.add_argument("--data-dir", type=folder_path, default=DEFAULT_PTBXL_DIR,
                   help="the database as downloaded (PTB-XL's layout, or any layout for --tasks cpsc9)")
    p.add_argument("--arch", help=argparse.SUPPRESS)  # the architectures are --models
    p.add_argument("--tasks", type=task_list, default=task_list(BENCHMARK_TASKS),
                   help=f"comma list of label tasks (default: {BENCHMARK_TASKS}; cpsc9 for CPSC2018)")
    p.add_argument("--models", type=model_list, default=None,
                   help=f"comma list of registered architectures (default: {BENCHMARK_MODELS})")
    p.add_argument("--tasks-dir", type=folder_path, default=None,
                   help="where the task folders go (default <data-dir>/tasks)")
    p.add_argument("--results-dir", type=folder_path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--n-bootstrap", type=bounded_int(1, 100_000), default=N_BOOTSTRAP,
                   help=f"bootstrap resamples of the test records, %(type)s (the benchmark: {N_BOOTSTRAP})")
    p.add_argument("--seeds", type=seed_list, default=None,
                   help="training seeds: each task and model is trained once per seed, and table.md says which "
                        "differences hold over seeds and test records (default: --seed, one run), %(type)s")
    p.add_argument("--thresholds-from", choices=("train", "val"), default="train",
                   help="cpsc9: tune the F_beta / G_beta thresholds on the training records' scores (the "
                        "reference's way, the default) or on the validation records'")
    p.add_argument("--force", action="store_true", help="prepare, retrain and re-evaluate everything")
    return add_launcher_arguments(p)


def distinct_names(what: str, known: Callable[[], Iterable[str]]) -> Callable[[str], list[str]]:
    """argparse type: a comma list of known names (`known()`, read when parsing), each once."""
    def parse(text: str) -> list[str]:
        names, valid = [t.strip() for t in str(text).split(",") if t.strip()], sorted(known())
        unknown = [t for t in names if t not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {what}(s) {unknown or [text]}; known: {', '.join(valid)}")
        twice = [t for i, t in enumerate(names) if t in names[:i]]
        if twice:
            raise argparse.ArgumentTypeError(f"{what} {twice[0]} is given twice in {text!r}")
        return names
    parse.__name__ = f"a comma list of {what}s"
    return parse


task_list = distinct_names("task", lambda: LABEL_SETS)              # --tasks
model_list = distinct_names("architecture", list_models)             # --models


def parse_args(argv=None) -> argparse.Namespace:
    """`score` or `compare` and its flags, or (no mode word) the benchmark run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["score"]:
        p = score_parser()
        args = check_score_args(p, p.parse_args(argv[1:]))
        args.mode = "score"
        return args
    if argv[:1] == ["compare"]:
        p = compare_parser()
        args = check_compare_args(p, p.parse_args(argv[1:]))
        args.mode = "compare"
        return args
    p = run_parser()
    # the benchmark's protocol without a preset too; a preset or a flag overrides it
    p.set_defaults(protocol=BENCHMARK_PROTOCOL, **PROTOCOLS[BENCHMARK_PROTOCOL])
    args = parse_with_preset(p, argv, "benchmark")
    if "cpsc9" in args.tasks and len(args.tasks) > 1:
        flag_error(p, "--tasks", "cpsc9 is the CPSC2018 (ICBEB2018) experiment: run it on a CPSC2018 folder, "
                                 "apart from the PTB-XL tasks")
    if "cpsc9" in args.tasks and flag_given(p, argv, "--seconds"):
        flag_error(p, "--seconds", f"{args.seconds:g} is not read for cpsc9: its records are cropped and scored "
                                   "whole, as the reference's ICBEB2018 experiment does")
    if args.init_from is not None:
        flag_error(p, "--init-from", "the benchmark trains every architecture from scratch; finetune one run with "
                                     "main.py --init-from, or compare both with transfer.py")
    refuse_finetune_flags(p, args, argv, "the benchmark trains every architecture from scratch (finetune one run "
                                         "with main.py --init-from)")
    if args.arch is not None:  # main.py's flag, hidden here: given, it would be silently replaced
        flag_error(p, "--arch", f"the benchmark trains the architectures of --models (e.g. --models {args.arch})")
    try:
        args.models = args.models or model_list(BENCHMARK_MODELS)
    except argparse.ArgumentTypeError as e:  # a default architecture unavailable (its file broken, its name taken)
        flag_error(p, "--models", f"the default {BENCHMARK_MODELS}: {e}")
    if args.seeds is not None and flag_given(p, argv, "--seed"):
        flag_error(p, "--seeds", "give --seed N (one run per task and model) or --seeds LIST, not both")
    args.seeds = args.seeds or [args.seed]
    args.arch = args.models[0]
    check_run_args(p, args, argv)  # every architecture of --models
    args.launch = launcher_from_args(p, args, argv)
    args.given = {a.dest for a in p._actions if a.option_strings and flag_given(p, argv, a.option_strings[0])}
    # each architecture's own settings under the protocol (checked now, before any work), unless the flag is given
    args.own = {m: {k: v for k, v in architecture_settings(m, args.protocol).items() if k not in args.given}
                for m in args.models}
    args.mode = "run"
    return args


def prepare_tasks(args: argparse.Namespace) -> dict[str, Path]:
    """Each task's preprocess folder: the first decoded from the records (what preprocess.py does, said as
    its command line), the others sharing its signal cache. PTB-XL's widest task `all` is decoded first,
    since every other PTB-XL task labels a subset of its records."""
    db = database_name(args.data_dir)
    root = args.tasks_dir or Path(args.data_dir) / "tasks"
    folders = {task: root / f"{db}_{task}" for task in args.tasks}
    ptbxl = [t for t in args.tasks if t != ICBEB_TASK]
    base_task = "all" if ptbxl else ICBEB_TASK
    base = root / f"{db}_{base_task}"
    request = PreprocessRequest(Path(args.data_dir), base, base_task, args.sample_rate,
                                num_workers=usable_cpus(), force=args.force)
    command = [str(Path(__file__).resolve().parent / "preprocess.py"), "--data-dir", str(args.data_dir), "--out",
               str(base), "--labels", base_task, "--cache-rate", str(args.sample_rate)]
    if base_task == ICBEB_TASK:
        if detect_layout(Path(args.data_dir)).name == "ptbxl":
            raise PipelineError(f"--tasks cpsc9 is the ICBEB2018 (CPSC2018) experiment; {args.data_dir} holds "
                                f"PTB-XL, whose fold-10 numbers are not comparable with ICBEB2018's: give a "
                                f"CPSC2018 folder")
        request = dataclasses.replace(request, folds="benchmark")  # the reference's folds: labels + sex + age
        command += ["--folds", "benchmark"]                          # bands, train 1-8 / 9 / 10
    else:
        layout = detect_layout(Path(args.data_dir)).name
        if layout != "ptbxl":  # the PTB-XL tasks are statements of ptbxl_database.csv's scp_codes
            above = next((d for d in Path(args.data_dir).resolve().parents if (d / PTBXL_DATABASE).exists()), None)
            hint = (f"; it lies inside PTB-XL's folder {above}: give that folder" if above is not None
                    else " (a CPSC2018 folder takes --tasks cpsc9)")
            raise PipelineError(f"--tasks {','.join(ptbxl)}: PTB-XL's label tasks need PTB-XL as downloaded "
                                f"(ptbxl_database.csv, scp_statements.csv); {args.data_dir} holds records of the "
                                f"{layout} layout{hint}")
    if args.force:
        command.append("--force")
    print(f"preparing {base_task} ({' '.join(command)})", flush=True)
    try:
        preprocess(request)
    except PipelineError as e:
        raise PipelineError(f"preprocessing {args.data_dir} into {base} failed: {e}") from None
    for task in ptbxl:
        if task != base_task:
            derive_label_task(base, folders[task], task, data_dir=args.data_dir, force=args.force,
                              sample_rate=args.sample_rate)
    return folders


class BenchmarkRun(NamedTuple):
    """One run of the benchmark: a task, an architecture, a training seed and its configuration."""
    task: str
    model: str
    seed: int
    cfg: RunConfig


def run_configs(args: argparse.Namespace, folders: dict[str, Path]) -> Iterator[BenchmarkRun]:
    """Every run of the benchmark, by task, model and seed: the protocol, the architecture's own settings
    under it (unless the flag is given), the flags given. Each is an ordinary run folder,
    <task folder>/runs/<model>_<leads>_<seed>: the seed is part of its name and of its identity."""
    for task, folder in folders.items():
        # the reference crops and scores ICBEB2018's records of 6-60 s whole; PTB-XL's are all 10 s
        whole = args.whole_records or task == ICBEB_TASK
        for model in args.models:
            flags = argparse.Namespace(**{**vars(args), **args.own[model]})
            for seed in args.seeds:
                cfg = RunConfig.from_args(flags, arch=model, seed=seed, data_dir=folder, force=args.force,
                                          resume=False, whole_records=whole)
                yield BenchmarkRun(task, model, seed, dataclasses.replace(cfg, run_dir=str(folder / "runs" /
                                                                                          cfg.run_name())))


def benchmark(args: argparse.Namespace) -> pd.DataFrame:
    """Prepare, train and evaluate every (task, model), then the table beside the published values."""
    if not Path(args.data_dir).is_dir():
        raise MissingInputError(f"{args.data_dir} not found; fetch PTB-XL with `python get_data.py ptbxl --out "
                                f"{args.data_dir}` (add --rate 100 for its 100 Hz records only)")
    out = results_home(args.results_dir, args.data_dir) / "benchmark"
    check_writable(out, "pass --results-dir DIR with a writable DIR")
    folders = prepare_tasks(args)
    runs = list(run_configs(args, folders))
    print(f"benchmark: {len(args.tasks)} task(s) x {len(args.models)} architecture(s) x {len(args.seeds)} seed(s) "
          f"= {len(runs)} runs", flush=True)
    from_train = ICBEB_TASK in args.tasks and args.thresholds_from == "train"
    evaluated = run_all([run.cfg for run in runs], args.results_dir, args.n_bootstrap, args.launch,
                        train_scores=from_train)
    n_classes = {task: len(data_label_set(folder)["classes"]) for task, folder in folders.items()}
    rows = []
    for run, folder in zip(runs, evaluated):
        results = EvaluationFolder(folder)
        tuned = args.thresholds_from if run.task == ICBEB_TASK else "val"
        network = create_model(run.model, len(run.cfg.leads), n_classes[run.task], **dict(run.cfg.arch_args))
        rows.append({"task": run.task, "model": run.model, "seed": run.seed, "scores": results.test_scores,
                     "val_scores": results.train_scores if tuned == "train" else results.val_scores,
                     "thresholds_from": tuned, "setup": reference_setup(run.task, run.model, run.cfg, folders[run.task],
                                                                        tuned, args.data_dir),
                     "params": count_parameters(network)})
    table = benchmark_table(rows, out, n_bootstrap=args.n_bootstrap, seed=0)
    dropped = runs_left_out(out / TABLE_CSV, table)
    written = write_benchmark_outputs(table, out, args.n_bootstrap, seed=0)
    if dropped:
        print(f"note: {out / TABLE_CSV} held {len(dropped)} run(s) this command does not cover (e.g. "
              f"{dropped[0]}); the tables now hold this command's runs only (rerun with every task, model and "
              "seed to table them together)")
    shown = table[["task", "model", "seed", "params", "records", "auc", "auc_lo", "auc_hi", "published_auc"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {', '.join(str(p) for p in written)}")
    return table


def runs_left_out(previous: Path, table: pd.DataFrame) -> list[str]:
    """The runs (task, model, seed) of an earlier table.csv that `table` has no row for: each benchmark
    command tables its own runs, so a narrower rerun (fewer models, other seeds) replaces a wider table."""
    try:
        old = pd.read_csv(previous, usecols=["task", "model", "seed"], dtype={"task": str, "model": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return []

    def keys(rows: pd.DataFrame) -> list[tuple[str, str, str]]:
        seeds = pd.to_numeric(rows["seed"], errors="coerce")
        return [(str(t), str(m), "-" if pd.isna(s) else str(int(s)))
                for t, m, s in zip(rows["task"], rows["model"], seeds)]

    now = set(keys(table))
    return [f"{t}/{m}/seed {s}" for t, m, s in keys(old) if (t, m, s) not in now]


# the settings of a run that are not the protocol's to decide: which network, seed and data it is (the data
# are checked apart, by `data_differences`), and whether its kernels are deterministic
NOT_PROTOCOL = ("arch", "seed", "deterministic", "label_set", "data_fingerprint", "test_fold")


def reference_setup(task: str, model: str, cfg: RunConfig, folder: Path, thresholds_from: str,
                    data_dir: Path | None = None) -> str:
    """How the run of `cfg` differs from the reference's run of `model` on `task` (its settings as the
    checkpoint records them, the data of `folder`, prepared from the records in `data_dir`, folds and
    thresholds), or AS_PUBLISHED."""
    saved = RunConfig.from_checkpoint(peek_checkpoint(cfg.run.last)).to_dict()
    differs = settings_differences(task, model, saved) + data_differences(task, folder, data_dir)
    if task == ICBEB_TASK and thresholds_from != "train":
        differs.append("thresholds tuned on the validation records (published: the training records)")
    return "; ".join(differs) or AS_PUBLISHED


def protocol_expected(task: str, model: str) -> dict:
    """Every identity setting of a run (but NOT_PROTOCOL) as the reference's run of `model` on `task` has it."""
    want = {**PROTOCOLS[BENCHMARK_PROTOCOL], **architecture_settings(model, BENCHMARK_PROTOCOL)}
    expected = {"sample_rate": want["sample_rate"], "crop_seconds": want["crop_seconds"],
                "standardize": want["standardize"], "augment": not want["no_augment"], "optimizer": want["optimizer"],
                "beta2": want["beta2"], "weight_decay": want["weight_decay"], "schedule": want["schedule"],
                "lr": want["lr"], "clip_grad": want.get("clip_grad"), "batch_size": want["batch_size"],
                "processes": 1, "epochs": want["epochs"], "keep": want["keep"], "drop_last": want["drop_last"],
                "precision": "fp32", "leads": list(LEADS), "limit": None, "arch_args": {}, "source": None,
                "restandardize": False, "freeze_epochs": 0, "discriminative_lrs": False, "train_fraction": 1.0}
    # the ICBEB2018 experiment crops and scores whole records; PTB-XL's records are all 10 s
    expected.update({"whole_records": True} if task == ICBEB_TASK else {"seconds": want["seconds"],
                                                                           "whole_records": False})
    return expected


def settings_differences(task: str, model: str, saved: dict) -> list[str]:
    """'setting mine (published: theirs)' for each setting of a run's checkpointed config (`saved`) that is
    not the reference's."""
    return [f"{k} {saved.get(k)} (published: {v})" for k, v in protocol_expected(task, model).items()
            if not _same(saved.get(k), v)]


def data_differences(task: str, folder: Path, data_dir: Path | None = None) -> list[str]:
    """How the preprocessed task `folder` differs from the data of the published results: synthetic
    records, another record count than the whole database (a partial download, --limit at download), records
    left unread, and for ICBEB2018 other records or folds than CPSC2018's and the benchmark's. The records'
    folder is `data_dir`, or as the manifest names it (relative to where it was preprocessed from)."""
    manifest = preprocess_manifest(folder)
    database = "CPSC2018" if task == ICBEB_TASK else "PTB-XL"
    differs = []
    source = data_dir or manifest.get("data_dir")
    if source and (Path(source) / SYNTHETIC_MARKER).exists():
        differs.append(f"{OTHER_DATA}synthetic ({source} was written by synth.py), not {database}")
    found, whole = manifest.get("found"), PUBLISHED_RECORDS[database]
    if found not in whole:
        differs.append(f"{OTHER_DATA}{found} records found (published: the whole {database}, "
                       f"{' or '.join(f'{n:,}' for n in whole)} records)")
    unread = len(manifest.get("errors") or [])
    if unread:
        differs.append(f"{OTHER_DATA}{unread} record(s) could not be read")
    if task == ICBEB_TASK:
        if manifest.get("folds") != "benchmark":
            differs.append("folds: not the benchmark's procedure")
        ids = load_labels(folder)["patient_id"].astype(str)
        if manifest.get("layout") not in ("cpsc2018", "wfdb") or not ids.str.fullmatch(r"A\d{4}").all():
            differs.append(f"{OTHER_DATA}not CPSC2018 (layout {manifest.get('layout')}, records such as "
                           f"{ids.iloc[0]}; CPSC2018's are A0001-A6877)")
    return differs


def _same(mine, published) -> bool:
    if isinstance(published, (list, tuple)) or isinstance(mine, (list, tuple)):
        return list(mine or []) == list(published or [])
    if isinstance(published, float) or isinstance(mine, float):
        return mine is not None and published is not None and float(mine) == float(published)
    return mine == published


def classes_source(scores: Path, labels: Path | None) -> Path:
    """The file whose class columns `read_predictions` took: a score CSV's own, else the labels' (a CSV
    names its classes; two arrays only count them)."""
    return scores if Path(scores).suffix == ".csv" or labels is None else labels


def score(args: argparse.Namespace) -> pd.DataFrame:
    """te_results.csv for one model's predictions."""
    check_writable(args.out.parent)
    test = read_predictions(args.scores, args.labels, args.logits)
    n_classes = test.y.shape[1]
    keep = scored_classes(str(args.labels or args.scores), test.y, test.classes, str(args.labels or args.scores))
    every, test = test, _columns(test, keep)  # as the benchmark table scores a task: each class with an AUC
    if args.bootstrap_ids is not None:
        indices = read_bootstrap_ids(args.bootstrap_ids, test.y)
    else:
        indices = bootstrap_indices(test.y, args.n_bootstrap, args.seed, str(args.labels or args.scores))
    thresholds = None
    if args.thresholds is not None:
        thresholds = read_threshold_array(args.thresholds, n_classes)[keep]
        if args.logits:  # probabilities; compared with the logits as logit(threshold)
            thresholds = probability_logits(thresholds)
    elif args.val_scores is not None:
        val = read_predictions(args.val_scores, args.val_labels, args.logits)
        if val.classes and every.classes and val.classes != every.classes \
                and sorted(val.classes) == sorted(every.classes):
            val = _columns(val, [val.classes.index(c) for c in every.classes])  # the same classes in another order
        if val.y.shape[1] != n_classes or (val.classes and every.classes and val.classes != every.classes):
            raise PipelineError(f"{classes_source(args.val_scores, args.val_labels)} has classes "
                                f"{val.classes or val.y.shape[1]}, {classes_source(args.scores, args.labels)} has "
                                f"{every.classes or n_classes}")
        val = _columns(val, keep)
        shared = set(val.ids or ()) & set(test.ids or ())
        if shared:
            raise PipelineError(f"{args.val_scores} shares {len(shared)} record(s) with {args.scores} (e.g. "
                                f"{sorted(shared)[0]}); thresholds must be tuned on other records")
        grid = probability_logits(THRESHOLD_GRID) if args.logits else THRESHOLD_GRID  # the same thresholds
        thresholds = tuned_gbeta_thresholds(val.y, val.p, str(args.val_labels or args.val_scores), val.classes or None,
                                            grid=grid)
    say_undefined_resamples(test.y, indices, str(args.labels or args.scores), test.classes or None)
    results = score_predictions(test.y, test.p, indices, thresholds, source=str(args.labels or args.scores))
    write_te_results(results, args.out)
    print(results.to_string(float_format=lambda v: f"{v:.4f}"))
    scored = f"{len(keep)} of {n_classes}" if len(keep) < n_classes else f"{n_classes}"
    print(f"{test.y.shape[0]} records, {scored} classes scored, {len(indices)} resamples; wrote {args.out}")
    return results


def _columns(predictions, columns: Sequence[int]):
    """`predictions` (utils.ptbxl.Predictions) of the classes at `columns`, in that order."""
    classes = [predictions.classes[j] for j in columns] if predictions.classes else predictions.classes
    return dataclasses.replace(predictions, y=predictions.y[:, columns], p=predictions.p[:, columns], classes=classes)


def compare(args: argparse.Namespace) -> pd.DataFrame:
    """compare.csv and its markdown from a benchmark table's score files."""
    check_writable(args.out.parent)
    if not args.table.exists():
        raise MissingInputError(f"{args.table} not found (benchmark.py writes results/<db>/benchmark/table.csv)")
    try:
        table = pd.read_csv(args.table, dtype={"task": str, "model": str})  # a model named 007 is no number
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise PipelineError(f"{args.table} is not a readable benchmark table ({type(e).__name__})") from None
    if "seed" in table:
        seeds = pd.to_numeric(table["seed"], errors="coerce")
        bad = table["seed"][(seeds.isna() & table["seed"].notna()) | (seeds.notna() & (seeds % 1 != 0))]
        if len(bad):
            raise PipelineError(f"{args.table}: seed {str(bad.iloc[0])!r} is not a whole number (a training seed)")
        table["seed"] = seeds.astype("Int64")
    missing = [c for c in ("task", "model", "scores") if c not in table]
    if missing or not len(table):
        raise PipelineError(f"{args.table} is no benchmark table: " +
                            (f"it lacks the column(s) {', '.join(missing)}" if missing else "it has no row"))
    for column in ("task", "model", "scores"):  # a cell left empty would drop its row or name no file
        empty = table[column].isna() | (table[column].astype(str).str.strip() == "")
        if empty.any():
            raise PipelineError(f"{args.table}: line {int(empty.to_numpy().argmax()) + 2} has no {column}; every "
                                f"run needs its task, model and score file")
    comparison = seed_comparison(table, args.n_bootstrap, args.seed)
    written = write_comparison(comparison, args.out)
    shown = comparison.pairs[["task", "model_a", "model_b", "diff", "diff_lo", "diff_hi", "a_better", "better"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    print(f"{len(comparison.pairs)} pairs, {args.n_bootstrap} resamples; wrote {', '.join(str(p) for p in written)}")
    return comparison.pairs


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    return {"score": score, "compare": compare, "run": benchmark}[args.mode](args)


if __name__ == "__main__":
    main()
