"""PhysioNet downloads that resume and verify: the catalogue of databases (as data), SHA256SUMS.txt
parsing and a threaded downloader.

Every published PhysioNet project version (`https://physionet.org/files/<project>/<version>/`) has a
`SHA256SUMS.txt` at its root, one `<sha256>  <path>` line per file. A version never changes once
published, so that list is the whole truth about what to fetch: it is downloaded first (atomically,
into the output folder, where later runs reuse it), the database's files are picked from it by path
prefix, and each file is fetched to `<final>.part`, hashed and renamed to its final name only when its
hash matches. A file under its final name has therefore been verified once; a rerun hashes it again
(sha256 runs at ~1.7 GB/s on one core of the 2-core Xeon this was written on, so re-verifying all of
Ningbo's ~4 GB costs seconds, not worth a manifest that could go stale) and fetches nothing else.
A `.part` left by an interrupted run resumes with an HTTP Range request; a server that ignores Range
(answers 200) is read from byte 0 again.

Why not `wfdb.dl_database` (wfdb 4.3.1, wfdb/io/download.py): it checks no checksum, writes each
file under its final name (the whole file read into memory first), and "resumes" by comparing local
and remote sizes with one request per file already present, appending to any shorter file; a
corrupted file of the right size is kept, and a run killed mid-write leaves a short file under its
final name. Here the transfer uses `requests` (installed with wfdb), one keep-alive session per thread,
since PhysioNet's records are thousands of small files.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import quote, urlsplit

from utils.errors import PipelineError
from utils.files import atomic_write

__all__ = ["PHYSIONET", "SUMS_FILE", "Database", "CATALOGUE", "NetworkError", "DownloadSummary",
           "parse_sums", "select_files", "sha256_file", "fetch_sums", "catalogue_table",
           "preprocess_command", "mirror_problem", "fetch_database"]

PHYSIONET = "https://physionet.org/files/"
SUMS_FILE = "SHA256SUMS.txt"
CHUNK = 1 << 16
USER_AGENT = "ecg-diagnosis get_data.py (python-requests)"


# ---------------------------------------------------------------------------------------------
# The catalogue: what each database is, where it lives, what it costs and how to credit it
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Database:
    """One database: a project version on PhysioNet and the part of it that belongs to this database.

    `include` holds folder prefixes ("training/georgia/") and exact files ("ptbxl_database.csv"),
    relative to the project root; `metadata` are the files kept with --limit besides the records.
    `records` and `size` are approximate (size = records x mean duration x 12 leads x 2 bytes)."""
    name: str
    title: str
    project: str
    include: tuple[str, ...]
    records: int
    size: str
    licence: str
    citation: str
    metadata: tuple[str, ...] = ()
    preprocess_args: tuple[str, ...] = ()
    index_lists_all: bool = False  # a metadata index lists every record, so --limit leaves it pointing at absent ones
    preprocess_hint: str = ""  # another way to preprocess it, printed under the command
    # (Hz, the include prefix holding the records stored at that rate), the default rate first
    rate_folders: tuple[tuple[int, str], ...] = ()

    def at_rate(self, rate: int) -> "Database":
        """The database with only the records stored at `rate` Hz (PTB-XL: records100/ instead of
        records500/), preprocessed at that rate; ValueError naming the rates it has otherwise."""
        folders = dict(self.rate_folders)
        if rate not in folders:
            have = ", ".join(map(str, folders)) or "one rate only"
            raise ValueError(f"{self.name} has no records stored at {rate} Hz (it has {have})")
        include = tuple(p for p in self.include if p not in folders.values()) + (folders[rate],)
        args = self.preprocess_args + (("--cache-rate", str(rate)) if rate != self.rate_folders[0][0] else ())
        return replace(self, include=include, preprocess_args=args)

    def selects(self, path: str) -> bool:
        return any(path.startswith(p) if p.endswith("/") else path == p for p in self.include)


CINC2021 = "challenge-2021/1.0.3"
PHYSIONET_CITE = "Goldberger AL et al., Circulation 2000;101:e215-20 (PhysioNet)"
CHALLENGE_CITE = "Reyna MA et al., Computing in Cardiology 2021;48 (PhysioNet/CinC Challenge 2021)"
CC_BY = "CC BY 4.0"


def _cinc(name: str, source: str, title: str, records: int, size: str, paper: str) -> Database:
    return Database(name, title, CINC2021, (f"training/{source}/",), records, size, CC_BY,
                    "; ".join(p for p in (paper, CHALLENGE_CITE, PHYSIONET_CITE) if p))


CPSC_PAPER = "Liu F et al., J Med Imaging Health Inform 2018;8:1368-73 (CPSC2018)"
CATALOGUE: dict[str, Database] = {db.name: db for db in (
    _cinc("cpsc2018", "cpsc_2018", "CPSC2018 training set as WFDB with SNOMED-CT Dx: the paper's data",
          6877, "~1.3 GB", CPSC_PAPER),
    _cinc("cpsc2018_extra", "cpsc_2018_extra", "CPSC2018's unused records (CPSC-Extra)", 3453, "~0.7 GB",
          CPSC_PAPER),
    _cinc("georgia", "georgia", "Georgia 12-lead ECG Challenge database (Emory)", 10344, "~1.2 GB", ""),
    _cinc("chapman_shaoxing", "chapman_shaoxing", "Chapman University / Shaoxing People's Hospital", 10247,
          "~1.2 GB", "Zheng J et al., Sci Data 2020;7:48"),
    _cinc("ningbo", "ningbo", "Ningbo First Hospital", 34905, "~4.2 GB",
          "Zheng J et al., Sci Rep 2020;10:2898"),
    _cinc("ptb", "ptb", "PTB Diagnostic ECG database (1000 Hz)", 516, "~1.4 GB",
          "Bousseljot R et al., Biomed Tech 1995;40(S1):317-8"),
    _cinc("incart", "st_petersburg_incart", "St Petersburg INCART 12-lead arrhythmia (30 min, 257 Hz)", 74,
          "~0.8 GB", ""),
    Database("ptbxl", "PTB-XL in its own layout (csv index + records500/ at 500 Hz)", "ptb-xl/1.0.3",
             ("ptbxl_database.csv", "scp_statements.csv", "records500/"), 21799, "~2.6 GB", CC_BY,
             f"Wagner P et al., Sci Data 2020;7:154 (PTB-XL); {PHYSIONET_CITE}",
             metadata=("ptbxl_database.csv", "scp_statements.csv"), preprocess_args=("--labels", "superdiagnostic"),
             index_lists_all=True, preprocess_hint="without --labels: the paper's nine classes (cpsc9), as the "
             "external validation of a CPSC2018 model needs",
             rate_folders=((500, "records500/"), (100, "records100/"))),
)}


def catalogue_table() -> str:
    """The --list text: name, records, size, where, licence and what to cite, for every database."""
    lines = ["Databases get_data.py fetches. Record counts and sizes are approximate (sizes of the files fetched,",
             "estimated from record count x mean duration); all are open access on PhysioNet.", ""]
    for db in CATALOGUE.values():
        where = ", ".join(db.include)
        lines += [f"{db.name:<17}{db.records:>7,} records  {db.size:>8}  {db.title}",
                  f"{'':<17}{PHYSIONET}{db.project}/  {where}",
                  textwrap.fill(f"licence {db.licence}; cite {db.citation}", 110, initial_indent=" " * 17,
                                subsequent_indent=" " * 19), ""]
    return "\n".join(lines).rstrip()


def preprocess_command(db: Database, out: Path) -> str:
    """The command that preprocesses what was fetched: the --out folder itself (preprocess.py finds .hea files
    recursively), so `get_data.py cpsc2018 --out data/CPSC` leads to the README's `--data-dir data/CPSC`."""
    import shlex

    return " ".join(["python", "preprocess.py", "--data-dir", shlex.quote(str(out)),
                     *map(shlex.quote, db.preprocess_args)])


