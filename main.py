"""Train the paper's 1D ResNet34 on the preprocess cache.

    python main.py --data-dir data/CPSC --leads all --use-gpu           # the paper's settings
    python main.py --data-dir data/demo --seconds 10 --sample-rate 100 --epochs 12   # CPU demo
    torchrun --nproc_per_node=4 main.py --data-dir data/CPSC --use-gpu   # DistributedDataParallel

Folds from labels.csv are split 8/1/1 into train/validation/test by a permutation seeded with --seed
(or, with --test-fold k for cross-validation, test fold k and validation fold k % 10 + 1).
The checkpoint kept is the one with the best validation mean F1 at a fixed 0.5 threshold (thresholds
are tuned later, by predict.py, so validation is not used twice for the same choice). Every epoch
reseeds dropout, shuffling and augmentation from (--seed, epoch), which makes --resume end exactly
where an uninterrupted run would.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm import tqdm

from dataset import (ECGDataset, InputSpec, augment, checkpoint_splits, make_loader, pick_device, score,
                     split_provenance)
from models import ARCHS, build_model, default_model_path, load_checkpoint, save_checkpoint
from utils import (CLASSES, INPUT_SECONDS, LEADS, N_FOLDS, SAMPLE_RATE, SignalCache, auc_scores, f1_scores, leads_tag,
                   nonnegative_int, positive_float, positive_int,
                   load_labels, parse_leads, split_labels, write_csv)


def add_training_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of one training run that multi-run scripts (lead_study.py, cross_validate.py) share."""
    p.add_argument("--data-dir", type=Path, default=Path("data/CPSC"), help="preprocess output folder")
    p.add_argument("--arch", default="resnet34", choices=sorted(ARCHS))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=positive_int, default=40)
    p.add_argument("--lr", type=positive_float, default=1e-4)
    p.add_argument("--batch-size", type=positive_int, default=32, help="per process")
    p.add_argument("--num-workers", type=nonnegative_int, default=4)
    p.add_argument("--seconds", type=positive_float, default=INPUT_SECONDS, help="input length: the last N seconds")
    p.add_argument("--sample-rate", type=positive_int, default=SAMPLE_RATE,
                   help="model input rate (resampled from the cache)")
    p.add_argument("--limit", type=positive_int, default=None, help="use a seeded random subset of N records")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--no-amp", action="store_true", help="GPU: train in fp32 instead of bf16 autocast")
    p.add_argument("--deterministic", action="store_true",
                   help="bit-identical results across processes: one CPU thread and deterministic kernels "
                        "(cuDNN deterministic on GPU); 1.4-1.8x the time per step on a 2-core CPU")
    p.add_argument("--log-dir", type=Path, default=Path("logs"))
    return p


