"""bench/: the FLOP count behind the MFU figures, the peak table's name matching, bench_train.py running
main.py's own loop on synthetic cached records, gpu_check.sh's plumbing (CPU, toy sizes) and
equal_results.py's comparison."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.registry import create_model as build_model
from utils.cache import SignalCache, load_labels
from utils.folds import split_labels

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_train  # noqa: E402
import gpu_check_summary  # noqa: E402


def meta_model(arch: str):
    with torch.device("meta"):
        return build_model(arch, 12, 9)


def test_forward_flops_equal_torch_flop_counter_on_a_real_forward_pass():
    model = build_model("resnet18", 12, 9).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 12, 700))
    assert bench_train.forward_flops(meta_model("resnet18"), 12, 700) == counter.get_total_flops()


def test_a_training_step_costs_about_three_forwards():
    """The MFU convention (3 x forward) against what a real forward + backward executes: slightly less,
    since the stem computes no gradient for the input."""
    fwd = bench_train.forward_flops(meta_model("resnet10"), 12, 500)
    model = build_model("resnet10", 12, 9).train()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 12, 500)).sum().backward()
    ratio = counter.get_total_flops() / (2 * fwd)
    assert 2.9 < ratio <= bench_train.TRAIN_FACTOR


def test_flops_grow_with_the_input_and_the_depth():
    r34 = bench_train.forward_flops(meta_model("resnet34"), 12, 15000)
    assert bench_train.forward_flops(meta_model("resnet34"), 12, 7500) < r34 / 1.9
    assert bench_train.forward_flops(meta_model("resnet18"), 12, 15000) < r34 / 1.5


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989.4), ("NVIDIA H200 NVL", 835.5), ("NVIDIA GH200 480GB", 989.4),
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.5), ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.1), ("NVIDIA L4", 121.0), ("NVIDIA A10", 125.0),
    ("NVIDIA GeForce GTX 1080", None)])
def test_device_peak_matches_whole_names_most_specific_first(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert bench_train.device_peak(torch.device("cuda"), None)[0] == peak
    assert bench_train.device_peak(torch.device("cuda"), 790.0) == (790.0, "--peak-tflops")


def test_a_cpu_has_no_peak_unless_given():
    assert bench_train.device_peak(torch.device("cpu"), None)[0] is None


def test_synthetic_folder_is_a_preprocess_folder_with_an_exact_8_1_1_split(tmp_path):
    folder = bench_train.write_synthetic_folder(tmp_path / "s", 40, 300)
    cache, labels = SignalCache(folder), load_labels(folder)  # both check the manifest against the files
    assert len(cache) == 40 and cache.record(labels["patient_id"][3]).shape == (12, 300)
    assert (labels.drop(columns=["patient_id", "fold"]).to_numpy().sum(axis=1) >= 1).all()
    parts = split_labels(labels, seed=42)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [32, 4, 4]


@pytest.mark.slow
def test_bench_train_times_the_bare_step_and_main_py_loop_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    results = bench_train.main(["--preset", "demo", "--input-seconds", "1", "--batch-size", "8", "--seconds", "1",
                                "--out", str(out)])
    assert json.loads(out.read_text())["train_flops_per_record"] == results["train_flops_per_record"]
    assert results["n_samples"] == 100 and results["arch"] == "resnet10"  # the demo preset, input overridden
    bare = results["train"]["fp32, eager"]
    assert bare["samples_per_s"] > 0 and len(bare["chunk_rates"]) == 3
    assert bare["achieved_flops_per_s"] == pytest.approx(bare["samples_per_s"] * results["train_flops_per_record"])
    loop = results["main_loop"]
    # sized from the bare step's rate (so it depends on the machine), at least 4 batches of 8, split 8/1/1
    assert loop["train_records"] >= 32 and loop["train_records"] == 8 * loop["records"] // 10
    assert loop["val_records"] == loop["records"] // 10
    assert loop["train_records_per_s"] == pytest.approx(loop["train_records"] / loop["epoch2_s"])
    assert loop["config"]["epochs"] == 2 and loop["config"]["compile"] is False


def utilisation_line(t: float, util: int) -> str:
    return f"{datetime.fromtimestamp(t).strftime('%Y/%m/%d %H:%M:%S.%f')[:-3]}, {util}, 1000"


def test_utilisation_median_is_taken_inside_the_window(tmp_path):
    path = tmp_path / "util.csv"
    path.write_text("\n".join(utilisation_line(1000.0 + i, u) for i, u in enumerate([0, 10, 90, 80, 70, 0])) + "\n")
    samples = gpu_check_summary.read_utilisation(path)
    assert [u for _, u in samples] == [0, 10, 90, 80, 70, 0]
    assert gpu_check_summary.median_between(samples, 1002.0, 1004.0) == 80
    assert gpu_check_summary.median_between(samples, 2000.0, 2001.0) is None


@pytest.mark.slow
def test_gpu_check_smoke_runs_main_py_and_summarises_its_files(tmp_path):
    """gpu_check.sh's data and main steps at toy sizes on the CPU: its results file holds main.py's
    split, and an epoch's wall time (checkpoint writes included) is at least its logged time."""
    results = tmp_path / "out" / "results.txt"
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "GPU_CHECK_STEPS": "data main", "GPU_CHECK_N": "40",
           "GPU_CHECK_WORK": str(tmp_path / "work"), "PYTHON": sys.executable}
    subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(results)], env=env, check=True,
                   capture_output=True, timeout=600)
    text = results.read_text()
    assert "main: exit 0" in text and "preprocess: exit 0" in text
    numbers = dict(re.findall(r"main\.(\w+): (\S+)", text))
    log_rows = (tmp_path / "work" / "run_main" / "log.csv").read_text().splitlines()[1:]
    assert int(numbers["epochs"]) == len(log_rows) == 2
    n_train = int(re.search(r"train (\d+) val", text)[1])
    assert int(numbers["train_records"]) == n_train
    assert float(numbers["last_epoch_wall_s"]) >= float(numbers["last_epoch_logged_s"]) - 0.01
    wall = float(numbers["last_epoch_wall_s"])
    # the wall time is printed to 0.01 s: on a fast machine an epoch is short enough for that to matter
    assert float(numbers["records_per_s_wall"]) == pytest.approx(n_train / wall, rel=max(0.01, 0.006 / wall))
    assert (tmp_path / "out" / "gpu_check_logs" / "main.out").exists()
    assert np.isfinite(float(numbers["projected_40_epochs_of_5504_s"]))


