"""Running the lesson notebooks headless, for the tests of tests/notebooks/.

``run_notebook(path, parameters, out_dir)`` executes a notebook top to bottom
with papermill in this virtual environment's Python, with ``parameters``
injected after its ``parameters`` cell, and returns the executed notebook.
``probes`` adds test code after chosen cells (as testbook's ``inject`` does), to
look at the kernel's objects while the lesson runs (see ``lesson_tools``).
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from lesson_tools import with_probes

REPO = Path(__file__).resolve().parents[2]
KERNEL = "python3"

KERNEL_ENV = {
    # Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine
    # spinning threads burn several times the CPU the training itself needs.
    "OMP_WAIT_POLICY": "PASSIVE",
}


@contextmanager
def _environment(values: dict[str, str]):
    """Set ``values`` in os.environ (the kernel inherits it) unless already set, then restore."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def kernel_python(kernel_name: str = KERNEL) -> Path:
    """The Python executable that ``kernel_name`` starts."""
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec(kernel_name).argv
    exe = argv[0]
    # ipykernel's built-in spec says "python" and means the Python that runs Jupyter
    return Path(sys.executable if exe in ("python", "python3", "{python}") else exe)


def run_notebook(path: str | os.PathLike, parameters: dict[str, Any], out_dir: str | os.PathLike,
                 *, timeout: int = 600, probes: dict[str, str] | None = None) -> Any:
    """Execute ``path`` with ``parameters`` (and ``probes``, see the module's doc);
    write the executed copy to ``out_dir`` and return it (an nbformat
    NotebookNode). A failing cell raises ``papermill.PapermillExecutionError``
    naming the cell and its error."""
    import papermill as pm

    path = Path(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = with_probes(path, probes, out) if probes else path
    start = time.perf_counter()
    with _environment(KERNEL_ENV):
        nb = pm.execute_notebook(str(source), str(out / path.name), parameters=parameters, kernel_name=KERNEL,
                                 cwd=str(REPO), progress_bar=False, execution_timeout=timeout)
    nb.metadata["bbc1k_test_seconds"] = round(time.perf_counter() - start, 1)
    return nb


@pytest.fixture(scope="session")
def notebook_runner():
    """``run_notebook`` as a fixture, after checking the kernel runs this venv's Python."""
    exe = kernel_python()
    if exe.resolve() != Path(sys.executable).resolve():
        pytest.fail(f"the {KERNEL!r} kernel starts {exe}, not this environment's {sys.executable}; "
                    f"run: {sys.executable} -m ipykernel install --sys-prefix --name {KERNEL}")
    return run_notebook


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """One DATA_DIR for every notebook run of the session, so the small
    synthetic dataset is generated once and reused."""
    return tmp_path_factory.mktemp("notebook-data")