def check_input_size(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An input the network cannot use is an argparse error; a rate too low to see a QRS a warning."""
    try:
        for warning in InputSpec(LEADS, args.seconds, args.sample_rate).check():
            print(f"warning: {warning}", file=sys.stderr)
    except ValueError as e:
        p.error(str(e))


def parse_args(argv=None) -> argparse.Namespace:
    p = add_training_args(argparse.ArgumentParser(description=__doc__,
                                                  formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--leads", default="all", help="all, one lead, or a comma list such as I,aVR,V5")
    p.add_argument("--test-fold", type=int, default=None, choices=range(1, N_FOLDS + 1), metavar="K",
                   help="cross-validation: test on fold K, validate on the next (default: the seeded 8/1/1 split)")
    p.add_argument("--model-path", type=Path, default=None,
                   help="best checkpoint (default models/{arch}_{database}_{leads}_{seed}.pth)")
    p.add_argument("--resume", action="store_true", help="continue from the last completed epoch")
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    args = p.parse_args(argv)
    check_input_size(p, args)
    try:
        args.lead_names = parse_leads(args.leads)
    except ValueError as e:
        p.error(str(e))
    if args.model_path is None:
        args.model_path = default_model_path(args.arch, args.data_dir, leads_tag(args.lead_names), args.seed,
                                             args.test_fold)
    return args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device):
    """Within the block, kernels whose result does not depend on scheduling or thread count.

    Without it, repeated CPU runs with one seed match inside one process but not always across
    processes: multi-threaded oneDNN kernels may reduce in another order from one process to the next.
    One thread removes that on CPU (disabling oneDNN would too, at ~6x the time); on GPU, cuDNN's
    deterministic algorithms and cuBLAS's fixed workspace do the same. The previous settings are
    restored afterwards, so a caller's other work keeps its threads."""
    if not enabled:
        yield
        return
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def last_path(model_path: Path) -> Path:
    return model_path.with_suffix(".last.pth")


def init_distributed(use_gpu: bool) -> tuple[int, int, torch.device | None]:
    """Under torchrun: (rank, world size, device); NCCL on GPUs, gloo on CPU. Else (0, 1, None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    gpu = use_gpu and torch.cuda.is_available()
    dist.init_process_group("nccl" if gpu else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if gpu else torch.device("cpu")
    if gpu:
        torch.cuda.set_device(device)
    return dist.get_rank(), world, device


def checkpoint_args(args: argparse.Namespace) -> dict:
    """The run's arguments as plain types (loadable with weights_only=True)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


RUN_SETTINGS = ("arch", "leads", "seconds", "sample_rate", "seed", "data_dir", "limit", "lr", "batch_size",
                "test_fold", "deterministic")  # what makes two runs different runs


def changed_settings(saved_args: dict, args: argparse.Namespace) -> list[str]:
    """The run settings in which a checkpoint's arguments differ from `args`, as 'key: old -> new'."""
    old = {"deterministic": False, **saved_args}  # checkpoints from before --deterministic existed
    return [f"{k}: {old.get(k)} -> {getattr(args, k)}" for k in RUN_SETTINGS
            if str(old.get(k)) != str(getattr(args, k))]


def check_resumable(ckpt: dict, args: argparse.Namespace, path: Path) -> None:
    changed = changed_settings(ckpt["args"], args)
    if changed:
        raise SystemExit(f"error: cannot resume {path} with different settings ({'; '.join(changed)})")


def train_one_epoch(model, loader, optimizer, device, amp: bool, aug_gen: torch.Generator, desc: str) -> float:
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x = augment(x, aug_gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
        count += len(x)
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def validate(model, loader, device, amp: bool) -> dict:
    probs, y, loss = score(model, loader, device, amp)
    return {"val_loss": loss, "val_f1": float(f1_scores(y, probs > 0.5).mean()),
            "val_auc": float(np.nanmean(auc_scores(y, probs))) if len(y) else float("nan")}


def param_checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def main(argv=None) -> dict:
    args = parse_args(argv)
    rank, world, ddp_device = init_distributed(args.use_gpu)
    device = ddp_device or pick_device(args.use_gpu)
    with deterministic_mode(args.deterministic, device):
        return train(args, rank, world, device)


def train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> dict:
    """One training run (this process's share of it under DDP); returns checkpoint path, best F1, history."""
    is_main = rank == 0
    amp = device.type == "cuda" and not args.no_amp
    model_path, resume_path = args.model_path, last_path(args.model_path)
    if is_main and not args.resume and not args.force and (model_path.exists() or resume_path.exists()):
        raise SystemExit(f"error: {model_path} exists; pass --resume to continue that run or --force to overwrite it")
    if args.resume and not resume_path.exists():
        raise SystemExit(f"error: --resume: no checkpoint {resume_path} to resume from")

    seed_everything(args.seed)
    spec = InputSpec(tuple(args.lead_names), args.seconds, args.sample_rate)
    cache = SignalCache(args.data_dir)
    resume_ckpt = None
    if args.resume:  # a resumed run keeps the records it started with, whatever labels.csv holds now
        _, resume_ckpt = load_checkpoint(resume_path)
        check_resumable(resume_ckpt, args, resume_path)
        splits = checkpoint_splits(resume_ckpt, args.data_dir)
    else:
        splits = split_labels(load_labels(args.data_dir), args.seed, args.limit, args.test_fold)
    if len(splits["train"]) == 0 or len(splits["val"]) == 0:
        raise SystemExit(f"error: empty training or validation split in {args.data_dir} (too few records?)")
    train_ds, val_ds = ECGDataset(cache, splits["train"], spec), ECGDataset(cache, splits["val"], spec)
    sampler = None
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(train_ds, world, rank, shuffle=True, seed=args.seed)
    pin = device.type == "cuda"
    train_loader = make_loader(train_ds, args.batch_size, True, args.num_workers, args.seed, sampler, pin)
    val_loader = make_loader(val_ds, args.batch_size * 2, False, args.num_workers, pin_memory=pin)

    model = build_model(args.arch, len(spec.leads), len(CLASSES)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start, best, history = 1, -1.0, []
    if resume_ckpt is not None:
        ckpt = resume_ckpt
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, best, history = ckpt["epoch"] + 1, ckpt["best_f1"], list(ckpt["history"])
        if is_main:
            left = (f"{args.epochs - ckpt['epoch']} epoch(s) left" if start <= args.epochs
                    else "all epochs done, nothing to train")
            print(f"resuming {resume_path} after epoch {ckpt['epoch']} (best val F1 {best:.4f}): {left}")
    train_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if is_main:
        split = f" (test fold {args.test_fold})" if args.test_fold else ""
        print(f"{args.arch} on {len(spec.leads)} lead(s) {','.join(spec.leads)}, {spec.n_samples} samples "
              f"({spec.seconds:g} s at {spec.sample_rate} Hz); train {len(train_ds)} val {len(val_ds)} "
              f"test {len(splits['test'])} records{split}; device {device}{' (bf16 autocast)' if amp else ''}"
              f"{f', {world} processes' if world > 1 else ''}")
    log_path = args.log_dir / f"{model_path.stem}.csv"

    for epoch in range(start, args.epochs + 1):
        t0 = time.time()
        torch.manual_seed(args.seed * 1000 + epoch)  # dropout
        train_loader.generator.manual_seed(args.seed * 1000 + epoch)  # shuffling
        if sampler is not None:
            sampler.set_epoch(epoch)
        aug_gen = torch.Generator().manual_seed(args.seed * 1000 + epoch + 7919 * rank)
        train_loss = train_one_epoch(train_model, train_loader, optimizer, device, amp, aug_gen,
                                     f"epoch {epoch}/{args.epochs}")
        if is_main:
            row = {"epoch": epoch, "train_loss": train_loss, **validate(model, val_loader, device, amp),
                   "seconds": time.time() - t0}
            history.append(row)
            improved = row["val_f1"] > best
            best = max(best, row["val_f1"])
            state = {"model": model.state_dict(), "epoch": epoch, "best_f1": best, "history": history,
                     "args": checkpoint_args(args), "leads": list(spec.leads), "classes": list(CLASSES),
                     **split_provenance(splits)}
            if improved:
                save_checkpoint(model_path, state)
            save_checkpoint(resume_path, {**state, "optimizer": optimizer.state_dict()})
            write_csv(pd.DataFrame(history), log_path)
            print(f"epoch {epoch:3d}/{args.epochs}  train loss {train_loss:.4f}  val loss {row['val_loss']:.4f}  "
                  f"val F1 {row['val_f1']:.4f}  val AUC {row['val_auc']:.4f}  {row['seconds']:.1f}s"
                  f"{'  * best' if improved else ''}", flush=True)
        if world > 1:
            dist.barrier()

    if world > 1:
        sums = [None] * world
        dist.all_gather_object(sums, param_checksum(model))
        if is_main:
            if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
                raise SystemExit(f"error: DDP ranks disagree on the weights: {sums}")
            print(f"DDP: {world} ranks agree (parameter checksum {sums[0]:.6f})")
        # Free the DDP wrapper (its reducer holds the process group) before destroying the group: left to
        # interpreter exit, its Gloo threads aborted rank 0 with std::terminate in about 1 run in 30.
        del train_model
        gc.collect()
        dist.destroy_process_group()
    if is_main:
        print(f"best val F1 {best:.4f}; checkpoint {model_path}; log {log_path}")
    return {"model_path": model_path, "best_f1": best, "history": history}


if __name__ == "__main__":
    main()
