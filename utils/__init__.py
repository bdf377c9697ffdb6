"""The library under the stage scripts. Everything is re-exported here, so `from utils import X` works
whichever module X lives in:

- errors:  PipelineError, MissingInputError, RecordError; `script_main` turns them into `error:` exits
- labels:  leads and label sets as data (cpsc9, superdiagnostic)
- records: WFDB headers and signals (any format), the original CPSC2018 .mat, resampling
- layouts: the registry of database layouts (WFDB, CPSC2018, PTB-XL) preprocess.py reads
- folds:   stratified folds and the split rules
- cache:   the preprocess outputs, their manifest checks and the memory-mapped signal cache
- defaults: the default --data-dir and --results-dir of every command
- io:      atomic writes, figures, fingerprints, the freshness rule, argparse types, process pool
- metrics: F1, AUC, ECE, Brier, threshold tuning, temperature scaling, bootstrap CIs
- evaluator: one evaluator for every model's scores: thresholds, metrics with CIs, calibration, figures,
             the manifest; `read_evaluation`, the one reader of its outputs
- download: the PhysioNet catalogue, SHA256SUMS.txt, downloads that resume and verify (get_data.py)
- results: where a database's results live (claimed by its identity, not its folder name)
- presets: named settings (demo, paper) as data; pool: databases pooled for leave-one-out
"""
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
