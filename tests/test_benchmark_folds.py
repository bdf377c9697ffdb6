"""The PTB-XL benchmark's fold procedure (labels + sex + age bands per patient; what it used for ICBEB2018)
against a plain re-statement of its rules, written separately with lists and dicts."""
from __future__ import annotations

import numpy as np

from utils.folds import benchmark_fold_tokens, benchmark_folds


def plain_procedure(tokens: list[list[str]], n_folds: int = 10) -> list[int]:
    """The rules, one record at a time: the token with the fewest unplaced carriers (first in sorted order),
    its carriers last-first, each to the fold wanting that token most, then the fold wanting records
    most, then a draw from RandomState(0)."""
    draws = np.random.RandomState(0)
    names = sorted({t for ts in tokens for t in ts})
    unplaced = {t: [i for i, ts in enumerate(tokens) for u in ts if u == t] for t in names}
    need = {t: [len(unplaced[t]) * (1 / n_folds)] * n_folds for t in names}
    room = [len(tokens) * (1 / n_folds)] * n_folds
    fold = [0] * len(tokens)
    while any(unplaced.values()):
        fewest = min(len(v) for v in unplaced.values() if v)
        token = next(t for t in names if len(unplaced[t]) == fewest)
        for i in sorted(set(unplaced[token]), reverse=True):  # all counts 1: the stable argsort reversed
            top = max(need[token])
            best = [f for f in range(n_folds) if need[token][f] == top]
            if len(best) > 1:
                most = max(room[f] for f in best)
                f = best[draws.choice([k for k, g in enumerate(best) if room[g] == most])]
            else:
                f = best[0]
            fold[i] = f + 1
            room[f] -= 1
            for t in tokens[i]:
                need[t][f] -= 1
            for t in names:
                unplaced[t] = [j for j in unplaced[t] if j != i]
    return fold


def test_benchmark_folds_follow_the_reference_s_rules():
    rng = np.random.default_rng(3)
    classes = ["NORM", "AFIB", "1AVB", "CLBBB", "CRBBB", "PAC", "VPC", "STD_", "STE_"]
    statements = [list(rng.choice(classes, size=rng.integers(1, 3), replace=False)) for _ in range(137)]
    sex = rng.choice(["Male", "Female", "Unknown"], 137, p=[0.5, 0.45, 0.05])
    age = np.where(rng.random(137) < 0.05, np.nan, rng.integers(5, 95, 137))
    tokens = benchmark_fold_tokens(statements, sex, age)
    folds = benchmark_folds(tokens)
    assert list(folds) == plain_procedure(tokens)
    assert set(folds) == set(range(1, 11)) and np.bincount(folds)[1:].max() - np.bincount(folds)[1:].min() <= 3
    for c in classes:  # each statement spread over the folds
        carried = np.array([c in s for s in statements])
        per_fold = np.bincount(folds[carried], minlength=11)[1:]
        assert per_fold.max() - per_fold.min() <= 3, c


def test_benchmark_fold_tokens_are_the_reference_s():
    tokens = benchmark_fold_tokens([["AFIB"], ["NORM", "PAC"], ["STE_"]], ["Male", "Female", "Unknown"],
                                   [19.0, 80.0, float("nan")])
    assert tokens == [["AFIB", "female", "<20"], ["NORM", "PAC", "male", ">=80"], ["STE_", "male"]]


def test_preprocess_writes_the_benchmark_s_folds_and_split(tmp_path):
    """--folds benchmark: the folds of the records' labels, sex and age (from their headers), in record-name
    order, and the benchmark's split (train 1-8, validation 9, test 10) in the manifest."""
    import json

    import pandas as pd

    import preprocess
    import synth

    synth.main(["--out", str(tmp_path / "CPSC"), "--n", "45", "--seed", "2"])
    preprocess.main(["--data-dir", str(tmp_path / "CPSC"), "--out", str(tmp_path / "prep"), "--folds", "benchmark",
                     "--num-workers", "1"])
    labels = pd.read_csv(tmp_path / "prep" / "labels.csv", dtype={"patient_id": str}).sort_values("patient_id")
    reference = pd.read_csv(tmp_path / "prep" / "reference.csv", dtype={"patient_id": str}).set_index("patient_id")
    statement = {"SNR": "NORM", "AF": "AFIB", "IAVB": "1AVB", "LBBB": "CLBBB", "RBBB": "CRBBB", "PAC": "PAC",
                 "PVC": "VPC", "STD": "STD_", "STE": "STE_"}
    classes = [c for c in labels.columns if c not in ("patient_id", "fold")]
    tokens = []
    for _, row in labels.iterrows():
        info = reference.loc[row["patient_id"]]
        age = float(info["age"])
        band = [] if np.isnan(age) else ["<20" if age < 20 else "20-40" if age < 40 else "40-60" if age < 60
                                         else "60-80" if age < 80 else ">=80"]
        tokens.append([statement[c] for c in classes if row[c]] + ["female" if info["sex"] == "Male" else "male"]
                      + band)
    assert list(labels["fold"]) == plain_procedure(tokens)
    manifest = json.loads((tmp_path / "prep" / "preprocess.json").read_text())
    assert manifest["fixed_split"] == {"train": list(range(1, 9)), "val": [9], "test": [10]}
    assert manifest["folds"] == "benchmark"
