"""The paper's 1D ResNet (Zhang et al. 2021): ResNet34, and the shallower ResNet18 and ResNet10."""
from __future__ import annotations

import torch
from torch import nn

from models.registry import register_model


class BasicBlock(nn.Module):
    """conv k7 -> BN -> ReLU -> Dropout 0.2 -> conv k7 -> BN, plus identity or 1x1 conv shortcut, ReLU (the
    paper's kernel and dropout; a builder's `kernel_size` and `dropout` make a variant)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.2,
                 kernel_size: int = 7):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.body = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=pad, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv1d(out_channels, out_channels, kernel_size, stride=1, padding=pad, bias=False),
            nn.BatchNorm1d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm1d(out_channels))
        self.relu = nn.ReLU()  # a separate, not-in-place ReLU: gradient-based explainers need that

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet1d(nn.Module):
    """Stem conv k15/2 + max-pool, four stages of BasicBlocks, global average ++ max pooling, linear."""

    def __init__(self, blocks: tuple[int, ...], in_leads: int = 12, num_classes: int = 9,
                 widths: tuple[int, ...] = (64, 128, 256, 512), kernel_size: int = 7, dropout: float = 0.2):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0 or not 0 <= dropout < 1 or min(widths) < 1:
            raise ValueError(f"kernel_size must be odd and positive (an even kernel changes the length the shortcut "
                             f"adds to), dropout in [0, 1) and every width positive (got kernel_size {kernel_size}, "
                             f"dropout {dropout}, widths {widths})")
        self.stem = nn.Sequential(
            nn.Conv1d(in_leads, widths[0], 15, stride=2, padding=7, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        stages, channels = [], widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            layers = [BasicBlock(channels, width, 1 if i == 0 else 2, dropout, kernel_size)]
            layers += [BasicBlock(width, width, 1, dropout, kernel_size) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, leads, samples) in mV -> (batch, classes) logits."""
        h = self.stages(self.stem(x))
        return self.fc(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1))


def layer_groups(model: ResNet1d) -> list[list[nn.Module]]:
    """For finetuning, as the benchmark's xresnets: the stem, the four stages, the output layer."""
    return [[model.stem], [model.stages], [model.fc]]


def stage_widths(width: int) -> tuple[int, ...]:
    """The four stages' channels: `width` (the paper's 64), doubling at each stage. A narrower network
    (`--arch-arg width=32`: about a third of the compute) is the demo's way to train in seconds on a CPU."""
    return tuple(width * 2 ** i for i in range(4))


DEPTHS = {"resnet34": (3, 4, 6, 3), "resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}


@register_model("resnet34", family="resnet", layer_groups=layer_groups)
def resnet34(in_leads: int, num_classes: int, kernel_size: int = 7, dropout: float = 0.2,
             width: int = 64) -> ResNet1d:
    """The paper's network: 16 basic blocks (3, 4, 6, 3), kernel 7, 64-512 channels."""
    return ResNet1d(DEPTHS["resnet34"], in_leads, num_classes, stage_widths(width), kernel_size, dropout)


@register_model("resnet18", family="resnet", layer_groups=layer_groups)
def resnet18(in_leads: int, num_classes: int, kernel_size: int = 7, dropout: float = 0.2,
             width: int = 64) -> ResNet1d:
    """The paper's blocks, two per stage."""
    return ResNet1d(DEPTHS["resnet18"], in_leads, num_classes, stage_widths(width), kernel_size, dropout)


@register_model("resnet10", family="resnet", layer_groups=layer_groups)
def resnet10(in_leads: int, num_classes: int, kernel_size: int = 7, dropout: float = 0.2,
             width: int = 64) -> ResNet1d:
    """The paper's blocks, one per stage (the demo's network)."""
    return ResNet1d(DEPTHS["resnet10"], in_leads, num_classes, stage_widths(width), kernel_size, dropout)
