#!/usr/bin/env bash
# The GPU checks of bench/README.md on one GPU, sized for one H200 (about 8 minutes in all); every number goes to RESULTS.
#
#   bash bench/gpu_check.sh [RESULTS]                  # default gpu_check_results.txt
#   GPU_CHECK_STEPS="env bench" bash bench/gpu_check.sh $OUT/a.txt      # a subset of: env bench data main cv
#   GPU_CHECK_SMOKE=1 bash bench/gpu_check.sh /tmp/smoke.txt             # the plumbing on a CPU, tiny sizes, no GPU numbers
#
# Steps, in order:
#   env    versions, the GPU, which optional packages are present
#   bench  bench/bench_train.py --use-gpu --seconds 30 --cuda-graphs: FLOPs per record; the bare step in fp32, bf16,
#          bf16 compiled (main.py's default) and with CUDA graphs, with MFU; inference at the validation batch;
#          main.py's own loop on synthetic cached records
#   data   synth.py --n 6877 (CPSC2018's size and record lengths, 6-60 s) and preprocess.py
#   main   main.py --preset paper --epochs 2 on it (fused Adam, no host sync per step, torch.compile, bf16
#          validation at 8 x the batch), GPU utilisation sampled by nvidia-smi every 200 ms
#   cv     cross_validate.py --preset paper --epochs 2 --folds 1,2,3 --jobs 3: three runs sharing the GPU
#   ptbxl  (only when named in GPU_CHECK_STEPS; needs wfdb) synth.py --layout ptbxl --n 2000, then benchmark.py
#          --preset ptbxl --tasks superdiagnostic --models xresnet1d101 --epochs 3: each epoch's time from log.csv
# The whole script stops starting new work after GPU_CHECK_BUDGET seconds (default 540, under a 10-minute
# limit per command); each step's own time limit is cut to what is left, so RESULTS always
# holds what finished. To stay far from that limit, run it as two calls on a warm machine:
# GPU_CHECK_STEPS="env bench" then GPU_CHECK_STEPS="data main cv" (work files are kept in between).
#
# Needs python with torch (CUDA), numpy, pandas (2 or 3), scipy and tqdm; matplotlib only for
# cross_validate.py's figure at its very end, after the timings it reports were logged. NOT wfdb, shap,
# pywavelets or lightgbm (a bare GPU machine may lack them): synth.py writes .hea + .mat records with scipy,
# preprocess.py reads .mat without wfdb, and no training step imports the others.
# Work files: data/gpu_check/ (git-ignored, so a warm machine keeps them between calls); step logs are
# copied next to RESULTS, into gpu_check_logs/.
set -uo pipefail  # not -e: a failing step must not lose the numbers of the others
cd "$(dirname "$0")/.."
results=$(realpath -m "${1:-gpu_check_results.txt}")
steps=" ${GPU_CHECK_STEPS:-env bench data main cv} "
budget=${GPU_CHECK_BUDGET:-540}
py=${PYTHON:-python}
export PYTHONUNBUFFERED=1
if [ -n "${GPU_CHECK_SMOKE:-}" ]; then  # CPU plumbing test: the same steps at toy sizes
  work=${GPU_CHECK_WORK:-data/gpu_check_smoke}
  n=${GPU_CHECK_N:-60}
  bench_args=(--preset demo --input-seconds 1 --batch-size 8 --seconds 3)
  train_args=(--arch resnet10 --arch-arg width=8 --seconds 2 --sample-rate 100 --batch-size 8 --num-workers 0)
  synth_args=(--max-seconds 12)
else
  work=${GPU_CHECK_WORK:-data/gpu_check}
  n=${GPU_CHECK_N:-6877}
  bench_args=(--use-gpu --seconds "${GPU_CHECK_BENCH_SECONDS:-30}" --cuda-graphs)
  train_args=()
  synth_args=()
fi
logs="$work/logs"
keep="$(dirname "$results")/gpu_check_logs"
mkdir -p "$logs" "$keep"
t_start=${EPOCHREALTIME:-$(date +%s)}

