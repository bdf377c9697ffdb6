"""Outputs written atomically (CSV, JSON, NPY, text, PNG) and fingerprints of inputs: a crash leaves
the old file or the new one, never half of either; tables of records read back with their ids intact."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from utils.errors import PipelineError


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    A crash leaves either the old file or the new one, never half of either. A symbolic link is written
    through (the link stays, its target is replaced); a path that is there but not a regular file (a
    folder, a device such as /dev/null, a pipe) is refused: a rename would replace it with a file.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists() and not target.is_file():
        raise PipelineError(f"{path} is there and is not a regular file (a folder, device or pipe): not replaced "
                            f"by an output; name a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; give outputs the usual permissions
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def same_file(a: Path | None, b: Path | None) -> bool:
    """Whether two paths name one file: the same path once resolved, or links to one file."""
    if a is None or b is None:
        return False
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.samefile(b)
    except OSError:  # either does not exist (yet)
        return False


def check_writable(folder: Path, hint: str = "") -> None:
    """Fail before any work when outputs could not be written to `folder` (read-only mount, no
    permission): creating and removing a probe file is the only test that also holds for root."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PipelineError(f"cannot write to {folder} ({e.strerror or e}); the folder is read-only"
                         f"{f'; {hint}' if hint else ''}") from None


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(df: pd.DataFrame, path: Path, **kwargs) -> Path:
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, **kwargs))


RECORD_ID = "patient_id"


def read_records_csv(path: Path, usecols: Sequence[str] | None = None) -> pd.DataFrame:
    """A CSV of records with each record's id (`patient_id`) as written: pandas reads an id 007 as 7 and
    ids such as NA, None or nan as missing, and a WFDB record may be named so. An empty id stays missing
    (a damaged row); pandas' errors are the caller's to say."""
    table = pd.read_csv(path, dtype={RECORD_ID: str}, usecols=usecols)
    if RECORD_ID in table.columns and table[RECORD_ID].isna().any():
        written = pd.read_csv(path, usecols=[RECORD_ID], dtype=str, keep_default_na=False)[RECORD_ID]
        table[RECORD_ID] = written.mask(written == "")
    return table


def write_text(text: str, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(obj, path: Path) -> Path:
    return write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_npy(arr: np.ndarray, path: Path) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            np.save(f, arr)

    return atomic_write(path, write)


def save_figure(fig, path: Path, tight: bool = True) -> Path:
    """The figure as a PNG, written atomically, then closed. `tight` crops it to what is drawn, at the
    cost of drawing it twice: a figure whose margins are set by hand passes False."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight" if tight else None, format="png"))
    plt.close(fig)
    return path


def interval_errors(point, lo, hi) -> np.ndarray:
    """Error-bar lengths (2 x n: below, above) of the intervals [lo, hi] around `point`, for matplotlib's
    xerr/yerr: a percentile interval of bootstrap resamples may lie wholly above or below its point estimate
    (always with one resample), which would be a negative length, refused by matplotlib; that side is drawn
    as no bar, as is an interval not known (NaN)."""
    point, lo, hi = (np.asarray(v, float) for v in (point, lo, hi))
    return np.nan_to_num(np.clip(np.vstack([point - lo, hi - point]), 0, None), nan=0.0)


def fingerprint(parts: Iterable) -> str:
    """Stable short hash of anything JSON-serialisable, for 'are these outputs still current?'."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=_json_default).encode())
    return h.hexdigest()[:16]


def file_version(path: Path, st: os.stat_result | None = None) -> tuple:
    """Which version of a file this is, for what a process keeps of it: its real path, inode, size,
    modification time and status-change time (outputs are only ever replaced whole, as a new inode; a
    write in place changes the ctime even where the mtime is set back, and no call sets the ctime).
    Raises OSError if missing."""
    st = st or os.stat(path)
    return os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def file_fingerprint(path: Path) -> str:
    """Path, size and mtime_ns of an input file; a missing one (a dangling link, a header's signal file
    not there yet) has its own value, so its appearing later changes the fingerprint too."""
    try:
        st = Path(path).stat()
    except OSError:
        return fingerprint([str(path), None])
    return fingerprint([str(path), st.st_size, st.st_mtime_ns])



def output_names(paths: Sequence[Path]) -> list[str]:
    """A distinct file-name stem per user-given record: its own stem, or, where stems of different files
    collide (d1/A0001, d2/A0001), the stem prefixed with as many parent folders as it takes; the same
    file given twice gets _1, _2. No figure overwrites another."""
    resolved = [Path(p).resolve() for p in paths]
    names = []
    for path in resolved:
        others = {q for q in resolved if q.stem == path.stem and q != path}
        depth = 0
        while others and depth < len(path.parent.parts):
            depth += 1
            mine = path.parent.parts[-depth:]
            others = {q for q in others if q.parent.parts[-depth:] == mine}
        names.append("_".join([*path.parent.parts[len(path.parent.parts) - depth:], path.stem]).lstrip("/_"))
    return [n if names.count(n) == 1 else f"{n}_{names[:i].count(n) + 1}" for i, n in enumerate(names)]