# ---------------------------------------------------------------------------------------------
# SHA256SUMS.txt and the choice of files
# ---------------------------------------------------------------------------------------------
_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def parse_sums(text: str, source: str) -> dict[str, str]:
    """`{path: sha256}` from sha256sum-style lines; a malformed line or an unsafe path is an error naming
    `source` and the line (a proxy's HTML error page must not pass for a file list)."""
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _SUM_LINE.match(line.rstrip("\r"))
        if m is None:
            raise PipelineError(f"{source}: line {n} is not '<sha256>  <path>': {line[:80]!r}")
        path = m.group(2)
        parts = PurePosixPath(path).parts
        if path.startswith("/") or ".." in parts or not parts:
            raise PipelineError(f"{source}: line {n} names an unsafe path {path!r}")
        sums[path] = m.group(1).lower()
    if not sums:
        raise PipelineError(f"{source} lists no files")
    return sums


def select_files(sums: dict[str, str], db: Database, limit: int | None = None) -> list[tuple[str, str]]:
    """The database's `(path, sha256)` pairs in sorted order; with `limit`, only the first `limit` records
    (a record: its .hea and the files beside it with the same stem) plus `db.metadata`."""
    chosen = sorted((p, h) for p, h in sums.items() if db.selects(p))
    if limit is None:
        return chosen
    headers = {p[:-len(".hea")] for p, _ in chosen if p.endswith(".hea")}
    keep = set(sorted(headers)[:limit])
    return [(p, h) for p, h in chosen
            if p in db.metadata or str(PurePosixPath(p).with_suffix("")) in keep]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Sources: an HTTP(S) server (PhysioNet, a proxy) or a local copy of its tree
