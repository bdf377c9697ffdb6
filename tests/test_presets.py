"""utils/presets.py: presets are defaults that flags override, and docs/presets.md shows them."""
from __future__ import annotations

from pathlib import Path

from utils.presets import PRESETS, preset_table

ROOT = Path(__file__).resolve().parents[1]


def test_presets_are_defaults_that_flags_override_and_the_readme_shows_them():
    import main
    args = main.parse_args(["--data-dir", "d", "--preset", "demo", "--epochs", "2"])
    demo = PRESETS["demo"]["train"]
    assert (args.arch, args.seconds, args.sample_rate, args.lr) == (demo["arch"], demo["seconds"],
                                                                   demo["sample_rate"], demo["lr"])
    assert args.epochs == 2  # the explicit flag wins
    assert main.parse_args(["--data-dir", "d"]).arch == "resnet34"  # no preset: the paper's defaults
    assert preset_table() in (ROOT / "docs" / "presets.md").read_text(), \
        "docs/presets.md's table differs from utils/presets.py"
    assert "--preset \"$preset\"" in (ROOT / "reproduce.sh").read_text()


def test_a_preset_s_builder_arguments_are_parsed_and_an_explicit_one_replaces_them():
    """The demo's `--arch-arg width=32` (a repeatable flag, texts in the preset) reaches the run as the
    parsed pair; `--arch-arg` on the command line replaces the preset's list rather than adding to it."""
    import main
    from models.training import RunConfig

    demo = main.parse_args(["--data-dir", "d", "--preset", "demo"])
    assert PRESETS["demo"]["train"]["arch_arg"] == ["width=32"]
    assert RunConfig.from_args(demo).arch_args == (("width", 32),)
    mine = main.parse_args(["--data-dir", "d", "--preset", "demo", "--arch-arg", "width=16", "--arch-arg", "dropout=0"])
    assert RunConfig.from_args(mine).arch_args == (("dropout", 0.0), ("width", 16))
    assert RunConfig.from_args(main.parse_args(["--data-dir", "d"])).arch_args == ()
    # another --arch than the preset's: the preset's builder arguments are its architecture's, not this one's
    other = main.parse_args(["--data-dir", "d", "--preset", "demo", "--arch", "fcn_wang"])
    assert (other.arch, RunConfig.from_args(other).arch_args) == ("fcn_wang", ())
    same = main.parse_args(["--data-dir", "d", "--preset", "demo", "--arch", "resnet10"])
    assert RunConfig.from_args(same).arch_args == (("width", 32),)
