"""Committed notebooks carry no outputs and no execution counts: they are
lessons to run, and outputs would bloat the repository and go stale."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p for p in REPO.glob("*.ipynb"))


def test_the_lessons_are_there():
    names = [p.name[:3] for p in NOTEBOOKS]
    for prefix in ("01-", "02-", "03-"):
        assert prefix in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"
