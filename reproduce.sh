#!/usr/bin/env bash
# Run the whole pipeline, stage by stage. Each stage decides itself whether its outputs are current (and
# says so in one line); this script only calls them in order with one preset (utils/presets.py).
#   ./reproduce.sh --demo            built-in synthetic data, CPU, about 3 minutes on 2 cores (the README's main command)
#   ./reproduce.sh --paper [DIR]     real CPSC2018 (default data/CPSC; see the README's "Get the data"), GPU
#   ./reproduce.sh --ptbxl [DIR]     the PTB-XL benchmark on real PTB-XL (default data/PTBXL), GPU
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:---demo}"
export PYTHONUNBUFFERED=1
t_start=$SECONDS
timings=()
timed() {  # timed NAME COMMAND...: run one stage, print and remember how long it took
  local name=$1 t0=$SECONDS; shift
  echo; echo "=== $name ==="
  "$@"
  timings+=("stage $name: $((SECONDS - t0)) s")
  echo "stage $name: $((SECONDS - t0)) s"
}

synth_side_by_side() {  # synth_side_by_side "OUT FLAGS..." ...: each database not yet written, one process each
  local pids=() logs=() status=0 i args
  for args in "$@"; do
    set -- $args
    [ -f "$1/synth_details.csv" ] && continue
    logs+=("$(mktemp)")
    python synth.py --out "$@" >"${logs[-1]}" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=1
    tr '\r' '\n' <"${logs[$i]}" | grep -v 'rec/s' || true  # its lines, without the progress bar
    rm -f "${logs[$i]}"
  done
  return $status
}

case "$mode" in
  --demo)
    preset=demo
    data=data/demo
    # two other "hospitals" (synth.py --site): B in PTB-XL's own layout at 250 Hz, C at 1000 Hz in uV
    externals=(data/demo_b data/demo_c)
    timed "synthetic data (4 databases side by side)" synth_side_by_side \
      "$data --n 600 --seed 0 --max-seconds 30" \
      "data/demo_b --layout ptbxl --site b --n 300 --seed 1" \
      "data/demo_c --site c --n 300 --seed 2" \
      "data/demo_ptbxl --layout ptbxl --n 400 --seed 3"
    ;;
  --ptbxl)
    data="${2:-data/PTBXL}"
    [ -f "$data/ptbxl_database.csv" ] || { echo "error: no PTB-XL in $data: fetch it with \`python get_data.py ptbxl --out data/PTBXL --rate 100\` (README, The PTB-XL benchmark)" >&2; exit 1; }
    timed "PTB-XL benchmark" python benchmark.py --data-dir "$data" --preset ptbxl
    echo; printf '%s\n' "${timings[@]}"; echo "total: $((SECONDS - t_start)) s"
    exit 0
    ;;
  --paper)
    preset=paper
    data="${2:-data/CPSC}"
    [ -d "$data" ] || { echo "error: no CPSC2018 records in $data: fetch them with \`python get_data.py cpsc2018 --out data/CPSC\` (README, Get the data)" >&2; exit 1; }
    externals=()  # the other databases present (docs/databases.md)
    for d in data/PTBXL data/Georgia data/Chapman; do [ -d "$d" ] && externals+=("$d"); done
    ;;
  *) echo "usage: $0 --demo | --paper [DIR] | --ptbxl [DIR]" >&2; exit 2 ;;
esac

run="$data/runs/$preset"  # the 12-lead run every later stage is about

timed preprocess python preprocess.py --data-dir "$data"
timed "dataset table" python statistic.py --data-dir "$data"
timed "ECG figures" python visualize.py --record "$(find "$data" -not -path '*/runs/*' \( -name '*.hea' -o -name '*.mat' \) | sort | head -n 1)"
timed "expert-feature baselines" python baselines.py --data-dir "$data" --preset "$preset" --classifier all
timed "baselines, 10-fold cross-validation" python baselines.py --data-dir "$data" --preset "$preset" --cv
timed "train the 12-lead model" python main.py --data-dir "$data" --preset "$preset" --run "$run"
timed evaluate python predict.py --run "$run" --preset "$preset"
timed SHAP python shap_values.py --run "$run" --preset "$preset"
timed "cross-validation" python cross_validate.py --data-dir "$data" --preset "$preset"
timed "lead study" python lead_study.py --data-dir "$data" --preset "$preset"
for ext in "${externals[@]}"; do
  timed "preprocess $(basename "$ext")" python preprocess.py --data-dir "$ext"
  timed "external validation on $(basename "$ext")" python predict.py --run "$run" --preset "$preset" \
    --external-data-dir "$ext"
done
if [ "${#externals[@]}" -gt 0 ]; then
  timed "cross-database matrix" python cross_database.py --data-dirs "$data" "${externals[@]}" --preset "$preset"
fi
if [ "$preset" = demo ]; then
  timed "PTB-XL benchmark (synthetic, 2 tasks x 2 architectures)" python benchmark.py --data-dir data/demo_ptbxl --preset demo
  # the benchmark's fcn_wang (synthetic PTB-XL, superdiagnostic) finetuned on this site versus trained from scratch
  timed "transfer study (synthetic PTB-XL -> this site, 2 fractions, 1 seed)" python transfer.py --data-dir "$data" \
    --source data/demo_ptbxl/tasks/demo_ptbxl_superdiagnostic/runs/fcn_wang_all_42 --preset demo
fi
if [ "$preset" = paper ] && [ -f data/PTBXL/ptbxl_database.csv ]; then  # PTB-XL `all` (xresnet1d101) -> CPSC2018
  timed "PTB-XL benchmark: all, xresnet1d101 (the transfer source)" python benchmark.py --data-dir data/PTBXL \
    --preset ptbxl --tasks all --models xresnet1d101
  timed "transfer study (PTB-XL all -> CPSC2018)" python transfer.py --data-dir "$data" \
    --source data/PTBXL/tasks/PTBXL_all/runs/xresnet1d101_all_42 --preset finetune
fi
timed report python report.py --data-dir "$data" --run "$run"

echo
printf '%s\n' "${timings[@]}"
echo "total: $((SECONDS - t_start)) s"