def test_bench_archs_times_each_model_under_the_settings_main_py_trains_it_with(prepared):
    """bench_archs.py's run settings for each benchmark model are main.py's under --preset ptbxl (the
    registry entry's own lr and clipping, no augmentation, fp32), but for the folders and the device."""
    import bench_archs
    import main
    from models.training import RunConfig
    from utils.presets import BENCHMARK_MODELS

    for arch in BENCHMARK_MODELS.split(","):
        args = main.parse_args(["--data-dir", str(prepared), "--preset", "ptbxl", "--arch", arch, "--batch-size", "64"])
        trained = RunConfig.from_args(args).to_dict()
        timed = bench_archs.run_config(arch, 64).to_dict()
        own = ("data_dir", "run_dir", "use_gpu")  # the bench picks its device itself
        assert {k: v for k, v in timed.items() if k not in own} == {k: v for k, v in trained.items() if k not in own}


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_flops_of_a_conv_network_and_of_the_lstm_equal_torch_flop_counter():
    """bench_archs.py's FLOP column on a 250-sample crop: fcn_wang counted by the hooks equals torch's
    flop counter on a real pass, and so does the lstm, whose LSTM torch counts only off oneDNN (there
    it runs as matrix products: 4 gates x (input + hidden) x hidden per step); the hand count of one
    bidirectional layer pair checks the per-layer input width."""
    import flop_count

    for arch in ("fcn_wang", "lstm"):
        model = build_model(arch, 12, 5).eval()
        with torch.backends.mkldnn.flags(enabled=False), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 12, 250))
        assert flop_count.forward_flops(model, 12, 250) == counter.get_total_flops(), arch
    bidir = torch.nn.LSTM(12, 256, num_layers=2, bidirectional=True, batch_first=True)
    assert flop_count.lstm_macs(bidir, 250) == 2 * 250 * 4 * 256 * ((12 + 256) + (512 + 256))


