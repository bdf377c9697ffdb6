"""The dataset table (the paper's Table 1): per class N and %, male N and %, age and duration mean ± sd.

    python statistic.py --data-dir data/CPSC

Reads reference.csv and labels.csv from preprocess.py; prints the table and writes
results/<db>/dataset_table.csv and .md. Multi-label records count once in each of their classes; the
"All" row counts each record once. Percentages of N are of all labelled records.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from utils.cache import REFERENCE_CSV, data_label_set, load_labels, preprocess_manifest, require
from utils.errors import script_main
from utils.files import read_records_csv
from utils.tables import Column, format_mean_sd, write_table
from utils.cli import folder_path
from utils.results import record_data, results_home
from utils.defaults import DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR

# The published class counts of the CPSC2018 training set (6,877 records), shown beside a cpsc9 table.
CPSC2018_COUNTS = {"SNR": 918, "AF": 1098, "IAVB": 704, "LBBB": 207, "RBBB": 1695, "PAC": 556, "PVC": 672,
                   "STD": 825, "STE": 202, "All": 6877}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=folder_path, default=DEFAULT_DATA_DIR)
    p.add_argument("--results-dir", type=folder_path, default=DEFAULT_RESULTS_DIR)
    return p.parse_args(argv)


def mean_sd(x: pd.Series, digits: int = 1) -> str:
    x = x.dropna()
    return format_mean_sd(x.mean(), x.std(), digits) if len(x) else "n/a"


def dataset_table(reference: pd.DataFrame, labels: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    data = labels.merge(reference, on="patient_id", how="left", validate="one_to_one")
    data["duration"] = data["signal_len"] / data["sample_rate"]
    groups = {c: data[data[c] == 1] for c in classes} | {"All": data}
    rows = []
    for name, g in groups.items():
        male = int((g["sex"] == "Male").sum())
        rows.append({"class": name, "n": len(g), "pct": 100 * len(g) / len(data), "male_n": male,
                     "male_pct": 100 * male / len(g) if len(g) else np.nan, "age": mean_sd(g["age"]),
                     "duration_s": mean_sd(g["duration"]), "age_missing": int(g["age"].isna().sum()),
                     "cpsc2018_n": CPSC2018_COUNTS.get(name, np.nan)})
    return pd.DataFrame(rows)


COLUMNS = [Column("class", "class", align="left"), Column("n", "N (%)", lambda r: f"{r['n']} ({r['pct']:.1f} %)"),
           Column("pct"), Column("male_n", "male N (%)", lambda r: f"{r['male_n']} ({r['male_pct']:.1f} %)"),
           Column("male_pct"), Column("age", "age (mean ± sd)"), Column("duration_s", "duration s (mean ± sd)"),
           Column("age_missing"),
           Column("cpsc2018_n", "CPSC2018 N (paper)", lambda r: f"{r['cpsc2018_n']:.0f}")]  # a cpsc9 table only


def _has_demographics(reference: pd.DataFrame) -> bool:
    return bool(reference["age"].notna().any() or (reference["sex"].fillna("Unknown") != "Unknown").any())


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    labels = load_labels(args.data_dir)
    label_set = data_label_set(args.data_dir)
    reference = read_records_csv(require(args.data_dir / REFERENCE_CSV,
                                         f"python preprocess.py --data-dir {args.data_dir}"))
    if preprocess_manifest(args.data_dir).get("layout") == "ptbxl" and not _has_demographics(reference):
        print(f"warning: {args.data_dir / REFERENCE_CSV} holds no age or sex of its PTB-XL records (written before "
              f"preprocess.py read them from ptbxl_database.csv): run `python preprocess.py ... --force` with the "
              f"same flags (the signals, labels and fingerprint stay the same, so runs stay current)", file=sys.stderr)
    table = dataset_table(reference, labels, label_set["classes"])
    if label_set["name"] != "cpsc9":
        table = table.drop(columns="cpsc2018_n")
    out = results_home(args.results_dir, args.data_dir)
    md = write_table(table, COLUMNS, out / "dataset_table")
    record_data(out / "dataset_table.json", args.data_dir, [out / "dataset_table.csv", out / "dataset_table.md"])
    print(md)
    print(f"wrote {out}/dataset_table.csv and .md")
    return table


if __name__ == "__main__":
    main()
