"""The one freshness rule: a manifest, written last, holds a fingerprint of the inputs and settings and
a description of each output file; outputs are current only when both still match."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from utils.files import file_version, write_json
from utils.locks import exclusive_lock




_HASHED_UP_TO = 64 << 20  # outputs up to this size are hashed in full, once per version (< 40 ms)
SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 64, 64 << 10  # larger ones: 4 MiB read at every check (see describe_file)
_FULL_SHA: dict[tuple, str] = {}  # file_version (path, inode, size, mtime, ctime) -> sha256, per process


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def sampled_sha(path: Path, size: int) -> str:
    """sha256 of SAMPLE_BLOCKS blocks at fixed offsets spread evenly over the file, the first and the last
    included: what a changed file of the same size (another cache, a zeroed region) is caught by for the
    price of reading 4 MiB, whatever the file's size."""
    h = hashlib.sha256()
    step = max(size - SAMPLE_BLOCK_BYTES, 0) / max(SAMPLE_BLOCKS - 1, 1)
    with open(path, "rb") as f:
        for offset in dict.fromkeys(int(i * step) for i in range(SAMPLE_BLOCKS)):
            h.update(os.pread(f.fileno(), SAMPLE_BLOCK_BYTES, offset))
    return h.hexdigest()[:16]


def _full_sha(path: Path, st: os.stat_result) -> str:
    """The full hash of this version of the file, computed once per process: a stage checks its inputs
    many times (each fold, each lead, each model of a study)."""
    key = file_version(path, st)
    if key not in _FULL_SHA:
        _FULL_SHA[key] = file_sha(path)
    return _FULL_SHA[key]


def describe_file(path: Path) -> dict:
    """What a manifest records of an output: its size and sha256; for files over 64 MiB (the signal
    cache: 1.3 GB for CPSC2018, 96 GB for MIMIC-IV-ECG) also its mtime_ns and a sampled hash, so that
    checking it (`file_mismatch`, at every stage's start) does not read the whole file again."""
    st = Path(path).stat()
    if st.st_size <= _HASHED_UP_TO:
        return {"size": st.st_size, "sha256": _full_sha(path, st)}
    return {"size": st.st_size, "sha256": _full_sha(path, st), "mtime_ns": st.st_mtime_ns,
            "sampled_sha256": sampled_sha(path, st.st_size)}


def file_mismatch(path: Path, described: dict, name: str | None = None, manifest: str = "the manifest"
                  ) -> str | None:
    """Why the file at `path` is not the one `describe_file` described (None when it is).

    Small files are hashed in full, once per process and version (`utils.files.file_version`: a write in
    place changes the ctime, whatever the mtime is set back to). A large one must have the same size and
    sampled hash; when its mtime_ns is not the recorded one (written to since, or copied without keeping
    times) it is also hashed in full, once per process and version. So any change made through a write
    is caught, and an untouched cache costs a 4 MiB read per check. A change that moves neither time
    (writes through another process's memory mapping of the file) is seen by the next process, not by one
    that has hashed that version already. Measured on a 1 GiB file (2-core
    Xeon, SHA-NI): 3 ms per check (19 ms with the file out of the page cache); the full hash 0.9 s (1.1 s
    cold), paid at write time and, after a touch or a copy without times, once per process."""
    name = name or Path(path).name
    try:
        st = Path(path).stat()
    except OSError:
        return f"{name} is missing"
    if st.st_size != described.get("size"):
        return (f"{name} was changed after {manifest} was written (size {st.st_size}, recorded "
                f"{described.get('size')})")
    if "sha256" not in described or (st.st_size > _HASHED_UP_TO and "sampled_sha256" not in described):
        return f"{name} has no sha256 in {manifest} (size only)"
    if st.st_size <= _HASHED_UP_TO:
        same = _full_sha(path, st) == described["sha256"]
    else:
        same = sampled_sha(path, st.st_size) == described["sampled_sha256"] and (
            st.st_mtime_ns == described.get("mtime_ns") or _full_sha(path, st) == described["sha256"])
    return None if same else f"{name} was changed after {manifest} was written"


def write_manifest(path: Path, key: str, outputs: Iterable[Path], **info) -> Path:
    """Mark `outputs` as current for `key`; call it after every output is written (and remove the
    old manifest with `path.unlink()` before replacing any output). Outputs are recorded by their path
    relative to the manifest's folder."""
    files = {os.path.relpath(o, Path(path).parent): describe_file(o) for o in outputs}  # relative: a copied
    return write_json({"fingerprint": key, "files": files, **info}, path)                 # folder stays valid


def read_manifest(path: Path) -> dict | None:
    """The manifest as a dict, or None when it is missing or unreadable."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_mismatch(path: Path) -> str | None:
    """Why the outputs beside a manifest are not the ones it describes (None when they are)."""
    manifest = read_manifest(path)
    if manifest is None:
        return f"{Path(path).name} is missing or unreadable"
    for name, described in manifest.get("files", {}).items():
        why = file_mismatch(Path(path).parent / name, described if isinstance(described, dict) else {}, name,
                            Path(path).name)
        if why is not None:
            return why
    return None


def outputs_current(path: Path, key: str) -> bool:
    """True when the manifest at `path` was written for `key` and its outputs are unchanged."""
    manifest = read_manifest(path)
    return manifest is not None and manifest.get("fingerprint") == key and manifest_mismatch(path) is None


def rebuild_unless_current(manifest: Path, key: str, build: Callable[[], None], *, what: str, current: str,
                           force: bool = False, prepare: Callable[[], None] | None = None) -> bool:
    """The freshness rule's one sequence for a folder one process writes: outputs current? say `current`
    and return False. Otherwise call `prepare()` if given (a check that the folder can be written: a
    current read-only folder is still read), take the folder's lock (`<folder>/.lock`, naming `what` to
    a second writer), check again (another process may have just written them), and call `build()`,
    which writes the manifest last; True when it built."""
    manifest = Path(manifest)
    if not force and outputs_current(manifest, key):
        print(current)
        return False
    if prepare is not None:
        prepare()
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(manifest.parent / ".lock", what):
        if not force and outputs_current(manifest, key):  # another process just wrote them
            print(current)
            return False
        build()
    return True


def remove_stale_temporaries(folder: Path, names: Iterable[str]) -> None:
    """Delete the `.{name}.*.tmp` files a killed `atomic_write` of these outputs left behind."""
    for name in names:
        for stale in Path(folder).glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
