"""resnet1d_wang and fcn_wang: the PTB-XL benchmark's versions of Wang et al.'s (2017) time-series
baselines, both ending in the shared concat-pooling head on 128 channels.

resnet1d_wang: a stem convolution (kernel 7, stride 1, 128 channels, BN, ReLU; no pooling), then three
basic blocks of 128 channels (conv k5 -> BN -> ReLU -> conv k3 -> BN, plus the shortcut, ReLU) with
strides 1, 2, 2; the shortcut of a strided block is a strided 1x1 convolution + BN, otherwise identity.
(The benchmark passes kernel size 5; a basic block turns it into (5, 5 // 2 + 1) = (5, 3).)

fcn_wang: three conv-BN-ReLU layers (128, 256, 128 channels; kernels 8, 5, 3; stride 1, padding
(k - 1) // 2, so the kernel-8 layer shortens the input by one sample).
"""
from __future__ import annotations

import torch
from torch import nn

from models.archs.heads import benchmark_init, conv_bn, pooled_head
from models.registry import register_model

WIDTH = 128



class BasicBlock(nn.Module):
    """conv k5 (stride) -> BN -> ReLU -> conv k3 -> BN, plus identity or strided 1x1 conv + BN; ReLU."""

    def __init__(self, channels: int, stride: int = 1, kernel_size: int = 5):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels, kernel_size, stride),
                                  conv_bn(channels, channels, kernel_size // 2 + 1, relu=False))
        self.shortcut = conv_bn(channels, channels, 1, stride, relu=False) if stride != 1 else nn.Identity()
        self.relu = nn.ReLU()  # not in place: the residual sum feeds it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet1dWang(nn.Module):
    """Stem k7, three basic blocks (strides 1, 2, 2), concat-pooling head."""

    def __init__(self, in_leads: int = 12, num_classes: int = 71, kernel_size: int = 5, kernel_size_stem: int = 7):
        super().__init__()
        self.stem = conv_bn(in_leads, WIDTH, kernel_size_stem)
        self.blocks = nn.Sequential(*[BasicBlock(WIDTH, stride, kernel_size) for stride in (1, 2, 2)])
        self.head = pooled_head(WIDTH, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, leads, samples) -> (batch, classes) logits."""
        return self.head(self.blocks(self.stem(x)))


class FCNWang(nn.Module):
    """Three conv-BN-ReLU layers (128/256/128 channels, kernels 8/5/3), concat-pooling head."""

    def __init__(self, in_leads: int = 12, num_classes: int = 71):
        super().__init__()
        self.body = nn.Sequential(conv_bn(in_leads, 128, 8), conv_bn(128, 256, 5), conv_bn(256, 128, 3))
        self.head = pooled_head(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, leads, samples) -> (batch, classes) logits."""
        return self.head(self.body(x))


def resnet1d_wang_groups(model: ResNet1dWang) -> list[list[nn.Module]]:
    """The reference's split points are its module 6 and its last module, both the head here (it has no
    stem pooling): the body, an empty group, the head; the body trains at lr/1000, the head at lr/10."""
    return [[model.stem, model.blocks], [], [model.head]]


def fcn_wang_groups(model: FCNWang) -> list[list[nn.Module]]:
    """The reference splits at its third convolution and its head."""
    return [[model.body[0], model.body[1]], [model.body[2]], [model.head]]


@register_model("resnet1d_wang", family="wang", min_samples=1, layer_groups=resnet1d_wang_groups)
def resnet1d_wang(in_leads: int, num_classes: int) -> ResNet1dWang:
    """PTB-XL benchmark resnet1d_wang: stem k7, 3 basic blocks (k5, k3) of 128 channels."""
    return benchmark_init(ResNet1dWang(in_leads, num_classes))


@register_model("fcn_wang", family="wang", min_samples=2, layer_groups=fcn_wang_groups)
def fcn_wang(in_leads: int, num_classes: int) -> FCNWang:
    """PTB-XL benchmark fcn_wang: 3 conv layers (128, 256, 128 channels; kernels 8, 5, 3)."""
    return benchmark_init(FCNWang(in_leads, num_classes))
