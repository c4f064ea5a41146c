"""The server runs with exactly requirements-serve.txt and the bbc1k package,
in a fresh isolated virtual environment where torch and fastai do not exist,
laid out as the Docker image is: bbc1k installed, app/ beside it in the working
folder, started with ``python -m app serve``.

Slow-ish (it installs onnxruntime, numpy and Pillow from the package registry:
about a minute) but part of the default run. Everything lives under tmp_path,
pip's cache included."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, jpeg_bytes, launch, model_args, post_image, wait_ready
from PIL import Image


def run(cmd: list[str], env: dict[str, str], timeout: float = 900, cwd: Path | None = None
        ) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_server_runs_with_only_the_serving_requirements(tmp_path, tiny_models):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env.update({"PIP_CACHE_DIR": str(tmp_path / "pip-cache"), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "TMPDIR": str(tmp_path)})
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", str(venv)], env)  # isolated: no system site-packages
    py = str(venv / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", "-r", str(REPO / "requirements-serve.txt")], env)
    # Install bbc1k from a copy, so the build writes nothing into the repository.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "bbc1k", src / "bbc1k", ignore=shutil.ignore_patterns("__pycache__"))
    run([py, "-m", "pip", "install", "-q", "--no-deps", str(src)], env)
    # As in the image: the app is copied after the install, so only bbc1k is installed.
    shutil.copytree(REPO / "app", src / "app", ignore=shutil.ignore_patterns("__pycache__"))

    for missing in ("torch", "fastai", "torchvision"):
        r = subprocess.run([py, "-c", f"import {missing}"], capture_output=True, text=True, env=env)
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, missing
    pip_list = run([py, "-m", "pip", "list", "--format=freeze"], env).stdout.lower()
    assert "torch" not in pip_list and "fastai" not in pip_list

    s = wait_ready(launch(tmp_path / "run", *model_args(tiny_models), python=py, entry=("-m", "app"), cwd=src))
    try:
        r = post_image(s.url, jpeg_bytes(Image.new("RGB", (120, 90), (200, 40, 40))))
        assert r.status_code == 200, r.text
        body = r.json()
        assert {"classification", "detection", "segmentation"} <= set(body)
    finally:
        s.stop()
    # The server process never imported torch: check its own module list.
    probe = ("import sys\n"
             "import app.server\n"
             "assert 'torch' not in sys.modules and 'fastai' not in sys.modules, 'torch imported'\n"
             "print('clean')")
    r = run([py, "-c", probe], env, cwd=src)
    assert r.stdout.strip() == "clean"
