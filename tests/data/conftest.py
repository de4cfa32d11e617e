"""Fixtures of the data tests (the tree builders live in reid_data_trees.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from reid_data_trees import SYNTH_KW


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """An empty data root; ``$REID_PBN_DATASETS`` is cleared so defaults do not leak in."""
    monkeypatch.delenv("REID_PBN_DATASETS", raising=False)
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> str:
    """A data root with small SyntheticA and SyntheticB domains, generated once per session."""
    from reid_pbn.data.datasets.synthetic import generate_domain

    root = str(tmp_path_factory.mktemp("synth"))
    for name in ("SyntheticA", "SyntheticB"):
        generate_domain(root, name, **SYNTH_KW)
    return root
