"""preprocess.py as a whole: parallel decoding gives the serial bytes, one writer per folder (a real
second process is refused with the first's pid), seeds outside numpy's range are argparse errors, and a
signal cache changed after its manifest was written is caught whatever its size and whenever it was checked."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import preprocess
import synth
import utils.manifest as manifest_module
from utils.cache import PREPROCESS_OUTPUTS, require_preprocessed
from utils.errors import PipelineError
from utils.locks import exclusive_lock
from utils.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


def prep(records: Path, out: Path, *extra: str) -> None:
    preprocess.main(["--data-dir", str(records), "--out", str(out), "--num-workers", "1", *extra])


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("records")
    synth.main(["--out", str(out), "--n", "12", "--seed", "11", "--min-seconds", "6", "--max-seconds", "8"])
    return out


def test_parallel_decoding_writes_the_serial_bytes(tmp_path):
    """60 records (more than the 50 below which the pool is not used), a truncated one in the middle."""
    records = tmp_path / "rec"
    synth.main(["--out", str(records), "--n", "60", "--seed", "8", "--min-seconds", "6", "--max-seconds", "7"])
    mat = records / "A0031.mat"
    mat.write_bytes(mat.read_bytes()[:5000])
    prep(records, tmp_path / "serial")
    preprocess.main(["--data-dir", str(records), "--out", str(tmp_path / "parallel"), "--num-workers", "2"])
    for name in PREPROCESS_OUTPUTS:
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes(), name
    for run in ("serial", "parallel"):
        manifest = read_manifest(tmp_path / run / "preprocess.json")
        assert manifest["kept"] == 59 and len(manifest["errors"]) == 1 and "A0031.mat" in manifest["errors"][0]


HOLD = textwrap.dedent("""
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin
""")


def test_a_second_writer_of_one_folder_is_refused_with_the_first_ones_pid(records, tmp_path):
    """Two real processes: one holds the folder's lock (as a running preprocess.py does); preprocess.py on
    the same --out stops at once with exit 1 naming its pid, touching nothing; once the holder is gone
    (even killed with SIGKILL) the lock is free again, and a finished run leaves no lock file."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / ".lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, str(ROOT / "preprocess.py"), "--data-dir", str(records),
                                 "--out", str(out), "--num-workers", "1"], capture_output=True, text=True,
                                cwd=ROOT, timeout=120)
        assert second.returncode == 1, second.stderr[-2000:]
        assert f"is being written by another process (pid {holder.pid})" in second.stderr
        assert "Traceback" not in second.stderr and sorted(p.name for p in out.iterdir()) == [".lock"]
        with pytest.raises(PipelineError, match=f"pid {holder.pid}"):  # the library API, from this process
            with exclusive_lock(out / ".lock", f"{out}"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(out / ".lock", str(out)):  # released by the kernel when the holder died
        assert (out / ".lock").read_text().strip() == str(os.getpid())
    prep(records, out)
    require_preprocessed(out)
    assert not (out / ".lock").exists()  # removed when the run ends


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1e3"])
def test_a_seed_outside_numpys_range_is_an_argparse_error(records, tmp_path, capsys, seed):
    with pytest.raises(SystemExit) as exc:
        prep(records, tmp_path / "out", "--seed", seed)
    assert exc.value.code == 2
    why = "'1e3' is not an integer" if seed == "1e3" else f"{seed} is outside 0..4294967295"
    assert f"argument --seed: {why}" in capsys.readouterr().err


def test_the_largest_seed_is_accepted(records, tmp_path):
    prep(records, tmp_path / "out", "--seed", "4294967295")
    assert read_manifest(tmp_path / "out" / "preprocess.json")["seed"] == 4294967295


def flip(path: Path, offset: int, keep_mtime: bool) -> None:
    """Change two bytes in place (the size stays), optionally restoring the file's times."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(2)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in old))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_large_cache_changed_in_place_is_caught(records, tmp_path, monkeypatch, capsys):
    """signals.npy is treated as a large output (over the fully-hashed size): a change that keeps its size
    is caught by the sampled hash even with its mtime restored, and anywhere in the file once its mtime
    changed; copies, with or without their times, are still accepted; preprocess.py rebuilds."""
    monkeypatch.setattr(manifest_module, "_HASHED_UP_TO", 4096)
    out = tmp_path / "out"
    prep(records, out)
    signals = out / "signals.npy"
    assert signals.stat().st_size > 4096
    require_preprocessed(out)
    timeless = tmp_path / "copy"
    timeless.mkdir()
    for p in out.iterdir():
        shutil.copyfile(p, timeless / p.name)  # new mtimes: hashed in full, and accepted
    require_preprocessed(timeless)

    middle = signals.stat().st_size // 2
    for keep_mtime in (True, False):
        damaged = tmp_path / f"damaged_{keep_mtime}"
        shutil.copytree(out, damaged)
        flip(damaged / "signals.npy", middle, keep_mtime)
        with pytest.raises(PipelineError, match="signals.npy was changed after preprocess.json was written"):
            require_preprocessed(damaged)
    monkeypatch.setattr(manifest_module, "SAMPLE_BLOCK_BYTES", 16)  # a change between the sampled blocks...
    unsampled = tmp_path / "unsampled"
    shutil.copytree(out, unsampled)
    flip(unsampled / "signals.npy", middle + 4000, keep_mtime=False)  # ...is caught by its new mtime
    with pytest.raises(PipelineError, match="signals.npy was changed"):
        require_preprocessed(unsampled)
    capsys.readouterr()
    flip(signals, middle, keep_mtime=False)
    prep(records, out)
    assert "rebuilding outputs" in capsys.readouterr().out
    require_preprocessed(out)


def test_a_small_output_changed_in_place_after_a_check_is_caught(records, tmp_path):
    """A small output's full hash is kept per process and file version: a change in place that keeps its
    size and sets its mtime back is caught at the next check all the same (its ctime moved on)."""
    out = tmp_path / "out"
    prep(records, out)
    signals = out / "signals.npy"
    assert signals.stat().st_size <= manifest_module._HASHED_UP_TO
    require_preprocessed(out)  # hashed and kept
    require_preprocessed(out)
    flip(signals, signals.stat().st_size // 2, keep_mtime=True)
    with pytest.raises(PipelineError, match="signals.npy was changed after preprocess.json was written"):
        require_preprocessed(out)
