"""`python -m models --classes N`: every registered architecture with its parameter count and its
builder's arguments (`--arch-arg KEY=VALUE`, default shown).

`python -m models import --from fastai PATH --arch ARCH --classes 71 [--scaler standard_scaler.pkl]
[--data-dir DATA] --out RUN`: a model of the PTB-XL benchmark, saved by its fastai code, as a run folder of
this project (models/fastai_import.py). --classes 71 is the benchmark's `all` task (PTB-XL's statements,
sorted); other models name their classes as a comma list, in the order of their outputs. --data-dir ties
the run to a preprocessed database with those classes (PTB-XL `all` at 100 Hz: its split 1-8/9/10), which
predict.py and shap_values.py then evaluate and explain; any imported run can be finetuned with
`main.py --init-from RUN`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.registry import count_parameters, create_model, list_models, model_entry
from models.run import Run, new_run_folder
from utils.cli import bounded_int
from utils.errors import script_main


def list_main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=bounded_int(1, 10_000), default=9, help="number of output classes, %(type)s")
    p.add_argument("--leads", type=bounded_int(1, 1_000), default=12, help="number of input leads, %(type)s")
    args = p.parse_args(argv)
    rows = []
    for name in list_models():
        entry = model_entry(name)
        try:
            params = count_parameters(create_model(name, args.leads, args.classes))
        except Exception as e:  # noqa: BLE001 -- a user's builder: said, the others still listed
            print(f"warning: architecture {name} cannot be built for {args.leads} leads and {args.classes} classes "
                  f"({type(e).__name__}: {e})", file=sys.stderr)
            continue
        rows.append({"model": name, "family": entry.family, "params": params, "description": entry.description,
                     "arguments": ", ".join(f"{k}={v}" for k, v in entry.arguments.items())})
    if not rows:
        raise SystemExit("error: no architecture could be built")
    width = max(len(r["model"]) for r in rows)
    fam = max(len("family"), *(len(r["family"]) for r in rows))
    print(f"{'model':<{width}}  {'parameters':>12}  {'family':<{fam}}  description "
          f"({args.leads} leads, {args.classes} classes)")
    for r in rows:
        print(f"{r['model']:<{width}}  {r['params']:>12,}  {r['family']:<{fam}}  {r['description']}"
              + (f" [--arch-arg {r['arguments']}]" if r["arguments"] else ""))
    return rows


def class_list(text: str) -> list[str]:
    """argparse type of `--classes`: 71 (the benchmark's `all` task) or the class names, comma-separated."""
    from utils.labels import PTBXL_ALL_STATEMENTS

    text = text.strip()
    if text.isdigit():
        if int(text) != len(PTBXL_ALL_STATEMENTS):
            raise argparse.ArgumentTypeError(f"{text}: a number names only the benchmark's `all` task "
                                             f"({len(PTBXL_ALL_STATEMENTS)}); give other classes as a comma list")
        return list(PTBXL_ALL_STATEMENTS)
    names = [c.strip() for c in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: class names must be non-empty and distinct")
    return names


def import_args(argv=None) -> argparse.Namespace:
    from utils.cli import flag_error, folder_path

    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m models import", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source_format", choices=("fastai",), required=True,
                   help="the checkpoint's format: fastai (the PTB-XL benchmark's learn.save file)")
    p.add_argument("path", type=Path, help="the checkpoint")
    p.add_argument("--arch", choices=list_models(), required=True, help="the checkpoint's architecture")
    p.add_argument("--classes", type=class_list, required=True,
                   help="71 (the benchmark's `all` task) or the class names, comma-separated, in output order")
    p.add_argument("--label-set", default=None, help="the label set's name (default: all for 71, else imported)")
    p.add_argument("--scaler", type=Path, default=None,
                   help="the benchmark's standard_scaler.pkl (default: inputs are not standardised)")
    p.add_argument("--data-dir", type=folder_path, default=None,
                   help="a preprocessed database with these classes, to evaluate the run on (its own split)")
    p.add_argument("--out", type=new_run_folder, required=True, help="the run folder to write")
    p.add_argument("--force", action="store_true", help="replace the run a folder holds (all of its files)")
    args = p.parse_args(argv)
    if not args.path.is_file():
        flag_error(p, "path", f"{args.path} not found")
    if args.scaler is not None and not args.scaler.is_file():
        flag_error(p, "--scaler", f"{args.scaler} not found")
    held = [f.name for f in Run(args.out).files if f.exists()]
    if held and not args.force:
        flag_error(p, "--out", f"{args.out} holds a run already ({', '.join(held)}; --force replaces it)")
    if args.label_set is None:
        from utils.labels import PTBXL_ALL_STATEMENTS
        args.label_set = "all" if args.classes == list(PTBXL_ALL_STATEMENTS) else "imported"
    return args


@script_main
def import_main(argv=None):
    from models.fastai_import import import_fastai
    from utils.cache import data_label_set, data_split_rule, database_name, load_labels, preprocess_manifest
    from utils.errors import PipelineError
    from utils.folds import split_labels
    from utils.results import database_identity

    args = import_args(argv)
    data = split = None
    if args.data_dir is not None:
        theirs = data_label_set(args.data_dir)
        if list(theirs["classes"]) != args.classes:
            raise PipelineError(f"{args.data_dir} has label set {theirs['name']} ({len(theirs['classes'])} classes), "
                                f"not the model's {len(args.classes)} classes in its order; preprocess PTB-XL with "
                                f"--labels all at --sample-rate 100")
        args.label_set = theirs["name"]
        data = {"dir": str(args.data_dir), "name": database_name(args.data_dir),
                "fingerprint": preprocess_manifest(args.data_dir).get("fingerprint"),
                "identity": database_identity(args.data_dir)}
        split = split_labels(load_labels(args.data_dir), 42, None, None, data_split_rule(args.data_dir))
    run = import_fastai(args.path, args.arch, args.classes, args.out, args.scaler, args.label_set, data, split)
    if args.force:  # once the import is written (a failed one leaves the old run whole): none of its other files
        run.clear(keep=(run.model,))  # (last.pth, log, thresholds) would be the imported model's
    print(f"imported {args.path} ({args.arch}, {len(args.classes)} classes, label set {args.label_set}"
          f"{'' if args.scaler else ', inputs not standardised'}) into {run.model}"
          f"{f'; evaluated on {args.data_dir}' if data else ''}")
    return run


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["import"]:
        return import_main(argv[1:])
    return list_main(argv)


if __name__ == "__main__":
    main()
