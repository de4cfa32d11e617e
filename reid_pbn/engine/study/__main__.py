"""``python -m reid_pbn.engine.study CELL_JSON``: run one study cell (the runner's child process).

Users run studies with ``tools/dg_study.py``; this entry point is what that runner starts for
each cell (see :mod:`reid_pbn.engine.study.cell`).
"""

import sys

from .cell import main

sys.exit(main())
