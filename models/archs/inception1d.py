"""inception1d: the PTB-XL benchmark's InceptionTime-style network.

Six inception blocks of 128 channels; each squeezes its input to 32 channels (1x1, no bias), runs three
bias-free convolutions of 32 filters over it, and beside them a max-pool (3, stride 1) followed by a 1x1
convolution of the unsqueezed input; the four outputs are concatenated, batch-normed and ReLU'd. After
every third block a residual shortcut (1x1 convolution + BN of the previous shortcut's output, or of
the input for the first) is added and the sum ReLU'd. Then the shared concat-pooling head on 128
channels.

Kernel sizes: the benchmark passes 8 x its kernel size 5 = 40 and derives (40, 40 // 2, 40 // 4), each
made odd by subtracting one when even: 39, 19 and 9 (all 'same' padded, so the length never changes).
"""
from __future__ import annotations

import torch
from torch import nn

from models.archs.heads import benchmark_init, pooled_head
from models.registry import register_model


def kernel_sizes(kernel_size: int = 40) -> tuple[int, int, int]:
    """(k, k // 2, k // 4), each even one made odd by subtracting one: 40 -> (39, 19, 9)."""
    return tuple(k - 1 if k % 2 == 0 else k for k in (kernel_size, kernel_size // 2, kernel_size // 4))


def _conv(c_in: int, c_out: int, kernel_size: int) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2, bias=False)


class InceptionBlock(nn.Module):
    """1x1 bottleneck -> parallel convolutions, plus max-pool -> 1x1; concatenated, BN, ReLU."""

    def __init__(self, c_in: int, kernels: tuple[int, ...], filters: int = 32, bottleneck: int = 32):
        super().__init__()
        self.bottleneck = _conv(c_in, bottleneck, 1)
        self.convs = nn.ModuleList(_conv(bottleneck, filters, k) for k in kernels)
        self.pool_branch = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1), _conv(c_in, filters, 1))
        self.bn_relu = nn.Sequential(nn.BatchNorm1d((len(kernels) + 1) * filters), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.bottleneck(x)
        return self.bn_relu(torch.cat([conv(squeezed) for conv in self.convs] + [self.pool_branch(x)], dim=1))


class Shortcut(nn.Module):
    """ReLU(block output + BN(1x1 convolution of the residual))."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.proj = nn.Sequential(_conv(c_in, c_out, 1), nn.BatchNorm1d(c_out))
        self.relu = nn.ReLU()  # not in place: the residual sum feeds it

    def forward(self, residual: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self.relu(out + self.proj(residual))


class Inception1d(nn.Module):
    """`depth` inception blocks with a shortcut every third, concat-pooling head."""

    def __init__(self, in_leads: int = 12, num_classes: int = 71, kernel_size: int = 40, depth: int = 6,
                 filters: int = 32, bottleneck: int = 32):
        super().__init__()
        if depth % 3:
            raise ValueError(f"inception1d needs a depth divisible by 3 (got {depth})")
        kernels = kernel_sizes(kernel_size)
        width = (len(kernels) + 1) * filters
        self.blocks = nn.ModuleList(InceptionBlock(in_leads if d == 0 else width, kernels, filters, bottleneck)
                                    for d in range(depth))
        self.shortcuts = nn.ModuleList(Shortcut(in_leads if s == 0 else width, width) for s in range(depth // 3))
        self.head = pooled_head(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, leads, samples) -> (batch, classes) logits."""
        residual = x
        for d, block in enumerate(self.blocks):
            x = block(x)
            if d % 3 == 2:
                x = residual = self.shortcuts[d // 3](residual, x)
        return self.head(x)


def layer_groups(model: Inception1d) -> list[list[nn.Module]]:
    """As the reference: blocks 4-6 with the second shortcut, then the head. Blocks 1-3 and the first
    shortcut are in no group: the reference's finetuning never updates them."""
    return [[model.blocks[3:], model.shortcuts[1:]], [model.head]]


@register_model("inception1d", family="inception", min_samples=1, layer_groups=layer_groups)
def inception1d(in_leads: int, num_classes: int) -> Inception1d:
    """PTB-XL benchmark inception1d: 6 blocks of 128 channels, kernels 39/19/9, shortcut every 3."""
    return benchmark_init(Inception1d(in_leads, num_classes))
