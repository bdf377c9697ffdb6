"""`python -m models --classes N`: every registered architecture with its parameter count and its
builder's arguments (`--arch-arg KEY=VALUE`, default shown)."""
from __future__ import annotations

import argparse

from models.registry import count_parameters, create_model, list_models, model_entry


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    p.add_argument("--classes", type=int, default=9, help="number of output classes (default 9)")
    p.add_argument("--leads", type=int, default=12, help="number of input leads (default 12)")
    args = p.parse_args(argv)
    if args.classes < 1 or args.leads < 1:
        p.error("--classes and --leads must be positive")
    rows = []
    for name in list_models():
        entry = model_entry(name)
        rows.append({"model": name, "family": entry.family,
                     "params": count_parameters(create_model(name, args.leads, args.classes)),
                     "description": entry.description,
                     "arguments": ", ".join(f"{k}={v}" for k, v in entry.arguments.items())})
    width = max(len(r["model"]) for r in rows)
    fam = max(len("family"), *(len(r["family"]) for r in rows))
    print(f"{'model':<{width}}  {'parameters':>12}  {'family':<{fam}}  description "
          f"({args.leads} leads, {args.classes} classes)")
    for r in rows:
        print(f"{r['model']:<{width}}  {r['params']:>12,}  {r['family']:<{fam}}  {r['description']}"
              + (f" [--arch-arg {r['arguments']}]" if r["arguments"] else ""))
    return rows


if __name__ == "__main__":
    main()
