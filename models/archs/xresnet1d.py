"""xresnet1d50 and xresnet1d101: the PTB-XL benchmark's 1D xresnets (bottleneck blocks, kernel 5).

As the benchmark defines them: a stem of three conv-BN-ReLU layers (32, 32, 64 channels, kernel 5, the
first with stride 2) and a max-pool (3, stride 2); four stages of bottleneck blocks (1x1, k5, 1x1) that
all keep 64 inner and 256 outer channels (the stages do not widen); stride 2 at the start of stages 2-4,
where the shortcut is a 2-wide average pool (ceil mode) and no convolution; the only 1x1 shortcut
convolution is the first block's (64 -> 256 channels). Then the shared concat-pooling head on 256 channels.

The constructor initialises the network like the benchmark's xresnet (kaiming-normal convolutions, zero
biases, the last BN of every block at scale 0 so that each block starts as its shortcut); the
registered builders then apply `benchmark_init`, which the benchmark runs before training and which sets
those scales back to 1.
"""
from __future__ import annotations

import torch
from torch import nn

from models.archs.heads import benchmark_init, conv_bn, pooled_head
from models.registry import register_model

STEM = (32, 32, 64)
INNER, EXPANSION = 64, 4



class Bottleneck(nn.Module):
    """1x1 -> kxk (stride) -> 1x1 (no ReLU), plus a shortcut that pools (stride 2) and/or projects."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, kernel_size: int = 5, inner: int = INNER):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, inner, 1), conv_bn(inner, inner, kernel_size, stride),
                                  conv_bn(inner, c_out, 1, relu=False))
        shortcut: list[nn.Module] = []
        if stride != 1:
            shortcut.append(nn.AvgPool1d(2, ceil_mode=True))
        if c_in != c_out:
            shortcut.append(conv_bn(c_in, c_out, 1, relu=False))
        self.shortcut = nn.Sequential(*shortcut)  # empty: identity
        self.relu = nn.ReLU()  # not in place: the residual sum feeds it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class XResNet1d(nn.Module):
    """Stem, four stages of `Bottleneck`s (`depths` blocks each), concat-pooling head."""

    def __init__(self, depths: tuple[int, ...], in_leads: int = 12, num_classes: int = 71, kernel_size: int = 5,
                 kernel_size_stem: int = 5):
        super().__init__()
        if min(kernel_size, kernel_size_stem) < 1 or kernel_size % 2 == 0 or kernel_size_stem % 2 == 0:
            raise ValueError(f"kernel_size and kernel_size_stem must be odd and positive (got {kernel_size}, "
                             f"{kernel_size_stem}): an even kernel changes the lengths ('same' padding is odd)")
        widths = (in_leads, *STEM)
        self.stem = nn.Sequential(
            *[conv_bn(widths[i], widths[i + 1], kernel_size_stem, stride=2 if i == 0 else 1) for i in range(3)],
            nn.MaxPool1d(3, stride=2, padding=1))
        out, stages, channels = INNER * EXPANSION, [], STEM[-1]
        for i, n in enumerate(depths):
            stages.append(nn.Sequential(*[Bottleneck(channels if b == 0 else out, out,
                                                     stride=2 if i > 0 and b == 0 else 1, kernel_size=kernel_size)
                                          for b in range(n)]))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.head = pooled_head(out, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """The xresnet's own start: kaiming-normal weights, zero biases, each block's last BN at zero."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
            if isinstance(m, (nn.Conv1d, nn.Linear, nn.BatchNorm1d)) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for stage in self.stages:
            for block in stage:
                nn.init.zeros_(block.body[-1][1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, leads, samples) -> (batch, classes) logits."""
        return self.head(self.stages(self.stem(x)))


def layer_groups(model: XResNet1d) -> list[list[nn.Module]]:
    """The reference splits at its max-pool and its head: the stem's convolutions; the pool and the four
    stages; the head."""
    return [[model.stem], [model.stages], [model.head]]


@register_model("xresnet1d50", family="xresnet", min_samples=1, layer_groups=layer_groups)
def xresnet1d50(in_leads: int, num_classes: int, kernel_size: int = 5, kernel_size_stem: int = 5) -> XResNet1d:
    """PTB-XL benchmark xresnet1d50: bottleneck blocks (3, 4, 6, 3), kernel 5, 256 channels."""
    return benchmark_init(XResNet1d((3, 4, 6, 3), in_leads, num_classes, kernel_size, kernel_size_stem))


@register_model("xresnet1d101", family="xresnet", min_samples=1, layer_groups=layer_groups)
def xresnet1d101(in_leads: int, num_classes: int, kernel_size: int = 5, kernel_size_stem: int = 5) -> XResNet1d:
    """PTB-XL benchmark xresnet1d101: bottleneck blocks (3, 4, 23, 3), kernel 5, 256 channels."""
    return benchmark_init(XResNet1d((3, 4, 23, 3), in_leads, num_classes, kernel_size, kernel_size_stem))
