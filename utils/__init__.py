"""The library under the stage scripts. Everything is re-exported here, so `from utils import X` works
whichever module X lives in:

- errors:  PipelineError, MissingInputError, RecordError; `script_main` turns them into `error:` exits
- labels:  leads and label sets as data (cpsc9, the PTB-XL tasks built from a database's statements)
- records: WFDB headers and signals (any format), the original CPSC2018 .mat, resampling
- layouts: the registry of database layouts (WFDB, CPSC2018, PTB-XL) preprocess.py reads
- folds:   stratified folds and the split rules
- cache:   the preprocess outputs, their manifest checks, the memory-mapped signal cache at its
           stored rate, and label tasks sharing one cache
- defaults: the default --data-dir and --results-dir of every command
- io:      atomic writes, figures, fingerprints, the freshness rule, argparse types, process pool
- metrics: F1, AUC, ECE, Brier, threshold tuning, temperature scaling, bootstrap CIs
- evaluator: one evaluator for every model's scores (a Scorer's): thresholds, metrics with CIs,
             calibration, figures, the manifest
- download: the PhysioNet catalogue, SHA256SUMS.txt, downloads that resume and verify (get_data.py)
- results: where a database's results live (claimed by its identity, not its folder name); an
           evaluation's folder (EvaluationFolder), its one reader `read_evaluation` and `Summary` row
- tables:  CSV and markdown tables from one declaration of columns; `format_ci`
- features: the baselines' expert features (imported as utils.features: it needs PyWavelets)
- benchmark: the PTB-XL benchmark's leaderboard as data, its bootstrap scoring and results table
- presets: named settings (demo, paper) as data; pool: databases pooled for leave-one-out
"""
from utils.benchmark import *  # noqa: F401,F403
from utils.cache import *  # noqa: F401,F403
from utils.defaults import *  # noqa: F401,F403
from utils.download import *  # noqa: F401,F403
from utils.errors import *  # noqa: F401,F403
from utils.evaluator import *  # noqa: F401,F403
from utils.folds import *  # noqa: F401,F403
from utils.io import *  # noqa: F401,F403
from utils.labels import *  # noqa: F401,F403
from utils.layouts import *  # noqa: F401,F403
from utils.metrics import *  # noqa: F401,F403
from utils.records import *  # noqa: F401,F403
from utils.results import *  # noqa: F401,F403
from utils.tables import *  # noqa: F401,F403
