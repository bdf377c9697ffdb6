#!/usr/bin/env bash
# Run the whole pipeline, stage by stage; each stage skips work whose outputs are already current.
#   ./reproduce.sh --demo    built-in synthetic data, CPU, a few minutes (the README's main command)
#   ./reproduce.sh --paper   real CPSC2018 in data/CPSC, the paper's settings, GPU
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:---demo}"

case "$mode" in
  --demo)
    data=data/demo
    # Small, CPU-friendly settings: the last 10 s at 100 Hz, 20 epochs at lr 1e-3 (the paper: 30 s at
    # 500 Hz, 40 epochs at 1e-4). Cross-validation and the lead study use ResNet18 on 5 s to stay within
    # minutes.
    train=(--arch resnet34 --seconds 10 --sample-rate 100 --epochs 20 --lr 1e-3 --num-workers 0)
    study=(--arch resnet18 --seconds 5 --sample-rate 100 --epochs 8 --lr 1e-3 --num-workers 0 --n-bootstrap 300)
    explain=(--n-explain 60)
    gpu=()
    [ -f "$data/REFERENCE.csv" ] || python synth.py --out "$data" --n 600 --seed 0 --max-seconds 30
    ;;
  --paper)
    data=data/CPSC
    [ -d "$data" ] || { echo "error: put the CPSC2018 training set in $data (see README)" >&2; exit 1; }
    train=(--arch resnet34)
    study=(--arch resnet34)
    explain=()
    gpu=(--use-gpu)
    ;;
  *) echo "usage: $0 --demo | --paper" >&2; exit 2 ;;
esac

db=$(basename "$data")
model="models/resnet34_${db}_all_42.pth"
stage() { echo; echo "=== $* ==="; }
# newer OUT IN...: OUT exists and is newer than every IN (then a stage's outputs are current)
newer() { local out=$1; shift; for f in "$@"; do [ "$out" -nt "$f" ] || return 1; done; }

stage preprocess
python preprocess.py --data-dir "$data"
stage dataset table
python statistic.py --data-dir "$data"
stage ECG figures
python visualize.py --record "$(ls "$data"/*.hea "$data"/*.mat 2>/dev/null | head -n 1)" --out-dir results/ecg
stage expert-feature baselines
if newer results/baselines_all.json "$data/features.csv" "$data/labels.csv"; then
  echo "results/baselines_all.json is current; skipping"
else
  python baselines.py --data-dir "$data" --classifier all
fi
stage expert-feature baselines, 10-fold cross-validation
if newer results/baselines_all_cv.md "$data/features.csv" "$data/labels.csv"; then
  echo "results/baselines_all_cv.md is current; skipping"
else
  python baselines.py --data-dir "$data" --classifier all --cv
fi
stage train the 12-lead model
resume=(--force); [ -f "${model%.pth}.last.pth" ] && resume=(--resume)
python main.py --data-dir "$data" --leads all "${train[@]}" "${gpu[@]}" "${resume[@]}"
stage evaluate
if newer "results/$(basename "${model%.pth}")/metrics.json" "$model"; then
  echo "metrics are newer than $model; skipping"
else
  python predict.py --model-path "$model" "${gpu[@]}"
fi
stage SHAP
python shap_values.py --model-path "$model" "${explain[@]}" "${gpu[@]}"
stage cross-validation
python cross_validate.py --data-dir "$data" "${study[@]}" "${gpu[@]}"
stage lead study
python lead_study.py --data-dir "$data" "${study[@]}" "${gpu[@]}"
stage report
python report.py --data-dir "$data" --model-path "$model"
