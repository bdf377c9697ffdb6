"""The PTB-XL benchmark's seven networks as its fastai code builds them (helme/ecg_ptbxl_benchmarking,
code/models/*.py, with fastai_model.py's arguments: kernel size 5, head [128], dropout 0.5), restated as
module trees: the same nesting, attribute names and registration order, hence the same state-dict layout
a `learn.save` file holds, and the same forward computation. fastai's few utilities are restated here too
(`bn_drop_lin`, `Flatten`, `Lambda`, the concat pooling). What the import must map is exactly this."""
from __future__ import annotations

import torch
from torch import nn


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class ConcatPool(nn.Module):
    """fastai's AdaptiveConcatPool1d: registers `ap` then `mp`, returns [max, average]."""

    def __init__(self):
        super().__init__()
        self.ap, self.mp = nn.AdaptiveAvgPool1d(1), nn.AdaptiveMaxPool1d(1)

    def forward(self, x):
        return torch.cat([self.mp(x), self.ap(x)], 1)


def bn_drop_lin(n_in, n_out, p, relu):
    layers = [nn.BatchNorm1d(n_in), nn.Dropout(p), nn.Linear(n_in, n_out)]
    return layers + ([nn.ReLU(inplace=True)] if relu else [])


def head(nf, nc, pool=None):
    """create_head1d(nf, nc, lin_ftrs=[128], ps=0.5): pool, flatten, BN-drop(0.25)-lin-ReLU, BN-drop(0.5)-lin."""
    first = [pool, ] if pool is not None else [ConcatPool(), Flatten()]
    return nn.Sequential(*first, *bn_drop_lin(nf, 128, 0.25, True), *bn_drop_lin(128, nc, 0.5, False))


