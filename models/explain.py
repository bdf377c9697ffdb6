"""Expected-gradients SHAP values for any registered architecture, computed on the device in full passes.

Expected gradients is the estimator of `shap.GradientExplainer`: for a record x, a background record r
drawn at random and a point t drawn uniformly in [0, 1], one sample is the gradient of the explained
output at r + t (x - r), times (x - r); the SHAP value is the mean over `nsamples` samples. Only the
record's top-scoring class is explained (ranked outputs: ~9x cheaper than all nine classes). The draws
follow shap's own for one record, so the values are shap's (tests/test_shap.py compares them), but the
products and sums stay on the device and a pass mixes records, so every pass is full.

A network holding recurrent layers is differentiated with them in training mode (cuDNN computes an RNN's
backward pass only there) and their dropout off; every other layer stays as the caller left it (eval:
dropout off, batch norm on its running statistics), so the function differentiated is the one scored.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from utils.errors import PipelineError

__all__ = ["CPU_BATCH", "GPU_BATCH", "reference_draws", "top_classes", "recurrent_gradients", "explain"]

# Gradient evaluations per pass. CPU: per-sample cost is flat from 32 up (ResNet10, 12 x 1,000, one core:
# 10.4 ms at 8, 9.2 at 16, 8.6 at 32 and 64, 8.2 at 128), and a larger pass only costs memory (the paper's
# ResNet34 keeps ~100 MB per sample for the backward pass). GPU: 128 x ~100 MB ~ 13 GB of activations,
# room to spare on a 24 GB card and far from an H200's 139 GB (see explain()).
CPU_BATCH, GPU_BATCH = 32, 128


def reference_draws(n_background: int, nsamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One record's expected-gradient samples: (background row, interpolation point t) for each, drawn
    exactly as shap's GradientExplainer draws them for a single record with rseed=seed (np.random.choice,
    then np.random.uniform, in turn), so the values are shap's for that record. A record gets its own
    stream: shap seeds once per call, so a record's draws there depend on the records explained with it."""
    rng = np.random.RandomState(seed)
    rows, t = np.empty(nsamples, np.int64), np.empty(nsamples)
    for k in range(nsamples):
        rows[k] = rng.choice(n_background)
        t[k] = rng.uniform()
    return rows, t


@torch.no_grad()
def top_classes(model: nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    """Each record's highest-scoring output, scored alone (a batch of one) and ranked by torch.sort as
    shap's ranked_outputs=1 does, so the class explained never depends on the records scored with it."""
    return np.array([int(torch.sort(model(x[i:i + 1].to(device)), descending=True)[1][0, 0]) for i in range(len(x))])


@contextmanager
def recurrent_gradients(model: nn.Module) -> Iterator[nn.Module]:
    """`model` with its recurrent layers (nn.RNNBase: RNN, LSTM, GRU) in training mode and their dropout
    set to 0 for the block, restored afterwards. cuDNN refuses the backward pass of an RNN in eval mode;
    in training mode with dropout 0 an RNN computes exactly what it computes in eval mode, and the
    other layers keep their own mode, so gradients are those of the model as it scores."""
    saved = [(m, m.training, m.dropout) for m in model.modules() if isinstance(m, nn.RNNBase)]
    try:
        for m, _, _ in saved:
            m.dropout = 0.0
            m.train()
        yield model
    finally:
        for m, training, dropout in saved:
            m.dropout = dropout
            m.train(training)


def _pass_gradients(model: nn.Module, points: torch.Tensor, target: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Gradients of each point's target score, in one pass padded to `batch_size` rows so that every
    pass has the same shape (and so the same conv algorithm and rounding)."""
    size, shape = len(points), tuple(points.shape[1:])
    inputs = torch.zeros((batch_size, *shape), device=points.device)
    inputs[:size] = points
    inputs.requires_grad_()
    try:
        selected = model(inputs)[torch.arange(size, device=points.device), target]
        return torch.autograd.grad(selected.sum(), inputs)[0][:size]
    except torch.cuda.OutOfMemoryError:
        raise PipelineError(f"out of GPU memory in a pass of --batch-size {batch_size} gradient evaluations "
                            f"of {shape[0]} x {shape[1]} inputs; give a smaller --batch-size") from None


def explain(model: nn.Module, background: torch.Tensor, x: torch.Tensor, nsamples: int, batch_size: int,
            seed: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """SHAP values (n, leads, samples) of each record's top-scoring class, and that class index.

    The values of shap's GradientExplainer(...).shap_values(x[i:i+1], nsamples, ranked_outputs=1,
    rseed=seed + i), computed on the device for many records at once. shap explains one record per pass
    (its batches never mix records) and does the bookkeeping on the host: a device-to-host copy per
    sample, float64 products and variances in numpy on one core (1.5-2.2 s per record at nsamples 200 on
    a 2-core Xeon with a model of no cost, most of a ~160 s GPU run of the paper's setting). Here the
    n x nsamples gradient evaluations form one stream, record after record, evaluated `batch_size` at a
    time: a pass mixes records, so every pass is full; products and sums stay on the device.

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
    are (2 n + background) x 0.72 MB (0.4 GB for 200 records and 100 background records). What shap builds
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
    with tqdm(total=n, desc="shap", unit="rec", file=sys.stdout) as bar, recurrent_gradients(model):
        for start in range(0, n * nsamples, batch_size):
            part = slice(start, min(start + batch_size, n * nsamples))
            rec = torch.as_tensor(record[part], device=device)
            own, ref = x_dev[rec], bg_dev[torch.as_tensor(rows[part], device=device)]
            weights = [torch.as_tensor(w[part], device=device)[:, None, None] for w in (w_own, w_ref)]
            grad = _pass_gradients(model, weights[0] * own + weights[1] * ref, target[rec], batch_size)
            products = grad.double() * (own - ref).double()  # exact: float32 x float32 fits a float64
            for j, k in enumerate(range(part.start, part.stop)):
                total_sum += products[j]  # in sample order, whatever the pass boundaries
                if (k + 1) % nsamples == 0:
                    values[record[k]] = (total_sum / nsamples).float()
                    total_sum.zero_()
                    bar.update()
    return values.cpu().numpy(), classes
