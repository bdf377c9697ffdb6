"""Every registered architecture on real forward and backward passes; the PTB-XL benchmark's seven
against the reference definitions (parameter counts, initialisation, what their heads read)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import models.__main__ as models_command
from models.archs.inception1d import kernel_sizes
from models.archs.rnn import LSTM1d
from models.archs.xresnet1d import XResNet1d
from models.registry import builder_arguments, count_parameters, create_model, list_models, model_entry, register_model
from utils.errors import PipelineError

BENCHMARK = ("xresnet1d50", "xresnet1d101", "inception1d", "resnet1d_wang", "fcn_wang", "lstm", "lstm_bidir")

# Trainable parameters of the reference networks for 12 leads and (71, 5) classes, from
# helme/ecg_ptbxl_benchmarking code/models/*.py as code/models/fastai_model.py builds them: kernel_size 5
# (inception1d: 8 * 5 = 40), ps_head 0.5, lin_ftrs_head [128]. Their head (create_head1d, or the RNN's own)
# on F pooled features is BN(F) + linear F->128 + BN(128) + linear 128->C: 2F + 129 * 128 + 256 + 129 C.
PARAMS = {
    # xresnet1d.py xresnet1d50 (expansion 4, layers [3, 4, 6, 3], every stage 64 -> 256 channels): stem
    # 1,984 + 5,184 + 10,368; first block 58,624 (its 1x1 shortcut 64 -> 256 included), 15 blocks of
    # 54,016 (strided ones shortcut by an average pool); head F = 512: 66,944 + 129 C.
    "xresnet1d50": (962_503, 953_989),
    # xresnet1d.py xresnet1d101 (layers [3, 4, 23, 3]): the same with 32 blocks of 54,016.
    "xresnet1d101": (1_880_775, 1_872_261),
    # inception1d.py (kernels 39, 19, 9; depth 6; 32 filters, bottleneck 32): first block 69,632, five of
    # 77,056, shortcuts 1,792 + 16,640; head F = 256: 33,664 + 129 C.
    "inception1d": (516_167, 507_653),
    # resnet1d.py resnet1d_wang (inplanes 128, stem k7 stride 1, blocks [1, 1, 1] with kernels 5 and 3):
    # stem 11,008; blocks 131,584 + 2 x 148,224 (strided 1x1 shortcuts); head F = 256: 33,664 + 129 C.
    "resnet1d_wang": (481_863, 473_349),
    # basic_conv1d.py fcn_wang (filters 128, 256, 128; kernels 8, 5, 3): 12,544 + 164,352 + 98,560;
    # head F = 256: 33,664 + 129 C.
    "fcn_wang": (318_279, 309_765),
    # rnn1d.py RNN1d(lstm=True, bidirectional=False, hidden 256, 2 layers): LSTM 276,480 + 526,336;
    # head F = 3 x 256: 100,224 + 129 C.
    "lstm": (912_199, 903_685),
    # rnn1d.py RNN1d(lstm=True, bidirectional=True): LSTM 2 x 276,480 + 2 x 788,480; head F = 6 x 256:
    # 200,064 + 129 C.
    "lstm_bidir": (2_339_143, 2_330_629),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", BENCHMARK)
def test_parameter_counts_equal_the_reference(name):
    assert (count_parameters(create_model(name, 12, 71)), count_parameters(create_model(name, 12, 5))) == PARAMS[name]


def test_the_models_command_lists_every_architecture(capsys):
    rows = models_command.main(["--classes", "71"])
    out = capsys.readouterr().out
    assert [r["model"] for r in rows] == list_models() and set(BENCHMARK) <= set(list_models())
    for r in rows:
        assert r["model"] in out and r["family"] in out
        if r["model"] in PARAMS:
            assert r["params"] == PARAMS[r["model"]][0] and f"{r['params']:,}" in out


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One SGD step: finite logits of the right shape, finite gradients reaching every parameter."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    logits = model(x)
    assert logits.shape == y.shape and torch.isfinite(logits).all()
    nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_trains_and_explains(name):
    torch.manual_seed(0)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    model = create_model(name, 12, 3)
    _train_step(model, torch.randn(2, 12, 250), y)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 12, 1000)).shape == (2, 3)
        assert model(torch.randn(1, 12, 250)).shape == (1, 3)  # a single record
    x = torch.randn(2, 12, 250, requires_grad=True)
    out = model(x)
    with torch.no_grad():
        assert out.shape == (2, 3) and torch.allclose(out, model(x), rtol=1e-5, atol=1e-6)  # no dropout
    out[:, 0].sum().backward()  # expected gradients differentiate the eval-mode output by the input
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    one_lead = create_model(name, 1, 3).eval()
    with torch.no_grad():
        assert one_lead(torch.randn(2, 1, 250)).shape == (2, 3)


@pytest.mark.parametrize("name", BENCHMARK)
def test_min_samples_is_the_shortest_input(name):
    shortest = model_entry(name).min_samples
    model = create_model(name, 12, 2).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 12, shortest)).shape == (2, 2)
        if shortest > 1:
            with pytest.raises(RuntimeError):
                model(torch.randn(2, 12, shortest - 1))


def test_only_the_lstms_train_under_their_own_protocol():
    for name in BENCHMARK:
        rnn = {"lr": 1e-3, "clip_grad": 0.25}
        expected = {"ptbxl": rnn, "finetune": rnn} if name.startswith("lstm") else {}
        assert model_entry(name).protocol == expected, name


def test_builders_start_from_the_benchmark_initialisation():
    """The benchmark re-initialises every network before training: BN scale 1, every bias 0 - also the
    xresnet's zero-scaled last BN of each block, which its constructor alone leaves at 0."""
    for name in ("xresnet1d50", "inception1d", "resnet1d_wang", "lstm"):
        for m in create_model(name, 12, 5).modules():
            if isinstance(m, nn.BatchNorm1d):
                assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any(), name
            elif isinstance(m, (nn.Conv1d, nn.Linear)) and m.bias is not None:
                assert not m.bias.any(), name
    bare = XResNet1d((1, 1, 1, 1), 12, 5).eval()
    block = bare.stages[1][0]  # strided: its shortcut is an average pool
    x = torch.randn(2, 256, 31)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(nn.functional.avg_pool1d(x, 2, ceil_mode=True)))


