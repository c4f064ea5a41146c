"""The server's two command lines, ``python -m app`` and ``python app/server.py``,
work from the repository root and from any other folder, with no path set up
by hand (the checkout is installed: pip install -e .)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, SERVER


@pytest.mark.parametrize("entry", [("-m", "app"), (str(SERVER),)], ids=["python -m app", "python app/server.py"])
@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_serve_help_runs(entry, where, tmp_path):
    cwd = REPO if where == "root" else tmp_path
    r = subprocess.run([sys.executable, *entry, "serve", "--help"], capture_output=True, text=True, cwd=cwd,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--classifier" in r.stdout and "MAX_BATCH" in r.stdout
    assert "Traceback" not in r.stderr


def test_top_level_help_names_both_commands():
    r = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "serve" in r.stdout and "quantize" in r.stdout
