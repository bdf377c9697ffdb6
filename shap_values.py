"""Explain a trained model with SHAP (expected gradients), per patient and per population.

    python shap_values.py --run data/CPSC/runs/resnet34_all_42 --use-gpu
    python shap_values.py --run data/CPSC/runs/resnet34_all_42 --record data/new/A9999.hea

Expected gradients (models/explain.py: the estimator of `shap.GradientExplainer`, the same samples and
values), with --background records drawn from the training folds, explains --n-explain held-out
records from the test fold (never training records), keeping only the SHAP values of each record's
top-scoring class (ranked outputs: ~9x cheaper than all nine). Figure titles name the labels predicted
with the thresholds predict.py tunes, so, like predict.py, it stops (naming the command to run) when the
run has none for its current model.pth. It runs on the device in passes of
--batch-size gradient evaluations taken across records, each record seeded on its own, so a value never
depends on the records explained with it; the patient figures are drawn by --num-workers processes.
The paper's run (200 records x 200 samples, ResNet34 on 12 x 15,000: 24 GMAC forward and backward per
sample) is ~2 PFLOP of convolutions, 10-20 s at the TF32 rates an H200 reaches (an estimate); shap's own
loop spent most of its ~160 s there on host-side bookkeeping per record. Values are cached as
plain .npy with a CSV index in the run folder's shap/, keyed by a hash of the checkpoint's contents
and the settings, so a changed model or setting never reuses stale values (and a replaced cache is
deleted); the cache belongs to its run alone. The index names the background records used (all from
the run's training split). Figures and tables go to results/<db>/<run>/shap/.

Figures: one PNG per explained record (the last 10 s of the leads with the highest mean SHAP, samples
with high SHAP highlighted; none with --no-figures), and the population view: per explained class (each
record's top-scoring class, whose SHAP values are the ones kept: it may lie below its threshold, and the
patient titles say which labels are predicted), each lead's share of the net positive SHAP mass, as a
class x lead heatmap with an average row (PNG + CSV), the paper's lead-importance figure.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.checkpoint import load_checkpoint
from models.scoring import results_folder
from models.explain import CPU_BATCH, GPU_BATCH, explain
from models.inputs import ECGDataset, InputSpec, checkpoint_splits, diagnose, pick_device, record_doubts
from models.run import load_thresholds, run_argument
from utils.cache import SignalCache
from utils.errors import PipelineError, script_main
from utils.files import fingerprint, output_names, save_figure, write_csv, write_npy
from utils.locks import exclusive_lock
from utils.manifest import file_sha, outputs_current, write_manifest
from utils.parallel import parallel_map
from utils.labels import get_label_set
from utils.records import read_records
from utils.cli import MAX_WORKERS, bounded_int, flag_error, flag_given, folder_path, seed_int, usable_cpus
from utils.presets import parse_with_preset
from utils.defaults import DEFAULT_RESULTS_DIR


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=run_argument, required=True, help="the run folder written by main.py (or its model.pth)")
    p.add_argument("--data-dir", type=folder_path, default=None, help="preprocess output (default: the checkpoint's)")
    p.add_argument("--background", type=bounded_int(1, 10_000), default=100,
                   help="background records from the training folds, %(type)s")
    p.add_argument("--n-explain", type=bounded_int(1, 100_000), default=200, help="test-fold records to explain, %(type)s")
    p.add_argument("--n-samples", dest="nsamples", type=bounded_int(1, 10_000), default=None,
                   help="expected-gradient samples per record (default 200 on GPU, 32 on CPU), %(type)s")
    p.add_argument("--batch-size", type=bounded_int(1, 65_536), default=None,
                   help="gradient evaluations per forward/backward pass, taken across records "
                        f"(default {GPU_BATCH} on GPU, {CPU_BATCH} on CPU; see models/explain.py for the memory), %(type)s")
    p.add_argument("--top-leads", type=bounded_int(1, 12), default=3,
                   help="leads drawn per patient figure, %(type)s")
    p.add_argument("--num-workers", type=bounded_int(0, MAX_WORKERS), default=min(8, usable_cpus()),
                   help="processes drawing the patient figures (0 or 1: this process), %(type)s")
    p.add_argument("--no-figures", action="store_true",
                   help="no figure per explained record (earlier ones of these records are removed); the "
                        "population's lead-importance heatmap, which the report shows, is still drawn")
    p.add_argument("--record", type=Path, nargs="+", default=None, help="explain these new records instead")
    p.add_argument("--results-dir", type=folder_path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--seed", type=seed_int, default=0, help="draws of background records and references, %(type)s")
    p.add_argument("--use-gpu", action="store_true")
    args = parse_with_preset(p, argv, "shap")
    for flag in ("--top-leads", "--num-workers"):  # both only shape the figures that --no-figures leaves out
        if args.no_figures and flag_given(p, argv, flag):
            flag_error(p, flag, "sets how the patient figures are drawn, and --no-figures draws none")
    return args


def background_rows(train_ds: ECGDataset, n: int, seed: int) -> np.ndarray:
    """A seeded, sorted random choice of `n` training records (all of them when there are fewer)."""
    return np.sort(np.random.default_rng(seed).choice(len(train_ds), min(n, len(train_ds)), replace=False))


def stack_inputs(dataset: ECGDataset, rows: np.ndarray) -> torch.Tensor:
    return torch.stack([dataset[int(i)][0] for i in rows])


def predicted_labels(probs: np.ndarray, thresholds: np.ndarray, classes: list[str]) -> list[str]:
    """Per record, the classes whose probability exceeds their threshold ("-" for none)."""
    return [",".join(c for c, p, t in zip(classes, row, thresholds) if p > t) or "-" for row in probs]


def patient_title(pid: str, explained: str, score: float, predicted: str, true: str) -> str:
    return f"{pid}: SHAP for {explained} (p = {score:.2f}); predicted {predicted}; true {true or '-'}"


# the cache's layout: its index names each record's explained (top-scoring) class in `explained`
SHAP_CACHE_FORMAT = 2


@torch.no_grad()
def probabilities(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    return torch.sigmoid(torch.cat([model(b.to(device)).float().cpu() for b in x.split(64)])).numpy()


def lead_importance(values: np.ndarray, explained: np.ndarray, leads: list[str], classes: list[str]) -> pd.DataFrame:
    """Per explained class (`explained[i]`: the class record i's SHAP values are for, its top-scoring one, as
    the original), each lead's share of the net positive SHAP (evidence for that class): SHAP summed over
    samples and records per lead (as the original), negative lead totals clipped to 0, normalised to sum
    to 1. Classes no record's top score names are left out; the last row averages the others."""
    rows = {}
    for k, cls in enumerate(classes):
        members = explained == k
        if members.any():
            per_lead = np.clip(values[members].sum(axis=(0, 2)), 0, None)
            rows[cls] = per_lead / per_lead.sum() if per_lead.sum() > 0 else np.full(len(leads), np.nan)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=leads)
    table.loc["average"] = table.mean(axis=0)
    return table