note() { echo "$*" | tee -a "$results"; }
want() { [[ "$steps" == *" $1 "* ]]; }
now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
left() { awk -v a="$t_start" -v b="$(now)" -v B="$budget" 'BEGIN { l = B - (b - a); printf "%d", (l > 0 ? l : 0) }'; }
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(now)" "$line"; done; }
# run NAME LIMIT_S CMD...: CMD under `timeout` (cut to the budget left), stdout time-stamped into
# $logs/NAME.out, stderr into $logs/NAME.err; sets rc and wall (seconds).
run() {
  local name=$1 limit=$2 t0; shift 2
  local cap; cap=$(left)
  [ "$cap" -lt "$limit" ] && limit=$cap
  if [ "$limit" -le 5 ]; then rc=124; wall=0; note "$name: skipped, the ${budget} s budget is spent"; return; fi
  t0=$(now)
  timeout "$limit" "$@" 2>"$logs/$name.err" | stamp >"$logs/$name.out"
  rc=${PIPESTATUS[0]}
  wall=$(since "$t0")
  cp "$logs/$name.out" "$logs/$name.err" "$keep/" 2>/dev/null
  note "$name: exit $rc, ${wall} s (limit ${limit} s)$([ "$rc" = 124 ] && echo ', TIMED OUT')"
  [ "$rc" = 0 ] || tail -n 5 "$logs/$name.err" | sed 's/^/  stderr: /' | tee -a "$results"
}
# sampler_start FILE / sampler_stop: GPU utilisation every 200 ms while a step runs (when nvidia-smi exists)
sampler=""
sampler_start() {
  command -v nvidia-smi >/dev/null || return 0
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 >"$1" 2>/dev/null &
  sampler=$!
}
sampler_stop() { [ -n "$sampler" ] && kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; sampler=""; }
trap sampler_stop EXIT

note "== gpu_check $(date -u +%FT%TZ)  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
     "($(git status --porcelain 2>/dev/null | wc -l) changed files)  steps:$steps ${GPU_CHECK_SMOKE:+(SMOKE: toy sizes, not GPU numbers)}"

if want env; then
  "$py" - <<'EOF' 2>&1 | tee -a "$results"
import importlib, os, platform
import torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"env: python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, GPU {gpu}, {os.cpu_count()} CPUs")
have = []
for name in ("numpy", "pandas", "scipy", "tqdm", "matplotlib", "sklearn", "wfdb", "shap", "pywt", "lightgbm"):
    try:
        have.append(f"{name} {importlib.import_module(name).__version__}")
    except Exception:
        have.append(f"{name} MISSING")
print("env: " + ", ".join(have))
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version \
    --format=csv,noheader | sed 's/^/env: nvidia-smi: /' | tee -a "$results"
fi

if want bench; then
  run bench_train 330 "$py" bench/bench_train.py "${bench_args[@]}" --out "$work/bench_train.json"
  cut -d' ' -f2- "$logs/bench_train.out" | grep -v '^epoch \|^best val\|^resnet[0-9]* on\|^using GPU' \
    | sed 's/^/  /' | tee -a "$results"
  cp "$work/bench_train.json" "$keep/" 2>/dev/null
fi

records="$work/records" prepared="$work/prepared"
if want data; then
  if [ ! -f "$records/synth_details.csv" ]; then
    run synth 200 "$py" synth.py --out "$records" --n "$n" --seed 0 --force "${synth_args[@]}"
  else
    note "synth: $records already holds the records (synth_details.csv); reused"
  fi
  run preprocess 200 "$py" preprocess.py --data-dir "$records" --out "$prepared"
  cut -d' ' -f2- "$logs/preprocess.out" 2>/dev/null | grep '^reading\|^records found\|current' | sed 's/^/  /' | tee -a "$results"
fi