# ---------------------------------------------------------------------------------------------
class NetworkError(PipelineError):
    """The server cannot be reached at all (no network, refused, unresolvable): the whole run stops."""


class _FileFailed(Exception):
    """This one file cannot be fetched and verified (404, checksum mismatch, transfers keep breaking)."""


class _Broken(Exception):
    """A transfer that stopped early or a connection that dropped; the .part is kept and resumed."""


class _Stopped(Exception):
    """Another thread hit a fatal error (or Ctrl-C): stop at the next chunk, keeping the .part."""


def _network_reason(exc: BaseException) -> str | None:
    """'connection refused' etc. when `exc` (or what caused it) says the host is unreachable; None when
    the connection was made and dropped (worth a retry)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "cannot resolve the host name"
        if isinstance(e, OSError) and e.errno in (101, 113):  # ENETUNREACH, EHOSTUNREACH
            return e.strerror.lower()
        if type(e).__name__ in ("ConnectTimeoutError", "ConnectTimeout"):
            return "connection timed out"
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None),
                 *(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))]
    return None


class _Http:
    """GET with an optional Range over one keep-alive session per thread."""

    def __init__(self, base: str, timeout: float):
        self.base, self.timeout, self._local = base, timeout, threading.local()

    def url(self, rel: str) -> str:
        return self.base + quote(rel)

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = self._local.session = requests.Session()
            s.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        return s

    @contextmanager
    def get(self, rel: str, offset: int) -> Iterator[tuple[int, int | None, Iterator[bytes]]]:
        """Yield `(start, length, chunks)`: the body starts at byte `start` (`offset` when the server
        honoured Range, 0 when it answered 200) and should hold `length` bytes (None: unknown)."""
        import requests
        import urllib3

        url = self.url(rel)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            r = self._session().get(url, headers=headers, stream=True, timeout=(15, self.timeout),
                                    allow_redirects=True)
        except requests.RequestException as e:
            reason = _network_reason(e)
            failed = getattr(getattr(e, "request", None), "url", None) or url  # a redirect's target, if it was
            host = urlsplit(failed).netloc                                      # that one which failed
            if reason:
                via = f" (redirected to {failed})" if failed != url else ""
                raise NetworkError(f"cannot reach {host} ({reason}) while fetching {url}{via}: no network, or the "
                                   "server or proxy is down; rerun the same command to resume (verified files are kept)")
            raise _Broken(f"{type(e).__name__}: {e}") from None
        with r:
            if r.status_code == 416 and offset:  # the .part already holds the whole file
                yield offset, 0, iter(())
                return
            if r.status_code == 404:
                raise _FileFailed(f"not on the server: {url} (HTTP 404)")
            if r.status_code >= 500:
                raise _Broken(f"HTTP {r.status_code} {r.reason} from {url}")
            if r.status_code not in (200, 206):
                raise _FileFailed(f"HTTP {r.status_code} {r.reason}: {url}")
            start = 0
            if r.status_code == 206:
                m = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
                if m is None or int(m.group(1)) != offset:
                    raise _Broken(f"{url}: asked for bytes {offset}- but got {r.headers.get('Content-Range')!r}")
                start = offset
            length = r.headers.get("Content-Length")

            def chunks() -> Iterator[bytes]:
                try:
                    yield from r.raw.stream(CHUNK, decode_content=False)
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
                    raise _Broken(f"transfer of {url} broke off: {type(e).__name__}") from None

            yield start, int(length) if length and length.isdigit() else None, chunks()


class _Local:
    """A local copy of the files/ tree (`--mirror /mnt/physionet` or `file:///mnt/physionet`)."""

    def __init__(self, root: Path):
        self.root = root

    def url(self, rel: str) -> str:
        return str(self.root / rel)

    @contextmanager
    def get(self, rel: str, offset: int) -> Iterator[tuple[int, int | None, Iterator[bytes]]]:
        path = self.root / rel
        try:
            f = open(path, "rb")
            size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise _FileFailed(f"not in the mirror: {path}") from None
        except OSError as e:  # a folder, no permission: the mirror's problem, not the output folder's
            raise _FileFailed(f"cannot read {path} in the mirror ({e.strerror or e})") from None

        def chunks() -> Iterator[bytes]:
            try:
                while block := f.read(CHUNK):
                    yield block
            except OSError as e:
                raise _FileFailed(f"cannot read {path} in the mirror ({e.strerror or e})") from None

        with f:
            f.seek(min(offset, size))
            yield min(offset, size), size - min(offset, size), chunks()


def mirror_problem(mirror: str) -> str | None:
    """Why `mirror` cannot stand for PHYSIONET (None when it can): a scheme other than http(s) or file,
    a port that is not one, no host, or a local folder that is not there. Checked before any request,
    so that a typo is a bad argument, not a failed download."""
    hint = f"give an http(s):// URL such as http://proxy:8080/files/, or a local copy of {PHYSIONET}"
    if "://" not in mirror:
        return None if Path(mirror).is_dir() else f"no such folder {mirror} ({hint})"
    parts = urlsplit(mirror)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            return f"{mirror}: a file:// URL names a local folder (file:///path/to/files/)"
        return None if Path(parts.path).is_dir() else f"no such folder {parts.path} ({hint})"
    if scheme not in ("http", "https"):
        return f"{mirror}: {scheme}:// is not supported ({hint})"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return f"{mirror}: the port is not a number from 1 to 65535"
    if not parts.hostname:
        return f"{mirror} names no host ({hint})"
    return None


def _source(mirror: str | None, project: str, timeout: float):
    why = mirror_problem(mirror) if mirror is not None else None
    if why:
        raise PipelineError(f"--mirror: {why}")
    base = (mirror or PHYSIONET).rstrip("/") + "/" + project.strip("/") + "/"
    if base.lower().startswith("file://"):
        return _Local(Path(urlsplit(base).path))
    if "://" not in base:
        return _Local(Path(base))
    return _Http(base, timeout)


# ---------------------------------------------------------------------------------------------
# The download
# ---------------------------------------------------------------------------------------------
def fetch_sums(src, out: Path) -> Path:
    """`out/SHA256SUMS.txt`, downloaded (whole, checked to parse, then renamed) unless already there;
    a published version's list never changes, so the local copy is reused."""
    path = Path(out) / SUMS_FILE
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way (FileExistsError, NotADirectoryError), no permission
        raise PipelineError(f"cannot create the output folder {out} ({e.strerror or e}); give another --out") from None
    if path.is_dir():
        raise PipelineError(f"{path} is a folder, not the file list; remove it or give another --out")
    if path.exists():
        return path
    url = src.url(SUMS_FILE)

    def write(tmp: Path) -> None:
        try:
            with src.get(SUMS_FILE, 0) as (_, length, chunks), open(tmp, "wb") as f:
                got = sum(f.write(c) for c in chunks)
        except _FileFailed as e:
            raise PipelineError(f"{e}; is the project version right, and is --mirror a copy of {PHYSIONET}?") from None
        except _Broken as e:
            raise PipelineError(f"{url}: {e}; rerun to try again") from None
        if length is not None and got < length:
            raise PipelineError(f"{url}: transfer stopped after {got} of {length} bytes; rerun to try again")
        parse_sums(tmp.read_text(errors="replace"), url)

    try:
        return atomic_write(path, write)
    except OSError as e:  # reads from the source raise _FileFailed or _Broken above: this is the local write
        raise PipelineError(f"cannot write {path} ({e.strerror or e}); the folder is read-only or full") from None


