"""FLOPs of a forward pass, counted from the network's layers: shared by bench_train.py and bench_archs.py
(a module, not a command: the scripts import it, it imports no script).

Every Conv1d, Linear and LSTM of a forward pass at a given input, 2 FLOPs per multiply-accumulate, from
forward hooks on one pass (on the meta device nothing is computed). An LSTM layer costs, per time step
and direction, its 4 gates x (input + hidden) x hidden multiply-accumulates; its bias additions and the
gates' elementwise work are left out, as BatchNorm, activations and pooling are for the convolutions:
the usual MFU convention. torch's own flop counter sees none of an LSTM on the CPU (oneDNN runs it as
one opaque kernel), which is why the LSTM has a hook of its own here."""
from __future__ import annotations

import torch
from torch import nn


def lstm_macs(module: nn.LSTM, steps: int) -> int:
    """Multiply-accumulates of `module` over `steps` time steps of one sequence: per layer and direction,
    4 gates x (input + hidden) x hidden per step (the input of a layer above the first is the layer
    below's output, hidden x directions wide; a projection, proj_size, is not supported)."""
    if module.proj_size:
        raise ValueError("an LSTM with proj_size is not counted")
    directions = 2 if module.bidirectional else 1
    h = module.hidden_size
    per_step = sum(4 * ((module.input_size if layer == 0 else h * directions) + h) * h
                   for layer in range(module.num_layers))
    return directions * steps * per_step


def forward_flops(model: nn.Module, n_leads: int, n_samples: int) -> int:
    """FLOPs of one record's forward pass through every Conv1d, Linear and LSTM (2 per multiply-accumulate),
    from forward hooks on a pass at this input size. Build the model on the meta device to count
    without computing anything."""
    macs = 0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv1d):
            macs += output.numel() * (module.in_channels // module.groups) * module.kernel_size[0]
        elif isinstance(module, nn.LSTM):
            x = inputs[0]  # (batch, steps, features) if batch_first, else (steps, batch, features)
            batch, steps = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
            macs += batch * lstm_macs(module, steps)
        else:
            macs += output.numel() * module.in_features

    layers = (nn.Conv1d, nn.Linear, nn.LSTM)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, layers)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, n_leads, n_samples, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return 2 * macs
