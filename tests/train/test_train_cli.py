"""The recipes' command lines: ``python -m bbc1k train ...`` and the thin
scripts/ wrappers, run as a user runs them (subprocesses)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("recipe, option", [("classifier", "--holdout"), ("segmenter", "--detector")])
def test_bbc1k_train_recipe_help(recipe: str, option: str) -> None:
    done = run("-m", "bbc1k", "train", recipe, "--help")
    assert done.returncode == 0, done.stderr
    assert f"usage: bbc1k train {recipe}" in done.stdout
    assert option in done.stdout and "--valid-frac" in done.stdout


def test_bbc1k_help_lists_train_and_a_typo_is_named() -> None:
    done = run("-m", "bbc1k", "--help")
    assert done.returncode == 0 and "train" in done.stdout
    typo = run("-m", "bbc1k", "train", "clasifier", "data", "--epochs", "3")
    assert typo.returncode == 2
    assert "did you mean 'classifier'?" in typo.stderr
    assert "unknown option" not in typo.stderr  # --epochs is the recipe's, not bbc1k's


@pytest.mark.parametrize("script, usage", [("train_from_scratch.py", "--holdout"),
                                           ("train_segmenter_from_scratch.py", "--detector")])
def test_the_thin_scripts_still_run(script: str, usage: str) -> None:
    done = run(str(REPO / "scripts" / script), "--help")
    assert done.returncode == 0, done.stderr
    assert f"usage: {script}" in done.stdout and usage in done.stdout


def test_importing_bbc1k_and_its_command_line_needs_no_torch() -> None:
    done = run("-c", "import sys, bbc1k, bbc1k.train, bbc1k.cli; "
                     "assert 'torch' not in sys.modules, 'torch was imported'")
    assert done.returncode == 0, done.stderr
