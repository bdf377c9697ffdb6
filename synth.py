"""Generate realistic synthetic 12-lead ECGs in every layout the project reads (the built-in demo data).

The heart is one moving dipole (a vectorcardiogram X, Y, Z), each beat a sum of Gaussian waves
(P, Q, R, S, T; McSharry et al. 2003, Sayadi et al. 2010) whose timing and direction depend on the
record's labels. The dipole is projected onto I, II, V1-V6 with the Dower matrix; III, aVR, aVL and
aVF are the standard combinations of I and II, so the 12 leads are consistent. ST shifts are regional
(with reciprocal changes); baseline wander, mains interference, noise, heart-rate variability and
patient-to-patient amplitude and axis differences are added.

    python synth.py --out data/demo --n 400 --seed 0                      # CPSC2018 WFDB (.hea + .mat)
    python synth.py --out data/demo_dat --layout wfdb-dat                 # WFDB with format-16 .dat signals
    python synth.py --out data/demo_ptbxl --layout ptbxl --n 300          # PTB-XL's own layout
    python synth.py --out data/demo_b --site b                            # another hospital (domain shift)

Layouts: `wfdb` (the PhysioNet/CinC 2020 re-release of CPSC2018: A0001.hea + .mat, SNOMED-CT Dx),
`wfdb-dat` (the same with a format-16 .dat signal), `cpsc2018` (the original release: .mat struct ECG +
REFERENCE.csv) and `ptbxl` (ptbxl_database.csv with scp_codes and strat_fold, scp_statements.csv,
records500/ and records100/ of 10-s WFDB .dat records; each class is written as its PTB-XL statement,
rhythm and form statements with likelihood 0 as PTB-XL does, every record not in AF with a sinus rhythm
statement (SR, STACH or SBRAD by its heart rate), ST changes as the diagnostic statements ISC_ (STTC) or
IMI/AMI/LMI (MI) and high QRS voltages as LVH (HYP), so every PTB-XL task has data; scp_statements.csv
holds real rows of PTB-XL's table). `--statements FILE` writes that statement table instead (PTB-XL's
full scp_statements.csv: 71 statements) and gives each record one more statement of it, drawn at random,
so that every statement has records: PTB-XL's size and class count for measuring the pipeline (those
extra labels are not drawn in the signals).

    python synth.py --out data/ptbxl_full --layout ptbxl --n 21799 --statements scp_statements.csv

Sites (`--site`, any layout): how a hospital records its ECGs, as data in SITES: sampling rate, ADC
gain and units, mains frequency, noise and baseline-wander level, the device's filter, a per-lead
amplitude pattern (electrode placement, body habitus) and the class mix. `a` is the default (what
the generator writes without --site, byte for byte); `b` and `c` shift it, so a model trained on
`a` can be tested across sites. With --site the profile used is written to site.json beside the records,
and PTB-XL's records500/ is named after the site's rate (records250/, records1000/).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import savemat
from tqdm import tqdm

from utils.errors import PipelineError, script_main
from utils.folds import N_FOLDS
from utils.files import atomic_write, write_csv, write_json, write_text
from utils.labels import CLASS_TO_SNOMED, CLASSES, LEADS
from utils.records import GAIN_ADU_PER_MV, SAMPLE_RATE, resample
from utils.cli import bounded_float, bounded_int, check_order, flag_error, folder_path, seed_int
from utils.results import SYNTHETIC_MARKER

OUTPUT_LAYOUTS = ("wfdb", "wfdb-dat", "cpsc2018", "ptbxl")

# Dower transform rows for I, II, V1..V6 (columns X, Y, Z): Dower et al., J Electrocardiol 1980.
DOWER = np.array([
    [0.632, -0.235, 0.059],
    [0.235, 1.066, -0.132],
    [-0.515, 0.157, -0.917],
    [0.044, 0.164, -1.387],
    [0.882, 0.098, -1.277],
    [1.213, 0.127, -0.601],
    [1.125, 0.127, -0.086],
    [0.831, 0.076, 0.230],
])
MEASURED_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")  # DOWER's rows; III, aVR, aVL, aVF derive from I, II

# CPSC2018 prevalence (% of records, first label) and which labels cannot occur together.
PREVALENCE = {"SNR": 13, "AF": 18, "IAVB": 10, "LBBB": 3, "RBBB": 25, "PAC": 9, "PVC": 10, "STD": 13, "STE": 3}
INCOMPATIBLE = {frozenset(p) for p in [("AF", "IAVB"), ("AF", "PAC"), ("LBBB", "RBBB"), ("STD", "STE")]}
ADU_UNITS = {"mV": 1.0, "uV": 1000.0, "V": 0.001}  # units a site may store in -> units per mV


@dataclass(frozen=True)
class Site:
    """How one (fictional) hospital records its ECGs. Rate, gain and units are what a correct reader
    undoes (no model should notice them); noise, wander, filter, lead amplitudes and class mix are
    what a model trained elsewhere does notice. Factors of 1 and no filter leave the default untouched."""
    description: str
    sample_rate: int = SAMPLE_RATE
    adc_gain: float = GAIN_ADU_PER_MV          # ADU per unit
    units: str = "mV"                          # a key of ADU_UNITS
    mains_hz: float = 50.0
    noise: float = 1.0                         # x the default white-noise level (5-20 µV)
    wander: float = 1.0                        # x the default baseline wander (up to 2 x 0.15 mV)
    bandpass: tuple[float, float] | None = None  # the device's filter (Hz), zero-phase; None: unfiltered
    lead_gain: dict[str, float] = field(default_factory=dict)  # MEASURED_LEADS -> amplitude factor (else 1)
    prevalence: dict[str, float] = field(default_factory=lambda: dict(PREVALENCE))  # % of records, first label

    def check(self, name: str, fs: float) -> None:
        """A PipelineError for a profile the generator cannot write at `fs` Hz (a typo in SITES)."""
        problems = [f"units {self.units!r} not in {sorted(ADU_UNITS)}"] if self.units not in ADU_UNITS else []
        problems += [f"lead_gain for {lead!r}, not one of {', '.join(MEASURED_LEADS)}"
                     for lead in self.lead_gain if lead not in MEASURED_LEADS]
        if sorted(self.prevalence) != sorted(CLASSES) or min(self.prevalence.values()) < 0:
            problems.append(f"prevalence must give every class of {', '.join(CLASSES)} a weight >= 0")
        if self.bandpass and not 0 < self.bandpass[0] < self.bandpass[1] < fs / 2:
            problems.append(f"bandpass {self.bandpass} Hz must lie within (0, {fs / 2:g}) Hz at {fs:g} Hz")
        if problems:
            raise PipelineError(f"site {name!r}: " + "; ".join(problems))

    def gains(self) -> np.ndarray | None:
        """Amplitude factor per MEASURED_LEADS row, or None when every lead keeps its amplitude."""
        return np.array([self.lead_gain.get(lead, 1.0) for lead in MEASURED_LEADS]) if self.lead_gain else None


SITES = {
    "a": Site("the default: CPSC2018-like (recorded in China), CPSC2018's class mix"),
    "b": Site("a general hospital in North America: older carts (250 Hz, 5 µV steps), noisier recordings with "
              "more baseline wander, chest electrodes placed high (V1-V3 larger, V4-V6 and the limb leads "
              "smaller), mostly normal ECGs and AF",
              sample_rate=250, adc_gain=200, mains_hz=60.0, noise=2.0, wander=2.5,
              lead_gain={"I": 0.8, "II": 0.8, "V1": 1.4, "V2": 1.4, "V3": 1.25, "V4": 0.85, "V5": 0.75, "V6": 0.75},
              prevalence={"SNR": 40, "AF": 22, "IAVB": 6, "LBBB": 2, "RBBB": 8, "PAC": 8, "PVC": 8, "STD": 4,
                          "STE": 2}),
    "c": Site("a cardiology ward: 1000 Hz carts storing µV with the 0.5-40 Hz filter on (it removes wander "
              "and alters ST segments), low-voltage chest leads and larger limb leads, an ischaemia-heavy class mix",
              sample_rate=1000, adc_gain=1, units="uV", noise=0.5, bandpass=(0.5, 40.0),
              lead_gain={"I": 1.2, "II": 1.2, "V1": 0.7, "V2": 0.65, "V3": 0.65, "V4": 0.7, "V5": 0.7, "V6": 0.7},
              prevalence={"SNR": 8, "AF": 10, "IAVB": 7, "LBBB": 8, "RBBB": 12, "PAC": 6, "PVC": 9, "STD": 25,
                          "STE": 15}),
}
DEFAULT_SITE = "a"

# Regional ST shift patterns over I, II, V1..V6 (mV at scale 1); the limb leads they imply carry the
# reciprocal changes (e.g. inferior elevation depresses aVL).
ST_PATTERNS = {
    "STE": {
        "inferior": [-0.05, 0.20, 0, 0, 0, 0, 0, 0],
        "anterior": [0.04, 0, 0.15, 0.25, 0.25, 0.20, 0.05, 0],
        "lateral": [0.15, 0.05, -0.05, 0, 0, 0.05, 0.20, 0.20],
    },
    "STD": {
        "lateral": [-0.08, -0.10, 0, 0, 0, -0.15, -0.20, -0.15],
        "inferior": [0, -0.15, 0, 0, 0, 0, -0.10, -0.10],
        "anterior": [0, 0, -0.15, -0.20, -0.20, -0.10, 0, 0],
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=folder_path, default=Path("data/demo"), help="output directory")
    p.add_argument("--n", type=bounded_int(1, 1_000_000), default=400, help="number of records, %(type)s")
    p.add_argument("--seed", type=seed_int, default=0, help="%(type)s")
    # 2 s hold at least one beat at any heart rate drawn (a record needs one); ptbxl records are 10 s
    p.add_argument("--min-seconds", type=bounded_float(2, 600), default=6.0, help="shortest record, %(type)s")
    p.add_argument("--max-seconds", type=bounded_float(2, 600), default=60.0, help="longest record, %(type)s")
    p.add_argument("--sample-rate", type=bounded_int(50, 10_000), default=None,
                   help="rate to write records at (default: the site's; 500 Hz for site a), %(type)s")
    p.add_argument("--layout", choices=OUTPUT_LAYOUTS, default="wfdb", help="see above")
    p.add_argument("--site", choices=sorted(SITES), default=None,
                   help="write the records as this site records them (and its profile to site.json): "
                        + "; ".join(f"{k}: {s.description}" for k, s in SITES.items()))
    p.add_argument("--statements", type=Path, default=None, metavar="FILE",
                   help="ptbxl: write this scp_statements.csv (PTB-XL's own) and give each record one more "
                        "statement of it at random, so every statement has records")
    p.add_argument("--force", action="store_true", help="write into a directory that already holds records")
    args = p.parse_args(argv)
    if args.statements is not None:
        if args.layout != "ptbxl":
            flag_error(p, "--statements", "only with --layout ptbxl")
        try:
            args.statements = read_statements(args.statements)
        except PipelineError as e:
            flag_error(p, "--statements", str(e))
    check_order(p, args, argv, "--min-seconds", "--max-seconds")
    site = args.site or DEFAULT_SITE
    fs = args.sample_rate or SITES[site].sample_rate
    if args.layout == "cpsc2018" and fs != SAMPLE_RATE:
        flag_error(p, "--layout", f"cpsc2018 has no sampling-rate field (its readers take {SAMPLE_RATE} Hz), so it "
                                  f"cannot hold {fs} Hz records (--sample-rate, --site); use --layout wfdb")
    try:
        SITES[site].check(site, fs)
    except PipelineError as e:
        flag_error(p, "--sample-rate", f"{fs} Hz: {e}")
    return args


def sample_labels(rng: np.random.Generator, prevalence: dict[str, float] = PREVALENCE) -> list[str]:
    """A primary label by prevalence (CPSC2018's unless a site has its own mix); ~12 % of abnormal
    records get a second, a few a third."""
    p = np.array([prevalence[c] for c in CLASSES], float)
    labels = [CLASSES[rng.choice(len(CLASSES), p=p / p.sum())]]
    if labels[0] == "SNR":
        return labels
    n_extra = 0 if rng.random() > 0.12 else (1 if rng.random() > 0.2 else 2)
    for _ in range(n_extra):
        options = [c for c in CLASSES if c != "SNR" and c not in labels and prevalence[c] > 0
                   and not any(frozenset((c, l)) in INCOMPATIBLE for l in labels)]
        if not options:  # a site whose class mix leaves nothing compatible
            break
        q = np.array([prevalence[c] for c in options], float)
        labels.append(options[rng.choice(len(options), p=q / q.sum())])
    return [c for c in CLASSES if c in labels]


def beat_schedule(rng: np.random.Generator, labels: list[str], duration: float) -> list[tuple[float, str]]:
    """R-peak times and beat kinds ('sinus', 'pac', 'pvc'); AF gives irregularly irregular RR."""
    af = "AF" in labels
    rr = 60.0 / (rng.uniform(70, 120) if af else rng.uniform(55, 100))
    n_beats = int(duration / rr) + 2
    ectopic = {}
    for kind, label, rate in (("pac", "PAC", (0.08, 0.25)), ("pvc", "PVC", (0.08, 0.25))):
        if label in labels:
            k = max(1, rng.binomial(n_beats - 2, rng.uniform(*rate)))
            for i in rng.choice(np.arange(1, n_beats - 1), size=min(k, n_beats - 2), replace=False):
                ectopic.setdefault(int(i), kind)
    resp_f, resp_phase = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)
    t = rng.uniform(0.1, rr)
    beats, prev_kind = [], "sinus"
    for i in range(n_beats):
        kind = ectopic.get(i, "sinus")
        if i > 0:
            if af:
                step = rr * rng.uniform(0.6, 1.45)
            else:
                step = rr * (1 + 0.04 * np.sin(2 * np.pi * resp_f * t + resp_phase) + 0.015 * rng.standard_normal())
            if kind == "pac":
                step *= rng.uniform(0.6, 0.75)
            elif kind == "pvc":
                step *= rng.uniform(0.5, 0.65)
            if prev_kind == "pvc" and not af:  # full compensatory pause: coupling + pause = 2 RR
                step = 2 * rr - beats[-1][2]
            t += step
        if t > duration - 0.05:
            break
        beats.append((t, kind, step if i > 0 else rr))
        prev_kind = kind
    return [(t, kind) for t, kind, _ in beats]


def rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A random small rotation of the heart's axis: patient-to-patient variability."""
    a, b, c = np.deg2rad(rng.uniform(-max_degrees, max_degrees, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def beat_waves(rng, labels, kind, t_r, rr, morph) -> list[tuple[float, float, np.ndarray]]:
    """Gaussian waves (centre s, width s, dipole vector mV) of one beat."""
    waves = []
    qrs_onset = t_r - 0.045
    if kind == "pvc":
        v = morph["pvc"]
        waves += [(t_r, 0.028, v), (t_r + 0.055, 0.025, -0.35 * v), (t_r + 0.32, 0.065, -0.3 * v)]
        return waves
    if "AF" not in labels:
        p_vec = morph["pac_p"] if kind == "pac" else morph["p"]
        pr = morph["pr"] * (0.85 if kind == "pac" else 1.0)
        waves.append((qrs_onset - pr + 0.05, 0.02, p_vec))
    if "LBBB" in labels:
        waves += [(t_r - 0.02, 0.022, morph["lbbb1"]), (t_r + 0.035, 0.022, morph["lbbb2"])]
    else:
        waves += [(t_r - 0.03, 0.008, morph["q"]), (t_r, 0.011, morph["r"]), (t_r + 0.032, 0.010, morph["s"])]
        if "RBBB" in labels:
            waves.append((t_r + 0.068, 0.018, morph["rbbb"]))
    qt = 0.40 * np.sqrt(rr) * morph["qt_scale"]
    t_peak = qrs_onset + qt - 0.09
    waves += [(t_peak - 0.04, 0.05, 0.35 * morph["t"]), (t_peak, 0.035, morph["t"])]
    return waves


def record_morphology(rng: np.random.Generator, labels: list[str]) -> dict:
    """Per-record wave vectors (before rotation) and intervals, jittered around textbook values."""
    j = lambda v, s=0.15: np.asarray(v, float) * rng.uniform(1 - s, 1 + s, 3)  # noqa: E731
    m = {
        "p": j([0.12, 0.15, -0.02]),
        "pac_p": j([-0.06, -0.13, 0.06], 0.3),
        "q": j([-0.12, 0.05, -0.18]),
        "r": j([1.0, 0.6, 0.5]),
        "s": j([-0.3, -0.15, 0.25]),
        "t": j([0.25, 0.2, -0.1]),
        "rbbb": j([-0.45, 0.05, -0.65]),
        "lbbb1": j([0.7, 0.15, 0.6]),
        "lbbb2": j([0.8, 0.1, 0.7]),
        "pr": rng.uniform(0.22, 0.32) if "IAVB" in labels else rng.uniform(0.12, 0.19),
        "qt_scale": rng.uniform(0.92, 1.08),
    }
    direction = rng.standard_normal(3)
    m["pvc"] = direction / np.linalg.norm(direction) * rng.uniform(1.2, 2.0)
    if "RBBB" in labels:
        m["t"] = j([0.25, 0.2, 0.15])          # secondary T inversion in V1-V3
    if "LBBB" in labels:
        m["t"] = j([-0.2, 0.0, -0.35])         # T opposite to the wide QRS
    return m


def render(centres, widths, vectors, n: int, fs: int) -> np.ndarray:
    """Sum of Gaussian waves -> (n, 3) dipole signal; each wave evaluated only within ±5 widths."""
    centres, widths, vectors = np.asarray(centres), np.asarray(widths), np.asarray(vectors)
    half = int(np.ceil(5 * widths.max() * fs))
    offsets = np.arange(-half, half + 1)
    idx = np.rint(centres * fs).astype(int)[:, None] + offsets[None]
    shape = np.exp(-0.5 * ((idx / fs - centres[:, None]) / widths[:, None]) ** 2)
    ok = (idx >= 0) & (idx < n)
    out = np.empty((n, 3))
    for k in range(3):
        out[:, k] = np.bincount(idx[ok], weights=(shape * vectors[:, k, None])[ok], minlength=n)
    return out


def st_plateau(beats, n: int, fs: int) -> np.ndarray:
    """A smooth step from each sinus beat's J point into its T wave: the shape of an ST shift."""
    t = np.arange(n) / fs
    g = np.zeros(n)
    for t_r, kind, rr in beats:
        if kind == "pvc":
            continue
        j_point, t_peak = t_r + 0.05, t_r - 0.045 + 0.40 * np.sqrt(rr) - 0.09
        a, b = np.searchsorted(t, [j_point - 0.05, t_peak + 0.2])
        g[a:b] += 0.5 * (np.tanh((t[a:b] - j_point) / 0.01) - np.tanh((t[a:b] - t_peak) / 0.04))
    return g


def derive_limb_leads(ind: np.ndarray) -> np.ndarray:
    """(8, n) over I, II, V1..V6 -> (12, n) in LEADS order."""
    i, ii = ind[0], ind[1]
    return np.stack([i, ii, ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2, *ind[2:]])


def synthesize(rng: np.random.Generator, labels: list[str], duration: float, fs: int,
               site: Site = SITES[DEFAULT_SITE]) -> tuple[np.ndarray, dict]:
    """One record: (12, n) signal in mV as `site` records it, and details of how it was made. The site
    only scales what is drawn (never draws more), so site a gives the default signal exactly."""
    n = int(round(duration * fs))
    morph = record_morphology(rng, labels)
    schedule = beat_schedule(rng, labels, duration)
    beats, waves = [], []
    for k, (t_r, kind) in enumerate(schedule):
        rr = schedule[k][0] - schedule[k - 1][0] if k else 60 / 75
        rr = float(np.clip(rr, 0.4, 1.6))
        beats.append((t_r, kind, rr))
        waves += beat_waves(rng, labels, kind, t_r, rr, morph)
    centres, widths, vectors = zip(*waves)
    amp = rng.uniform(0.9, 1.1, (len(waves), 1))  # beat-to-beat amplitude jitter
    vcg = render(centres, widths, np.asarray(vectors) * amp, n, fs)
    t = np.arange(n) / fs
    if "AF" in labels:  # fibrillatory waves, 4-8 Hz, 0.05-0.1 mV, strongest in V1
        f_dir = np.array([-0.3, 0.3, -0.6]) / np.linalg.norm([-0.3, 0.3, -0.6])
        fwave = sum(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(4, 8) * t + rng.uniform(0, 2 * np.pi))
                    for _ in range(3))
        fwave *= rng.uniform(0.05, 0.1) / np.abs(fwave).max() * (1 + 0.3 * np.sin(2 * np.pi * 0.2 * t))
        vcg += np.outer(fwave, f_dir)
    vcg = vcg @ rotation(rng, 15).T * rng.uniform(0.6, 1.4)
    ind = DOWER @ vcg.T  # (8, n)
    sinus = [t_r for t_r, kind, _ in beats if kind == "sinus"]
    details = {"st_region": "", "heart_rate": 60 / float(np.median(np.diff(sinus))) if len(sinus) > 2 else None}
    for label in ("STE", "STD"):
        if label in labels:
            region = rng.choice(sorted(ST_PATTERNS[label]))
            details["st_region"] = str(region)
            pattern = np.array(ST_PATTERNS[label][region]) * rng.uniform(0.6, 1.5)
            ind += np.outer(pattern, st_plateau(beats, n, fs))
    gains = site.gains()
    if gains is not None:  # electrode placement and body habitus scale the heart's signal, not the noise
        ind *= gains[:, None]
    # Baseline wander (< 0.5 Hz), mains (50 Hz by default: CPSC2018 was recorded in China) and noise.
    for lead in range(len(ind)):
        for _ in range(2):
            ind[lead] += site.wander * rng.uniform(0, 0.15) * np.sin(
                2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
    ind += rng.uniform(0, 0.02) * np.sin(2 * np.pi * site.mains_hz * t + rng.uniform(0, 2 * np.pi))[None]
    ind += site.noise * rng.uniform(0.005, 0.02) * rng.standard_normal(ind.shape)
    mv = derive_limb_leads(ind)
    if site.bandpass:  # the device's filter acts on every lead alike, so III = II - I still holds
        from scipy.signal import butter, sosfiltfilt  # imported here: 1 s that the default sites never need

        mv = sosfiltfilt(butter(2, site.bandpass, btype="bandpass", fs=fs, output="sos"), mv, axis=-1)
    return mv, details


def sample_duration(rng: np.random.Generator, lo: float, hi: float) -> float:
    """CPSC2018-like durations: mostly 10-20 s with a tail to 60 s."""
    return float(np.clip(round(6 + rng.gamma(2.0, 4.0), 1), lo, hi))


def sample_demographics(rng: np.random.Generator) -> tuple[float, str]:
    age = float(np.clip(round(rng.normal(61, 18)), 18, 95))
    return (float("nan") if rng.random() < 0.01 else age), ("Male" if rng.random() < 0.54 else "Female")


def wfdb_number(x: float) -> str:
    """A rate or gain as a WFDB header field: 500 rather than 500.0 (as wfdb.wrsamp writes an int), 257.5 as is."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def write_wfdb(out: Path, name: str, val: np.ndarray, fs: int, comments: list[str],
               gain: float = GAIN_ADU_PER_MV, units: str = "mV") -> None:
    """A0001.hea + A0001.mat exactly as the PhysioNet/CinC 2020 re-release of CPSC2018 (`comments`:
    wfdb_comments, followed by its unknown Rx, Hx and Sx)."""
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            savemat(f, {"val": val}, format="4")

    atomic_write(out / f"{name}.mat", save)
    lines = [f"{name} {len(LEADS)} {fs} {val.shape[1]}"]
    for lead, row in zip(LEADS, val):
        checksum = int(np.int16(np.int64(row.astype(np.int64).sum()) & 0xFFFF).astype(np.int16))
        lines.append(f"{name}.mat 16+24 {wfdb_number(gain)}/{units} 16 0 {int(row[0])} {checksum} 0 {lead}")
    lines += [f"#{c}" for c in comments] + ["#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]
    write_text("\n".join(lines) + "\n", out / f"{name}.hea")


def write_wfdb_dat(out: Path, name: str, val: np.ndarray, fs: float, comments: list[str],
                   lead_names: tuple[str, ...] = LEADS, units: str = "mV", gain: float = GAIN_ADU_PER_MV) -> None:
    """name.hea + name.dat (WFDB format 16: int16 little-endian, one frame of all signals per sample), as
    PTB-XL and PTB store records. Written here rather than with wfdb.wrsamp, which spent ~25 ms a record
    checking its header fields through pandas (it made the ptbxl layout 8-10x slower per record than the
    .mat one); the bytes are wrsamp's for an integer gain and rate (a float gain: wrsamp 200.0, this 200)."""
    val = np.asarray(val)
    if val.ndim != 2 or val.shape[0] != len(lead_names) or val.shape[1] == 0:
        raise PipelineError(f"{out / name}: want a ({len(lead_names)}, samples) signal, got shape {val.shape}")
    if not np.issubdtype(val.dtype, np.integer) or val.min() < -32768 or val.max() > 32767:
        raise PipelineError(f"{out / name}: format 16 stores integers in -32768..32767 (got {val.dtype}, "
                            f"{val.min()}..{val.max()})")
    frames = np.ascontiguousarray(val.T, dtype="<i2")
    atomic_write(out / f"{name}.dat", lambda tmp: tmp.write_bytes(frames.tobytes()))
    checksums = val.astype(np.int64).sum(axis=1) % 65536  # WFDB: the 16-bit sum of the samples, unsigned here
    lines = [f"{name} {len(lead_names)} {wfdb_number(fs)} {val.shape[1]}"]
    lines += [f"{name}.dat 16 {wfdb_number(gain)}(0)/{units} 16 0 {int(row[0])} {int(cs)} 0 {lead}"
              for lead, row, cs in zip(lead_names, val, checksums)]
    lines += [f"# {c}" for c in comments]
    write_text("\n".join(lines) + "\n", out / f"{name}.hea")


def wfdb_comments(age: float, sex: str, labels: list[str]) -> list[str]:
    age_text = "NaN" if np.isnan(age) else str(int(age))
    return [f"Age: {age_text}", f"Sex: {sex}", f"Dx: {','.join(CLASS_TO_SNOMED[c] for c in labels)}"]


# PTB-XL statements for the synthetic classes: (statement, likelihood); PTB-XL gives rhythm and form
# statements likelihood 0. ST changes also get a diagnostic statement, so superdiagnostic has data.
PTBXL_STATEMENTS = {"SNR": [("NORM", 100.0), ("SR", 0.0)], "AF": [("AFIB", 0.0)], "IAVB": [("1AVB", 100.0)],
                    "LBBB": [("CLBBB", 100.0)], "RBBB": [("CRBBB", 100.0)], "PAC": [("PAC", 0.0)],
                    "PVC": [("PVC", 0.0)], "STD": [("STD_", 0.0), ("ISC_", 50.0)], "STE": [("STE_", 0.0)]}
STE_MI = {"inferior": "IMI", "anterior": "AMI", "lateral": "LMI"}
# scp_statements.csv: rows of PTB-XL 1.0.3's own table (CC BY 4.0) for the statements written above and a
# few no record carries (NDT, NST_, LVOLT, ABQRS: a task keeps only the classes some record has), in its
# columns; the first column, unnamed, is the statement.
SCP_COLUMNS = ("description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass",
               "Statement Category", "SCP-ECG Statement Description", "AHA code", "aECG REFID", "CDISC Code",
               "DICOM Code")
SCP_STATEMENTS = [
    ("NORM", "normal ECG", "1.0", "", "", "NORM", "NORM", "Normal/abnormal", "normal ECG", "1", "", "", "F-000B7"),
    ("IMI", "inferior myocardial infarction", "1.0", "", "", "MI", "IMI", "Myocardial Infarction",
     "inferior myocardial infarction", "161", "", "", ""),
    ("AMI", "anterior myocardial infarction", "1.0", "", "", "MI", "AMI", "Myocardial Infarction",
     "anterior myocardial infarction", "160", "", "", ""),
    ("LMI", "lateral myocardial infarction", "1.0", "", "", "MI", "LMI", "Myocardial Infarction",
     "lateral myocardial infarction", "163", "", "", ""),
    ("ISC_", "non-specific ischemic", "1.0", "", "", "STTC", "ISC_",
     "Basic roots for coding ST-T changes and abnormalities", "ischemic ST-T changes", "226", "", "", ""),
    ("NDT", "non-diagnostic T abnormalities", "1.0", "1.0", "", "STTC", "STTC", "other ST-T descriptive statements",
     "non-diagnostic T abnormalities", "", "", "", ""),
    ("NST_", "non-specific ST changes", "1.0", "1.0", "", "STTC", "NST_",
     "Basic roots for coding ST-T changes and abnormalities", "non-specific ST changes", "145",
     "MDC_ECG_RHY_STHILOST", "", ""),
    ("1AVB", "first degree AV block", "1.0", "", "", "CD", "_AVB",
     "Sinus node dysfunction, atrial and AV-conduction defects", "first degree AV block", "",
     "MDC_ECG_RHY_AV_HEART_BLK_DEG_1", "C111088", ""),
    ("CLBBB", "complete left bundle branch block", "1.0", "", "", "CD", "CLBBB",
     "Intraventricular and intra-atrial Conduction disturbances", "(complete) left bundle branch block", "104",
     "MDC_ECG_BEAT_LBB_BLK_COMP", "C62269", "D3-33120 or 122752"),
    ("CRBBB", "complete right bundle branch block", "1.0", "", "", "CD", "CRBBB",
     "Intraventricular and intra-atrial Conduction disturbances", "(complete) right bundle branch block", "106",
     "MDC_ECG_BEAT_RBB_BLK_COMP", "C62270", "D3-33110"),
    ("LVH", "left ventricular hypertrophy", "1.0", "", "", "HYP", "LVH", "Ventricular Hypertrophy",
     "left ventricular hypertrophy", "142", "", "C71076", ""),
    ("ABQRS", "abnormal QRS", "", "1.0", "", "", "", "Normal/abnormal", "abnormal QRS", "", "", "", ""),
    ("LVOLT", "low QRS voltages in the frontal and horizontal leads", "", "1.0", "", "", "",
     "Other QRS morphology descriptive statements", "low QRS voltages in the frontal and horizontal leads", "", "",
     "", ""),
    ("PAC", "atrial premature complex", "", "1.0", "", "", "", "Statements related to ectopic rhythm abnormalities",
     "atrial premature complex (beat)", "30", "MDC_ECG_BEAT_ATR_P_C", "", ""),
    ("PVC", "ventricular premature complex", "", "1.0", "", "", "",
     "Statements related to ectopic rhythm abnormalities", "ventricular premature complex (beat)", "60",
     "MDC_ECG_BEAT_V_P_C", "", ""),
    ("STD_", "non-specific ST depression", "", "1.0", "", "", "",
     "Basic roots for coding ST-T changes and abnormalities", "non-specific ST depression", "502", "", "",
     "F-38278"),
    ("STE_", "non-specific ST elevation", "", "1.0", "", "", "",
     "Basic roots for coding ST-T changes and abnormalities", "non-specific ST elevation", "501",
     "MDC_ECG_RHY_STELVATION", "", "F-38277"),
    ("SR", "sinus rhythm", "", "", "1.0", "", "", "Statements related to impulse formation (abnormalities)",
     "sinus rhythm", "20", "MDC_ECG_RHY_SINUS_RHY", "", ""),
    ("AFIB", "atrial fibrillation", "", "", "1.0", "", "",
     "Statements related to impulse formation (abnormalities)", "atrial fibrillation", "50", "MDC_ECG_RHY_ATR_FIB",
     "", "D3-31520"),
    ("STACH", "sinus tachycardia", "", "", "1.0", "", "", "Statements related to impulse formation (abnormalities)",
     "sinus tachycardia", "21", "MDC_ECG_RHY_SINUS_TACHY", "", ""),
    ("SBRAD", "sinus bradycardia", "", "", "1.0", "", "", "Statements related to impulse formation (abnormalities)",
     "sinus bradycardia", "22", "MDC_ECG_RHY_SINUS_BRADY", "", ""),
]


LVH_VOLTAGE_MV = 2.7  # S in V1 + R in V5/V6 above it: LVH (about this generator's top tenth; Sokolow-Lyon: 3.5)


def sokolow_lyon(mv: np.ndarray) -> float:
    """S in V1 + the larger R of V5 and V6 (mV), from robust extremes (0.5th / 99.5th percentiles)."""
    v1, v5, v6 = (mv[LEADS.index(lead)] for lead in ("V1", "V5", "V6"))
    return float(-np.percentile(v1, 0.5) + max(np.percentile(v5, 99.5), np.percentile(v6, 99.5)))


def ptbxl_codes(labels: list[str], st_region: str | None, heart_rate: float | None = None,
                voltage: float = 0.0) -> dict[str, float]:
    """A record's scp_codes: its classes' statements, LVH for a high QRS voltage, and a sinus rhythm
    statement (likelihood 0, as PTB-XL writes rhythm statements) for every record not in AF: STACH
    above 100/min, SBRAD below 60, else SR."""
    codes = dict(pair for c in labels for pair in PTBXL_STATEMENTS[c])
    if "STE" in labels:
        codes[STE_MI.get(st_region or "", "IMI")] = 80.0
    if voltage > LVH_VOLTAGE_MV:
        codes["LVH"] = 50.0
    if "AF" not in labels:
        codes.pop("SR", None)
        rate = heart_rate or 75.0
        codes["STACH" if rate > 100 else "SBRAD" if rate < 60 else "SR"] = 0.0
    return codes


def read_statements(path: Path) -> pd.DataFrame:
    """A PTB-XL scp_statements.csv: statements as the index, at least its diagnostic/form/rhythm flags."""
    try:
        table = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path} is not a readable CSV ({type(e).__name__})") from None
    missing = [c for c in ("diagnostic", "form", "rhythm") if c not in table.columns]
    if missing or table.empty:
        raise PipelineError(f"{path} is not a PTB-XL statement table (no rows, or no {', '.join(missing)} column)")
    return table


def extra_statement(rng: np.random.Generator, statements: pd.DataFrame, codes: dict[str, float]) -> dict[str, float]:
    """`codes` and one more statement of the table, drawn at random (likelihood 100 for a diagnostic
    statement, 0 for form and rhythm ones, as PTB-XL writes them)."""
    name = str(statements.index[int(rng.integers(len(statements)))])
    if name not in codes:
        codes = {**codes, name: 100.0 if statements.loc[name, "diagnostic"] == 1 else 0.0}
    return codes


def write_ptbxl_tables(out: Path, rows: list[dict], statements: pd.DataFrame | None = None) -> None:
    write_csv(pd.DataFrame(rows), out / "ptbxl_database.csv")
    if statements is None:
        statements = pd.DataFrame([row[1:] for row in SCP_STATEMENTS], columns=list(SCP_COLUMNS),
                                  index=[row[0] for row in SCP_STATEMENTS])
    atomic_write(out / "scp_statements.csv", lambda tmp: statements.to_csv(tmp))


def write_cpsc(out: Path, name: str, mv: np.ndarray, age: float, sex: str) -> None:
    """A0001.mat holding struct ECG {sex, age, data (mV)}, the original CPSC2018 release."""
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            savemat(f, {"ECG": {"sex": sex, "age": age, "data": mv}})

    atomic_write(out / f"{name}.mat", save)


def _site_profile(site: str | None, fs: int | None, layout: str) -> tuple[Site, int]:
    """The site's profile and the rate its records are written at (`fs`, or the site's own), refused when
    the site, or the layout, cannot hold that rate."""
    if site is not None and site not in SITES:
        raise PipelineError(f"unknown site {site!r}; the sites are {', '.join(SITES)}")
    profile = SITES[site or DEFAULT_SITE]
    fs = fs or profile.sample_rate
    profile.check(site or DEFAULT_SITE, fs)
    if layout == "cpsc2018" and fs != SAMPLE_RATE:
        raise PipelineError(f"the original CPSC2018 layout has no sampling-rate field (its readers take "
                            f"{SAMPLE_RATE} Hz), so it cannot hold {fs} Hz records; use --layout wfdb")
    return profile, fs


def _write_key(out: Path, rows: list[dict], ptbxl: list[dict], layout: str,
               statements: pd.DataFrame | None) -> pd.DataFrame:
    """The answer key: REFERENCE.csv, or for ptbxl the PTB-XL tables and answer_key.csv (PTB-XL has no
    REFERENCE.csv), its records named by ecg_id."""
    key = pd.DataFrame(rows).astype({"Second_label": "Int64", "Third_label": "Int64"})
    if layout == "ptbxl":
        write_ptbxl_tables(out, ptbxl, statements)
        key["Recording"] = [str(r["ecg_id"]) for r in ptbxl]
        write_csv(key, out / "answer_key.csv")
    else:
        write_csv(key, out / "REFERENCE.csv")
    return key


def _write_site(out: Path, site: str | None, profile: Site, fs: int, layout: str) -> None:
    """site.json: how a --site database was recorded (none for the default site)."""
    if site is None:
        (out / "site.json").unlink(missing_ok=True)  # from an earlier --site run into this folder (--force)
    else:
        write_json({"site": site, **asdict(profile), "sample_rate": fs, "layout": layout,
                    "default": asdict(SITES[DEFAULT_SITE])}, out / "site.json")


def generate(out: Path, n: int, seed: int, seconds_range: tuple[float, float] = (6.0, 60.0),
             fs: int | None = None, layout: str = "wfdb", site: str | None = None,
             statements: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write `n` records into `out` as `site` records them (None: the default, site a, with no site.json)
    at `fs` (None: the site's rate), each `seconds_range` (shortest, longest) long (ptbxl: 10 s); returns
    the answer key (also written as REFERENCE.csv). `statements` (ptbxl): the statement table written,
    each record given one more of its statements."""
    profile, fs = _site_profile(site, fs, layout)
    adu_per_mv = profile.adc_gain * ADU_UNITS[profile.units]
    out.mkdir(parents=True, exist_ok=True)
    rows, details, ptbxl = [], [], []
    for i in tqdm(range(1, n + 1), desc="synth", unit="rec", disable=n < 50):
        rng = np.random.default_rng([seed, i])  # each record depends on (seed, index) only
        name = f"A{i:04d}"
        labels = sample_labels(rng, profile.prevalence)
        age, sex = sample_demographics(rng)
        seconds = 10.0 if layout == "ptbxl" else sample_duration(rng, *seconds_range)
        mv, info = synthesize(rng, labels, seconds, fs, profile)
        val = np.clip(np.rint(mv * adu_per_mv), -32768, 32767).astype(np.int16)
        if layout == "wfdb":
            write_wfdb(out, name, val, fs, wfdb_comments(age, sex, labels), profile.adc_gain, profile.units)
        elif layout == "wfdb-dat":
            write_wfdb_dat(out, name, val, fs, wfdb_comments(age, sex, labels), units=profile.units,
                           gain=profile.adc_gain)
        elif layout == "ptbxl":
            name = f"{i:05d}"
            folder = f"{(i // 1000) * 1000:05d}"
            upper = tuple(lead.upper() if lead.startswith("aV") else lead for lead in LEADS)  # PTB-XL: AVR, AVL, AVF
            high = f"records{fs}/{folder}/{name}_hr"  # records500/ at PTB-XL's own rate
            write_wfdb_dat(out / high.rsplit("/", 1)[0], f"{name}_hr", val, fs, [], upper, profile.units,
                           profile.adc_gain)
            low = np.clip(np.rint(resample(mv, fs, 100) * adu_per_mv), -32768, 32767).astype(np.int16)
            write_wfdb_dat(out / "records100" / folder, f"{name}_lr", low, 100, [], upper, profile.units,
                           profile.adc_gain)
            codes = ptbxl_codes(labels, info["st_region"], info["heart_rate"], sokolow_lyon(mv))
            if statements is not None:  # its own generator: the records are those written without it
                codes = extra_statement(np.random.default_rng([seed, i, 1]), statements, codes)
            ptbxl.append({"ecg_id": i, "patient_id": float(10000 + i), "age": age, "sex": int(sex == "Female"),
                          "scp_codes": str(codes),
                          "strat_fold": int(rng.integers(1, N_FOLDS + 1)),
                          "filename_lr": f"records100/{folder}/{name}_lr",
                          "filename_hr": high})
        else:
            write_cpsc(out, name, mv, age, sex)
        codes = [CLASSES.index(c) + 1 for c in labels] + [None] * (3 - len(labels))
        rows.append({"Recording": name, "First_label": codes[0], "Second_label": codes[1], "Third_label": codes[2]})
        details.append({"Recording": name, "labels": ",".join(labels), "st_region": info["st_region"],
                        "seconds": mv.shape[1] / fs})
    key = _write_key(out, rows, ptbxl, layout, statements)
    write_csv(pd.DataFrame(details), out / SYNTHETIC_MARKER)
    _write_site(out, site, profile, fs, layout)
    return key


@script_main
def main(argv=None) -> None:
    args = parse_args(argv)
    holds_records = (any(args.out.glob("*.hea")) or any(args.out.glob("*.mat"))
                     or (args.out / "ptbxl_database.csv").exists())
    if holds_records and not args.force:
        raise PipelineError(f"{args.out} already holds records; pass --force to overwrite them")
    if not 0 < args.min_seconds <= args.max_seconds:
        raise PipelineError("need 0 < --min-seconds <= --max-seconds")
    key = generate(args.out, args.n, args.seed, (args.min_seconds, args.max_seconds), args.sample_rate, args.layout,
                   args.site, args.statements)
    print(f"wrote {len(key)} {args.layout} records to {args.out}" + (f" as site {args.site}" if args.site else ""))


if __name__ == "__main__":
    main()
