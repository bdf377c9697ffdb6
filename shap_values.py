"""Explain a trained model with SHAP (expected gradients), per patient and per population.

    python shap_values.py --run data/CPSC/runs/resnet34_all_42 --use-gpu
    python shap_values.py --run data/CPSC/runs/resnet34_all_42 --record data/new/A9999.hea

Expected gradients, the estimator of `shap.GradientExplainer` (the same samples, the same values: see
explain()), with --background records drawn from the training folds, explains --n-explain held-out
records from the test fold (never training records), keeping only the SHAP values of each record's
top-scoring class (ranked outputs: ~9x cheaper than all nine). It runs on the device in passes of
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
with high SHAP highlighted), and the population view: per predicted class, each lead's share of the
net positive SHAP mass, as a class x lead heatmap with an average row (PNG + CSV), the paper's
lead-importance figure.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from models.checkpoint import load_checkpoint
from models.evaluation import results_folder
from models.inputs import ECGDataset, InputSpec, checkpoint_splits, diagnose, pick_device
from models.run import Run, load_thresholds, run_argument
from utils import (PipelineError, SignalCache, exclusive_lock, file_sha, fingerprint, get_label_set, output_names, outputs_current,
                   parallel_map, read_records, save_figure, script_main, write_csv, write_manifest,
                   write_npy)
from utils.io import MAX_WORKERS, bounded_int, folder_path, seed_int
from utils.presets import parse_with_preset

# Gradient evaluations per pass. CPU: per-sample cost is flat from 32 up (ResNet10, 12 x 1,000, one core:
# 10.4 ms at 8, 9.2 at 16, 8.6 at 32 and 64, 8.2 at 128), and a larger pass only costs memory (the paper's
# ResNet34 keeps ~100 MB per sample for the backward pass). GPU: 128 x ~100 MB ~ 13 GB of activations,
# room to spare on a 24 GB card and far from an H200's 139 GB (see explain()).
CPU_BATCH, GPU_BATCH = 32, 128


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=run_argument, required=True, help="the run folder written by main.py (or its model.pth)")
    p.add_argument("--data-dir", type=folder_path, default=None, help="preprocess output (default: the checkpoint's)")
    p.add_argument("--background", type=bounded_int(1, 10_000), default=100,
                   help="background records from the training folds, %(type)s")
    p.add_argument("--n-explain", type=bounded_int(1, 100_000), default=200, help="test-fold records to explain, %(type)s")
    p.add_argument("--n-samples", "--nsamples", dest="nsamples", type=bounded_int(1, 10_000), default=None,
                   help="expected-gradient samples per record (default 200 on GPU, 32 on CPU), %(type)s")
    p.add_argument("--batch-size", type=bounded_int(1, 65_536), default=None,
                   help="gradient evaluations per forward/backward pass, taken across records "
                        f"(default {GPU_BATCH} on GPU, {CPU_BATCH} on CPU; see explain() for the memory), %(type)s")
    p.add_argument("--top-leads", type=bounded_int(1, 12), default=3,
                   help="leads drawn per patient figure, %(type)s")
    p.add_argument("--num-workers", type=bounded_int(1, MAX_WORKERS), default=min(8, os.cpu_count() or 1),
                   help="processes drawing the patient figures, %(type)s")
    p.add_argument("--record", type=Path, nargs="+", default=None, help="explain these new records instead")
    p.add_argument("--results-dir", type=folder_path, default=Path("results"))
    p.add_argument("--seed", type=seed_int, default=0, help="draws of background records and references, %(type)s")
    p.add_argument("--use-gpu", action="store_true")
    return parse_with_preset(p, argv, "shap")


def background_rows(train_ds: ECGDataset, n: int, seed: int) -> np.ndarray:
    """A seeded, sorted random choice of `n` training records (all of them when there are fewer)."""
    return np.sort(np.random.default_rng(seed).choice(len(train_ds), min(n, len(train_ds)), replace=False))


def stack_inputs(dataset: ECGDataset, rows: np.ndarray) -> torch.Tensor:
    return torch.stack([dataset[int(i)][0] for i in rows])


def reference_draws(n_background: int, nsamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One record's expected-gradient samples: (background row, interpolation point t) for each, drawn
    exactly as shap's GradientExplainer draws them for a single record with rseed=seed (np.random.choice,
    then np.random.uniform, in turn), so our values are shap's for that record. A record gets its own
    stream: shap seeds once per call, so a record's draws there depend on the records explained with it."""
    rng = np.random.RandomState(seed)
    rows, t = np.empty(nsamples, np.int64), np.empty(nsamples)
    for k in range(nsamples):
        rows[k] = rng.choice(n_background)
        t[k] = rng.uniform()
    return rows, t


