"""main.py --init-from: the frozen phase leaves the body's weights as the source's, the second phase uses
the declared per-group rates, the inputs must be the source's, the source is part of the run's identity,
and a finetuned run is an ordinary run folder."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import main
import predict
from models.checkpoint import load_checkpoint
from models.registry import create_model, list_models, model_entry
from models.training import RunConfig, resolve_identity, train
from models.transfer import group_lrs, layer_groups, output_layer
from utils.errors import PipelineError
from utils.labels import LEADS
from utils.manifest import file_sha

FINETUNE = ["--epochs", "2", "--freeze-epochs", "1", "--discriminative-lrs", "--optimizer", "adamw",
            "--weight-decay", "0.01", "--schedule", "onecycle", "--limit", "80"]


def body_keys(state: dict, arch: str) -> tuple[list[str], list[str]]:
    """(non-batch-norm keys, batch-norm keys) of the weights outside the head group (the last)."""
    net = create_model(arch, 12, 9)
    head = {id(p) for m in layer_groups(net, arch)[-1] for p in m.parameters()}
    bn_prefixes = tuple(f"net.{name}." for name, m in net.named_modules()
                        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    named = dict(net.named_parameters())
    body = [f"net.{n}" for n, p in named.items() if id(p) not in head]
    return ([k for k in body if not k.startswith(bn_prefixes)],
            [k for k in state if k.startswith(bn_prefixes) and not k.endswith("num_batches_tracked")])


@pytest.fixture(scope="module")
def finetuned(trained, prepared, tmp_path_factory, tiny) -> dict:
    run = tmp_path_factory.mktemp("finetune") / "ft"
    out = main.main(["--data-dir", str(prepared), *tiny, "--init-from", str(trained["run"].folder), *FINETUNE,
                     "--run", str(run)])
    return {**out, "source": trained["model_path"]}


def test_frozen_phase_keeps_every_body_weight_but_batch_norms(finetuned):
    source = torch.load(finetuned["source"], weights_only=True)["model"]
    frozen = torch.load(finetuned["run"].frozen, weights_only=True)
    final = torch.load(finetuned["run"].last, weights_only=True)["model"]  # the last epoch, kept or not
    assert frozen["epoch"] == 1
    weights, batchnorm = body_keys(source, "resnet10")
    assert len(weights) == 12  # the stem, two per block (one block per stage), three projections
    for key in weights:  # convolutions of the stem and the stages: bit for bit the source's
        assert torch.equal(frozen["model"][key], source[key]), key
    # batch norms keep training while the body is frozen (fastai's train_bn): scale, shift and statistics move
    assert any(not torch.equal(frozen["model"][k], source[k]) for k in batchnorm if k.endswith(".weight"))
    assert any(not torch.equal(frozen["model"][k], source[k]) for k in batchnorm if k.endswith("running_mean"))
    assert not torch.equal(frozen["model"]["net.fc.weight"], source["net.fc.weight"])  # the new output layer
    assert any(not torch.equal(final[k], source[k]) for k in weights)  # the second phase trains the body
    assert torch.equal(frozen["model"]["std"], source["std"])  # the source's standardisation is kept


def test_group_rates_are_fastai_s_even_mults_and_the_default_groups_end_with_the_head():
    """fastai's even_mults(lr/1000, lr/10, n): n rates evenly spaced on a log scale, and for one group the
    highest, lr/10 (computed here independently); the default split is the body, then the last top-level
    part, which holds the output layer (the part trained alone while the body is frozen)."""
    from models.registry import default_layer_groups

    lr = 1e-2
    for n in (1, 2, 4):
        expected = [lr / 10] if n == 1 else [lr / 1000 * (100 ** (1 / (n - 1))) ** i for i in range(n)]
        assert group_lrs(lr, n) == pytest.approx(expected), n
    parts = [torch.nn.Conv1d(2, 3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)]
    assert default_layer_groups(torch.nn.Sequential(*parts)) == [parts[:2], parts[2:]]


def test_second_phase_uses_the_declared_rates_per_layer_group(finetuned):
    last = torch.load(finetuned["run"].last, weights_only=True)
    groups = last["optimizer"]["param_groups"]
    lr = last["config"]["lr"]
    assert [g["name"] for g in groups] == ["group 1 of 3", "group 2 of 3", "group 3 of 3"]
    assert [g["max_lr"] for g in groups] == pytest.approx([lr / 1000, lr / 100, lr / 10])
    assert group_lrs(lr, 3) == pytest.approx([lr / 1000, lr / 100, lr / 10])
    net = create_model("resnet10", 12, 9)
    sizes = [[p.numel() for m in g for p in m.parameters()] for g in layer_groups(net, "resnet10")]
    assert [len(g["params"]) for g in groups] == [len(s) for s in sizes]


def test_each_phase_is_one_cycle_over_its_own_epochs_the_frozen_one_at_lr(finetuned):
    """The reference finetunes with two fit_one_cycle calls: the frozen phase over its epochs with every
    group at lr, then the rest over the remaining epochs, each cycle ending exactly as its phase ends."""
    from models.transfer import HEAD, phase_param_groups

    last = torch.load(finetuned["run"].last, weights_only=True)
    schedule = last["scheduler"]
    assert schedule["last_epoch"] == schedule["total_steps"]  # the second cycle ended with the training
    lr = last["config"]["lr"]
    frozen = phase_param_groups(create_model("resnet10", 12, 9), "resnet10", lr, HEAD, discriminative=True)
    assert [g["lr"] for g in frozen] == [lr] * len(frozen)


def test_the_new_output_layer_is_kaiming_normal_with_zero_bias():
    from models.transfer import replace_output_layer

    torch.manual_seed(0)
    net = create_model("fcn_wang", 12, 5)
    new = replace_output_layer(net, 71)  # as many outputs as the benchmark's all: Xavier's sd would be 20 % less
    w = new.weight.detach().double().flatten()
    assert new.out_features == 71 and not new.bias.any()
    assert abs(float(w.std()) / (2 / new.in_features) ** 0.5 - 1) < 0.05  # 9,088 draws: the sd within 2 %
    assert abs(float((((w - w.mean()) / w.std()) ** 4).mean()) - 3) < 0.5  # normal (a uniform's is 1.8)


def test_a_finetuned_run_is_an_ordinary_run(finetuned, tmp_path):
    model, ckpt = load_checkpoint(finetuned["run"].model)
    assert ckpt["config"]["source"] == f"{torch.load(finetuned['source'], weights_only=True)['run_id']}:" \
                                       f"{file_sha(finetuned['source'])}"
    table = predict.main(["--run", str(finetuned["run"].folder), "--n-bootstrap", "20", "--no-figures",
                          "--num-workers", "0", "--results-dir", str(tmp_path / "results")])
    assert "AUC" in " ".join(map(str, table.columns)) or len(table) > 0


def test_the_source_is_part_of_the_identity(trained, prepared, tmp_path):
    cfg = RunConfig(data_dir=str(prepared), arch="resnet10", seconds=2.0, sample_rate=100,
                    init_from=str(trained["model_path"]))
    before = resolve_identity(cfg)
    assert before.source.endswith(file_sha(trained["model_path"]))
    other = tmp_path / "src"
    other.mkdir()
    saved = torch.load(trained["model_path"], weights_only=True)
    saved["model"]["net.fc.bias"] += 1.0  # the same run id, other weights: another source
    torch.save(saved, other / "model.pth")
    after = resolve_identity(dataclasses.replace(cfg, init_from=str(other / "model.pth")))
    assert after.source != before.source
    assert any(c.startswith("source:") for c in RunConfig.from_dict(before.to_dict()).changed(after))


@pytest.mark.parametrize("flags, named", [
    (["--sample-rate", "200"], "--sample-rate"),
    (["--leads", "I,II"], "--leads"),
    (["--crop-seconds", "1"], "--crop-seconds"),
    (["--arch", "resnet18"], "--arch"),
])
def test_other_inputs_than_the_source_are_refused_in_one_line(trained, prepared, tmp_path, capsys, flags, named):
    base = ["--data-dir", str(prepared), "--init-from", str(trained["run"].folder), "--run", str(tmp_path / "r"),
            "--num-workers", "0", "--epochs", "1"]
    with pytest.raises(SystemExit) as e:
        main.main(base + flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and f"argument {named}:" in err[-1] and "source" in err[-1]
    assert not (tmp_path / "r").exists()


def test_the_library_refuses_other_inputs_too(trained, prepared, tmp_path):
    cfg = RunConfig(data_dir=str(prepared), arch="resnet10", seconds=2.0, sample_rate=250,
                    init_from=str(trained["model_path"]), run_dir=str(tmp_path / "r"), epochs=1, num_workers=0)
    with pytest.raises(PipelineError, match="250 Hz differs from the source's 100 Hz") as e:
        train(cfg)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("flags, named", [
    (["--init-from", __file__], "--init-from"),
    (["--freeze-epochs", "-1"], "--freeze-epochs"),
    (["--freeze-epochs", "x"], "--freeze-epochs"),
    (["--restandardize"], "--restandardize"),
    (["--discriminative-lrs"], "--discriminative-lrs"),
    (["--freeze-epochs", "2"], "--freeze-epochs"),
    (["--preset", "finetune"], "--preset"),
])
def test_bad_finetuning_flags_exit_2_naming_the_flag(prepared, tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as e:
        main.main(["--data-dir", str(prepared), "--run", str(tmp_path / "r"), *flags])
    assert e.value.code == 2 and f"argument {named}:" in capsys.readouterr().err


def test_a_missing_source_is_refused_in_one_line(prepared, tmp_path):
    with pytest.raises(SystemExit) as e:
        main.main(["--data-dir", str(prepared), "--init-from", str(tmp_path / "nothing"), "--run", str(tmp_path / "r")])
    assert str(e.value.code).startswith("error: ") and "not found" in str(e.value.code)


def test_freeze_epochs_above_epochs_is_refused(trained, prepared, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main.main(["--data-dir", str(prepared), "--init-from", str(trained["run"].folder), "--epochs", "2",
                   "--freeze-epochs", "3", "--run", str(tmp_path / "r")])
    assert e.value.code == 2 and "argument --freeze-epochs:" in capsys.readouterr().err


@pytest.mark.parametrize("groups, says", [
    (lambda m: 5, " failed on its network: TypeError"),
    (lambda m: 1 / 0, " failed on its network: ZeroDivisionError"),
    (lambda m: [[m.stem], ["head"]], ": a group holds something that is not a module"),
    (lambda m: [[torch.nn.Linear(3, 3)], [m.fc]], ": group 1 holds parameters of modules that are not the network's"),
    (lambda m: [[m.stem, m.fc], [m.fc]], ": group 2 shares parameters with an earlier group"),
])
def test_a_bad_layer_groups_is_one_error_naming_the_architecture(groups, says):
    """A user's layer_groups that raises, returns no modules, a module of another network (which would
    train in the body's place, unseen) or one module twice: refused naming the architecture and its file."""
    from models import registry

    registry.register_model("zz_groups", family="t", layer_groups=groups)(model_entry("resnet10").builder)
    try:
        net = create_model("zz_groups", 12, 5)
        with pytest.raises(PipelineError, match=rf"^architecture zz_groups \(layer_groups of models.archs.resnet\)"
                                               rf"{says}"):
            layer_groups(net, "zz_groups")
    finally:
        registry._REGISTRY.pop("zz_groups", None)


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_declares_disjoint_groups_with_the_output_layer_last(name):
    net = create_model(name, 12, 5)
    groups = layer_groups(net, name)
    ids = [id(p) for g in groups for m in g for p in m.parameters()]
    assert len(ids) == len(set(ids)) and len(groups) >= 2
    _, out = output_layer(net)
    assert out.out_features == 5 and any(out is m for top in groups[-1] for m in top.modules())
    assert model_entry(name).layer_groups is not None


