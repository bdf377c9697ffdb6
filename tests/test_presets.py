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
