"""get_data.py against a local HTTP server (127.0.0.1, port 0) serving a synthetic PhysioNet mirror:
byte-exact downloads, reruns that fetch nothing, resumed and restarted transfers, checksum mismatches,
404s, a server that is down, --limit, --list and the preprocess command it prints."""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import get_data
import preprocess
import synth
from utils.download import CATALOGUE, SUMS_FILE, fetch_database, parse_sums
from utils.errors import PipelineError

CPSC = "challenge-2021/1.0.3"
SRC = "training/cpsc_2018"
PTBXL = "ptb-xl/1.0.3"


def _write_sums(project: Path) -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(project).as_posix()}"
             for p in sorted(project.rglob("*")) if p.is_file() and p.name != SUMS_FILE]
    (project / SUMS_FILE).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    """A files/ tree in PhysioNet's layout: CinC 2021's cpsc_2018 (6 records in g1/, g2/ with RECORDS lists),
    a ptb source that must never be fetched, and a PTB-XL project; each project with its SHA256SUMS.txt."""
    root = tmp_path_factory.mktemp("physionet") / "files"
    flat = tmp_path_factory.mktemp("flat")
    synth.main(["--out", str(flat), "--n", "6", "--seed", "0", "--max-seconds", "8"])
    cinc = root / CPSC
    for i in range(1, 7):
        group = cinc / SRC / ("g1" if i <= 4 else "g2")
        group.mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".mat"):
            shutil.copy(flat / f"A{i:04d}{ext}", group / f"A{i:04d}{ext}")
    for group in (cinc / SRC).iterdir():
        (group / "RECORDS").write_text("".join(f"{p.stem}\n" for p in sorted(group.glob("*.hea"))))
    (cinc / "training/ptb/g1").mkdir(parents=True)
    for ext in (".hea", ".mat"):
        shutil.copy(flat / f"A0001{ext}", cinc / f"training/ptb/g1/S0001{ext}")
    synth.main(["--out", str(root / PTBXL), "--layout", "ptbxl", "--n", "6", "--seed", "1", "--max-seconds", "8"])
    for project in (cinc, root / PTBXL):
        _write_sums(project)
    return root


