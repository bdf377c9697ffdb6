"""The classifier head, the convolution block and the initialisation the PTB-XL benchmark's
architectures share.

The benchmark (Strodthoff et al., IEEE JBHI 2021) ends each network with the same head: concat pooling
(global max, then global average), then two batch-norm / dropout / linear groups with a ReLU between
them and 128 hidden units; dropout is half the head's rate (0.5) before the first linear layer and the
full rate before the last. Its recurrent networks use the same two groups after their own pooling.

It also re-initialises every network it trains from scratch before the first step (kaiming-normal
weights for every convolution and linear layer, zero biases, batch-norm scale 1 and shift 0), whatever
the network's own constructor did: `benchmark_init` is that step, and every registered builder of the
benchmark's architectures ends with it so that a fresh model starts where the benchmark's did.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["conv_bn", "ConcatPool1d", "classifier", "pooled_head", "benchmark_init"]


def conv_bn(c_in: int, c_out: int, kernel_size: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Bias-free convolution with padding (k - 1) // 2 ('same' for odd kernels), BN, then an optional ReLU."""
    layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                                         bias=False), nn.BatchNorm1d(c_out)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConcatPool1d(nn.Module):
    """(batch, channels, samples) -> (batch, 2 * channels): global max, then global average, over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=-1), x.mean(dim=-1)], dim=1)


def classifier(in_features: int, num_classes: int, hidden: Sequence[int] = (128,), dropout: float = 0.5
               ) -> nn.Sequential:
    """BN -> dropout -> linear (-> ReLU) per layer; dropout `dropout / 2` before each hidden layer and
    `dropout` before the output layer, as the benchmark's head spreads its single rate."""
    sizes = [in_features, *hidden, num_classes]
    rates = [dropout / 2] * len(hidden) + [dropout]
    layers: list[nn.Module] = []
    for i, (n_in, n_out, p) in enumerate(zip(sizes[:-1], sizes[1:], rates)):
        layers.append(nn.BatchNorm1d(n_in))
        if p:
            layers.append(nn.Dropout(p))
        layers.append(nn.Linear(n_in, n_out))
        if i < len(hidden):
            layers.append(nn.ReLU())  # not in place: gradient explainers hook the tensors it would overwrite
    return nn.Sequential(*layers)


def pooled_head(channels: int, num_classes: int) -> nn.Sequential:
    """The convolutional networks' head: concat pooling of `channels` feature maps, then `classifier`."""
    return nn.Sequential(ConcatPool1d(), classifier(2 * channels, num_classes))


def benchmark_init(model: nn.Module) -> nn.Module:
    """Re-initialise `model` as the benchmark does before training from scratch; recurrent layers keep
    PyTorch's own initialisation (the benchmark leaves them alone too)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