@torch.no_grad()
def top_classes(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    """Each record's highest-scoring output, scored alone (a batch of one) and ranked by torch.sort as
    shap's ranked_outputs=1 does, so the class explained never depends on the records scored with it."""
    return np.array([int(torch.sort(model(x[i:i + 1].to(device)), descending=True)[1][0, 0]) for i in range(len(x))])


def explain(model: torch.nn.Module, background: torch.Tensor, x: torch.Tensor, nsamples: int, batch_size: int,
            seed: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """SHAP values (n, leads, samples) of each record's top-scoring class, and that class index.

    Expected gradients, the estimator of shap's GradientExplainer(...).shap_values(x[i:i+1], nsamples,
    ranked_outputs=1, rseed=seed + i), computed on the device for many records at once. shap explains one
    record per pass (its batches never mix records) and does the bookkeeping on the host: a device-to-host
    copy per sample, float64 products and variances in numpy on one core (1.5-2.2 s per record at nsamples
    200 on this project's 2-core Xeon with a model of no cost, i.e. most of the old ~160 s GPU run).
    Here the n x nsamples gradient evaluations form one stream, record after record, evaluated `batch_size`
    at a time: a pass mixes records, so every pass is full; products and sums stay on the device.

    Reproducible by construction: record i's samples come from RandomState(seed + i) alone (reference_draws),
    every pass has the same shape (the last one is padded), and a record's products are summed in float64
    in sample order, as numpy's mean does. A record's values therefore never depend on which records are
    explained with it, or where pass boundaries fall: explain(x)[i] == explain(x[i:i+1], seed=seed + i)[0]
    bit for bit, and equal to shap's own values when shap's passes have the same shape (batch_size a
    divisor of nsamples). Only `batch_size` can move a value, by float rounding (another conv algorithm).

    Device memory, paper setting (ResNet34, 12 leads x 15,000 samples, float32): the backward pass keeps
    ~100 MB of activations per sample (measured with saved_tensors_hooks), so a pass of 128 holds ~13 GB,
    plus per sample 4 float32 copies (own, reference, input, gradient: 4 x 0.72 MB) and 3 float64 ones
    (gradient, difference, product: 3 x 1.44 MB), ~7 MB x 128 = 0.9 GB; the inputs, background and values
    are (2 n + background) x 0.72 MB (0.4 GB for 200 records and 100 background records). What shap built
    per record, nsamples x 12 x 15,000 floats twice (200 x 180,000 x 8 B = 288 MB of float64 on the host,
    and as much again copied there from the device), is never built."""
    n, shape = len(x), tuple(x.shape[1:])
    classes = top_classes(model, x, device)
    draws = [reference_draws(len(background), nsamples, seed + i) for i in range(n)]
    rows = np.concatenate([r for r, _ in draws])
    w_own = np.concatenate([t for _, t in draws]).astype(np.float32)        # shap: t * x + (1 - t) * reference,
    w_ref = (1 - np.concatenate([t for _, t in draws])).astype(np.float32)  # python floats cast to float32
    record = np.repeat(np.arange(n), nsamples)
    x_dev, bg_dev = x.to(device), background.to(device)
    target = torch.as_tensor(classes, device=device)
    total_sum = torch.zeros(shape, dtype=torch.float64, device=device)
    values = torch.empty((n, *shape), device=device)  # copied to the host once: no synchronisation per record
    with tqdm(total=n, desc="shap", unit="rec", file=sys.stdout) as bar:
        for start in range(0, n * nsamples, batch_size):
            part = slice(start, min(start + batch_size, n * nsamples))
            size = part.stop - part.start
            rec = torch.as_tensor(record[part], device=device)
            own, ref = x_dev[rec], bg_dev[torch.as_tensor(rows[part], device=device)]
            weights = [torch.as_tensor(w[part], device=device)[:, None, None] for w in (w_own, w_ref)]
            inputs = torch.zeros((batch_size, *shape), device=device)  # padded: every pass has the same shape
            inputs[:size] = weights[0] * own + weights[1] * ref
            inputs.requires_grad_()
            try:
                selected = model(inputs)[torch.arange(size, device=device), target[rec]]
                grad = torch.autograd.grad(selected.sum(), inputs)[0][:size]
            except torch.cuda.OutOfMemoryError:
                raise PipelineError(f"out of GPU memory in a pass of --batch-size {batch_size} gradient evaluations "
                                    f"of {shape[0]} x {shape[1]} inputs; give a smaller --batch-size") from None
            products = grad.double() * (own - ref).double()  # exact: float32 x float32 fits a float64
            for j, k in enumerate(range(part.start, part.stop)):
                total_sum += products[j]  # in sample order, whatever the pass boundaries
                if (k + 1) % nsamples == 0:
                    values[record[k]] = (total_sum / nsamples).float()
                    total_sum.zero_()
                    bar.update()
    return values.cpu().numpy(), classes


def predicted_labels(probs: np.ndarray, thresholds: np.ndarray, classes: list[str]) -> list[str]:
    """Per record, the classes whose probability exceeds their threshold ("-" for none)."""
    return [",".join(c for c, p, t in zip(classes, row, thresholds) if p > t) or "-" for row in probs]


def decision_thresholds(run: Run, classes: list[str]) -> np.ndarray:
    """predict.py's tuned thresholds, or 0.5 (said once) when it has not run yet."""
    thresholds = load_thresholds(run, classes, required=False)
    if thresholds is None:
        print(f"note: no tuned thresholds in {run} (run predict.py); titles use 0.5")
        return np.full(len(classes), 0.5)
    return thresholds


def patient_title(pid: str, explained: str, score: float, predicted: str, true: str) -> str:
    return f"{pid}: SHAP for {explained} (p = {score:.2f}); predicted {predicted}; true {true or '-'}"


@torch.no_grad()
def probabilities(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    return torch.sigmoid(torch.cat([model(b.to(device)).float().cpu() for b in x.split(64)])).numpy()


def lead_importance(values: np.ndarray, predicted: np.ndarray, leads: list[str], classes: list[str]) -> pd.DataFrame:
    """Per predicted class, each lead's share of the net positive SHAP (evidence for that class):
    SHAP summed over samples and records per lead (as the original), negative lead totals clipped to 0,
    normalised to sum to 1. Classes never predicted are left out; the last row averages the others."""
    rows = {}
    for k, cls in enumerate(classes):
        members = predicted == k
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
    ax.set_title("share of SHAP evidence per lead, by predicted class")
    fig.colorbar(im, ax=ax, fraction=0.03)
    save_figure(fig, path)


def plot_patient(x: np.ndarray, values: np.ndarray, leads: list[str], fs: int, title: str, top: int,
                 path: Path) -> None:
    """The last 10 s of the `top` leads with the highest mean SHAP; samples in the top 2 % of the
    record's positive SHAP values are marked in red."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(x.shape[1], 10 * fs)
    x, values = x[:, -n:], values[:, -n:]
    order = np.argsort(values.mean(axis=1))[::-1][:top]
    positive = values[values > 0]
    cut = np.percentile(positive, 98) if positive.size else np.inf
    t = np.arange(n) / fs
    fig, axes = plt.subplots(len(order), 1, figsize=(12, 1.8 * len(order)), sharex=True, squeeze=False)
    for ax, lead in zip(axes[:, 0], order):
        ax.plot(t, x[lead], color="k", lw=0.8)
        hot = values[lead] >= cut
        ax.scatter(t[hot], x[lead][hot], color="red", s=6, zorder=3)
        ax.set_ylabel(f"{leads[lead]} (mV)")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s), last 10 s of the model input")
    axes[0, 0].set_title(title, fontsize=10)
    save_figure(fig, path)


def _draw_patient(task: tuple) -> None:
    plot_patient(*task)


def draw_patients(x: np.ndarray, values: np.ndarray, titles: list[str], paths: list[Path], leads: list[str], fs: int,
                  top: int, workers: int) -> None:
    """plot_patient for each record, over `workers` processes: a figure is ~0.2 s of one core (38 s of
    the paper's 200). Each task carries only the last 10 s plot_patient draws, so little is pickled; a
    figure does not depend on the process that draws it (the same PNG bytes, tested)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  imported here once, inherited by the forked workers (~1 s each otherwise)

    n = min(x.shape[-1], 10 * fs)
    tasks = [(x[i, :, -n:], values[i, :, -n:], leads, fs, titles[i], top, paths[i]) for i in range(len(paths))]
    parallel_map(_draw_patient, tasks, workers, "figures", chunksize=2, serial_up_to=4)  # ~0.25 s a figure


def run_population(args, model, ckpt, spec: InputSpec, device, nsamples: int) -> pd.DataFrame:
    data_dir = args.data_dir or Path(ckpt["config"]["data_dir"])
    classes = ckpt["label_set"]["classes"]
    cache = SignalCache(data_dir)
    splits = checkpoint_splits(ckpt, data_dir)
    train_ds = ECGDataset(cache, splits["train"], spec, classes)
    test_ds = ECGDataset(cache, splits["test"], spec, classes)
    bg_rows = background_rows(train_ds, args.background, args.seed)
    ex_rows = np.arange(min(args.n_explain, len(test_ds)))
    if len(ex_rows) == 0:
        raise PipelineError(f"the test fold of {data_dir} is empty")
    ids = [test_ds.ids[i] for i in ex_rows]
    background_ids = [train_ds.ids[i] for i in bg_rows]
    key = fingerprint([file_sha(args.run.model), str(data_dir), background_ids, ids, nsamples, args.seed])
    store = args.run.shap_dir
    out = results_folder(args.results_dir, ckpt, args.run) / "shap"
    values_path, index_path = store / f"values_{key}.npy", store / f"index_{key}.csv"
    x = stack_inputs(test_ds, ex_rows)
    probs = probabilities(model, x, device)
    settings_path = store / f"settings_{key}.json"
    if outputs_current(settings_path, key):
        print(f"reusing cached SHAP values {values_path}")
        values = np.load(values_path)
        index = pd.read_csv(index_path, dtype={"patient_id": str}, keep_default_na=False)
    else:
        background = stack_inputs(train_ds, bg_rows)
        values, top = explain(model, background, x, nsamples, args.batch_size, args.seed, device)
        index = pd.DataFrame({"patient_id": ids, "predicted": [classes[k] for k in top],
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
    predicted = np.array([classes.index(c) for c in index["predicted"]])
    table = lead_importance(values, predicted, list(spec.leads), classes)
    write_csv(table.reset_index(names="class"), out / "lead_importance.csv")
    plot_heatmap(table, out / "lead_importance.png")
    labels = predicted_labels(probs, decision_thresholds(args.run, classes), classes)
    titles = [patient_title(row["patient_id"], row["predicted"], row["score"], labels[i], row["true"])
              for i, row in index.iterrows()]
    draw_patients(x.numpy(), values, titles, [out / "patients" / f"{pid}.png" for pid in index["patient_id"]],
                  list(spec.leads), spec.sample_rate, args.top_leads, args.num_workers)
    write_manifest(out / "shap.json", key, [out / "lead_importance.csv", out / "lead_importance.png"],
                   model_sha=file_sha(args.run.model), cache=str(settings_path))  # what the report checks
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {values_path}, {index_path}, {out}/lead_importance.csv/.png, {len(index)} patient figures")
    return table


def run_records(args, model, ckpt, spec: InputSpec, device, nsamples: int) -> pd.DataFrame:
    """Explain new records against a background from the checkpoint's training records."""
    data_dir = args.data_dir or Path(ckpt["config"]["data_dir"])
    classes = ckpt["label_set"]["classes"]
    label_set = get_label_set(ckpt["label_set"]["name"])  # true labels from a record's SNOMED-CT codes, if it can
    splits = checkpoint_splits(ckpt, data_dir)
    train_ds = ECGDataset(SignalCache(data_dir), splits["train"], spec, classes)
    background = stack_inputs(train_ds, background_rows(train_ds, args.background, args.seed))
    records = read_records(args.record)
    x = torch.stack([torch.from_numpy(spec.from_signal(mv)) for _, _, mv in records])
    thresholds = decision_thresholds(args.run, classes)
    diagnosed = [diagnose(model, spec, thresholds, mv, classes) for _, _, mv in records]  # what predict.py says
    probs = np.stack([p for p, _ in diagnosed])
    values, top = explain(model, background, x, nsamples, args.batch_size, args.seed, device)
    out = results_folder(args.results_dir, ckpt, args.run) / "shap" / "records"
    true = [",".join(c for c, v in zip(classes, label_set.from_snomed(hdr.dx)) if v) for _, hdr, _ in records]
    table = pd.DataFrame({"record": [str(path) for path, _, _ in records], "predicted": [classes[k] for k in top],
                          "score": probs[np.arange(len(top)), top],
                          "labels": [",".join(labels) or "-" for _, labels in diagnosed], "true": true})
    titles = [patient_title(path.stem, r["predicted"], r["score"], r["labels"], r["true"])
              for (path, _, _), (_, r) in zip(records, table.iterrows())]
    draw_patients(x.numpy(), values, titles, [out / f"{name}.png" for name in output_names([p for p, _, _ in records])],
                  list(spec.leads), spec.sample_rate, args.top_leads, args.num_workers)
    print(table.to_string(index=False))
    print(f"wrote {len(records)} figure(s) to {out}")
    return table


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    device = pick_device(args.use_gpu)
    model, ckpt = load_checkpoint(args.run.model, map_location=device)
    model.to(device).eval()
    spec = InputSpec.from_checkpoint(ckpt)
    nsamples = args.nsamples or (200 if device.type == "cuda" else 32)
    args.batch_size = args.batch_size or (GPU_BATCH if device.type == "cuda" else CPU_BATCH)
    if args.record:
        return run_records(args, model, ckpt, spec, device, nsamples)
    with exclusive_lock(args.run.lock, f"run {args.run}"):  # the SHAP cache is the run's: one writer
        return run_population(args, model, ckpt, spec, device, nsamples)


if __name__ == "__main__":
    main()
