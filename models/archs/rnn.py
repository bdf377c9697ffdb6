"""lstm and lstm_bidir: the PTB-XL benchmark's recurrent networks.

Two LSTM layers of 256 hidden units (uni- or bidirectional, no dropout between them) read the leads
sample by sample. The head pools the LSTM's output sequence, with H = 256 or 512 channels, into 3 H
features, in this order: the average over time, the maximum over time, and the output at the *last*
time step, every channel of it. For lstm_bidir the backward half of that vector is the backward
direction's first step (it has read one time step of the layer below): the benchmark's head meant to
take the backward half at the first time step, but slices by the full channel count, so that part is
empty and every channel comes from the last step. This module computes what the benchmark does. Then BN ->
dropout 0.25 -> linear 3 H -> 128 -> ReLU -> BN -> dropout 0.5 -> linear 128 -> classes.

The benchmark trains (and finetunes) these two at lr 1e-3 with gradient-norm clipping at 0.25 (the
registry's "ptbxl" and "finetune" protocols). The forward is differentiable with respect to the input
in eval mode on the CPU; on CUDA, cuDNN's RNN backward runs only in training mode, so a gradient explainer must put the LSTM in training
mode there (it has no dropout, so its output does not change) while the batch norms stay in eval mode.
"""
from __future__ import annotations

import torch
from torch import nn

from models.archs.heads import benchmark_init, classifier
from models.registry import register_model

HIDDEN, LAYERS = 256, 2
PROTOCOL = {"ptbxl": {"lr": 1e-3, "clip_grad": 0.25}, "finetune": {"lr": 1e-3, "clip_grad": 0.25}}


class LSTM1d(nn.Module):
    """Stacked LSTM over (batch, leads, samples); head on [mean, max, last step] of its outputs."""

    def __init__(self, in_leads: int = 12, num_classes: int = 71, bidirectional: bool = False,
                 hidden: int = HIDDEN, layers: int = LAYERS):
        super().__init__()
        self.lstm = nn.LSTM(in_leads, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.head = classifier(3 * hidden * (2 if bidirectional else 1), num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, leads, samples) -> (batch, 3 H): mean, max and last step of the LSTM's outputs."""
        out, _ = self.lstm(x.transpose(1, 2))  # (batch, samples, H)
        return torch.cat([out.mean(dim=1), out.amax(dim=1), out[:, -1]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, leads, samples) -> (batch, classes) logits."""
        return self.head(self.features(x))


def layer_groups(model: LSTM1d) -> list[list[nn.Module]]:
    """As the reference (split at its head): the LSTM, then the head."""
    return [[model.lstm], [model.head]]


@register_model("lstm", family="rnn", protocol=PROTOCOL, min_samples=1, layer_groups=layer_groups)
def lstm(in_leads: int, num_classes: int) -> LSTM1d:
    """PTB-XL benchmark lstm: 2 layers of 256 units; head on mean, max and last step."""
    return benchmark_init(LSTM1d(in_leads, num_classes, bidirectional=False))


@register_model("lstm_bidir", family="rnn", protocol=PROTOCOL, min_samples=1, layer_groups=layer_groups)
def lstm_bidir(in_leads: int, num_classes: int) -> LSTM1d:
    """PTB-XL benchmark lstm_bidir: 2 bidirectional layers of 256 units; same head on 512 channels."""
    return benchmark_init(LSTM1d(in_leads, num_classes, bidirectional=True))
