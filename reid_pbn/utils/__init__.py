"""The bottom floor every package may use: distributed helpers (:mod:`.comm`), the one
:class:`~.registry.Registry`, and checkpoint file I/O (:mod:`.file_io`).

Imports only torch, numpy and the standard library (and :mod:`reid_pbn.config`).
"""

from . import comm
from .file_io import (
    TEMP_PREFIX,
    CheckpointError,
    UnreadableCheckpointError,
    atomic_torch_save,
    atomic_write,
    load_checkpoint_file,
)
from .registry import DuplicateNameError, Registry, UnknownNameError

__all__ = [
    "TEMP_PREFIX",
    "CheckpointError",
    "DuplicateNameError",
    "Registry",
    "UnknownNameError",
    "UnreadableCheckpointError",
    "atomic_torch_save",
    "atomic_write",
    "comm",
    "load_checkpoint_file",
]
