"""The serving image: its size, and its cold start inside the container.

    python -m bench.docker_image [--models DIR] [--starts 5]     # as root

Builds the image as tests/docker/test_docker_image.py does (a debootstrapped
Debian bookworm base, the Dockerfile built with podman under a temporary root,
all removed at the end; see tests/docker/podman.py), then starts a container
``--starts`` times with the models of ``--models`` (default: the main job's
models/ when it holds .onnx files, else tiny test models) mounted read-only.
Prints the time of each step, the image's size and its base's, the cold start
(``podman start`` to ``/readyz`` 200), the first and the median ``/analyze`` of
a photo, and the stop time. Figures, not pass/fail; the bookworm base is larger
than python:3.11-slim, so the size is an upper bound of the real image's.
Needs root, podman, runc and debootstrap, and the network the test needs.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import load_note
from tests.docker.podman import (PHOTO, REPO, build_image, create_container, make_base, podman_root,
                                 readable_models, unavailable)
from tests.ports import free_port

MAIN_MODELS = REPO / "models"
ANALYZE_REPEATS = 20


def _models(given: Path | None, tmp: Path) -> tuple[list[Path], str]:
    """The .onnx files to serve and where they came from."""
    if given is not None:
        found = sorted(given.glob("*.onnx"))
        if not found:
            raise SystemExit(f"--models {given}: no .onnx files there")
        return found, str(given)
    if sorted(MAIN_MODELS.glob("*.onnx")):
        return sorted(MAIN_MODELS.glob("*.onnx")), f"{MAIN_MODELS} (the main job's)"
    from tests.tiny_onnx import make_models  # torch, only when the main job's models are missing

    return list(make_models(tmp / "tiny").values()), "tiny test models (no models/*.onnx here)"


def _analyze_ms(url: str, photo: bytes) -> float:
    start = time.perf_counter()
    r = httpx.post(url + "/analyze", files={"file": (PHOTO.name, photo, "image/jpeg")}, timeout=60)
    took = (time.perf_counter() - start) * 1000
    r.raise_for_status()
    return took


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=None, metavar="DIR",
                    help="folder of exported .onnx models (default: models/ if it has any, else tiny ones)")
    ap.add_argument("--starts", type=int, default=5, help="cold starts to time (default 5)")
    args = ap.parse_args(argv)
    why_not = unavailable()
    if why_not:
        raise SystemExit(why_not)
    print(load_note(), flush=True)
    photo = PHOTO.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bbc1k-docker-bench-") as tmp, podman_root(Path(tmp)) as podman:
        files, origin = _models(args.models, Path(tmp))
        mount = readable_models(files, Path(tmp) / "models")
        print(f"models: {', '.join(f.name for f in files)} from {origin}")

        start = time.perf_counter()
        base = make_base(podman)
        based = time.perf_counter()
        image = build_image(podman, base)
        built = time.perf_counter()
        print(f"base (debootstrap, venv, import): {based - start:.1f} s; build: {built - based:.1f} s")
        print(f"image: {podman.image_size(image) / 1e6:.0f} MB, of which the bookworm base "
              f"{podman.image_size(base) / 1e6:.0f} MB")

        colds, firsts, medians, stops = [], [], [], []
        for i in range(args.starts):
            container = create_container(podman, image, f"bbc1k-bench-{i}", mount, free_port())
            try:
                t0 = time.perf_counter()
                podman("start", container.name)
                container.wait_ready()
                colds.append(time.perf_counter() - t0)
                firsts.append(_analyze_ms(container.url, photo))
                medians.append(statistics.median(_analyze_ms(container.url, photo) for _ in range(ANALYZE_REPEATS)))
                t0 = time.perf_counter()
                podman("stop", container.name)
                stops.append(time.perf_counter() - t0)
            finally:
                container.remove()
            print(f"start {i + 1}: cold start {colds[-1]:.2f} s, first /analyze {firsts[-1]:.0f} ms, "
                  f"median of {ANALYZE_REPEATS} {medians[-1]:.0f} ms, stop {stops[-1]:.2f} s", flush=True)
        if colds:
            print(f"cold start (podman start -> /readyz 200), median of {len(colds)}: {statistics.median(colds):.2f} s "
                  f"(min {min(colds):.2f}, max {max(colds):.2f}); /analyze median {statistics.median(medians):.0f} ms")
    print(load_note())


if __name__ == "__main__":
    main()