def test_suite_cpu_report_splits_a_test_s_own_cpu_from_its_processes_and_merges_the_workers(tmp_path):
    """bench/suite_cpu.py under two xdist workers: a test that computes, one that starts a process that
    computes, one that sleeps; one merged CSV, largest first, the workers' parts gone."""
    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
    (tmp_path / "test_load.py").write_text(
        "import subprocess, sys, time\n"
        f"BURN = {burn!r}\n"
        "def test_computes(): exec(BURN)\n"
        "def test_starts_a_process(): subprocess.run([sys.executable, '-c', BURN], check=True)\n"
        "def test_sleeps(): time.sleep(0.5)\n")
    report = tmp_path / "cpu.csv"  # its own --basetemp: pytest's clean-up of older temporary folders is not its work
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "bench.suite_cpu", "--cpu-report",
                          str(report), "--basetemp", str(tmp_path / "temp"), "test_load.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    with open(report, newline="") as f:
        rows = {r["test"].split("::")[1]: r for r in csv.DictReader(f)}
    cpu = {name: (float(r["worker_s"]), float(r["children_s"]), float(r["wall_s"])) for name, r in rows.items()}
    assert cpu["test_computes"][0] >= 0.45 and cpu["test_computes"][1] < 0.2, cpu
    assert cpu["test_starts_a_process"][1] >= 0.45, cpu
    assert sum(cpu["test_sleeps"][:2]) < 0.25 and cpu["test_sleeps"][2] >= 0.5, cpu  # a busy machine adds a little
    assert list(rows)[-1] == "test_sleeps"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cpu.csv")) == ["cpu.csv"]
    assert "CPU seconds:" in out.stdout


CAPPED = """import resource, subprocess, sys
burn = "import time\\nend = time.time() + 1.0\\nwhile time.time() < end: pass\\n"
procs = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
for p in procs:
    p.wait()
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime)
"""


def test_cpu_cap_gives_the_command_and_its_processes_a_share_of_the_cores():
    """Two processes spinning for a second of wall time each get, together, about cores / FACTOR of CPU
    a second (a second each uncapped), and the cap's cgroup is gone afterwards."""
    bad = subprocess.run(["bash", str(ROOT / "bench" / "cpu_cap.sh"), "fast", "true"], capture_output=True, text=True)
    assert bad.returncode == 2 and "FACTOR must be a number" in bad.stderr
    cores, factor = os.cpu_count(), 4
    out = subprocess.run(["bash", str(ROOT / "bench" / "cpu_cap.sh"), str(factor), sys.executable, "-c", CAPPED],
                         capture_output=True, text=True, timeout=60)
    if out.returncode == 1 and re.search(r"root needed|no cgroup cpu controller", out.stderr):
        pytest.skip(f"no cgroup to cap the CPU with here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    name = re.search(r"\((/sys/fs/cgroup/\S+)\)", out.stderr).group(1)
    assert not Path(name).exists()
    cpu = float(out.stdout.split()[-1])
    assert 0.1 < cpu < 1.5 * min(cores, 2) / factor + 0.1, (cpu, out.stderr)  # uncapped: about 2 s


def _outputs(folder: Path, weight: float = 1.0, score: str = "0.5") -> None:
    """The files equal_results.py compares, as two versions' stages would leave them."""
    (folder / "prep").mkdir(parents=True)
    np.save(folder / "prep" / "signals.npy", np.arange(6, dtype=np.int16))
    (folder / "prep" / "labels.csv").write_text("patient_id,AF,fold\nA1,1,1\n")
    (folder / "run").mkdir()
    torch.save({"model": {"w": torch.tensor([weight, 2.0])}, "config": {"run": str(folder)}},
               folder / "run" / "model.pth")
    (folder / "run" / "log.csv").write_text(f"epoch,train_loss,seconds\n1,0.3,{weight * 7}\n")
    for sub in ("results/prep/run", "results/prep/baselines/all/LR"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "test_scores.csv").write_text(f"patient_id,AF,p_AF\nA1,1,{score}\n")
        (folder / sub / "metrics.csv").write_text("class,f1\nAF,1.0\n")


def test_equal_results_compares_every_output_bit_for_bit_but_the_seconds_and_the_paths(tmp_path):
    import equal_results

    _outputs(tmp_path / "a")
    _outputs(tmp_path / "b")  # other run paths in the checkpoints: the weights alone are compared
    lines = equal_results.compare(tmp_path / "a", tmp_path / "b")
    assert len(lines) == 8 and all(line.endswith(": equal") for line in lines), lines
    _outputs(tmp_path / "c", weight=1.0 + 1e-7, score="0.50000001")  # one weight and the scores, barely
    lines = equal_results.compare(tmp_path / "a", tmp_path / "c")
    assert [line.split(":")[0] for line in lines if line.endswith("DIFFERS")] == [
        "run/model.pth weights", "results/prep/run/test_scores.csv", "results/prep/baselines/all/LR/test_scores.csv"]
    assert "run/log.csv without seconds: equal" in lines  # its seconds differ, nothing else
