"""Read every record once: write reference.csv, labels.csv (folds) and the signal cache.

    python preprocess.py --data-dir data/CPSC                         # outputs beside the records
    python preprocess.py --data-dir ro/records --out data/real
    python preprocess.py --data-dir data/ptbxl --labels superdiagnostic
    python preprocess.py --data-dir data/ptbxl --out data/ptbxl_all --labels all --cache-rate 100
    python preprocess.py --data-dir data/ptbxl --out data/ptbxl_rhythm --labels rhythm --signals-from data/ptbxl_all

Reads any layout of the registry in utils/layouts.py: WFDB records of the PhysioNet/CinC 2020-2021
releases (`A0001.hea` + a .mat or .dat signal in any WFDB format, SNOMED-CT `# Dx:` codes), the original
CPSC2018 layout (`.mat` struct ECG + `REFERENCE.csv`) and PTB-XL (ptbxl_database.csv, records500/, or
records100/ at --cache-rate 100). --labels picks the label set: cpsc9 (the default; any layout) or,
for PTB-XL, one of the benchmark's six tasks, whose classes are the statements (or their
diagnostic_subclass / diagnostic_class) of scp_statements.csv that some record carries: all,
diagnostic, subdiagnostic, superdiagnostic, form, rhythm. Records with none of the set's classes are
counted and left out. Folds are seeded and stratified, except where the database fixes them (PTB-XL's
strat_fold; train 1-8, validation 9, test 10).

--cache-rate is the rate the cache is stored at (recorded in preprocess.json; every later stage reads
it from there; main.py's --sample-rate is the rate the model sees, resampled from the cache's). --signals-from DIR writes a label set's folder over the signal cache of DIR, a folder
preprocessed from the same records at the same rate (hard links, no decoding): prepare PTB-XL once with
--labels all, then each other task from it.

Records are listed first (labels, folds) without decoding any signal; the labelled ones are then
decoded one at a time by worker processes, resampled to the cache's rate and streamed as int16 µV into
`signals.npy` (12 x total samples, memory-mapped by later stages; `signals_index.csv` gives each
record's span), so memory does not grow with the number of records. Outputs are rebuilt only when the
inputs or settings changed (or with --force); each is written to a temporary file and renamed, and the
manifest preprocess.json, written last, says which outputs belong together. One run at a time writes
a folder (the lock file `.lock` in it); a second one stops with an error naming the first's pid.

Never a silently wrong signal: a record whose header names another record's signal file, WFDB's
invalid-sample value (NaN) in one of its leads, or conflicting labels is skipped and reported. Samples
beyond the cache's int16 range (±32.767 mV, e.g. a 40 mV DC offset) are stored clipped, and reported:
a `clipped` count per record in signals_index.csv and the manifest, and a `clipped:` line per record
naming its leads (the record is kept: a few clipped pacing spikes are harmless; a flat lead is the
user's call, not a silent one).
"""
from __future__ import annotations

import argparse

from utils.cli import MAX_WORKERS, bounded_int, flag_error, folder_path, seed_int, usable_cpus
from utils.defaults import DEFAULT_DATA_DIR
from utils.errors import script_main
from utils.folds import FOLD_RULES
from utils.labels import LABEL_SETS
from utils.preprocessed import PreprocessRequest, preprocess
from utils.records import SAMPLE_RATE


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=folder_path, default=DEFAULT_DATA_DIR, help="folder with the records")
    p.add_argument("--out", dest="out_dir", type=folder_path, default=None,
                   help="where outputs go (default: --data-dir)")
    p.add_argument("--labels", default="cpsc9", choices=sorted(LABEL_SETS),
                   help="label set: cpsc9, or a PTB-XL task (all, diagnostic, subdiagnostic, superdiagnostic, "
                        "form, rhythm)")
    p.add_argument("--cache-rate", type=bounded_int(1, 10_000), default=None,
                   help=f"rate the cache is stored at, Hz, %(type)s (default {SAMPLE_RATE}; with --signals-from, "
                        f"DIR's). PTB-XL at 100 reads records100/ as is")
    p.add_argument("--sample-rate", dest="model_rate", default=None, help=argparse.SUPPRESS)  # main.py's, not ours
    p.add_argument("--signals-from", type=folder_path, default=None, metavar="DIR",
                   help="share the signal cache of DIR, preprocessed from the same records and rate (hard links; "
                        "nothing decoded): this label set gets its own labels.csv and manifest in --out")
    p.add_argument("--seed", type=seed_int, default=42, help="seed of the stratified fold assignment, %(type)s")
    p.add_argument("--folds", choices=FOLD_RULES, default="stratified",
                   help="stratified: seeded, on the labels (the default); benchmark: the PTB-XL benchmark's procedure "
                        "for ICBEB2018 (labels + sex + age bands, one patient a record, no seed) with its split: "
                        "train 1-8, validation 9, test 10. A database with its own folds (PTB-XL) keeps them")
    p.add_argument("--num-workers", type=bounded_int(0, MAX_WORKERS), default=usable_cpus(),
                   help="processes decoding records (0 or 1: this process), %(type)s")
    p.add_argument("--force", action="store_true", help="rebuild even when outputs are current")
    args = p.parse_args(argv)
    if args.model_rate is not None:
        flag_error(p, "--sample-rate", f"the cache's rate is --cache-rate {args.model_rate} (--sample-rate is the "
                                       f"model's input rate, main.py's)")
    if args.signals_from is not None and args.out_dir is None:
        p.error("--signals-from needs --out (the shared folder itself is DIR)")
    return args


@script_main
def main(argv=None) -> None:
    args = parse_args(argv)
    preprocess(PreprocessRequest(args.data_dir, args.out_dir, args.labels, args.cache_rate, args.seed, args.folds,
                                 args.num_workers, args.force, args.signals_from))


if __name__ == "__main__":
    main()
