"""Draw 12-lead ECGs in the standard clinical layout on ECG paper (25 mm/s, 10 mm/mV).

    python visualize.py --record data/CPSC/A0001.hea data/CPSC/A0002.hea
    python visualize.py --record data/CPSC/A0001.hea --layout 1col --seconds 10

Layouts: `3x4` (four 2.5 s columns I-III, aVR-aVF, V1-V3, V4-V6, plus a 10 s lead II rhythm strip) and
`1col` (all twelve leads stacked). Grid: 1 mm = 0.04 s and 0.1 mV; 5 mm = 0.2 s and 0.5 mV.
Writes <results-dir>/<db>/ecg/{record}_{layout}.png, where <db> is the results folder of the folder
holding the record, filed by its real path as every result is (utils/results.py): the real folder's name,
or that name with a hash of the path when another database already holds the name.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from utils.errors import script_main
from utils.files import output_names, save_figure
from utils.labels import LEADS, SNOMED_TO_CLASS
from utils.records import SAMPLE_RATE, read_records
from utils.cli import bounded_float, folder_path
from utils.results import results_home
from utils.defaults import DEFAULT_RESULTS_DIR

GRID_3X4 = [["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"], ["III", "aVF", "V3", "V6"]]
RHYTHM_LEAD = "II"
ROW_MV = 3.0  # vertical space per row


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", type=Path, nargs="+", required=True, help="WFDB .hea (or CPSC2018 .mat) records")
    p.add_argument("--layout", choices=("3x4", "1col", "both"), default="both")
    p.add_argument("--seconds", type=bounded_float(0.2, 3600), default=10.0,  # a 3x4 column: 0.05 s, 25 samples
                   help="how much of the record (the first seconds), %(type)s")
    p.add_argument("--results-dir", type=folder_path, default=DEFAULT_RESULTS_DIR,
                   help="figures go to <results-dir>/<the record's folder name>/ecg/")
    return p.parse_args(argv)


def paper(ax, width_s: float, height_mv: float) -> None:
    """ECG paper: minor lines every 0.04 s / 0.1 mV, major every 0.2 s / 0.5 mV; 1 s = 2.5 x 1 mV."""
    for step, colour, lw in ((0.04, "#f6c8c8", 0.3), (0.2, "#e88e8e", 0.7)):
        ax.vlines(np.arange(0, width_s + 1e-9, step), 0, height_mv, colors=colour, lw=lw, zorder=0)
    for step, colour, lw in ((0.1, "#f6c8c8", 0.3), (0.5, "#e88e8e", 0.7)):
        ax.hlines(np.arange(0, height_mv + 1e-9, step), 0, width_s, colors=colour, lw=lw, zorder=0)
    ax.set_xlim(0, width_s)
    ax.set_ylim(0, height_mv)
    ax.set_aspect(0.4)  # 25 mm/s and 10 mm/mV
    ax.axis("off")


def figure(width_s: float, height_mv: float):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width_s * 25 / 25.4, height_mv * 10 / 25.4))  # true size: 25 mm/s, 10 mm/mV
    ax = fig.add_axes((0, 0, 1, 1))  # the paper fills the figure, so printed at its size it is to scale
    paper(ax, width_s, height_mv)
    return fig, ax


def plot_3x4(mv: np.ndarray, fs: int, title: str, path: Path, seconds: float = 10.0) -> None:
    n = int(seconds * fs)
    mv = mv[:, :n]
    col_s = seconds / 4
    height = ROW_MV * 4
    fig, ax = figure(seconds, height)
    for r, row in enumerate(GRID_3X4):
        base = height - ROW_MV * (r + 0.5)
        for c, lead in enumerate(row):
            a, b = int(c * col_s * fs), int((c + 1) * col_s * fs)
            seg = mv[LEADS.index(lead), a:b]
            ax.plot(np.arange(a, a + len(seg)) / fs, base + seg - np.median(seg), color="k", lw=0.6)
            ax.text(c * col_s + 0.05, base + 0.9, lead, fontsize=8, fontweight="bold")
            if c:
                ax.vlines(c * col_s, base - 0.4, base + 0.4, colors="k", lw=0.8)
    rhythm = mv[LEADS.index(RHYTHM_LEAD)]
    ax.plot(np.arange(len(rhythm)) / fs, ROW_MV / 2 + rhythm - np.median(rhythm), color="k", lw=0.6)
    ax.text(0.05, ROW_MV / 2 + 0.9, RHYTHM_LEAD, fontsize=8, fontweight="bold")
    ax.set_title(f"{title}   25 mm/s, 10 mm/mV", fontsize=9, loc="left")
    save_figure(fig, path)


def plot_1col(mv: np.ndarray, fs: int, title: str, path: Path, seconds: float = 10.0) -> None:
    n = int(seconds * fs)
    mv = mv[:, :n]
    height = ROW_MV * len(LEADS)
    fig, ax = figure(seconds, height)
    t = np.arange(mv.shape[1]) / fs
    for i, lead in enumerate(LEADS):
        base = height - ROW_MV * (i + 0.5)
        ax.plot(t, base + mv[i] - np.median(mv[i]), color="k", lw=0.6)
        ax.text(0.05, base + 0.9, lead, fontsize=8, fontweight="bold")
    ax.set_title(f"{title}   25 mm/s, 10 mm/mV", fontsize=9, loc="left")
    save_figure(fig, path)


def record_title(record: Path, hdr) -> str:
    """Record id, age, sex and diagnoses (SNOMED codes with the paper's class name where there is one)."""
    age = "age ?" if np.isnan(hdr.age) else f"age {hdr.age:g}"
    dx = ", ".join(f"{c} ({SNOMED_TO_CLASS[c]})" if c in SNOMED_TO_CLASS else c for c in hdr.dx) or "-"
    return f"{record.stem}  {age}  {hdr.sex}  Dx {dx}"


@script_main
def main(argv=None) -> list[Path]:
    args = parse_args(argv)
    layouts = ("3x4", "1col") if args.layout == "both" else (args.layout,)
    written = []
    records = read_records(args.record)
    for (record, hdr, mv), name in zip(records, output_names([r[0] for r in records])):
        seconds = min(args.seconds, mv.shape[1] / SAMPLE_RATE)
        for layout in layouts:
            path = results_home(args.results_dir, record.resolve().parent) / "ecg" / f"{name}_{layout}.png"
            (plot_3x4 if layout == "3x4" else plot_1col)(mv, SAMPLE_RATE, record_title(record, hdr), path, seconds)
            written.append(path)
    print("wrote " + ", ".join(str(p) for p in written))
    return written


if __name__ == "__main__":
    main()
