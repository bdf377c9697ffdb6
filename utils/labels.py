"""Leads and label sets.

A label set is data: a name, its ordered classes, and how each source's codes map onto them --
SNOMED-CT codes (the `# Dx:` line of the PhysioNet/CinC 2020-2021 WFDB releases), class numbers
(the original CPSC2018 `REFERENCE.csv`, 1..9 in class order) and PTB-XL's SCP statements. The nine
CPSC2018 classes (`cpsc9`) are the default; `superdiagnostic` is the PTB-XL benchmark's five-class task.
A stage takes its classes from the preprocess manifest or the checkpoint, never from a global.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["LEADS", "LabelSet", "CPSC9", "SUPERDIAGNOSTIC", "LABEL_SETS", "CLASSES",
           "SNOMED_TO_CLASS", "CLASS_TO_SNOMED", "get_label_set", "parse_leads", "leads_argument", "leads_tag",
           "lead_indices"]

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclass(frozen=True)
class LabelSet:
    """Ordered classes and the code maps of the sources that can provide them (empty: cannot)."""
    name: str
    classes: tuple[str, ...]
    snomed: Mapping[str, str] = field(default_factory=dict)   # SNOMED-CT code -> class
    scp: Mapping[str, str] = field(default_factory=dict)      # PTB-XL SCP statement -> class
    cpsc_numbers: bool = False                                # REFERENCE.csv numbers 1..n are the classes in order
    scp_diagnostic_class: bool = False                        # class = scp_statements.csv's diagnostic_class

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
SUPERDIAGNOSTIC = LabelSet(
    name="superdiagnostic",
    classes=("NORM", "MI", "STTC", "CD", "HYP"),
    scp_diagnostic_class=True,
)
LABEL_SETS = {s.name: s for s in (CPSC9, SUPERDIAGNOSTIC)}

# The default set's classes, for code that is about CPSC2018 itself (the synthetic generator, the
# paper's published numbers); stages read the classes of their data instead.
CLASSES = CPSC9.classes
SNOMED_TO_CLASS = dict(CPSC9.snomed)
CLASS_TO_SNOMED = {c: next(k for k, v in SNOMED_TO_CLASS.items() if v == c) for c in CLASSES}


def get_label_set(name: str) -> LabelSet:
    """The label set called `name`; ValueError listing the known ones otherwise."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None


def parse_leads(spec: str) -> list[str]:
    """`all`, one lead or a comma list (case-insensitive) -> lead names in the standard order."""
    if spec.strip().lower() == "all":
        return list(LEADS)
    by_lower = {lead.lower(): lead for lead in LEADS}
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown or not names:
        raise ValueError(f"unknown lead(s) {unknown or [spec]}; valid: all or a comma list of {', '.join(LEADS)}")
    chosen = {by_lower[n.lower()] for n in names}
    return [lead for lead in LEADS if lead in chosen]


def leads_argument(spec: str) -> list[str]:
    """argparse type of every `--leads`: `parse_leads`, a bad value being a usage error (exit 2) that names
    the flag."""
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