@dataclass
class DownloadSummary:
    database: str
    out: Path
    files: int = 0
    fetched: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.database}: {self.fetched} files fetched ({_human(self.bytes)}), {self.skipped} already "
                f"verified and skipped, {len(self.failed)} failed, of {self.files}; in {self.out} "
                f"({self.seconds:.1f} s)")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class _Fetcher:
    """Fetch and verify one file at a time (called from worker threads)."""

    def __init__(self, src, out: Path, stop: threading.Event, progress, retries: int, backoff: float):
        self.src, self.out, self.stop, self.progress = src, Path(out), stop, progress
        self.retries, self.backoff = retries, backoff

    def __call__(self, rel: str, sha: str) -> tuple[str, int]:
        """('skipped', 0) for a file already present and verified, else ('fetched', bytes received).

        A copy under the final name that fails its checksum is removed before it is fetched again, so
        that a failed re-fetch never leaves it there for preprocess.py to read."""
        final = self.out / rel
        if not final.is_file():
            return self._fetch(rel, sha, final)
        bad = sha256_file(final)
        if bad == sha:
            return "skipped", 0
        final.unlink()
        try:
            return self._fetch(rel, sha, final)
        except _FileFailed as e:
            raise _FileFailed(f"{rel} failed its checksum (sha256 {bad[:16]}…, {SUMS_FILE} says {sha[:16]}…) and "
                              f"was removed; fetching it again failed: {e}") from None

    def _fetch(self, rel: str, sha: str, final: Path) -> tuple[str, int]:
        part = final.with_name(final.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        received, fails, restarted = 0, 0, False
        while True:
            if self.stop.is_set():
                raise _Stopped
            offset = part.stat().st_size if part.exists() else 0
            got = 0
            try:
                with self.src.get(rel, offset) as (start, length, chunks):
                    with open(part, "ab" if start else "wb") as f:  # a 200 to a Range request: from byte 0
                        for chunk in chunks:
                            if self.stop.is_set():
                                raise _Stopped
                            f.write(chunk)
                            got += len(chunk)
                            self.progress(len(chunk))
                    if length is not None and got < length:
                        raise _Broken(f"transfer of {self.src.url(rel)} stopped after {got} of {length} bytes")
            except _Broken as e:
                received += got
                grown = part.exists() and part.stat().st_size > offset  # a server that ignores Range and
                fails = 0 if grown else fails + 1  # always breaks at the same byte makes no progress
                if fails > self.retries:
                    raise _FileFailed(f"{e} ({self.retries + 1} tries without progress); the .part is kept for "
                                      f"the next run") from None
                time.sleep(self.backoff * min(fails, 4))
                continue
            received += got
            digest = sha256_file(part)
            if digest == sha:
                os.replace(part, final)
                return "fetched", received
            part.unlink()
            if offset and not restarted:  # a stale or foreign .part prefix: once more from byte 0
                restarted = True
                continue
            raise _FileFailed(f"checksum mismatch: {rel} from {self.src.url(rel)} has sha256 {digest[:16]}…, "
                              f"{SUMS_FILE} says {sha[:16]}…; no copy kept")


def fetch_database(db: Database, out: Path, mirror: str | None = None, limit: int | None = None, jobs: int = 4,
                   retries: int = 3, backoff: float = 1.0, timeout: float = 60.0) -> DownloadSummary:
    """Fetch and verify `db`'s files into `out` (PhysioNet's relative paths kept), `jobs` at a time.

    Files that cannot be fetched or verified are listed in the summary's `failed` (the caller exits
    non-zero); an unreachable server raises NetworkError at once. Interrupted transfers leave only
    `.part` files, which the next run resumes."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(out)
    src = _source(mirror, db.project, timeout)
    sums_path = fetch_sums(src, out)
    try:
        text = sums_path.read_text(errors="replace")
    except OSError as e:
        raise PipelineError(f"cannot read {sums_path} ({e.strerror or e})") from None
    sums = parse_sums(text, str(sums_path))
    files = select_files(sums, db, limit)
    if not files:
        raise PipelineError(f"{sums_path} lists no file under {', '.join(db.include)}: it is another project's "
                            f"list (not {db.project}); give {db.name} its own --out")
    summary = DownloadSummary(db.name, out, files=len(files))
    stop, lock = threading.Event(), threading.Lock()
    bar = tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc=db.name, file=sys.stdout,
               mininterval=0.5, postfix=f"files 0/{len(files)}")

    def progress(n: int) -> None:
        with lock:
            bar.update(n)

    fetch = _Fetcher(src, out, stop, progress, retries, backoff)
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="get_data")
    try:
        for done, fut in enumerate(as_completed([pool.submit(fetch, rel, sha) for rel, sha in files]), 1):
            try:
                kind, n = fut.result()
            except _FileFailed as e:
                summary.failed.append(str(e))
                tqdm.write(f"failed: {e}", file=sys.stderr)
            else:
                summary.fetched += kind == "fetched"
                summary.skipped += kind == "skipped"
                summary.bytes += n
            with lock:
                bar.set_postfix_str(f"files {done}/{len(files)}", refresh=False)
    except OSError as e:  # a local write failed (disk full, permissions): nothing else can succeed
        stop.set()
        raise PipelineError(f"cannot write into {out}: {e.strerror or e} ({getattr(e, 'filename', '')}); "
                            "the .part files are kept for the next run") from None
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
