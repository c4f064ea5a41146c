"""The Dockerfile, built and run as a deployer would: a base made with debootstrap
(no registry is reachable), the image built from this checkout with podman, run
with tiny real models mounted read-only. Everything it makes lives under one
temporary podman root that is removed whatever happens (tests/docker/podman.py).

Needs root, podman, runc and debootstrap, and the Debian mirror and package index
the host uses; scripts/test.sh installs the tools when run as root with apt-get.
Takes a few minutes (mostly debootstrap and pip inside the build)."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.docker.podman import (PHOTO, Container, Podman, build_image, make_base, podman_root,
                                 readable_models, start_container, unavailable)
from tests.ports import free_port

WHY_NOT = unavailable()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]

GRACE_S = 10  # podman's default stop timeout, as on most platforms


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    with podman_root(tmp_path_factory.mktemp("podman")) as p:
        yield p


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    return build_image(podman, make_base(podman))


@pytest.fixture(scope="module")
def models(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return readable_models(tiny_models.values(), tmp_path_factory.mktemp("image-models") / "models")


@pytest.fixture
def container(podman: Podman, image: str, models: Path) -> Iterator[Container]:
    name = f"bbc1k-test-{uuid.uuid4().hex[:8]}"
    try:
        yield start_container(podman, image, name, models, free_port())
    finally:
        podman.returncode("rm", "--force", "--time", "0", name)


def test_image_serves_a_photo_with_the_mounted_models(container: Container):
    ready = httpx.get(container.url + "/readyz", timeout=10).json()
    assert ready == {"ready": True, "tasks": ["classify", "detect", "segment"]}
    r = httpx.post(container.url + "/analyze", files={"file": (PHOTO.name, PHOTO.read_bytes(), "image/jpeg")},
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    size = (body["image"]["width"], body["image"]["height"])
    assert size == Image.open(PHOTO).size and body["tasks"] == ["classify", "detect", "segment"]
    assert body["classification"]["model"] == "tiny-classifier"
    assert set(body["classification"]["probabilities"]) == {"brick", "ball", "cylinder"}
    assert len(body["detection"]["box"]) == 4
    assert (body["segmentation"]["width"], body["segmentation"]["height"]) == size


def test_healthcheck_passes(container: Container):
    # exit 0 also shows the HEALTHCHECK survived the build (podman says 125 when an image has none)
    rc = container.podman.returncode("healthcheck", "run", container.name)
    assert rc == 0, container.logs()


def test_runs_as_a_user_without_torch_or_fastai(container: Container):
    assert container.exec("id", "-u").strip() != "0"
    found = json.loads(container.exec("python", "-c", "import importlib.util as u, json; print(json.dumps("
                                      "{m: u.find_spec(m) is not None for m in ('onnxruntime', 'torch', 'fastai')}))"))
    assert found == {"onnxruntime": True, "torch": False, "fastai": False}


def test_stops_cleanly_within_its_grace_period(container: Container):
    start = time.perf_counter()
    container.podman("stop", "--time", str(GRACE_S), container.name, timeout=GRACE_S + 60)
    took = time.perf_counter() - start
    # a server that ignores SIGTERM is killed at the end of the grace period, with 137
    assert (container.state("ExitCode"), container.state("Running")) == ("0", "false"), container.logs()
    assert took < GRACE_S, f"stop took {took:.1f} s:\n{container.logs()}"