class _Handler(BaseHTTPRequestHandler):
    """GET with Range support and redirects; the server's `mirror` dict says what to break."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        m = self.server.mirror
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        with m["lock"]:
            m["log"].append((rel, rng))
        if rel in m["redirect"]:
            self.send_response(302)
            self.send_header("Location", m["redirect"][rel])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = m["root"] / rel
        if not path.is_file():
            self.send_error(404)
            return
        data, start = path.read_bytes(), 0
        if rng and not m["ignore_range"]:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = m["cut"].pop(rel, None)  # once: send the first `cut` bytes, then hang up
        self.wfile.write(body if cut is None else body[:cut])

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(source_tree, tmp_path):
    """A private copy of the tree served on 127.0.0.1; yields the control dict (root, log, cut, url, stop)."""
    root = tmp_path / "files"
    shutil.copytree(source_tree, root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    m = {"root": root, "log": [], "lock": threading.Lock(), "cut": {}, "ignore_range": False, "redirect": {},
         "url": f"http://127.0.0.1:{server.server_address[1]}/"}
    server.mirror = m
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()

    m["stop"] = stop
    yield m
    if thread.is_alive():
        stop()


def _run(m, name, out, *extra):
    return get_data.main([name, "--out", str(out), "--mirror", m["url"], "--jobs", "3", *extra])


def _fails(m, name, out, *extra) -> str:
    with pytest.raises(SystemExit) as e:
        _run(m, name, out, *extra)
    assert isinstance(e.value.code, str) and e.value.code.startswith("error: ")
    return e.value.code


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_full_download_is_byte_exact_and_a_rerun_fetches_nothing(mirror, tmp_path, capsys):
    out = tmp_path / "cpsc2018"
    summary = _run(mirror, "cpsc2018", out)
    want = {k: v for k, v in _files(mirror["root"] / CPSC).items() if k.startswith(SRC + "/") or k == SUMS_FILE}
    assert _files(out) == want  # every file of the source, byte for byte; no .part, no other source
    assert (summary.fetched, summary.skipped, summary.failed) == (14, 0, [])  # 12 record files + 2 RECORDS
    assert not any(rel.startswith("training/ptb/") for rel, _ in mirror["log"])
    assert f"next: python preprocess.py --data-dir {out}" in capsys.readouterr().out

    mirror["log"].clear()
    summary = _run(mirror, "cpsc2018", out)
    assert mirror["log"] == []  # neither SHA256SUMS.txt nor any file is asked for again
    assert (summary.fetched, summary.skipped) == (0, 14)
    assert "0 files fetched (0 B), 14 already verified and skipped, 0 failed" in capsys.readouterr().out


def test_a_bad_copy_under_the_final_name_is_fetched_again(mirror, tmp_path):
    out = tmp_path / "cpsc2018"
    _run(mirror, "cpsc2018", out)
    damaged = out / SRC / "g1/A0002.mat"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"\0" * 10)
    mirror["log"].clear()
    summary = _run(mirror, "cpsc2018", out)
    assert [rel for rel, _ in mirror["log"]] == [f"{CPSC}/{SRC}/g1/A0002.mat"]
    assert summary.fetched == 1 and damaged.read_bytes() == (mirror["root"] / CPSC / SRC / "g1/A0002.mat").read_bytes()


def test_a_transfer_cut_mid_file_resumes_with_a_range_request(mirror, tmp_path):
    rel = f"{CPSC}/{SRC}/g1/A0003.mat"
    mirror["cut"][rel] = 1000
    out = tmp_path / "cpsc2018"
    summary = _run(mirror, "cpsc2018", out)
    assert [rng for r, rng in mirror["log"] if r == rel] == [None, "bytes=1000-"]
    assert summary.failed == []
    assert (out / SRC / "g1/A0003.mat").read_bytes() == (mirror["root"] / rel).read_bytes()
    assert not list(out.rglob("*.part"))


@pytest.mark.parametrize("case, requests", [("resume", ["bytes=700-"]), ("server ignores Range", ["bytes=700-"]),
                                             ("stale part", ["bytes=700-", None])])
def test_a_part_file_from_an_interrupted_run_is_resumed_or_restarted(mirror, tmp_path, case, requests):
    """A .part resumes from its size; a server that ignores Range answers 200 and the file starts over;
    a .part of wrong bytes fails the checksum once and the file is fetched again from byte 0."""
    rel = f"{SRC}/g2/A0005.mat"
    data = (mirror["root"] / CPSC / rel).read_bytes()
    out = tmp_path / "cpsc2018"
    part = out / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:700] if case == "resume" else b"\xff" * 700)
    mirror["ignore_range"] = case == "server ignores Range"
    summary = _run(mirror, "cpsc2018", out)
    assert [rng for r, rng in mirror["log"] if r == f"{CPSC}/{rel}"] == requests
    assert summary.failed == [] and (out / rel).read_bytes() == data and not part.exists()


def test_a_corrupted_file_is_named_and_no_copy_stays(mirror, tmp_path, capsys):
    bad = mirror["root"] / CPSC / SRC / "g1/A0004.mat"
    bad.write_bytes(bad.read_bytes()[::-1])  # same size, other content than SHA256SUMS.txt says
    out = tmp_path / "cpsc2018"
    msg = _fails(mirror, "cpsc2018", out)
    assert "1 of 14 files of cpsc2018 were not fetched and verified" in msg
    captured = capsys.readouterr()
    assert f"checksum mismatch: {SRC}/g1/A0004.mat" in captured.err
    assert "13 files fetched" in captured.out and "next:" not in captured.out
    assert not (out / SRC / "g1/A0004.mat").exists() and not list(out.rglob("*.part"))
    assert (out / SRC / "g1/A0003.mat").exists()  # the other files are kept


def test_a_bad_copy_whose_fetch_fails_is_removed_and_both_failures_are_said(mirror, tmp_path, capsys):
    out = tmp_path / "cpsc2018"
    _run(mirror, "cpsc2018", out)
    damaged = out / SRC / "g1/A0002.mat"
    damaged.write_bytes(b"\0" * 100)
    (mirror["root"] / CPSC / SRC / "g1/A0002.mat").unlink()
    msg = _fails(mirror, "cpsc2018", out)
    assert "1 of 14 files" in msg and not damaged.exists() and not damaged.with_name("A0002.mat.part").exists()
    err = capsys.readouterr().err
    assert f"{SRC}/g1/A0002.mat failed its checksum (sha256 " in err and "was removed" in err
    assert "fetching it again failed: not on the server" in err and "(HTTP 404)" in err


def test_a_redirect_to_a_dead_host_names_that_host(mirror, tmp_path):
    dead = f"127.0.0.1:{_closed_port()}"
    mirror["redirect"][f"{CPSC}/{SRC}/g1/A0001.hea"] = f"http://{dead}/A0001.hea"
    msg = _fails(mirror, "cpsc2018", tmp_path / "cpsc2018")
    assert f"cannot reach {dead} (connection refused)" in msg and f"redirected to http://{dead}/A0001.hea" in msg


def test_a_mirror_read_error_is_the_mirror_s_not_the_output_s(source_tree, tmp_path, capsys):
    copy = tmp_path / "files"
    shutil.copytree(source_tree, copy)
    unreadable = copy / CPSC / SRC / "g1/A0003.mat"
    unreadable.unlink()
    unreadable.mkdir()  # a folder where a file should be: open() fails with IsADirectoryError
    with pytest.raises(SystemExit, match="^error: 1 of 14 files"):
        get_data.main(["cpsc2018", "--out", str(tmp_path / "out"), "--mirror", str(copy)])
    err = capsys.readouterr().err
    assert f"cannot read {unreadable} in the mirror (Is a directory)" in err and "cannot write" not in err


def test_an_output_folder_that_cannot_be_one_is_one_line(source_tree, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    db = CATALOGUE["cpsc2018"]
    for out, why in ((a_file, "File exists"), (a_file / "sub", "Not a directory")):
        with pytest.raises(PipelineError, match=f"cannot create the output folder {out} \\({why}\\)"):
            fetch_database(db, out, mirror=str(source_tree))
    (tmp_path / "out" / SUMS_FILE).mkdir(parents=True)
    with pytest.raises(SystemExit, match=f"^error: {tmp_path / 'out' / SUMS_FILE} is a folder, not the file list"):
        get_data.main(["cpsc2018", "--out", str(tmp_path / "out"), "--mirror", str(source_tree)])


def test_a_file_missing_on_the_server_is_reported_with_its_url(mirror, tmp_path, capsys):
    (mirror["root"] / CPSC / SRC / "g2/A0006.hea").unlink()
    out = tmp_path / "cpsc2018"
    msg = _fails(mirror, "cpsc2018", out)
    assert "1 of 14 files" in msg
    assert f"not on the server: {mirror['url']}{CPSC}/{SRC}/g2/A0006.hea (HTTP 404)" in capsys.readouterr().err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_is_down_gives_one_line(mirror, tmp_path, capsys):
    port = _closed_port()
    with pytest.raises(SystemExit) as e:
        get_data.main(["cpsc2018", "--out", str(tmp_path / "a"), "--mirror", f"http://127.0.0.1:{port}/"])
    assert "\n" not in e.value.code and f"cannot reach 127.0.0.1:{port} (connection refused)" in e.value.code
    assert not (tmp_path / "a" / SUMS_FILE).exists()

    # down in the middle: SHA256SUMS.txt is there from a first run, the files are not
    out = tmp_path / "b"
    _run(mirror, "cpsc2018", out)
    shutil.rmtree(out / SRC)
    mirror["stop"]()
    msg = _fails(mirror, "cpsc2018", out)
    assert "\n" not in msg and "(connection refused)" in msg and "rerun the same command" in msg
    assert "Traceback" not in capsys.readouterr().err


def test_limit_fetches_the_first_records_and_the_metadata(mirror, tmp_path, capsys):
    out = tmp_path / "c"
    _run(mirror, "cpsc2018", out, "--limit", "2")
    assert sorted(_files(out)) == [SUMS_FILE] + [f"{SRC}/g1/A000{i}{ext}" for i in (1, 2) for ext in (".hea", ".mat")]
    out = tmp_path / "p"
    _run(mirror, "ptbxl", out, "--limit", "3")
    assert sorted(_files(out)) == [SUMS_FILE, "ptbxl_database.csv"] + [
        f"records500/00000/0000{i}_hr{ext}" for i in (1, 2, 3) for ext in (".dat", ".hea")] + ["scp_statements.csv"]
    assert "note: --limit 3: ptbxl_database.csv, scp_statements.csv still list(s) all" in capsys.readouterr().out


def _next_command(text: str) -> list[str]:
    line = [ln for ln in text.splitlines() if ln.startswith("next: ")][-1]
    argv = shlex.split(line[len("next: "):])
    assert argv[:2] == ["python", "preprocess.py"]
    return argv[2:]


def test_the_printed_preprocess_command_runs_on_what_was_fetched(mirror, tmp_path, capsys):
    _run(mirror, "cpsc2018", tmp_path / "cpsc2018")
    argv = _next_command(capsys.readouterr().out)
    preprocess.main([*argv, "--num-workers", "1"])
    labels = (tmp_path / "cpsc2018" / "labels.csv").read_text().splitlines()
    assert len(labels) == 1 + 6

    _run(mirror, "ptbxl", tmp_path / "ptbxl")
    argv = _next_command(capsys.readouterr().out)
    assert argv == ["--data-dir", str(tmp_path / "ptbxl"), "--labels", "superdiagnostic"]
    assert not (tmp_path / "ptbxl" / "records100").exists()  # records500 only
    preprocess.main([*argv, "--num-workers", "1"])
    assert (tmp_path / "ptbxl" / "labels.csv").exists()


def test_a_local_copy_works_as_mirror(source_tree, tmp_path):
    summary = get_data.main(["cpsc2018", "--out", str(tmp_path / "d"), "--mirror", str(source_tree)])
    assert summary.fetched == 14 and _files(tmp_path / "d" / SRC) == _files(source_tree / CPSC / SRC)


def test_list_prints_every_database(capsys):
    assert get_data.main(["--list"]) is None
    text = capsys.readouterr().out
    for db in CATALOGUE.values():
        assert re.search(rf"^{db.name} +{db.records:,} records +{re.escape(db.size)} ", text, re.M), db.name
    assert "approximate" in text and text.count("CC BY 4.0") == len(CATALOGUE)
    assert text.count("Goldberger") == len(CATALOGUE)


def test_bad_arguments_exit_2(capsys, tmp_path):
    for argv in ([], ["cpsc2019"], ["cpsc2018", "--limit", "0"]):
        with pytest.raises(SystemExit) as e:
            get_data.main(argv)
        assert e.value.code == 2
    (tmp_path / "a_file").write_text("")
    for flag, value in (("--mirror", "ftp://host/files/"), ("--mirror", "http://host:70000/"),
                        ("--mirror", f"file://{tmp_path}/none"), ("--out", str(tmp_path / "a_file")),
                        ("--jobs", "100000"), ("--limit", "nan")):
        with pytest.raises(SystemExit) as e:
            get_data.main(["cpsc2018", flag, value])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"error: argument {flag}: " in err, err


def test_sums_lines_are_checked():
    sha = "ab" * 32
    assert parse_sums(f"{sha}  a/b.hea\n{sha} *c.mat\n\n", "S") == {"a/b.hea": sha, "c.mat": sha}
    for text, why in (("<html>404</html>", "line 1 is not"), (f"{sha}  ../etc/passwd", "unsafe path"),
                      (f"{sha}  /etc/passwd", "unsafe path"), ("", "lists no files")):
        with pytest.raises(PipelineError, match=why):
            parse_sums(text, "S")


def test_ptbxl_rate_100_fetches_records100_only_and_preprocesses_at_100_hz(mirror, tmp_path, capsys):
    """--rate 100: the csv files and records100/, byte for byte, nothing of records500/; the printed
    command caches the records at 100 Hz, read from records100/ alone. A database with one rate refuses."""
    out = tmp_path / "p100"
    _run(mirror, "ptbxl", out, "--rate", "100")
    want = {k: v for k, v in _files(mirror["root"] / PTBXL).items()
            if k.startswith("records100/") or k in ("ptbxl_database.csv", "scp_statements.csv", SUMS_FILE)}
    assert _files(out) == want and any(k.startswith("records100/") for k in want)
    assert not any(rel.startswith(f"{PTBXL}/records500/") for rel, _ in mirror["log"])
    argv = _next_command(capsys.readouterr().out)
    assert argv == ["--data-dir", str(out), "--labels", "superdiagnostic", "--cache-rate", "100"]
    preprocess.main([*argv, "--num-workers", "1"])
    manifest = json.loads((out / "preprocess.json").read_text())
    assert manifest["sample_rate"] == 100
    with pytest.raises(SystemExit) as e:
        get_data.main(["georgia", "--rate", "100"])
    assert e.value.code == 2 and "--rate" in capsys.readouterr().err
