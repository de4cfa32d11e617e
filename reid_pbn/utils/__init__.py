"""The bottom floor every package may use: distributed helpers (:mod:`.comm`), the one
:class:`~.registry.Registry`, and checkpoint file I/O (:mod:`.file_io`: atomic writes,
``weights_only`` loading, ``CheckpointError``).

Imports only torch, numpy and the standard library (and :mod:`reid_pbn.config`).
"""

from . import comm, file_io
from .registry import DuplicateNameError, Registry, UnknownNameError

__all__ = ["DuplicateNameError", "Registry", "UnknownNameError", "comm", "file_io"]
