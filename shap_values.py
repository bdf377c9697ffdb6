"""Explain a trained model with SHAP (expected gradients), per patient and per population.

    python shap_values.py --run data/CPSC/runs/resnet34_all_42 --use-gpu
    python shap_values.py --run data/CPSC/runs/resnet34_all_42 --record data/new/A9999.hea

`shap.GradientExplainer` with --background records drawn from the training folds explains
--n-explain held-out records from the test fold (never training records), keeping only the SHAP values
of each record's top-scoring class (ranked outputs: ~9x cheaper than all nine). Values are cached as
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
from utils import (PipelineError, SignalCache, file_sha, fingerprint, get_label_set, output_names, outputs_current,
                   positive_int, read_records, save_figure, script_main, write_csv, write_manifest, write_npy)
from utils.presets import parse_with_preset


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=run_argument, required=True, help="the run folder written by main.py (or its model.pth)")
    p.add_argument("--data-dir", type=Path, default=None, help="preprocess output (default: the checkpoint's)")
    p.add_argument("--background", type=positive_int, default=100, help="background records from the training folds")
    p.add_argument("--n-explain", type=positive_int, default=200, help="test-fold records to explain")
    p.add_argument("--nsamples", type=positive_int, default=None,
                   help="expected-gradient samples per record (default 200 on GPU, 32 on CPU)")
    p.add_argument("--batch-size", type=positive_int, default=50, help="gradient evaluations per batch")
    p.add_argument("--top-leads", type=positive_int, default=3, help="leads drawn per patient figure")
    p.add_argument("--record", type=Path, nargs="+", default=None, help="explain these new records instead")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--use-gpu", action="store_true")
    return parse_with_preset(p, argv, "shap")


def background_rows(train_ds: ECGDataset, n: int, seed: int) -> np.ndarray:
    """A seeded, sorted random choice of `n` training records (all of them when there are fewer)."""
    return np.sort(np.random.default_rng(seed).choice(len(train_ds), min(n, len(train_ds)), replace=False))


def stack_inputs(dataset: ECGDataset, rows: np.ndarray) -> torch.Tensor:
    return torch.stack([dataset[int(i)][0] for i in rows])


def explain(model: torch.nn.Module, background: torch.Tensor, x: torch.Tensor, nsamples: int, batch_size: int,
            seed: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """SHAP values (n, leads, samples) of each record's top-scoring class, and that class index."""
    import shap

    explainer = shap.GradientExplainer(model, background.to(device), batch_size=batch_size)
    values, classes = [], []
    for i in tqdm(range(len(x)), desc="shap", unit="rec", file=sys.stdout):
        v, idx = explainer.shap_values(x[i:i + 1].to(device), nsamples=nsamples, ranked_outputs=1,
                                       output_rank_order="max", rseed=seed + i)
        v = np.asarray(v[0] if isinstance(v, list) else v)  # shap < 0.45: list per rank; >= 0.45: (n, ..., rank)
        values.append(v[0, ..., 0] if v.ndim == 4 else v[0])
        classes.append(int(np.asarray(idx.cpu() if torch.is_tensor(idx) else idx).ravel()[0]))
    return np.stack(values).astype(np.float32), np.array(classes)


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
                       seed=args.seed, leads=list(spec.leads))
        for pattern in ("values_*.npy", "index_*.csv", "settings_*.json"):  # another model's or settings' cache
            for old in store.glob(pattern):                                    # is replaced, not kept
                if key not in old.name:
                    old.unlink()
    predicted = np.array([classes.index(c) for c in index["predicted"]])
    table = lead_importance(values, predicted, list(spec.leads), classes)
    write_csv(table.reset_index(names="class"), out / "lead_importance.csv")
    plot_heatmap(table, out / "lead_importance.png")
    labels = predicted_labels(probs, decision_thresholds(args.run, classes), classes)
    for i, row in tqdm(index.iterrows(), total=len(index), desc="figures", file=sys.stdout, leave=False):
        title = patient_title(row["patient_id"], row["predicted"], row["score"], labels[i], row["true"])
        plot_patient(x[i].numpy(), values[i], list(spec.leads), spec.sample_rate, title, args.top_leads,
                     out / "patients" / f"{row['patient_id']}.png")
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
    for i, ((path, _, _), name) in enumerate(zip(records, output_names([p for p, _, _ in records]))):
        r = table.loc[i]
        plot_patient(x[i].numpy(), values[i], list(spec.leads), spec.sample_rate,
                     patient_title(path.stem, r["predicted"], r["score"], r["labels"], r["true"]), args.top_leads,
                     out / f"{name}.png")
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
    if args.record:
        return run_records(args, model, ckpt, spec, device, nsamples)
    return run_population(args, model, ckpt, spec, device, nsamples)


if __name__ == "__main__":
    main()
