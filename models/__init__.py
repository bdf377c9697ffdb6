"""The torch side of the library: the architectures (registry, one file per family in archs/), checkpoints
(checkpoint), the run folder's fixed file names (run), model inputs and scoring (inputs), training
(training), a model's scores handed to the one evaluator (evaluation), and multi-run studies (studies).

Import from the submodules (`from models.checkpoint import load_checkpoint`); this package file stays
empty so that importing one part never drags in the others.
"""
