"""Get a database in one command: PhysioNet downloads that resume and verify.

    python get_data.py --list                              # every database: records, size, licence, citation
    python get_data.py cpsc2018                            # the paper's data (CPSC2018 as WFDB) -> data/cpsc2018
    python get_data.py ptbxl --out data/PTBXL              # PTB-XL: the two csv files + records500/
    python get_data.py ptbxl --rate 100                    # PTB-XL at 100 Hz: the csv files + records100/ only
    python get_data.py georgia --limit 20                  # a first look: the first 20 records
    python get_data.py ningbo --mirror http://proxy:8080/files/   # or a local copy of physionet.org/files/

The project's SHA256SUMS.txt is fetched first (into --out); the database's files are then fetched,
--jobs at a time, each to `<file>.part`, checked against its sha256 and only then given its final name,
under the same relative path as on PhysioNet (data/cpsc2018/training/cpsc_2018/g1/A0001.hea). A rerun
re-verifies what is there and fetches only what is missing; an interrupted file resumes where it
stopped. The exit status is non-zero unless every file was fetched and verified. The last line printed
is the preprocess.py command for what was fetched.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.download import (CATALOGUE, PHYSIONET, DownloadSummary, catalogue_table, fetch_database, mirror_problem,
                            preprocess_command)
from utils.errors import PipelineError, script_main
from utils.cli import bounded_int, flag_error, folder_path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", choices=list(CATALOGUE), metavar="NAME",
                   help=f"database: {', '.join(CATALOGUE)} (see --list)")
    p.add_argument("--list", action="store_true", help="list the databases and exit")
    p.add_argument("--out", type=folder_path, help="output folder (default: data/NAME)")
    p.add_argument("--mirror", help=f"http(s):// URL, file:// URL or local folder that replaces {PHYSIONET} "
                                    "(a proxy or a copy)")
    p.add_argument("--limit", type=bounded_int(1, 1_000_000),
                   help="fetch only the first N records (sorted) and the metadata, %(type)s")
    p.add_argument("--jobs", type=bounded_int(1, 64), default=4,
                   help="files fetched at once, %(type)s (PhysioNet is a shared server)")
    p.add_argument("--rate", type=bounded_int(1, 10_000), default=None,
                   help="fetch only the records stored at this rate, Hz, %(type)s (ptbxl: 500, the default, "
                        "records500/; 100, records100/, ~0.5 GB); the printed preprocess command keeps that rate")
    args = p.parse_args(argv)
    if args.mirror is not None and (why := mirror_problem(args.mirror)):
        flag_error(p, "--mirror", why)
    if not args.list and args.name is None:
        p.error("give a database NAME (or --list)")
    if args.rate is not None and args.name is not None:
        try:
            CATALOGUE[args.name].at_rate(args.rate)
        except ValueError as e:
            p.error(f"argument --rate: {e}")
    return args


@script_main
def main(argv=None) -> DownloadSummary | None:
    args = parse_args(argv)
    if args.list:
        print(catalogue_table())
        return None
    db = CATALOGUE[args.name] if args.rate is None else CATALOGUE[args.name].at_rate(args.rate)
    out = args.out if args.out is not None else Path("data") / db.name
    summary = fetch_database(db, out, mirror=args.mirror, limit=args.limit, jobs=args.jobs)
    print(summary.line())
    if summary.failed:
        raise PipelineError(f"{len(summary.failed)} of {summary.files} files of {db.name} were not fetched and "
                            "verified (listed above); rerun the same command to fetch them (verified files are kept)")
    if args.limit is not None and db.index_lists_all:
        print(f"note: --limit {args.limit}: {', '.join(db.metadata)} still list(s) all ~{db.records:,} records "
              "while only the first few were fetched")
    print(f"credit: {db.citation} (licence {db.licence})")
    print(f"next: {preprocess_command(db, out)}")
    if db.preprocess_hint:
        print(f"      ({db.preprocess_hint})")
    return summary


if __name__ == "__main__":
    main()
