"""Training and inference throughput: main.py's cache-fed loop versus decoding WFDB per item.

    python bench/bench_train.py --data-dir data/demo                       # CPU: 12 x 5,000, batch 32
    python bench/bench_train.py --data-dir data/demo --use-gpu --seconds 30 # GPU: the paper's 12 x 15,000

Same model, batch size and input in both loops; only where items come from differs: the memory-mapped
cache (this project) or `wfdb.rdrecord` per item (the original). On a GPU it also measures bf16
autocast against fp32 and extrapolates seconds per epoch for 5,500 training records.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import wfdb
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.inputs import ECGDataset, InputSpec, augment, make_loader  # noqa: E402
from models.resnet import build_model  # noqa: E402
from utils import SignalCache, data_label_set, fit_length, load_labels  # noqa: E402


class WfdbDataset(Dataset):
    """What the original did per item: decode the record's WFDB files, then cut the window."""

    def __init__(self, records_dir: Path, labels, spec: InputSpec, classes: list[str]):
        self.dir, self.spec = records_dir, spec
        self.ids = labels["patient_id"].tolist()
        self.y = labels[list(classes)].to_numpy(np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        mv = wfdb.rdrecord(str(self.dir / self.ids[i])).p_signal.T.astype(np.float32)
        return torch.from_numpy(fit_length(mv, self.spec.n_samples)), torch.from_numpy(self.y[i])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/demo"), help="preprocessed folder holding the records too")
    p.add_argument("--arch", default="resnet34")
    p.add_argument("--seconds", type=float, default=10.0, help="input length at 500 Hz (10 s = 5,000 samples)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--use-gpu", action="store_true")
    return p.parse_args(argv)


def time_data(loader, n_batches: int) -> float:
    """Seconds per batch spent producing batches alone."""
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return (time.perf_counter() - t0) / n_batches


def time_training(model, loader, device, amp: bool, steps: int) -> float:
    """Training samples per second over `steps` full steps (data, augmentation, forward, backward, Adam)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    model.train()
    it = iter(loader)

    def step():
        x, y = next(it)
        x, y = augment(x.to(device, non_blocking=True), gen), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return len(x)

    step()  # warm-up
    sync(device)
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        n += step()
    sync(device)
    return n / (time.perf_counter() - t0)


@torch.no_grad()
def time_inference(model, x: torch.Tensor, device, amp: bool, repeats: int = 3) -> float:
    model.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        model(x)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
        sync(device)
    return repeats * len(x) / (time.perf_counter() - t0)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if args.use_gpu and torch.cuda.is_available() else "cpu")
    spec = InputSpec(seconds=args.seconds)
    labels = load_labels(args.data_dir)
    classes = data_label_set(args.data_dir)["classes"]
    need = args.batch_size * (args.steps + 2)
    labels = labels.iloc[np.resize(np.arange(len(labels)), need)].reset_index(drop=True)
    loaders = {
        "cache (main.py)": make_loader(ECGDataset(SignalCache(args.data_dir), labels, spec, classes), args.batch_size, True,
                                       args.num_workers, pin_memory=device.type == "cuda"),
        "WFDB per item (original)": make_loader(WfdbDataset(args.data_dir, labels, spec, classes), args.batch_size, True,
                                                args.num_workers, pin_memory=device.type == "cuda"),
    }
    print(f"{args.arch}, input 12 x {spec.n_samples}, batch {args.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads, {args.num_workers} loader workers")
    amps = [False, True] if device.type == "cuda" else [False]
    for amp in amps:
        torch.manual_seed(0)
        model = build_model(args.arch, 12, len(classes)).to(device)
        tag = "bf16 autocast" if amp else "fp32"
        for name, loader in loaders.items():
            data_s = time_data(loader, min(args.steps, 3))
            rate = time_training(model, loader, device, amp, args.steps)
            step_s = args.batch_size / rate
            print(f"train [{tag}] {name:26s} {rate:8.1f} samples/s   data {data_s * 1e3:7.1f} ms/batch "
                  f"({100 * data_s / step_s:4.1f} % of a step)   5,500 records: {5500 / rate:7.1f} s/epoch")
        x = torch.randn(args.batch_size, 12, spec.n_samples, device=device)
        print(f"inference [{tag}] {time_inference(model, x, device, amp):8.1f} samples/s")


if __name__ == "__main__":
    main()
