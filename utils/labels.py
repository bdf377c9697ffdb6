"""Leads and label sets.

A label set is data: a name, its ordered classes, and how each source's codes map onto them --
SNOMED-CT codes (the `# Dx:` line of the PhysioNet/CinC 2020-2021 WFDB releases), class numbers
(the original CPSC2018 `REFERENCE.csv`, 1..9 in class order) and PTB-XL's SCP statements. The nine
CPSC2018 classes (`cpsc9`) are the default. The six PTB-XL benchmark tasks (`all`, `diagnostic`,
`subdiagnostic`, `superdiagnostic`, `form`, `rhythm`) take their classes from the database itself: its
scp_statements.csv and the statements its records carry (`ptbxl_task`), so they are named here and
built when a database is read. A stage takes its classes from the preprocess manifest or the
checkpoint, never from a global.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["LEADS", "LabelSet", "CPSC9", "ICBEB_STATEMENTS", "SUPERDIAGNOSTIC", "PTBXL_TASKS", "PTBXL_ALL_STATEMENTS",
           "LABEL_SETS", "CLASSES", "SNOMED_TO_CLASS", "CLASS_TO_SNOMED", "get_label_set", "ptbxl_statement_classes", "ptbxl_task",
           "parse_leads", "leads_argument", "leads_tag", "lead_indices"]

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclass(frozen=True)
class LabelSet:
    """Ordered classes and the code maps of the sources that can provide them (empty: cannot)."""
    name: str
    classes: tuple[str, ...]
    snomed: Mapping[str, str] = field(default_factory=dict)   # SNOMED-CT code -> class
    scp: Mapping[str, str] = field(default_factory=dict)      # PTB-XL SCP statement -> class
    cpsc_numbers: bool = False                                # REFERENCE.csv numbers 1..n are the classes in order
    ptbxl_task: str = ""                                      # a PTB-XL task: classes come from the database

    def as_dict(self) -> dict:
        """What the manifest and the checkpoint store: {"name": …, "classes": […]}."""
        return {"name": self.name, "classes": list(self.classes)}

    def vector(self, classes: Iterable[str]) -> np.ndarray:
        """0/1 vector over `self.classes` of the named classes (names outside the set are ignored)."""
        y = np.zeros(len(self.classes), dtype=np.int8)
        for c in classes:
            if c in self.classes:
                y[self.classes.index(c)] = 1
        return y

    def from_snomed(self, codes: Iterable[str]) -> np.ndarray:
        """SNOMED-CT codes -> 0/1 vector; unknown codes are ignored."""
        return self.vector(self.snomed.get(str(code).strip()) for code in codes)


_CPSC9_CLASSES = ("SNR", "AF", "IAVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
CPSC9 = LabelSet(
    name="cpsc9",
    classes=_CPSC9_CLASSES,
    # The first code of each class is the one the synthetic generator writes. Equivalent codes are
    # scored as one class by the PhysioNet/CinC 2021 challenge: complete LBBB 733534002 = LBBB 164909002,
    # 59118001 = RBBB 713427006, 63593006 = PAC 284470004 (SVPB), 17338001 = PVC 427172004 (VPB).
    snomed={"426783006": "SNR", "164889003": "AF", "270492004": "IAVB", "164909002": "LBBB", "733534002": "LBBB",
            "713427006": "RBBB", "59118001": "RBBB", "284470004": "PAC", "63593006": "PAC", "164884008": "PVC",
            "427172004": "PVC", "17338001": "PVC", "429622005": "STD", "164931005": "STE"},
    scp={"NORM": "SNR", "AFIB": "AF", "1AVB": "IAVB", "CLBBB": "LBBB", "CRBBB": "RBBB", "PAC": "PAC",
         "PVC": "PVC", "STD_": "STD", "STE_": "STE"},
    cpsc_numbers=True,
)
# The statements the PTB-XL benchmark's ICBEB2018 conversion writes for the nine classes (its label_dict;
# PVC as VPC): what its fold procedure stratifies on.
ICBEB_STATEMENTS = {"SNR": "NORM", "AF": "AFIB", "IAVB": "1AVB", "LBBB": "CLBBB", "RBBB": "CRBBB", "PAC": "PAC",
                    "PVC": "VPC", "STD": "STD_", "STE": "STE_"}
# The PTB-XL benchmark's tasks (Strodthoff et al. 2021): which statements of scp_statements.csv count
# and what class each becomes. Their classes are those some record carries, so the LabelSet of a task
# exists only for a database (`ptbxl_task`); these placeholders name the tasks and hold no classes.
PTBXL_TASKS = {
    "all": "every statement",
    "diagnostic": "statements with diagnostic = 1",
    "subdiagnostic": "diagnostic statements as their diagnostic_subclass",
    "superdiagnostic": "diagnostic statements as their diagnostic_class (NORM, MI, STTC, CD, HYP)",
    "form": "statements with form = 1",
    "rhythm": "statements with rhythm = 1",
}
# PTB-XL's 71 SCP statements (scp_statements.csv), sorted as the benchmark's MultiLabelBinarizer sorts
# them: the classes of its `all` task, on which its published models were trained.
PTBXL_ALL_STATEMENTS = (
    "1AVB", "2AVB", "3AVB", "ABQRS", "AFIB", "AFLT", "ALMI", "AMI", "ANEUR", "ASMI", "BIGU", "CLBBB", "CRBBB", "DIG",
    "EL", "HVOLT", "ILBBB", "ILMI", "IMI", "INJAL", "INJAS", "INJIL", "INJIN", "INJLA", "INVT", "IPLMI", "IPMI",
    "IRBBB", "ISCAL", "ISCAN", "ISCAS", "ISCIL", "ISCIN", "ISCLA", "ISC_", "IVCD", "LAFB", "LAO/LAE", "LMI", "LNGQT",
    "LOWT", "LPFB", "LPR", "LVH", "LVOLT", "NDT", "NORM", "NST_", "NT_", "PAC", "PACE", "PMI", "PRC(S)", "PSVT", "PVC",
    "QWAVE", "RAO/RAE", "RVH", "SARRH", "SBRAD", "SEHYP", "SR", "STACH", "STD_", "STE_", "SVARR", "SVTAC", "TAB_",
    "TRIGU", "VCLVH", "WPW")
_TASK_SETS = {task: LabelSet(name=task, classes=(), ptbxl_task=task) for task in PTBXL_TASKS}
SUPERDIAGNOSTIC = _TASK_SETS["superdiagnostic"]
LABEL_SETS = {CPSC9.name: CPSC9, **_TASK_SETS}

# The default set's classes, for code that is about CPSC2018 itself (the synthetic generator, the
# paper's published numbers); stages read the classes of their data instead.
CLASSES = CPSC9.classes
SNOMED_TO_CLASS = dict(CPSC9.snomed)
CLASS_TO_SNOMED = {c: next(k for k, v in SNOMED_TO_CLASS.items() if v == c) for c in CLASSES}


def get_label_set(name: str) -> LabelSet:
    """The label set called `name` (for a PTB-XL task its placeholder, without classes: `ptbxl_task`
    builds the database's); ValueError listing the known ones otherwise."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None


def ptbxl_statement_classes(task: str, statements: pd.DataFrame) -> dict[str, str]:
    """Statement -> class of a PTB-XL task, from scp_statements.csv (index: statement; flag columns hold 1
    or nothing): `all` keeps every statement, `diagnostic`/`form`/`rhythm` those flagged 1 in that
    column, `subdiagnostic`/`superdiagnostic` map the diagnostic ones to their diagnostic_subclass /
    diagnostic_class (an empty one maps to nothing). KeyError naming a column the task needs."""
    if task not in PTBXL_TASKS:
        raise ValueError(f"unknown PTB-XL task {task!r}; known: {', '.join(PTBXL_TASKS)}")
    codes = [str(code) for code in statements.index]  # as the benchmark reads them: ' NORM ' is not NORM
    if task == "all":
        return {code: code for code in codes}
    flag = task if task in ("diagnostic", "form", "rhythm") else "diagnostic"
    on = pd.to_numeric(statements[flag], errors="coerce").fillna(0).to_numpy() == 1
    if task in ("diagnostic", "form", "rhythm"):
        return {code: code for code, keep in zip(codes, on) if keep}
    column = statements["diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"]
    return {code: str(cls).strip() for code, keep, cls in zip(codes, on, column)
            if keep and isinstance(cls, str) and cls.strip()}


def ptbxl_task(task: str, statements: pd.DataFrame, records: Iterable[Iterable[str]]) -> LabelSet:
    """The LabelSet of a PTB-XL task on a database: `records` are the statements each record carries (every
    key of its scp_codes, whatever the likelihood); a class is kept when at least one record has it, and
    the classes are sorted by name, as the benchmark's MultiLabelBinarizer orders them. A statement
    missing from `statements` is a class of `all` (the benchmark's `all` takes every key) and of no
    other task (theirs select by the table's columns)."""
    to_class = ptbxl_statement_classes(task, statements)
    records = [list(codes) for codes in records]
    if task == "all":  # the benchmark's `all` is every scp_codes key, in scp_statements.csv or not
        to_class.update({code: code for codes in records for code in codes if code not in to_class})
    present = {to_class[code] for codes in records for code in codes if code in to_class}
    return LabelSet(name=task, classes=tuple(sorted(present)),
                    scp={code: cls for code, cls in to_class.items() if cls in present}, ptbxl_task=task)


def parse_leads(spec: str) -> list[str]:
    """`all`, one lead or a comma list (case-insensitive) -> lead names in the standard order."""
    if spec.strip().lower() == "all":
        return list(LEADS)
    by_lower = {lead.lower(): lead for lead in LEADS}
    names = [s.strip() for s in spec.split(",") if s.strip()]
    twice = [n for i, n in enumerate(names) if n.lower() in {m.lower() for m in names[:i]}]
    if twice:
        raise ValueError(f"lead {twice[0]} is given twice in {spec!r}")
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown or not names:
        raise ValueError(f"unknown lead(s) {unknown or [spec]}; valid: all or a comma list of {', '.join(LEADS)}")
    chosen = {by_lower[n.lower()] for n in names}
    return [lead for lead in LEADS if lead in chosen]


def leads_argument(spec: str) -> list[str]:
    """argparse type of every `--leads`: `parse_leads`, a bad value (an unknown lead, or one given twice:
    `I,I` is an error rather than a run on lead I alone) being a usage error (exit 2) that names the flag."""
    import argparse

    try:
        return parse_leads(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def leads_tag(leads: Sequence[str]) -> str:
    """Short name for a lead selection, used in file names: `all`, `I`, `I-aVR-V5`."""
    return "all" if list(leads) == list(LEADS) else "-".join(leads)


def lead_indices(leads: Sequence[str]) -> list[int]:
    return [LEADS.index(lead) for lead in leads]