def test_inception_kernels_are_39_19_9():
    assert kernel_sizes(40) == (39, 19, 9)
    model = create_model("inception1d", 12, 5)
    assert sorted({m.kernel_size[0] for m in model.modules() if isinstance(m, nn.Conv1d)}) == [1, 9, 19, 39]


def test_lstm_heads_read_every_channel_at_the_last_step():
    """The reference head's last-step features are all channels at the final sample, also for a
    bidirectional LSTM: with one layer, its backward half then depends on that sample alone."""
    torch.manual_seed(0)
    x = torch.randn(1, 12, 20)
    changed = x.clone()
    changed[..., :-1] += 1.0
    one_layer = LSTM1d(12, 5, bidirectional=True, layers=1).eval()
    with torch.no_grad():
        last, last_changed = one_layer.features(x)[:, 1024:], one_layer.features(changed)[:, 1024:]
    assert torch.equal(last[:, 256:], last_changed[:, 256:])          # backward direction, last sample
    assert not torch.allclose(last[:, :256], last_changed[:, :256])   # forward direction, last sample
    model = create_model("lstm_bidir", 12, 5).eval()
    with torch.no_grad():
        out, _ = model.lstm(x.transpose(1, 2))
        assert torch.equal(model.features(x)[:, 1024:], out[:, -1])


