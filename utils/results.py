"""Where a database's results live: results/<name>/, claimed by exactly one database.

Two preprocessed databases may share a folder name (`s1/db`, `s2/db`); filing results by name alone
would mix or overwrite them. The first database to write results/<name>/ claims it (database.json
records its folder's real path); any other database with that name gets results/<name>-<8 hex of its
path>/ instead, said once, so no database ever writes into another's results.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from utils.errors import PipelineError
from utils.io import check_writable, write_json

__all__ = ["CLAIM_JSON", "SYNTHETIC_MARKER", "database_identity", "results_home", "same_database"]

CLAIM_JSON = "database.json"
SYNTHETIC_MARKER = "synth_details.csv"  # synth.py writes it beside its records: the report says "synthetic"


def database_identity(data_dir: Path) -> str:
    """A database's identity: the real path of its preprocess folder (stable across re-preprocessing)."""
    return os.path.realpath(data_dir)


def same_database(a: Path, b: Path) -> bool:
    return database_identity(a) == database_identity(b)


def results_home(results_root: Path, data_dir: Path, create: bool = True) -> Path:
    """results/<name>/ of this database (see the module docstring); with `create`, claimed if unclaimed."""
    identity = database_identity(data_dir)
    name = Path(identity).name
    for folder in (Path(results_root) / name,
                   Path(results_root) / f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"):
        claim = folder / CLAIM_JSON
        if claim.exists():
            try:
                owner = json.loads(claim.read_text())["data_dir"]
            except (ValueError, KeyError, TypeError):
                raise PipelineError(f"{claim} is damaged; remove it if {folder} holds results of {identity}") from None
            if owner == identity:
                return folder
            continue
        if create:
            if folder.name != name:
                print(f"note: {Path(results_root) / name} holds results of another database named {name}; "
                      f"results of {identity} go to {folder}")
            check_writable(folder, "pass --results-dir DIR with a writable DIR")
            write_json({"data_dir": identity}, claim)
        return folder
    raise PipelineError(f"results of two other databases named {name} already fill {results_root}")
