"""Domain-generalization studies: every (group, method, seed) cell trained and evaluated on every
target, recorded in ``cells.jsonl``, and rendered as paired statistics against a baseline.

``tools/dg_study.py`` is the command; :func:`load_study`, :func:`run_study`,
:func:`verify_cell` and :func:`render_study` are the library behind it.
"""

from .config import (
    METHODS,
    CellSpec,
    GroupSpec,
    MethodDef,
    MethodSpec,
    Study,
    StudyError,
    load_study,
)
from .report import render_study
from .runner import CELLS_FILE, RunOptions, RunSummary, VerifyResult, run_study, verify_cell
from .store import CellStore

__all__ = [
    "CELLS_FILE",
    "METHODS",
    "CellSpec",
    "CellStore",
    "GroupSpec",
    "MethodDef",
    "MethodSpec",
    "RunOptions",
    "RunSummary",
    "Study",
    "StudyError",
    "VerifyResult",
    "load_study",
    "render_study",
    "run_study",
    "verify_cell",
]