def conv_layer(ni, nf, ks, stride=1, act=True):
    """xresnet's ConvLayer: conv (no bias), BN, ReLU."""
    layers = [nn.Conv1d(ni, nf, ks, stride=stride, padding=(ks - 1) // 2, bias=False), nn.BatchNorm1d(nf)]
    return nn.Sequential(*layers, *([nn.ReLU()] if act else []))


class ResBlock(nn.Module):
    """The bottleneck block: `convs` registered, and again inside `convpath`; `idpath` pool then 1x1."""

    def __init__(self, ni, nf, stride):
        super().__init__()
        self.convs = nn.Sequential(conv_layer(ni, 64, 1), conv_layer(64, 64, 5, stride), conv_layer(64, nf, 1, act=False))
        self.convpath = nn.Sequential(self.convs)
        idpath = [nn.AvgPool1d(2, ceil_mode=True)] if stride != 1 else []
        self.idpath = nn.Sequential(*idpath, *([conv_layer(ni, nf, 1, act=False)] if ni != nf else []))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.convpath(x) + self.idpath(x))


def xresnet1d(layers, nc):
    stem = [conv_layer(c_in, c_out, 5, 2 if i == 0 else 1) for i, (c_in, c_out) in enumerate([(12, 32), (32, 32),
                                                                                                (32, 64)])]
    stages = [nn.Sequential(*[ResBlock(64 if (i == 0 and b == 0) else 256, 256, 2 if (i > 0 and b == 0) else 1)
                              for b in range(n)]) for i, n in enumerate(layers)]
    return nn.Sequential(*stem, nn.MaxPool1d(3, stride=2, padding=1), *stages, head(512, nc))


class InceptionBlock(nn.Module):
    def __init__(self, ni):
        super().__init__()
        self.bottleneck = nn.Conv1d(ni, 32, 1, bias=False)
        self.convs = nn.ModuleList([nn.Conv1d(32, 32, k, padding=(k - 1) // 2, bias=False) for k in (39, 19, 9)])
        self.conv_bottle = nn.Sequential(nn.MaxPool1d(3, 1, padding=1), nn.Conv1d(ni, 32, 1, bias=False))
        self.bn_relu = nn.Sequential(nn.BatchNorm1d(128), nn.ReLU())

    def forward(self, x):
        b = self.bottleneck(x)
        return self.bn_relu(torch.cat([c(b) for c in self.convs] + [self.conv_bottle(x)], dim=1))


class Shortcut(nn.Module):
    def __init__(self, ni, nf):
        super().__init__()
        self.act_fn, self.conv, self.bn = nn.ReLU(True), nn.Conv1d(ni, nf, 1, bias=False), nn.BatchNorm1d(nf)

    def forward(self, inp, out):
        return self.act_fn(out + self.bn(self.conv(inp)))


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.im = nn.ModuleList([InceptionBlock(12 if d == 0 else 128) for d in range(6)])
        self.sk = nn.ModuleList([Shortcut(12 if d == 0 else 128, 128) for d in range(2)])

    def forward(self, x):
        res = x
        for d in range(6):
            x = self.im[d](x)
            if d % 3 == 2:
                x = self.sk[d // 3](res, x)
                res = x.clone()
        return x


class Inception1d(nn.Module):
    def __init__(self, nc):
        super().__init__()
        self.layers = nn.Sequential(Backbone(), head(256, nc))

    def forward(self, x):
        return self.layers(x)


class RNNPool(nn.Module):
    def forward(self, x):  # (batch, channels, time): average, maximum, every channel at the last step
        return torch.cat([x.mean(-1), x.amax(-1), x[:, :, -1]], 1)


def rnn1d(nc, bidirectional):
    hidden = 256 * (2 if bidirectional else 1)
    return nn.Sequential(Lambda(lambda x: x.transpose(1, 2)), Lambda(lambda x: x.transpose(0, 1)),
                         nn.LSTM(12, 256, num_layers=2, bidirectional=bidirectional),
                         Lambda(lambda x: x[0].transpose(0, 1)), Lambda(lambda x: x.transpose(1, 2)),
                         head(3 * hidden, nc, pool=RNNPool()))


def fcn_wang(nc):
    convs = [nn.Sequential(nn.Sequential(nn.Conv1d(c_in, c_out, k, padding=(k - 1) // 2, bias=False),
                                         nn.BatchNorm1d(c_out), nn.ReLU(True)))
             for c_in, c_out, k in [(12, 128, 8), (128, 256, 5), (256, 128, 3)]]
    return nn.Sequential(*convs, head(256, nc))


class BasicBlock1d(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.conv1 = nn.Conv1d(128, 128, 5, stride=stride, padding=2, bias=False)
        self.bn1, self.relu = nn.BatchNorm1d(128), nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv1d(128, 128, 3, padding=1, bias=False), nn.BatchNorm1d(128)
        self.downsample = (nn.Sequential(nn.Conv1d(128, 128, 1, stride=stride, bias=False), nn.BatchNorm1d(128))
                           if stride != 1 else None)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


def resnet1d_wang(nc):
    return nn.Sequential(nn.Conv1d(12, 128, 7, padding=3, bias=False), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
                         *[nn.Sequential(BasicBlock1d(s)) for s in (1, 2, 2)], head(256, nc))


BUILDERS = {"xresnet1d50": lambda nc: xresnet1d([3, 4, 6, 3], nc), "xresnet1d101": lambda nc: xresnet1d([3, 4, 23, 3], nc),
            "inception1d": Inception1d, "lstm": lambda nc: rnn1d(nc, False), "lstm_bidir": lambda nc: rnn1d(nc, True),
            "fcn_wang": fcn_wang, "resnet1d_wang": resnet1d_wang}


def reference_layer_groups(name: str, model: nn.Module) -> list[list[nn.Module]]:
    """fastai's `learn.split(model.get_layer_groups())`: split points at the first leaf of each returned
    module (flattened order), or, for inception1d's tuple, the modules themselves; each group its leaves."""
    if name == "inception1d":
        backbone = model.layers[0]
        return [[backbone.im[3:], backbone.sk[1:]], list(model.layers[-1])]
    points = {"xresnet1d50": (3, -1), "xresnet1d101": (3, -1), "fcn_wang": (2, -1), "resnet1d_wang": (6, -1),
              "lstm": (-1,), "lstm_bidir": (-1,)}[name]
    leaves = [m for m in model.modules() if not list(m.children())]
    first = lambda m: next(x for x in m.modules() if not list(x.children()))  # noqa: E731
    idxs = [leaves.index(first(model[i])) for i in points]
    idxs = ([0] if idxs[0] != 0 else []) + idxs + [len(leaves)]
    return [leaves[i:j] for i, j in zip(idxs[:-1], idxs[1:])]


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter and batch-norm statistic drawn at random, at scales that carry the input through
    every layer (weights at sqrt(2 / fan-in), batch-norm scales near 1): an import that swapped two tensors
    of one shape, flipped a kernel or left out a layer gives other outputs (tested: the outputs of an
    input and of the same input reversed in time differ)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() >= 2:
                t.copy_(torch.randn(t.shape, generator=g) * (1 / t[0].numel()) ** 0.5)
            elif name.endswith("weight"):  # a batch norm's scale
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model
