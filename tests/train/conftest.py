"""Fixtures of the recipes' tests.

* ``class_folders``: ball/, brick/, cylinder/ with
  :data:`tests.train.photo_folders.PER_CLASS` synthetic pictures each, made
  once per module. Read-only: copy it to change it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.photo_folders import make_class_folders


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("scratch") / "photos")
