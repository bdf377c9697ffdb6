#!/usr/bin/env bash
# Run the whole pipeline, stage by stage; each stage skips work whose outputs are already current.
#   ./reproduce.sh --demo    built-in synthetic data, CPU, a few minutes (the README's main command)
#   ./reproduce.sh --paper   real CPSC2018 in data/CPSC, the paper's settings, GPU
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:---demo}"
# Every stage prints how long it took ("stage X: 41 s"); the total comes last.
export PYTHONUNBUFFERED=1
t_start=$SECONDS
timings=()
timed() {
  local name=$1 t0=$SECONDS; shift
  echo; echo "=== $name ==="
  "$@"
  timings+=("stage $name: $((SECONDS - t0)) s")
  echo "stage $name: $((SECONDS - t0)) s"
}

case "$mode" in
  --demo)
    data=data/demo
    # Sizes chosen by measurement to finish in under 10 minutes on a 2-core CPU (README, "Demo timing"):
    # the 12-lead model is a ResNet10 (the paper's ResNet with one block per stage) on the last 10 s at
    # 100 Hz, 10 epochs at lr 1e-3 (the paper: ResNet34, 30 s at 500 Hz, 40 epochs at 1e-4; on 2 cores a
    # ResNet34 or ResNet18 learns far less in the same minutes); the 23 runs of cross-validation and the
    # lead study use a ResNet10 on the last 5 s of 300 of the records for 3 epochs; the baselines are
    # cross-validated for LR only (RF and LightGBM cost ~20 s a fit).
    arch=resnet10
    train=(--arch "$arch" --seconds 10 --sample-rate 100 --epochs 10 --lr 1e-3 --num-workers 0)
    study=(--arch resnet10 --seconds 5 --sample-rate 100 --epochs 3 --lr 1e-3 --limit 300 --num-workers 0
           --n-bootstrap 200)
    cv_classifiers=LR
    explain=(--n-explain 40)
    gpu=()
    [ -f "$data/REFERENCE.csv" ] || timed "synthetic data" python synth.py --out "$data" --n 600 --seed 0 --max-seconds 30
    # another database for the external validation: synthetic records in PTB-XL's own layout
    externals=(data/demo_ptbxl)
    [ -f data/demo_ptbxl/ptbxl_database.csv ] || timed "synthetic PTB-XL" \
      python synth.py --out data/demo_ptbxl --layout ptbxl --n 300 --seed 1
    ;;
  --paper)
    data=data/CPSC
    [ -d "$data" ] || { echo "error: put the CPSC2018 training set in $data (see README)" >&2; exit 1; }
    arch=resnet34
    train=(--arch "$arch")
    study=(--arch "$arch")
    cv_classifiers=all
    explain=()
    gpu=(--use-gpu)
    externals=()  # the other databases present (see README, "Other databases")
    for d in data/PTBXL data/Georgia data/Chapman; do [ -d "$d" ] && externals+=("$d"); done
    ;;
  *) echo "usage: $0 --demo | --paper" >&2; exit 2 ;;
esac

db=$(basename "$data")
run="$data/runs/${arch}_all_42"         # the run folder: model.pth, last.pth, thresholds.json, log.csv, shap/
model="$run/model.pth"
results="results/$db"                   # tables and figures of this database
# newer OUT IN...: OUT exists and is newer than every IN (then a stage's outputs are current)
newer() { local out=$1; shift; for f in "$@"; do [ "$out" -nt "$f" ] || return 1; done; }
skip() { echo "$1 is current; skipping"; }

timed preprocess python preprocess.py --data-dir "$data"
timed "dataset table" python statistic.py --data-dir "$data"
timed "ECG figures" python visualize.py --record "$(ls "$data"/*.hea "$data"/*.mat 2>/dev/null | head -n 1)" \
  --out-dir "$results/ecg"
if newer "$results/baselines_all.json" "$data/features.csv" "$data/labels.csv"; then
  timed "expert-feature baselines" skip "$results/baselines_all.json"
else
  timed "expert-feature baselines" python baselines.py --data-dir "$data" --classifier all
fi
if newer "$results/baselines_all_cv.md" "$data/features.csv" "$data/labels.csv"; then
  timed "baselines, 10-fold cross-validation" skip "$results/baselines_all_cv.md"
else
  timed "baselines, 10-fold cross-validation" python baselines.py --data-dir "$data" --classifier "$cv_classifiers" --cv
fi
resume=(--force); [ -f "$run/last.pth" ] && resume=(--resume)
timed "train the 12-lead model" python main.py --data-dir "$data" --leads all "${train[@]}" "${gpu[@]}" "${resume[@]}"
if newer "$results/$(basename "$run")/metrics.json" "$model"; then
  timed evaluate skip "$results/$(basename "$run")/metrics.json"
else
  timed evaluate python predict.py --model-path "$model" "${gpu[@]}"
fi
timed SHAP python shap_values.py --model-path "$model" "${explain[@]}" "${gpu[@]}"
timed "cross-validation" python cross_validate.py --data-dir "$data" "${study[@]}" "${gpu[@]}"
timed "lead study" python lead_study.py --data-dir "$data" "${study[@]}" "${gpu[@]}"
for ext in "${externals[@]}"; do
  timed "preprocess $(basename "$ext")" python preprocess.py --data-dir "$ext"
  timed "external validation on $(basename "$ext")" python predict.py --model-path "$model" --external-data-dir "$ext" \
    "${gpu[@]}"
done
timed report python report.py --data-dir "$data" --model-path "$model"

echo
printf '%s\n' "${timings[@]}"
echo "total: $((SECONDS - t_start)) s"
