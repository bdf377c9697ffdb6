"""The library under the stage scripts. Import each name from the module that defines it
(`from utils.metrics import macro_auc`); this package file exports nothing.

- errors:    PipelineError, MissingInputError, RecordError; `script_main` turns them into `error:` exits
- cli:       command-line value types (bounded numbers, folders) and flag checks: exit 2 naming the flag
- files:     atomic writes of CSV/JSON/NPY/text/PNG, fingerprints of inputs
- manifest:  the one freshness rule: a manifest written last, outputs current only while it matches
- locks:     one writer per folder (an advisory lock beside it)
- parallel:  process pools that stop cleanly on Ctrl-C and on a dead worker
- labels:    leads and label sets as data (cpsc9, the PTB-XL tasks built from a database's statements)
- records:   WFDB headers and signals (any format), the original CPSC2018 .mat, resampling
- layouts:   the registry of database layouts (WFDB, CPSC2018, PTB-XL) preprocess.py reads
- folds:     stratified folds and the split rules
- cache:     the preprocess outputs, their manifest checks, the memory-mapped signal cache
- pool:      databases pooled for leave-one-out
- defaults:  the default --data-dir and --results-dir of every command
- metrics:   F1, AUC, ECE, Brier, threshold tuning, temperature scaling, bootstrap CIs
- evaluator: one evaluator for every model's scores: thresholds, metrics with CIs, calibration, figures
- results:   where a database's results live; an evaluation's folder and its one reader
- tables:    CSV and markdown tables from one declaration of columns
- features:  the baselines' expert features (needs PyWavelets)
- download:  the PhysioNet catalogue, SHA256SUMS.txt, downloads that resume and verify
- benchmark: the PTB-XL benchmark's leaderboard as data, its bootstrap scoring and results table
- comparison: the benchmark over training seeds: mean and sd per model, paired comparisons, its outputs
- presets:   named settings (demo, paper, ptbxl) as data
"""
