"""`python -m models --classes N`: every registered architecture with its parameter count and its
builder's arguments (`--arch-arg KEY=VALUE`, default shown)."""
from __future__ import annotations

import argparse
import sys

from models.registry import count_parameters, create_model, list_models, model_entry
from utils.cli import bounded_int


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m models", description=__doc__)
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


if __name__ == "__main__":
    main()