def plot_heatmap(table: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1 + 0.6 * table.shape[1], 0.9 + 0.45 * table.shape[0]))
    im = ax.imshow(table.to_numpy(float), cmap="Reds", aspect="auto", vmin=0)
    ax.set_xticks(range(table.shape[1]), table.columns)
    ax.set_yticks(range(table.shape[0]), table.index)
    for (i, j), v in np.ndenumerate(table.to_numpy(float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.axhline(table.shape[0] - 1.5, color="k", lw=0.8)
    ax.set_title("share of SHAP evidence per lead, by top-scoring class")
    fig.colorbar(im, ax=ax, fraction=0.03)
    save_figure(fig, path)


def plot_patient(x: np.ndarray, values: np.ndarray, leads: list[str], fs: int, title: str, top: int,
                 path: Path) -> None:
    """The last 10 s (all of a shorter input) of the `top` leads with the highest mean SHAP; samples in
    the top 2 % of the record's positive SHAP values are marked in red."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(x.shape[1], 10 * fs)
    x, values = x[:, -n:], values[:, -n:]
    order = np.argsort(values.mean(axis=1))[::-1][:top]
    positive = values[values > 0]
    cut = np.percentile(positive, 98) if positive.size else np.inf
    t = np.arange(n) / fs
    lines = textwrap.wrap(title, 100) or [""]
    height = 1.8 * len(order) + 0.17 * (len(lines) - 1)  # inches
    fig, axes = plt.subplots(len(order), 1, figsize=(12, height), sharex=True, squeeze=False)
    for ax, lead in zip(axes[:, 0], order):
        ax.plot(t, x[lead], color="k", lw=0.8)
        hot = values[lead] >= cut
        ax.scatter(t[hot], x[lead][hot], color="red", s=6, zorder=3)
        ax.text(0.004, 0.96, f"{leads[lead]} (mV)", transform=ax.transAxes, va="top", fontsize=9, zorder=1.5,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))  # under the trace and its marks
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))  # a tick label of at most ~7 characters
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(f"time (s), last {n / fs:g} s of the model input")
    axes[0, 0].set_title("\n".join(lines), fontsize=10)
    # fixed margins, in inches (a tight crop would draw the figure twice): the tick labels on the left (the
    # lead's name is inside its panel, so no width of theirs pushes it out), the time axis below, the
    # title above, wrapped so that one of any length fits
    fig.subplots_adjust(left=0.8 / 12, right=1 - 0.15 / 12, bottom=0.5 / height,
                        top=1 - (0.2 + 0.17 * len(lines)) / height)
    save_figure(fig, path, tight=False)


def _draw_patient(task: tuple) -> None:
    plot_patient(*task)


def draw_patients(x: np.ndarray, values: np.ndarray, titles: list[str], paths: list[Path], leads: list[str], fs: int,
                  top: int, workers: int) -> None:
    """plot_patient for each record, over `workers` processes: a figure is ~0.12 s of one core (24 s of
    the paper's 200). Each task carries only the last 10 s plot_patient draws, so little is pickled; a
    figure does not depend on the process that draws it (the same PNG bytes, tested)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  imported here once, inherited by the forked workers (~1 s each otherwise)

    n = min(x.shape[-1], 10 * fs)
    tasks = [(x[i, :, -n:], values[i, :, -n:], leads, fs, titles[i], top, paths[i]) for i in range(len(paths))]
    parallel_map(_draw_patient, tasks, workers, "figures", chunksize=2, serial_up_to=4)


def run_population(args, model, ckpt, spec: InputSpec, device, nsamples: int, thresholds: np.ndarray) -> pd.DataFrame:
    data_dir = args.data_dir or Path(ckpt["config"]["data_dir"])
    classes = ckpt["label_set"]["classes"]
    splits = checkpoint_splits(ckpt, data_dir)
    cache = SignalCache(data_dir)
    train_ds = ECGDataset(cache, splits["train"], spec, classes)
    test_ds = ECGDataset(cache, splits["test"], spec, classes)
    bg_rows = background_rows(train_ds, args.background, args.seed)
    ex_rows = np.arange(min(args.n_explain, len(test_ds)))
    if len(ex_rows) == 0:
        raise PipelineError(f"the test fold of {data_dir} is empty")
    ids = [test_ds.ids[i] for i in ex_rows]
    background_ids = [train_ds.ids[i] for i in bg_rows]
    key = fingerprint([SHAP_CACHE_FORMAT, file_sha(args.run.model), str(data_dir), background_ids, ids, nsamples,
                       args.seed])
    store = args.run.shap_dir
    out = results_folder(args.results_dir, ckpt, args.run) / "shap"
    values_path, index_path = store / f"values_{key}.npy", store / f"index_{key}.csv"
    x = stack_inputs(test_ds, ex_rows)
    probs = probabilities(model, x, device)
    settings_path = store / f"settings_{key}.json"
    reused = outputs_current(settings_path, key)
    if reused:
        print(f"reusing cached SHAP values {values_path}")
        values = np.load(values_path)
        index = pd.read_csv(index_path, dtype={"patient_id": str}, keep_default_na=False)
    else:
        background = stack_inputs(train_ds, bg_rows)
        values, top = explain(model, background, x, nsamples, args.batch_size, args.seed, device)
        index = pd.DataFrame({"patient_id": ids, "explained": [classes[k] for k in top],
                              "score": probs[np.arange(len(top)), top],
                              "true": [",".join(c for c, v in zip(classes, test_ds.y[i]) if v) for i in ex_rows]})
        write_npy(values, values_path)
        write_csv(index, index_path)
        write_manifest(settings_path, key, [values_path, index_path], model=str(args.run.model),
                       data_dir=str(data_dir), background_ids=background_ids, explained_ids=ids, nsamples=nsamples,
                       seed=args.seed, batch_size=args.batch_size, leads=list(spec.leads))
        for pattern in ("values_*.npy", "index_*.csv", "settings_*.json"):  # another model's or settings' cache
            for old in store.glob(pattern):                                    # is replaced, not kept
                if key not in old.name:
                    old.unlink()
    explained = np.array([classes.index(c) for c in index["explained"]])
    table = lead_importance(values, explained, list(spec.leads), classes)
    write_csv(table.reset_index(names="class"), out / "lead_importance.csv")
    plot_heatmap(table, out / "lead_importance.png")
    labels = predicted_labels(probs, thresholds, classes)
    titles = [patient_title(row["patient_id"], row["explained"], row["score"], labels[i], row["true"])
              for i, row in index.iterrows()]
    figures = [out / "patients" / f"{pid}.png" for pid in index["patient_id"]]
    keep = set() if args.no_figures else set(figures)
    for stale in (out / "patients").glob("*.png"):  # earlier runs' figures would describe other values
        if stale not in keep:
            stale.unlink()
    if not args.no_figures:
        draw_patients(x.numpy(), values, titles, figures, list(spec.leads), spec.sample_rate, args.top_leads,
                      args.num_workers)
    write_manifest(out / "shap.json", key, [out / "lead_importance.csv", out / "lead_importance.png"],
                   model_sha=file_sha(args.run.model), cache=str(settings_path))  # what the report checks
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    computed = "" if reused else f"{values_path}, {index_path}, "
    drawn = "" if args.no_figures else f", {len(index)} patient figures"
    print(f"wrote {computed}{out}/lead_importance.csv/.png{drawn}")
    return table


def run_records(args, model, ckpt, spec: InputSpec, device, nsamples: int, thresholds: np.ndarray) -> pd.DataFrame:
    """Explain new records against a background from the checkpoint's training records."""
    data_dir = args.data_dir or Path(ckpt["config"]["data_dir"])
    classes = ckpt["label_set"]["classes"]
    label_set = get_label_set(ckpt["label_set"]["name"])  # true labels from a record's SNOMED-CT codes, if it can
    splits = checkpoint_splits(ckpt, data_dir)
    train_ds = ECGDataset(SignalCache(data_dir), splits["train"], spec, classes)
    background = stack_inputs(train_ds, background_rows(train_ds, args.background, args.seed))
    records = read_records(args.record)
    for path, hdr, mv in records:  # as predict.py says them: explained all the same
        for doubt in record_doubts(hdr.sample_rate, mv, spec):
            print(f"warning: {path}: {doubt}", file=sys.stderr)
    x = torch.stack([torch.from_numpy(spec.from_signal(mv)) for _, _, mv in records])
    diagnosed = [diagnose(model, spec, thresholds, mv, classes) for _, _, mv in records]  # what predict.py says
    probs = np.stack([p for p, _ in diagnosed])
    values, top = explain(model, background, x, nsamples, args.batch_size, args.seed, device)
    out = results_folder(args.results_dir, ckpt, args.run) / "shap" / "records"
    true = [",".join(c for c, v in zip(classes, label_set.from_snomed(hdr.dx)) if v) for _, hdr, _ in records]
    table = pd.DataFrame({"record": [str(path) for path, _, _ in records], "explained": [classes[k] for k in top],
                          "score": probs[np.arange(len(top)), top],
                          "labels": [",".join(labels) or "-" for _, labels in diagnosed], "true": true})
    titles = [patient_title(path.stem, r["explained"], r["score"], r["labels"], r["true"])
              for (path, _, _), (_, r) in zip(records, table.iterrows())]
    figures = [out / f"{name}.png" for name in output_names([p for p, _, _ in records])]
    if args.no_figures:
        for stale in figures:  # an earlier figure of the same record would describe another explanation
            stale.unlink(missing_ok=True)
    else:
        draw_patients(x.numpy(), values, titles, figures, list(spec.leads), spec.sample_rate, args.top_leads,
                      args.num_workers)
    print(table.to_string(index=False))
    if not args.no_figures:
        print(f"wrote {len(records)} figure(s) to {out}")
    return table


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    device = pick_device(args.use_gpu)
    model, ckpt = load_checkpoint(args.run.model, map_location=device)
    model.to(device).eval()
    spec = InputSpec.from_checkpoint(ckpt)
    if spec.whole:
        raise PipelineError(f"{args.run} was trained on whole records of any length (--whole-records); SHAP "
                            f"explains inputs of one fixed length: explain a run trained on the last --seconds")
    thresholds = load_thresholds(args.run, ckpt["label_set"]["classes"])  # as predict.py: tuned first, never 0.5
    nsamples = args.nsamples or (200 if device.type == "cuda" else 32)
    args.batch_size = args.batch_size or (GPU_BATCH if device.type == "cuda" else CPU_BATCH)
    if args.record:
        return run_records(args, model, ckpt, spec, device, nsamples, thresholds)
    with exclusive_lock(args.run.lock, f"run {args.run}"):  # the SHAP cache is the run's: one writer
        return run_population(args, model, ckpt, spec, device, nsamples, thresholds)


if __name__ == "__main__":
    main()
