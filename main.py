"""Train one model (any registered architecture; the paper's 1D ResNet34 by default) on a preprocessed
database into its run folder.

    python main.py --data-dir data/CPSC --leads all --use-gpu           # the paper's settings
    python main.py --data-dir data/demo --arch resnet10 --seconds 10 --sample-rate 100 --epochs 10 --lr 1e-3
    python main.py --data-dir data/CPSC --init-from data/PTBXL/runs/xresnet1d101_all_42 --preset finetune
    torchrun --nproc_per_node=4 main.py --data-dir data/CPSC --use-gpu   # DistributedDataParallel

The run goes to its folder, data/<db>/runs/<arch>_<leads>_<seed>/ or --run (model.pth: the best
validation epoch; last.pth: for --resume; log.csv; see models/run.py). Rerunning is safe: a run that
finished with the same settings is kept, one that stopped early resumes, one of other settings is
refused unless --force. Folds from labels.csv are split 8/1/1 into train/validation/test by a
permutation seeded with --seed (or the database's own split, such as PTB-XL's; with --test-fold k,
test fold k and validation fold k % 10 + 1). The training itself is `training.train(cfg)`. --init-from
finetunes a trained (or imported) run: its weights, a new output layer, its inputs (models/transfer.py);
--preset finetune is the PTB-XL benchmark's schedule (30 epochs on the head, 30 with rates lr/1000 ... lr/10).
"""
from __future__ import annotations

import argparse
import os

import torch

from models.inputs import pick_device
from models.run import new_run_folder
from models.training import RunConfig, architecture_settings, check_finetune, check_run_args, source_arch, train
from utils.errors import script_main
from utils.folds import N_FOLDS
from utils.labels import leads_argument
from utils.cli import refuse_together
from utils.presets import parse_with_preset


def parse_args(argv=None) -> argparse.Namespace:
    p = RunConfig.add_arguments(argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--leads", type=leads_argument, default="all",
                   help="all, one lead, or a comma list such as I,aVR,V5")
    p.add_argument("--test-fold", type=int, default=None, choices=range(1, N_FOLDS + 1), metavar="K",
                   help="cross-validation: test on fold K, validate on the next (default: the seeded 8/1/1 split)")
    p.add_argument("--run", type=new_run_folder, default=None,
                   help="the run folder (default data/<db>/runs/{arch}_{leads}_{seed}/)")
    p.add_argument("--resume", action="store_true",
                   help="require a run to continue from its last completed epoch (an unfinished run resumes anyway)")
    p.add_argument("--force", action="store_true",
                   help="retrain from scratch, replacing the run's files once its first epoch is saved")
    args = parse_with_preset(p, argv, "train", refine=lambda known: architecture_settings(
        source_arch(known.init_from) or known.arch, known.protocol))
    check_finetune(p, args, argv)
    check_run_args(p, args, argv)
    refuse_together(p, args, "--force", ["--resume"])  # --resume keeps the run, --force replaces it
    args.lead_names = args.leads
    return args


def init_distributed(use_gpu: bool) -> tuple[int, int, torch.device | None]:
    """Under torchrun: (rank, world size, device); NCCL on GPUs, gloo on CPU. Else (0, 1, None)."""
    import torch.distributed as dist

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


@script_main
def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = RunConfig.from_args(args)
    rank, world, ddp_device = init_distributed(cfg.use_gpu)
    return train(cfg, rank, world, ddp_device or pick_device(cfg.use_gpu))


if __name__ == "__main__":
    main()
