"""Tables for people: one declaration of a table's columns gives both its CSV (every value, for
recomputing) and its markdown (what a reader sees), so the two never disagree on a column; and one way of
writing a point estimate with its confidence interval.

A column has a `key` (the CSV column: a value of each row) and, when markdown shows it, a `header` and how
a cell is shown: a number to `digits` places (NaN as n/a), or `show(row)` for cells built from several
values, such as `format_ci`'s "0.836 [0.710, 0.919]". A column whose key no row has is left out of both
(a CI's bounds without a bootstrap, the paper's counts for another label set).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd

from utils.files import write_csv, write_text

__all__ = ["Column", "ci_columns", "format_number", "format_ci", "format_mean_sd", "table_frame", "markdown_table",
           "write_table"]


def _finite(v: object) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def format_number(v: object, digits: int = 3) -> str:
    """A float to `digits` places, NaN (a class that cannot be assessed) as n/a; anything else as text."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float) or hasattr(v, "dtype") and getattr(v, "dtype").kind == "f":
        return f"{v:.{digits}f}" if _finite(v) else "n/a"
    return str(v)


def format_ci(point: float, lo: float | None = None, hi: float | None = None, digits: int = 3) -> str:
    """`0.836 [0.710, 0.919]`; the bare value without a bootstrap; n/a for a value that cannot be assessed."""
    if not _finite(point):
        return "n/a"
    if _finite(lo) and _finite(hi):
        return f"{point:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{point:.{digits}f}"


def format_mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """`0.361 ± 0.073`: a mean over folds (or records) and its standard deviation; `0.361 (sd n/a)` where
    the sd is undefined (one value), n/a where the mean is (no value could be assessed)."""
    if not _finite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if _finite(sd) else f"{mean:.{digits}f} (sd n/a)"


@dataclass(frozen=True)
class Column:
    """One column of a table: `key` in the CSV (None: markdown only), `header` in markdown (None: CSV
    only), the markdown cell as `show(row)` or the value to `digits` places; numbers align right."""
    key: str | None
    header: str | None = None
    show: Callable[[Mapping], str] | None = None
    digits: int = 3
    align: str = "right"

    def cell(self, row: Mapping) -> str:
        return self.show(row) if self.show else format_number(row.get(self.key), self.digits)


def ci_columns(metric: str, header: str | None, digits: int = 3, align: str = "right") -> list[Column]:
    """A metric and its 95 % bounds (`<metric>_lo`, `_hi`) in the CSV, one "point [lo, hi]" cell in markdown."""
    return [Column(metric, header, lambda r: format_ci(r.get(metric), r.get(f"{metric}_lo"), r.get(f"{metric}_hi"),
                                                     digits), align=align),
            Column(f"{metric}_lo"), Column(f"{metric}_hi")]


def _records(rows: Iterable[Mapping] | pd.DataFrame) -> list:
    return rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)


def _present(rows: list | pd.DataFrame, columns: Sequence[Column]) -> list[Column]:
    """The columns to write: a column with a key is kept when some row has that key (all of them when no row
    has values: every row a note)."""
    if isinstance(rows, pd.DataFrame):
        keys = set(rows.columns)
    else:
        valued = [r for r in rows if isinstance(r, Mapping)]
        if not valued:
            return list(columns)
        keys = {k for r in valued for k in r}
    return [c for c in columns if c.key is None or c.key in keys]


def table_frame(rows: Iterable[Mapping] | pd.DataFrame, columns: Sequence[Column]) -> pd.DataFrame:
    """The CSV view of the rows: the declared keys present in them, in declared order."""
    rows = rows if isinstance(rows, pd.DataFrame) else list(rows)
    keys = [c.key for c in _present(rows, columns) if c.key is not None]
    return rows[keys] if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=keys)


def markdown_table(rows: Iterable[Mapping | Sequence[str]] | pd.DataFrame, columns: Sequence[Column]) -> str:
    """The markdown view of the rows: one line per row. A row given as a list of strings is written as
    those cells, padded with empty ones (`| |`): a note in place of the values, e.g. "out of date"."""
    rows = _records(rows)
    shown = [c for c in _present(rows, columns) if c.header is not None]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    def note(cells: Sequence[str]) -> str:
        cells = [str(c) for c in cells] + [""] * (len(shown) - len(cells))
        return "|" + "".join(f" {c} |" if c else " |" for c in cells)

    lines = [line([c.header for c in shown]), line(["---:" if c.align == "right" else "---" for c in shown])]
    lines += [line([c.cell(r) for c in shown]) if isinstance(r, Mapping) else note(r) for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Iterable[Mapping] | pd.DataFrame, columns: Sequence[Column], path: Path,
                intro: str = "") -> str:
    """Write `path`.csv and `path`.md (the markdown after `intro`) from one declaration; returns the markdown."""
    rows = rows if isinstance(rows, pd.DataFrame) else list(rows)
    path = Path(path)
    write_csv(table_frame(rows, columns), path.with_name(path.name + ".csv"))
    md = intro + markdown_table(rows, columns)
    write_text(md, path.with_name(path.name + ".md"))
    return md