def test_builder_arguments_make_a_variant_under_the_same_name():
    assert model_entry("xresnet1d101").arguments == {"kernel_size": 5, "kernel_size_stem": 5}
    assert model_entry("resnet34").arguments == {"kernel_size": 7, "dropout": 0.2, "width": 64}
    base, k7 = create_model("xresnet1d101", 12, 5), create_model("xresnet1d101", 12, 5, kernel_size=7)
    # each of the 33 bottleneck blocks has one 64 -> 64 convolution of width k: 2 more taps each
    assert count_parameters(k7) - count_parameters(base) == 33 * 64 * 64 * 2
    assert {m.kernel_size for m in k7.stages.modules() if isinstance(m, nn.Conv1d)} == {(1,), (7,)}
    k3 = create_model("resnet10", 12, 5, kernel_size=3, dropout=0)
    assert {m.kernel_size for m in k3.stages.modules() if isinstance(m, nn.Conv1d)} == {(1,), (3,)}
    assert {m.p for m in k3.modules() if isinstance(m, nn.Dropout)} == {0.0}
    assert k3(torch.randn(2, 12, 64)).shape == (2, 5)


def test_a_narrower_resnet_has_the_paper_s_blocks_at_a_fraction_of_its_channels():
    """width=32 halves every stage's channels (32, 64, 128, 256): about a quarter of the weights, the same
    blocks, kernels and output; a width of 0 is refused before any work."""
    full, half = create_model("resnet10", 12, 9), create_model("resnet10", 12, 9, width=32)
    channels = [m.out_channels for m in half.modules() if isinstance(m, nn.Conv1d)]
    assert channels == [c // 2 for c in (m.out_channels for m in full.modules() if isinstance(m, nn.Conv1d))]
    assert sorted(set(channels)) == [32, 64, 128, 256] and half.fc.in_features == 2 * 256
    assert 0.2 < count_parameters(half) / count_parameters(full) < 0.3
    assert half(torch.randn(2, 12, 500)).shape == (2, 9)
    with pytest.raises(ValueError, match="resnet34 cannot be built with {'width': 0}.*every width positive"):
        builder_arguments("resnet34", {"width": 0}, build=True)


def test_a_builder_argument_it_does_not_take_is_one_line_naming_the_architecture():
    with pytest.raises(ValueError, match=r"^xresnet1d101 takes no argument 'kernel' \(its arguments: kernel_size=5, "
                                         r"kernel_size_stem=5\)$"):
        create_model("xresnet1d101", 12, 5, kernel=7)
    with pytest.raises(ValueError, match=r"^lstm takes no argument 'kernel_size' \(its arguments: none\)$"):
        create_model("lstm", 12, 5, kernel_size=7)
    with pytest.raises(ValueError, match=r"xresnet1d101 argument kernel_size=7.5: not int"):
        builder_arguments("xresnet1d101", {"kernel_size": 7.5})
    with pytest.raises(ValueError, match="xresnet1d101 cannot be built with {'kernel_size': 4}.*odd"):
        builder_arguments("xresnet1d101", {"kernel_size": 4}, build=True)
    assert builder_arguments("resnet10", [("dropout", 0)]) == {"dropout": 0.0}


# The reference (code/models/basic_conv1d.py create_head1d with ps_head 0.5, lin_ftrs_head [128]): ps
# [0.5 / 2, 0.5] before the hidden and the output linear layer; rnn1d.py's head spreads ps_head the same way.
HEAD_DROPOUT = [0.25, 0.5]


@pytest.mark.parametrize("name", BENCHMARK)
def test_head_dropout_is_the_reference_s(name):
    """The only dropout in the benchmark's networks is the head's: 0.25 before the hidden layer, 0.5 before
    the output (a rate of 0.3 would leave the parameter counts as they are)."""
    model = create_model(name, 12, 5)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == HEAD_DROPOUT
    model.train()  # and it acts: in training mode, about half of the output layer's inputs are dropped
    drop = [m for m in model.modules() if isinstance(m, nn.Dropout)][-1]
    kept = drop(torch.ones(200, 128)) != 0
    assert 0.4 < 1 - kept.float().mean() < 0.6


def _pooling_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every module call that turns (batch, channels, samples) into (batch, features)."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((i[0], o))
                                     if isinstance(i[0], torch.Tensor) and i[0].dim() == 3 and o.dim() == 2 else None)
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize("name", [n for n in BENCHMARK if not n.startswith("lstm")])
def test_concat_pooling_reads_the_maximum_then_the_mean(name):
    """The reference's AdaptiveConcatPool1d: [max over time, average over time] of the last feature maps
    (reading the mean twice keeps every shape and parameter count)."""
    torch.manual_seed(0)
    model = create_model(name, 12, 5).eval()
    calls = _pooling_calls(model, torch.randn(2, 12, 250))
    assert len(calls) == 1, name
    maps, pooled = calls[0]
    assert pooled.shape == (2, 2 * maps.shape[1])
    assert not torch.allclose(maps.amax(-1), maps.mean(-1))  # the case tells the two apart
    assert torch.equal(pooled, torch.cat([maps.amax(-1), maps.mean(-1)], dim=1))


