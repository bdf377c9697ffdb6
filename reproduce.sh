#!/usr/bin/env bash
# Run the whole pipeline. Each stage skips work whose outputs are already current.
#   ./reproduce.sh --demo    built-in synthetic data, CPU, minutes
#   ./reproduce.sh --paper   real CPSC2018 in data/CPSC, the paper's settings, GPU
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:---demo}"
case "$mode" in
  --demo)
    data=data/demo
    [ -f "$data/REFERENCE.csv" ] || python synth.py --out "$data" --n 600 --seed 0 --max-seconds 30
    python preprocess.py --data-dir "$data"
    ;;
  --paper)
    data=data/CPSC
    [ -d "$data" ] || { echo "error: put the CPSC2018 training set in $data (see README)" >&2; exit 1; }
    python preprocess.py --data-dir "$data"
    ;;
  *) echo "usage: $0 --demo | --paper" >&2; exit 2 ;;
esac