def test_the_studies_finetune_with_the_sources_inputs_or_refuse(trained, prepared, capsys):
    import benchmark
    import cross_database
    import cross_validate
    import lead_study

    src = str(trained["run"].folder)
    args = cross_validate.parse_args(["--data-dir", str(prepared), "--init-from", src])
    assert (args.arch, args.sample_rate, args.seconds, args.init_from) == ("resnet10", 100, 2.0, str(trained["model_path"]))
    args = cross_database.parse_args(["--data-dirs", str(prepared), "other", "--init-from", src])
    assert args.arch == "resnet10" and args.lead_names == list(LEADS)
    for module, argv in ((lead_study, ["--data-dir", str(prepared)]), (benchmark, ["--data-dir", str(prepared)])):
        with pytest.raises(SystemExit) as e:
            module.parse_args([*argv, "--init-from", src])
        assert e.value.code == 2 and "argument --init-from:" in capsys.readouterr().err


def test_a_standardised_source_s_statistics_are_kept_unless_refitted(prepared, tmp_path, tiny):
    """A source trained with --standardize (as the benchmark's protocol does), finetuned on other training
    records: the network keeps the source's mean and std (the inputs it learned on); --restandardize refits
    them on the new training records."""
    common = ["--data-dir", str(prepared), *tiny, "--epochs", "1"]
    main.main([*common, "--standardize", "--limit", "40", "--run", str(tmp_path / "source")])
    source = torch.load(tmp_path / "source" / "model.pth", weights_only=True)["model"]
    kept = {}
    for flags in ([], ["--restandardize"]):
        run = tmp_path / f"ft{len(flags)}"
        main.main([*common, "--init-from", str(tmp_path / "source"), "--limit", "90", *flags, "--run", str(run)])
        kept[bool(flags)] = torch.load(run / "model.pth", weights_only=True)["model"]
    assert torch.equal(kept[False]["mean"], source["mean"]) and torch.equal(kept[False]["std"], source["std"])
    assert not torch.equal(kept[True]["std"], source["std"])
