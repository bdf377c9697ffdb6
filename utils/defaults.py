"""The default folders of every command, defined once: the paper's database and the results root.

A command's `--data-dir` defaults to DEFAULT_DATA_DIR (where `get_data.py cpsc2018 --out` puts CPSC2018
and `preprocess.py` writes its outputs beside the records), and `--results-dir` to DEFAULT_RESULTS_DIR.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_DATA_DIR", "DEFAULT_PTBXL_DIR", "DEFAULT_RESULTS_DIR"]

DEFAULT_DATA_DIR = Path("data/CPSC")
DEFAULT_PTBXL_DIR = Path("data/PTBXL")  # benchmark.py: PTB-XL as `get_data.py ptbxl --out` puts it
DEFAULT_RESULTS_DIR = Path("results")
