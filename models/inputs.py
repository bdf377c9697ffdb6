"""The torch side of the data: cached signals -> model inputs, augmentation, batched scoring.

Items are sliced from the memory-mapped preprocess cache (never decoded from WFDB), so loading a
batch costs milliseconds next to a training step; augmentation runs on whole batches on the model's
device.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from utils.cache import SignalCache, cache_rate, fit_length, load_labels
from utils.errors import PipelineError
from utils.files import fingerprint
from utils.labels import LEADS, lead_indices
from utils.records import SAMPLE_RATE, resample

INPUT_SECONDS = 30.0  # the paper's input: the last 30 s (15,000 samples at 500 Hz), zero-padded in front


@dataclass(frozen=True)
class InputSpec:
    """What the network sees: which leads, how many seconds (the last ones), at what rate."""
    leads: tuple[str, ...] = LEADS
    seconds: float = INPUT_SECONDS
    sample_rate: int = SAMPLE_RATE
    window_seconds: float | None = None   # trained on random crops of this length, scored over sliding windows
    whole: bool = False                   # each whole record (any length) rather than its last `seconds`

    LOW_RATE_HZ = 50    # below this a QRS complex (80-120 ms) spans fewer than 5 samples

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def window_samples(self) -> int | None:
        """The length the network itself sees (None: the whole input)."""
        return None if self.window_seconds is None else int(round(self.window_seconds * self.sample_rate))

    @property
    def stride_samples(self) -> int | None:
        """Scoring windows overlap by half (the PTB-XL benchmark: 2.5-s windows every 1.25 s)."""
        return None if self.window_samples is None else max(1, self.window_samples // 2)

    def check(self) -> list[str]:
        """ValueError for an input no network can use; warnings (returned) for a doubtful one. The
        shortest input a network can reduce is its own (its registry entry's `min_samples`)."""
        if self.n_samples < 1:
            raise ValueError(f"--seconds {self.seconds:g} at --sample-rate {self.sample_rate} Hz is no sample")
        if self.window_samples is not None:
            if self.window_samples < 1:
                raise ValueError(f"--crop-seconds {self.window_seconds:g} at --sample-rate {self.sample_rate} Hz is "
                                 f"no sample")
            if self.window_samples > self.n_samples and not self.whole:
                raise ValueError(f"--crop-seconds {self.window_seconds:g} is longer than the input "
                                 f"(--seconds {self.seconds:g})")
        if self.sample_rate < self.LOW_RATE_HZ:
            return [f"--sample-rate {self.sample_rate} Hz is below {self.LOW_RATE_HZ} Hz, where a QRS complex "
                    f"spans fewer than 5 samples"]
        return []

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "InputSpec":
        """The input a checkpoint was trained on (its leads, seconds and sample rate)."""
        cfg = ckpt["config"]
        window = cfg.get("crop_seconds")
        return cls(tuple(cfg["leads"]), float(cfg["seconds"]), int(cfg["sample_rate"]),
                   None if window is None else float(window), bool(cfg.get("whole_records")))

    def from_signal(self, mv: np.ndarray) -> np.ndarray:
        """A (12, n) mV record at SAMPLE_RATE -> model input (leads, n_samples; the whole record at the
        model's rate for a whole-record run), float32."""
        x = mv[lead_indices(self.leads)]
        return self.to_model_rate(x if self.whole else fit_length(x, int(round(self.seconds * SAMPLE_RATE))))

    def to_model_rate(self, x: np.ndarray, from_rate: float = SAMPLE_RATE) -> np.ndarray:
        """A window at `from_rate` (the cache's) -> the model's rate (anti-aliased polyphase), exactly
        n_samples long (a whole record: as long as it lasts)."""
        if self.sample_rate == from_rate:
            return x.astype(np.float32, copy=False)
        x = resample(x, from_rate, self.sample_rate)
        return (x if self.whole else fit_length(x, self.n_samples)).astype(np.float32)


def labels_fingerprint(part: pd.DataFrame, classes: Sequence[str]) -> str:
    """Changes when any record of `part` or any of its labels changes (folds do not count)."""
    return fingerprint([part["patient_id"].tolist(), part[list(classes)].to_numpy(int).tolist()])


def split_provenance(splits: dict[str, pd.DataFrame], classes: Sequence[str]) -> dict:
    """What a checkpoint keeps of its run's split: the record ids of each part (key `split`) and a
    fingerprint of their labels (key `split_labels`), so later stages evaluate exactly these records."""
    return {"split": {name: part["patient_id"].tolist() for name, part in splits.items()},
            "split_labels": {name: labels_fingerprint(part, classes) for name, part in splits.items()}}


def require_own_records(ckpt: dict) -> None:
    """A run imported without --data-dir has no split of its own: evaluating or explaining it is one line
    saying how to attach its records (before any data folder is looked for: it names none)."""
    if not any(ckpt["split"].values()):
        raise PipelineError("this run has no records of its own (a model imported without --data-dir); import it "
                            "again with `python -m models import ... --data-dir DATA` to evaluate it on DATA")


def checkpoint_splits(ckpt: dict, data_dir: Path) -> dict[str, pd.DataFrame]:
    """The train/val/test records a checkpoint's run used, as rows of `data_dir`'s labels.csv.

    Never a silently different split: a stored id missing from labels.csv, or a record whose labels
    changed since training, is an error; records added since (or left out by `limit`) are ignored and
    said so."""
    require_own_records(ckpt)
    labels = load_labels(data_dir)
    classes = ckpt["label_set"]["classes"]
    trained_from, now = ckpt.get("data", {}).get("cache_rate"), cache_rate(data_dir)
    if trained_from is not None and float(trained_from) != now:
        raise PipelineError(f"{data_dir} is now cached at {now:g} Hz; this run was trained from its cache at "
                            f"{float(trained_from):g} Hz (preprocessed again since with another --cache-rate): its "
                            f"inputs would not be the signals it learnt from; preprocess at --cache-rate "
                            f"{float(trained_from):g} to evaluate it, or retrain it")
    if [c for c in classes if c not in labels.columns]:
        raise PipelineError(f"{data_dir} holds other classes than this run's label set "
                            f"{ckpt['label_set']['name']} ({', '.join(classes)})")
    by_id = labels.set_index("patient_id", drop=False)
    splits = {}
    for name, ids in ckpt["split"].items():
        missing = [pid for pid in ids if pid not in by_id.index]
        if missing:
            raise PipelineError(f"{len(missing)} {name} record(s) of this run (e.g. {missing[0]}) are not in "
                                f"{data_dir}/labels.csv; evaluate on the preprocessed data the model was trained on")
        part = by_id.loc[ids].reset_index(drop=True)
        if labels_fingerprint(part, classes) != ckpt["split_labels"][name]:
            raise PipelineError(f"the labels of this run's {name} records in {data_dir}/labels.csv changed since "
                                f"training (preprocessed with other records or label settings?)")
        splits[name] = part
    extra = len(labels) - sum(len(part) for part in splits.values())
    if extra > 0 and not ckpt["config"].get("limit") and ckpt["config"].get("train_fraction", 1.0) >= 1:
        print(f"note: {data_dir}/labels.csv has {extra} record(s) this run never used (added since training); "
              f"only the run's own validation and test records are evaluated", file=sys.stderr)
    return splits


class InputMemo:
    """Model inputs of all 12 leads, kept by (signal cache file, record, input length and rate) for every
    dataset of this process, up to `max_bytes` in all (then made afresh each time), so memory stays bounded
    however many records there are. Resampling a record costs about as much as a small network's step on
    it: kept, a run resamples each record once rather than every epoch, and the runs of one study (its
    folds, its single leads, scored by every model of a matrix) share them. A lead's row of a kept input
    is bit for bit what resampling that lead alone gives (polyphase filtering is row by row)."""

    def __init__(self, max_bytes: int = 256 * 2 ** 20):
        self.max_bytes, self.used, self.kept = max_bytes, 0, {}

    def get(self, key: tuple) -> np.ndarray | None:
        return self.kept.get(key)

    def room_for(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.max_bytes

    def keep(self, key: tuple, x: np.ndarray) -> None:
        x.setflags(write=False)
        self.kept[key] = x
        self.used += x.nbytes


INPUTS = InputMemo()


class ECGDataset(Dataset):
    """(input, 0/1 labels) for the given records, read from the signal cache at its own rate and
    resampled to the model's: the last `seconds` (zero-padded in front), or for a whole-record spec the
    whole record, as long as it is (batched by `pad_batch`). Resampled inputs are kept in `INPUTS`."""

    def __init__(self, cache: SignalCache, labels: pd.DataFrame, spec: InputSpec, classes: Sequence[str]):
        missing = set(labels["patient_id"]) - set(cache.row)
        if missing:
            raise PipelineError(f"{len(missing)} labelled records are not in the signal cache "
                             f"(e.g. {sorted(missing)[0]}); rerun preprocess.py with --force")
        self.cache, self.spec = cache, spec
        self.ids = labels["patient_id"].tolist()
        self.y = labels[list(classes)].to_numpy(np.float32, copy=True)  # writable: torch.from_numpy shares it
        self.lead_rows = lead_indices(spec.leads)
        self.n_cached = int(round(spec.seconds * cache.sample_rate))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.model_input(i)), torch.from_numpy(self.y[i])

    def model_input(self, i: int) -> np.ndarray:
        """Record i as the model takes it (float32, the model's rate, this dataset's leads): a new array.
        Kept only where it saves work: when the model's rate is not the cache's (reading alone is cheap)
        and in the main process (a loader's workers start each epoch afresh)."""
        if self.spec.sample_rate == self.cache.sample_rate or get_worker_info() is not None:
            return self._made(self.lead_rows, i)
        key = (self.cache.key, self.ids[i], self.spec.whole, self.n_cached, self.spec.sample_rate)
        kept = INPUTS.get(key)
        if kept is None:
            cached = self.cache.length[self.cache.row[self.ids[i]]] if self.spec.whole else self.n_cached
            float32_bytes = len(LEADS) * 4 * cached * self.spec.sample_rate / self.cache.sample_rate
            if not INPUTS.room_for(int(np.ceil(float32_bytes))):
                return self._made(self.lead_rows, i)
            kept = self._made(list(range(len(LEADS))), i)
            INPUTS.keep(key, kept)
        return kept[self.lead_rows]

    def _made(self, rows: list[int], i: int) -> np.ndarray:
        if self.spec.whole:
            x = self.cache.record(self.ids[i], rows)
        else:
            x = self.cache.window(self.ids[i], rows, self.n_cached)
        return self.spec.to_model_rate(x, self.cache.sample_rate)


def pad_batch(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whole records of different lengths as one batch: zero-padded at the end to the longest, with each
    record's length (crops and scoring windows stay inside it). Memory: one batch of the longest record."""
    lengths = torch.tensor([x.shape[-1] for x, _ in items], dtype=torch.int64)
    x = torch.zeros(len(items), items[0][0].shape[0], int(lengths.max()), dtype=items[0][0].dtype)
    for i, (xi, _) in enumerate(items):
        x[i, :, :xi.shape[-1]] = xi
    return x, torch.stack([y for _, y in items]), lengths


def batch_parts(batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(inputs, labels, lengths or None) of a loader's batch: `pad_batch`'s, or the default (inputs, labels)."""
    return batch[0], batch[1], batch[2] if len(batch) > 2 else None


class ECGModel(torch.nn.Module):
    """A registered network with the input rules of its run, so that every stage (training, evaluation,
    SHAP, one record) applies them the same way: one global standardisation (mean and standard deviation
    fitted on the training records; 0 and 1 for runs without it), and for runs trained on crops, the
    maximum of the logits over overlapping windows (= the maximum of the sigmoid scores). Inputs are mV
    at the model's rate, so SHAP values stay in mV whatever the normalisation."""

    def __init__(self, net: torch.nn.Module, spec: InputSpec, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.net = net
        self.window, self.stride, self.whole = spec.window_samples, spec.stride_samples, spec.whole
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, leads, samples) mV -> (batch, classes) logits. A window that is all zero-padding (a
        record shorter than the input is padded in front) never takes part in the maximum. Whole records
        (`lengths`: each record's samples, zero-padded at the end to the batch's longest) are scored as the
        PTB-XL benchmark scores them: windows every `stride` from the record's first sample, each inside
        the record (a record shorter than one window: its first window)."""
        if self.whole and self.window is not None:
            return self._whole_records(x, lengths)
        n = x.shape[-1]
        if self.window is None or n <= self.window:
            return self.net((x - self.mean) / self.std)
        starts = window_starts(n, self.window, self.stride)
        windows = torch.stack([x[..., s:s + self.window] for s in starts], dim=1)   # (batch, windows, leads, w)
        b, w = windows.shape[:2]
        logits = self.net(((windows - self.mean) / self.std).reshape(b * w, *windows.shape[2:])).view(b, w, -1)
        padding = (windows == 0).flatten(2).all(dim=2)                                # (batch, windows)
        padding &= ~padding.all(dim=1, keepdim=True)  # a record of zeros keeps its windows
        return logits.masked_fill(padding.unsqueeze(-1), float("-inf")).amax(dim=1)

    MAX_WINDOWS = 8192  # windows through the network at once when scoring whole records (bounds memory)

    def _whole_records(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Only the windows inside each record go through the network (a batch of 60-s and 6-s records
        costs the windows of its records, not 47 for each), at most MAX_WINDOWS at a time in eval mode."""
        if x.shape[-1] < self.window:
            x = torch.nn.functional.pad(x, (0, self.window - x.shape[-1]))
        n = x.shape[-1]
        lengths = torch.full((len(x),), n, device=x.device) if lengths is None else lengths.to(x.device)
        starts = torch.arange(0, n - self.window + 1, self.stride, device=x.device)
        windows = x.unfold(-1, self.window, self.stride).transpose(1, 2)            # (batch, windows, leads, w)
        inside = starts.view(1, -1) + self.window <= lengths.view(-1, 1)            # (batch, windows)
        inside[:, 0] = True
        if bool(inside.all()):
            b, w = inside.shape
            return self.net(((windows - self.mean) / self.std).reshape(b * w, *windows.shape[2:])).view(b, w, -1) \
                .amax(dim=1)
        chosen = (windows[inside] - self.mean) / self.std                            # (windows inside, leads, w)
        step = len(chosen) if self.training else self.MAX_WINDOWS
        logits = torch.cat([self.net(chosen[i:i + step]) for i in range(0, len(chosen), step)])
        out = logits.new_full((*inside.shape, logits.shape[-1]), float("-inf"))
        out[inside] = logits
        return out.amax(dim=1)


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Starts of the scoring windows over n samples: every `stride`, plus one ending at the last sample
    when the stride does not reach it (10 s at 100 Hz, 2.5-s windows every 1.25 s: 7 windows)."""
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def fit_standardization(dataset: Dataset, batch_size: int = 256, num_workers: int = 0) -> tuple[float, float]:
    """One mean and one standard deviation over every sample of every lead of `dataset`'s inputs (the
    training records only: fitting on validation or test records would leak them into the model).
    Streaming float64 sums: memory does not grow with the number of records."""
    total = total_sq = count = 0.0
    for batch in make_loader(dataset, batch_size, False, num_workers):
        x, _, lengths = batch_parts(batch)
        x = x.double()
        inside = 1.0 if lengths is None else (torch.arange(x.shape[-1]) < lengths.view(-1, 1, 1)).double()
        total += float((x * inside).sum())
        total_sq += float((x * x * inside).sum())
        count += x.numel() if lengths is None else int(lengths.sum()) * x.shape[1]
    if count == 0:
        raise PipelineError("no training samples to fit the standardisation on")
    mean = total / count
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    if not std > 0 or not np.isfinite(std):
        raise PipelineError(f"the training inputs have standard deviation {std!r}: nothing to standardise by")
    return mean, std


def random_crop(x: torch.Tensor, length: int, generator: torch.Generator,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
    """One random window of `length` samples per record (a new one every epoch): the PTB-XL benchmark's
    training input, starting as its crops do at offset 0 ... L - length - 1 of a record of L samples
    (`random.randint(0, L - length - 1)`; offset 0 when L == length). Windows start within the recorded
    signal: a record shorter than the input (zero-padded in front) is cropped from its first sample on,
    never from padding alone; whole records (`lengths`, padded at the end) within their own length."""
    b, _, n = x.shape
    if n <= length:
        return x
    if lengths is not None:
        first = torch.zeros(b, dtype=torch.int64, device=x.device)
        end = lengths.to(x.device).clamp(min=length, max=n)
    else:
        recorded = (x != 0).any(dim=1)                                               # (batch, samples)
        first = (recorded.float().argmax(dim=1) * recorded.any(dim=1)).clamp(max=n - length)  # on the device: no sync
        end = torch.full_like(first, n)
    u = torch.rand(b, generator=generator, device="cpu").to(x.device)
    span = end - length - first                                    # offsets 0 .. span - 1 (0 when span == 0)
    start = (first + torch.minimum((u * span).long(), (span - 1).clamp(min=0))).view(b, 1, 1)
    index = start + torch.arange(length, device=x.device).view(1, 1, -1)
    return x.gather(-1, index.expand(b, x.shape[1], length))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int = 0,
                sampler=None, pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    """A loader whose shuffling comes from its own seeded generator (reproducible, resumable). A training
    loader drops a last batch of a single record: batch norm over one record is undefined (the benchmark
    heads normalise (batch, features) and fail on it), and one record more or less changes nothing; with
    `drop_last` it drops any incomplete last batch (fastai's training loader: floor(N / batch) steps),
    unless there is no complete batch at all. Whole records are batched by `pad_batch`."""
    g = torch.Generator().manual_seed(seed)
    n = len(sampler) if sampler is not None else len(dataset)
    drop = shuffle and ((drop_last and n >= batch_size) or (n % batch_size == 1 and n > 1))
    whole = getattr(getattr(dataset, "spec", None), "whole", False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=num_workers, generator=g, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0, drop_last=drop, collate_fn=pad_batch if whole else None)


def augment(x: torch.Tensor, generator: torch.Generator, p: float = 0.5, sigma: float = 0.1,
            max_shift_uv: int = 20) -> torch.Tensor:
    """Per-record coin flips (probability p, a real coin this time), then per-lead amplitude scaling
    ~ N(1, sigma) and per-lead baseline shift of up to ±20 µV, as in the original."""
    b, leads, _ = x.shape
    opts = dict(generator=generator, device="cpu")
    scale_on = torch.rand(b, 1, 1, **opts) < p
    scale = 1 + sigma * torch.randn(b, leads, 1, **opts)
    shift_on = torch.rand(b, 1, 1, **opts) < p
    shift = torch.randint(-max_shift_uv, max_shift_uv + 1, (b, leads, 1), **opts).float() / 1000
    scale = torch.where(scale_on, scale, torch.ones_like(scale)).to(x.device, x.dtype)
    shift = torch.where(shift_on, shift, torch.zeros_like(shift)).to(x.device, x.dtype)
    return x * scale + shift


@torch.no_grad()
def score(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool = False,
          progress: str | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Sigmoid probabilities, labels and mean BCE loss over a loader, in eval mode without gradients; in
    fp32, or under bf16 autocast with `amp` (on any device: the precision a run was trained in)."""
    from tqdm import tqdm

    model.eval()
    probs, ys = [], []
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)  # on the device: no host sync per batch
    for batch in tqdm(loader, desc=progress, leave=False, disable=progress is None):
        x, y, lengths = batch_parts(batch)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x) if lengths is None else model(x, lengths)
        logits = logits.float()
        loss_sum += torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum").double()
        probs.append(torch.sigmoid(logits))
        ys.append(y)
    if not ys:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), float("nan")
    y_all = torch.cat(ys).cpu().numpy()
    return torch.cat(probs).cpu().numpy(), y_all, float(loss_sum) / max(y_all.size, 1)