main_wall=""
if want main; then
  sampler_start "$work/util_main.csv"
  run main 300 "$py" main.py --data-dir "$prepared" --preset paper --epochs 2 --run "$work/run_main" --force "${train_args[@]}"
  sampler_stop
  main_wall=$wall
  cp "$work/util_main.csv" "$keep/" 2>/dev/null
  cut -d' ' -f2- "$logs/main.out" | grep '^epoch \|^resnet' | sed 's/^/  /' | tee -a "$results"
  "$py" bench/gpu_check_summary.py main --stdout "$logs/main.out" --log-csv "$work/run_main/log.csv" \
    --util "$work/util_main.csv" 2>&1 | sed 's/^/  /' | tee -a "$results"
fi

if want cv; then
  rm -rf "$work/cv_runs" "$work/cv_results"  # the studies keep finished runs: start from none
  sampler_start "$work/util_cv.csv"
  run cv 330 "$py" cross_validate.py --data-dir "$prepared" --preset paper --epochs 2 --folds 1,2,3 --jobs 3 \
    --runs-dir "$work/cv_runs" --results-dir "$work/cv_results" --n-bootstrap 100 "${train_args[@]}"
  sampler_stop
  cp "$work/util_cv.csv" "$keep/" 2>/dev/null
  "$py" bench/gpu_check_summary.py cv --stdout "$logs/cv.out" --runs-dir "$work/cv_runs" --util "$work/util_cv.csv" \
    --wall "$wall" ${main_wall:+--single-wall "$main_wall"} 2>&1 | sed 's/^/  /' | tee -a "$results"
fi

if want ptbxl; then  # the PTB-XL protocol's epoch time for one architecture (bench/bench_archs.py estimates it)
  if [ -n "${GPU_CHECK_SMOKE:-}" ]; then pn=${GPU_CHECK_PTBXL_N:-100}; ptbxl_args=(--epochs 2 --batch-size 16 --num-workers 0)
  else pn=${GPU_CHECK_PTBXL_N:-2000}; ptbxl_args=(--epochs 3); fi
  ptbxl="$work/ptbxl_records"
  if ! "$py" -c "import wfdb" 2>/dev/null; then
    note "ptbxl: skipped, wfdb is missing (PTB-XL's .dat records need it)"
  else
    [ -f "$ptbxl/ptbxl_database.csv" ] && [ "$(($(wc -l <"$ptbxl/ptbxl_database.csv") - 1))" = "$pn" ] \
      || run ptbxl_synth 200 "$py" synth.py --layout ptbxl --out "$ptbxl" --n "$pn" --seed 0 --force
    sampler_start "$work/util_ptbxl.csv"
    run ptbxl 330 "$py" benchmark.py --data-dir "$ptbxl" --preset ptbxl --tasks superdiagnostic --models xresnet1d101 \
      --results-dir "$work/ptbxl_results" --force "${ptbxl_args[@]}"
    sampler_stop
    cp "$work/util_ptbxl.csv" "$keep/" 2>/dev/null
    "$py" - "$ptbxl" <<'EOF' 2>&1 | sed 's/^/  /' | tee -a "$results"
import sys
from pathlib import Path
import pandas as pd
logs = sorted(Path(sys.argv[1], "tasks").glob("*_superdiagnostic/runs/xresnet1d101*/log.csv"))
if not logs:
    sys.exit("ptbxl: no log.csv of an xresnet1d101 run")
log = pd.read_csv(logs[-1])
labels = pd.read_csv(logs[-1].parents[2] / "labels.csv")
n_train = int((labels["fold"] <= 8).sum())
last = float(log["seconds"].iloc[-1])
print("ptbxl.epoch_seconds: " + " ".join(f"{s:.2f}" for s in log["seconds"]) + f"  ({logs[-1]})")
print(f"ptbxl.train_records: {n_train}")
print(f"ptbxl.last_epoch_s: {last:.2f}")
print(f"ptbxl.records_per_s: {n_train / last:.1f}  (the epoch's training and validation, per training record)")
print(f"ptbxl.projected_50_epochs_of_17441_s: {50 * last * 17441 / n_train:.0f}  (the last epoch scaled to `all`)")
EOF
  fi
fi

note "== done in $(since "$t_start") s; results in $results, step logs in $keep"