@pytest.mark.parametrize("name", ["lstm", "lstm_bidir"])
def test_lstm_heads_read_the_mean_the_maximum_and_the_last_step(name):
    torch.manual_seed(0)
    model = create_model(name, 12, 5).eval()
    x = torch.randn(2, 12, 30)
    with torch.no_grad():
        out, _ = model.lstm(x.transpose(1, 2))
        expected = torch.cat([out.mean(1), out.amax(1), out[:, -1]], dim=1)
        assert torch.equal(model.features(x), expected)


@pytest.mark.parametrize("name", BENCHMARK)
def test_every_benchmark_network_starts_from_the_reference_initialisation(name):
    """The reference's weight_init (basic_conv1d.py), applied to every network trained from scratch: every
    convolution and linear layer kaiming-normal (std sqrt(2 / fan_in)) with zero bias, every batch norm at
    scale 1 and shift 0; PyTorch's own defaults give std sqrt(1 / (3 fan_in)) and non-zero linear biases."""
    torch.manual_seed(0)
    ratios, standardised = [], []
    for m in create_model(name, 12, 5).modules():
        if isinstance(m, nn.BatchNorm1d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any(), name
        elif isinstance(m, (nn.Conv1d, nn.Linear)):
            assert m.bias is None or not m.bias.any(), name
            fan_in = m.weight[0].numel()
            if m.weight.numel() >= 1000:
                w = m.weight.detach().double().flatten()
                ratios.append(float(w.std()) / (2 / fan_in) ** 0.5)
                standardised.append((w - w.mean()) / w.std())
    assert ratios and all(0.85 < r < 1.15 for r in ratios), (name, min(ratios), max(ratios))
    # normal, not uniform at the same std: the excess kurtosis of all the weights is 0 (a uniform's is -1.2)
    kurtosis = float((torch.cat(standardised) ** 4).mean()) - 3
    assert abs(kurtosis) < 0.3, (name, kurtosis)


BROKEN_FILES = {
    "zz_exit.py": "import sys\nsys.exit(3)\n",
    "zz_half_written.py": 'raise RuntimeError("half-written file")\n',
    # before the shipped wang.py in the folder's order: it would have won fcn_wang and broken wang.py
    "aa_twice.py": ("from torch import nn\nfrom models.registry import register_model\n\n"
                    "@register_model('zz_first', family='t')\ndef first(in_leads, num_classes):\n"
                    "    return nn.Linear(in_leads, num_classes)\n\n"
                    "@register_model('fcn_wang', family='t')\ndef clash(in_leads, num_classes):\n"
                    "    return nn.Linear(in_leads, num_classes)\n"),
    # a shipped builder under its shipped name, with other settings: an override that must not pass unseen
    "aa_override.py": ("from models.archs import resnet\nfrom models.registry import register_model\n\n"
                       "register_model('resnet18', family='mine', protocol={'ptbxl': {'lr': 0.5}})(resnet.resnet18)\n"),
    "zz_same_file_twice.py": ("from torch import nn\nfrom models.registry import register_model\n\n"
                              "@register_model('zz_one', family='t')\ndef one(in_leads, num_classes):\n"
                              "    return nn.Linear(in_leads, num_classes)\n\n"
                              "@register_model('zz_one', family='t')\ndef again(in_leads, num_classes):\n"
                              "    return nn.Linear(in_leads, num_classes)\n"),
    "zz_path.py": ("from torch import nn\nfrom models.registry import register_model\n\n"
                   "@register_model('../../x', family='t')\ndef escape(in_leads, num_classes):\n"
                   "    return nn.Linear(in_leads, num_classes)\n"),
}


def test_a_broken_architecture_file_is_named_and_the_others_stay(tmp_path, monkeypatch, capsys):
    """A file of models/archs that raises (or exits), registers a name twice or a path: one warning line
    each, none of its architectures registered (not even those before the error), every command's --help
    still works. A name two files register (a user's file and a shipped one) is neither's, whichever comes
    first in the folder, said naming both; their other architectures stay. A builder that returns no
    network is named in one line."""
    import benchmark
    import main
    import models.archs as archs
    import models.registry as registry

    for name, text in BROKEN_FILES.items():
        (tmp_path / name).write_text(text)
    known = list_models()
    monkeypatch.setattr(archs, "__path__", [*archs.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_REGISTERED_BY", dict(registry._REGISTERED_BY))
    monkeypatch.setattr(registry, "_BROKEN", {})
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    assert list_models() == sorted(set(known) - {"fcn_wang", "resnet18"} | {"zz_first"})
    assert model_entry("resnet1d_wang").builder.__module__ == "models.archs.wang"  # wang.py's other one stays
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: models/archs/zz_exit.py cannot be imported (SystemExit: 3); its architectures are not available",
        "warning: models/archs/zz_half_written.py cannot be imported (RuntimeError: half-written file); its "
        "architectures are not available",
        "warning: models/archs/zz_path.py cannot be imported (ValueError: architecture name '../../x' is not a plain "
        "name (letters, digits, _ . + -): it names run folders); its architectures are not available",
        "warning: models/archs/zz_same_file_twice.py cannot be imported (ValueError: architecture 'zz_one' is "
        "registered twice (models.archs.zz_same_file_twice and models.archs.zz_same_file_twice)); its architectures "
        "are not available",
        "warning: architecture 'resnet18' is registered by models/archs/aa_override.py and by models/archs/resnet.py: "
        "not available until all but one rename it (their other architectures are available)",
        "warning: architecture 'fcn_wang' is registered by models/archs/aa_twice.py and by models/archs/wang.py: not "
        "available until all but one rename it (their other architectures are available)"]
    for command in (main, benchmark):
        with pytest.raises(SystemExit) as e:
            command.parse_args(["--help"])
        assert e.value.code == 0 and "--data-dir" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # the benchmark's default --models names fcn_wang, now no one's
        benchmark.parse_args(["--data-dir", str(tmp_path)])
    assert e.value.code == 2 and "argument --models: the default inception1d," in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown architecture 'fcn_wang'.*; architecture 'fcn_wang' is registered by "
                                         "models/archs/aa_twice.py and by models/archs/wang.py"):
        model_entry("fcn_wang")
    with pytest.raises(ValueError, match="not a plain name"):
        registry.register_model("a/b", family="t")
    for word in ("NA", "None", "nan", "null"):  # each the value pandas reads as missing in a table's model column
        with pytest.raises(ValueError, match=f"architecture name '{word}' reads as a missing value"):
            registry.register_model(word, family="t")
    # a protocol entry that could never apply (a misspelt protocol) or is no mapping of settings
    with pytest.raises(ValueError, match=r"protocol 'PTBXL' is unknown \(known: ptbxl, finetune\)"):
        registry.register_model("zz_misspelt", family="t", protocol={"PTBXL": {"lr": 1e-3}})
    for protocol in ({"ptbxl": None}, ["ptbxl"]):
        with pytest.raises(ValueError, match="architecture zz_none: protocol"):
            registry.register_model("zz_none", family="t", protocol=protocol)
    # min_samples bounds every input check: a string or None was a traceback when a run started, 0 or a
    # fraction passed unseen
    for bad in ("7", None, 0, -1, 7.5, True, float("nan"), 10**8):
        with pytest.raises(ValueError, match=r"architecture zz_short: min_samples=.* is not a whole number"):
            registry.register_model("zz_short", family="t", min_samples=bad)
    with pytest.raises(ValueError, match="architecture zz_groups: layer_groups=3 is not a function"):
        registry.register_model("zz_groups", family="t", layer_groups=3)
    registry.register_model("zz_not_a_network", family="t")(lambda in_leads, num_classes: (lambda x: x))
    with pytest.raises(PipelineError, match="architecture zz_not_a_network: its builder returned a function, not a "
                                            "torch nn.Module"):
        registry.create_model("zz_not_a_network", 12, 5)


def test_the_models_command_bounds_its_numbers(capsys):
    for argv in (["--classes", "1000000000"], ["--leads", "0"]):
        with pytest.raises(SystemExit) as e:
            models_command.main(argv)
        assert e.value.code == 2 and argv[0] in capsys.readouterr().err


class _Flat(nn.Module):
    """A fixed input length: flattens 1,000 samples into a linear layer."""

    def __init__(self, in_leads: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_leads * 1000, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_the_paper_s_resnet34_computes_what_the_paper_describes():
    """The network, written out again from the paper's description with torch.nn.functional on the
    model's own weights (eval mode): stem conv k15/2 pad 7, BN, ReLU, max-pool 3/2/1; stages of [3, 4, 6, 3]
    blocks of 64-512 channels, strides 1/2/2/2 (conv k7 -> BN -> ReLU -> conv k7 -> BN, plus the identity or
    a 1x1 conv + BN shortcut, ReLU); the mean and the maximum over time, concatenated; linear."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = create_model("resnet34", 12, 9).eval()
    for m in model.modules():  # batch norms away from the identity, so that each one counts
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)

    def bn(h, m):
        return F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    x = torch.randn(2, 12, 3000)
    with torch.no_grad():
        h = F.max_pool1d(F.relu(bn(F.conv1d(x, model.stem[0].weight, stride=2, padding=7), model.stem[1])), 3, 2, 1)
        assert h.shape[-1] == 750
        for i, (stage, width) in enumerate(zip(model.stages, (64, 128, 256, 512))):
            assert len(stage) == (3, 4, 6, 3)[i]
            for j, block in enumerate(stage):
                stride = 2 if i > 0 and j == 0 else 1
                conv1, bn1, conv2, bn2 = block.body[0], block.body[1], block.body[4], block.body[5]
                assert conv1.weight.shape[:2] == (width, h.shape[1]) and conv1.weight.shape[-1] == 7
                body = bn(F.conv1d(F.relu(bn(F.conv1d(h, conv1.weight, stride=stride, padding=3), bn1)),
                                   conv2.weight, padding=3), bn2)
                short = h if isinstance(block.shortcut, nn.Identity) else \
                    bn(F.conv1d(h, block.shortcut[0].weight, stride=stride), block.shortcut[1])
                h = F.relu(body + short)
        assert h.shape[1:] == (512, 94)
        expected = F.linear(torch.cat([h.mean(-1), h.amax(-1)], dim=1), model.fc.weight, model.fc.bias)
        assert torch.allclose(model(x), expected, atol=1e-5)


class _Squeezed(nn.Module):
    """Logits squeezed: (batch, classes) for batches of 2 or more, (classes,) for a batch of one."""

    def __init__(self, in_leads: int, num_classes: int):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(in_leads, 4, 3), nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).amax(-1)).squeeze()


class _NoParameters(nn.Module):
    def forward(self, x):
        return x[:, :2, 0]


def test_the_network_contract_is_checked_naming_the_architecture():
    from models.registry import check_network, normalises_single_values

    check_network("resnet18", create_model("resnet18", 12, 3), 12, 3, 250)
    cases = ((nn.Sequential(nn.Conv1d(12, 4, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten()), "wrong",
              r"architecture wrong returns \(2, 4\) for a batch of 2 record\(s\) and 3 classes"),
             (_NoParameters(), "empty", "architecture empty: the network has no trainable parameters"),
             (_Flat(12, 3), "flat", r"architecture flat fails on a batch of 2 input\(s\) of 12 lead\(s\) x 250 samples "
                                    r"\(RuntimeError"),
             (_Squeezed(12, 3), "squeezed", r"architecture squeezed returns \(3,\) for a batch of 1 record\(s\) and 3 "
                                            "classes"))
    for net, name, message in cases:
        with pytest.raises(PipelineError, match=message):
            check_network(name, net, 12, 3, 250)
    check_network("flat", _Flat(12, 3), 12, 3, 1000)
    # batch norm over pooled features: the benchmark heads (conv and LSTM), not the paper's ResNets
    for name in ("fcn_wang", "inception1d", "lstm"):
        model = create_model(name, 2, 3)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        assert normalises_single_values(model, 2, 64), name
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # no statistic moved
        with pytest.raises((ValueError, RuntimeError), match="more than 1 value per channel"):
            model.train()(torch.randn(1, 2, 64))
    assert not normalises_single_values(create_model("resnet18", 2, 3), 2, 64)


def _pooled(in_leads, num_classes):
    return nn.Sequential(nn.Conv1d(in_leads, 4, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, num_classes))


def _pooled_then_normalised(in_leads, num_classes):
    return nn.Sequential(nn.Conv1d(in_leads, 4, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.BatchNorm1d(4),
                         nn.Linear(4, num_classes))


@dataclasses.dataclass
class _Builder:  # a callable instance, which cannot be hashed (dataclass equality)
    normalise: bool

    def __call__(self, in_leads, num_classes):
        return (_pooled_then_normalised if self.normalise else _pooled)(in_leads, num_classes)


def test_the_batch_of_one_check_is_the_registered_builders(capsys):
    """The check is cached per builder: a name registered again with a network that batch-normalises its
    pooled features is refused at batch 1 though the first was accepted; a builder that cannot be hashed
    is checked as well."""
    import main
    import models.registry as registry

    def batch_of_one_refused() -> bool:
        try:
            main.parse_args(["--arch", "zz_batch", "--batch-size", "1"])
        except SystemExit as e:
            assert e.code == 2 and "undefined for one record" in capsys.readouterr().err
            return True
        return False

    try:
        for builder, refused in ((_pooled, False), (_pooled_then_normalised, True), (_pooled, False),
                                 (_Builder(True), True), (_Builder(False), False)):
            registry._REGISTRY.pop("zz_batch", None)
            register_model("zz_batch", family="t")(builder)
            assert batch_of_one_refused() == refused, builder
    finally:
        registry._REGISTRY.pop("zz_batch", None)


def test_a_batch_of_one_is_refused_for_heads_that_normalise_it(capsys):
    import benchmark
    import main

    for command, argv in ((main, ["--arch", "fcn_wang"]), (benchmark, ["--models", "resnet18,lstm"])):
        with pytest.raises(SystemExit) as e:
            command.parse_args([*argv, "--batch-size", "1"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "--batch-size: 1: " in err and "undefined for one record" in err
    assert main.parse_args(["--arch", "resnet18", "--batch-size", "1"]).batch_size == 1