def pick_device(use_gpu: bool) -> torch.device:
    """CUDA when asked for and present (and say so); the same command runs on a CPU-only machine."""
    if use_gpu and torch.cuda.is_available():
        print(f"using GPU: {torch.cuda.get_device_name()}")
        return torch.device("cuda")
    if use_gpu:
        print("a GPU was asked for (--use-gpu, or the preset's use_gpu) but no CUDA device is available; "
              "running on CPU")
    return torch.device("cpu")


@torch.no_grad()
def diagnose(model: torch.nn.Module, spec: InputSpec, thresholds: np.ndarray, signal_mv: np.ndarray,
             classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """One record (12, n) mV at SAMPLE_RATE -> class probabilities and the classes above their thresholds.

    The single definition of "what does the model say about this ECG", used by predict.py --record,
    shap_values.py --record and any front end; pure: no files, no printing."""
    device = next(model.parameters()).device
    x = torch.from_numpy(spec.from_signal(signal_mv))[None].to(device)
    probs = torch.sigmoid(model(x).float())[0].cpu().numpy()
    return probs, [c for c, p, t in zip(classes, probs, thresholds) if p > t]


SHORTEST_SECONDS = 6.0  # CPSC2018's shortest training record: shorter ones are mostly the zero-padding
FLAT_MV = 0.01  # a lead whose peak-to-peak is under 10 µV (the cache's resolution is 1 µV) records nothing


def record_doubts(rate: float, mv: np.ndarray, spec: InputSpec) -> list[str]:
    """Why a record's diagnosis may mean little (it is still given): a record too short, flat, or sampled
    too slowly for a QRS complex."""
    doubts = []
    seconds = mv.shape[1] / SAMPLE_RATE  # mv is at SAMPLE_RATE, whatever the file's rate
    if seconds < min(SHORTEST_SECONDS, spec.seconds):
        doubts.append(f"{seconds:g} s long, against the model's {spec.seconds:g}-s input: it reads mostly the "
                      f"zero-padding")
    inner = mv[:, mv.shape[1] // 10: mv.shape[1] - mv.shape[1] // 10]  # resampling rings at a record's edges
    if (np.ptp(inner, axis=1) < FLAT_MV).all():
        doubts.append("every lead is flat: there is no ECG to diagnose")
    if rate < InputSpec.LOW_RATE_HZ:
        doubts.append(f"recorded at {rate:g} Hz, below {InputSpec.LOW_RATE_HZ} Hz, where a QRS complex spans fewer "
                      f"than 5 samples")
    return doubts
