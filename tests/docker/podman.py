"""The serving image built and run with Debian's podman, as root, without a registry:
shared by tests/docker/test_docker_image.py and ``python -m bench.docker_image``.

* :func:`make_base`: a Python 3.11 base made with debootstrap from the Debian
  mirror apt uses here (no registry serves ``python:3.11-slim`` to this machine),
  with a venv on ``PATH`` as in the official image, and the host's extra CA
  certificates so that pip inside the build reaches the package index the host reaches.
* :func:`build_image`: the repository's Dockerfile on that base (``BASE`` build argument).
* :func:`start_container`: the image with a models folder mounted read-only.
* :func:`podman_root`: podman with every byte of its state under one temporary folder,
  removed on exit whatever happened.

Podman runs here with the adjustments this kind of machine needs: ``runc`` (crun
refuses its cgroup set-up), explicit ulimits (podman's defaults fail), the Docker
image format (OCI drops ``HEALTHCHECK``) and host networking (bridges rewrite the
host's iptables).
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"  # Debian 12: Python 3.11, as in python:3.11-slim
BASE_PACKAGES = "python3,python3-venv,ca-certificates"  # the venv brings its own pip
VENV = "/opt/venv"
BASE_PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_TAG = "localhost/bbc1k-pybase"
IMAGE_TAG = "localhost/bbc1k-app"
HOST_CAS = Path("/usr/local/share/ca-certificates")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
TOOLS = ("podman", "runc", "debootstrap")
MODELS_MOUNT = "/models"
PHOTO = REPO / "app" / "static" / "examples" / "ball.jpg"  # a photo to post to /analyze


class PodmanError(RuntimeError):
    """A command of the build or run failed; the message ends with its output."""


def unavailable() -> str | None:
    """Why the image cannot be built on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the image is built with podman on Linux"
    if os.geteuid() != 0:
        return ("building the image needs root (podman and debootstrap run as root; "
                "scripts/test.sh installs them when run as root with apt-get)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap; "
                "scripts/test.sh does it when run as root)")
    return None


def debian_mirror() -> str:
    """The mirror apt fetches Debian ``SUITE`` from here (apt reads its own sources),
    else its main Debian archive, else deb.debian.org."""
    for field in (f"Release: {SUITE}", "Label: Debian"):
        try:
            out = subprocess.run(["apt-get", "indextargets", "--format", "$(SITE)", field, "Identifier: Packages"],
                                 capture_output=True, text=True, timeout=60).stdout.split()
        except (OSError, subprocess.SubprocessError):
            out = []
        if out:
            return out[0]
    return FALLBACK_MIRROR


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "…" + text[-n:]


def run(argv: list[str], *, timeout: float = 900, stdin: IO[bytes] | None = None) -> str:
    """Run ``argv``; its output, or :class:`PodmanError` with the output's end."""
    try:
        proc = subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PodmanError(f"{' '.join(argv[:6])} … timed out after {timeout:.0f} s:\n"
                          f"{_tail(str(e.output or ''))}") from None
    if proc.returncode:
        raise PodmanError(f"{' '.join(argv)}\nexited with {proc.returncode}:\n{_tail(proc.stdout)}")
    return proc.stdout


def limits() -> list[str]:
    """``--ulimit`` flags that containers accept here: podman's defaults exceed the host's."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    return ["--ulimit", f"nofile={hard}:{hard}", "--ulimit", "nproc=32768:32768"]


@dataclass
class Podman:
    """podman with its storage, run files, state and events under ``root``."""

    root: Path

    def argv(self, *args: str) -> list[str]:
        r = self.root
        # no systemd on these machines: cgroupfs, and events in a file rather than the journal
        return ["podman", "--root", str(r / "storage"), "--runroot", str(r / "run"), "--tmpdir", str(r / "tmp"),
                "--network-config-dir", str(r / "networks"), "--storage-driver", "overlay",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]

    def __call__(self, *args: str, timeout: float = 900, stdin: IO[bytes] | None = None) -> str:
        return run(self.argv(*args), timeout=timeout, stdin=stdin)

    def returncode(self, *args: str, timeout: float = 120) -> int:
        """Run a podman command for its exit status alone (output discarded)."""
        return subprocess.run(self.argv(*args), capture_output=True, timeout=timeout).returncode

    def image_size(self, tag: str) -> int:
        """The image's size on disk, in bytes (its layers, uncompressed)."""
        return int(self("image", "inspect", "--format", "{{.Size}}", tag).strip())

    def remove_all(self) -> None:
        """Remove every container and image, then the whole ``root``: safe to call
        after any failure, and more than once."""
        for args in (("rm", "--all", "--force", "--time", "0"), ("rmi", "--all", "--force")):
            try:
                self.returncode(*args)
            except (OSError, subprocess.SubprocessError):
                pass  # the folder goes anyway, below
        remove_tree(self.root)


def _mounts_below(folder: Path) -> list[str]:
    """Mount points at or below ``folder`` (from /proc/self/mountinfo), deepest first."""
    prefix = str(folder.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # field 5 is the mount point, with spaces and the like escaped in octal
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def remove_tree(folder: Path) -> None:
    """Unmount whatever is mounted below ``folder`` (container layers, a failed
    debootstrap's /proc), then delete it without crossing into another file system."""
    if not folder.exists():
        return
    for point in _mounts_below(folder):
        subprocess.run(["umount", "--lazy", point], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(folder)], check=True)


@contextmanager
def podman_root(folder: Path) -> Iterator[Podman]:
    """A :class:`Podman` whose state lives in ``folder``/podman, all removed on exit."""
    podman = Podman(folder / "podman")
    podman.root.mkdir(parents=True)
    try:
        yield podman
    finally:
        podman.remove_all()


def make_base(podman: Podman, tag: str = BASE_TAG) -> str:
    """Debootstrap Debian ``SUITE`` into a folder of podman's root, add a venv and the
    host's extra CAs, import it as ``tag``; the folder is deleted afterwards."""
    rootfs = podman.root / "rootfs"
    try:
        run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE, str(rootfs),
             debian_mirror()])
        # apt's downloads and lists: an image needs neither (python:3.11-slim keeps none)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / cache).glob("*"):
                if p.is_file():
                    p.unlink()
        if HOST_CAS.is_dir():
            shutil.copytree(HOST_CAS, rootfs / HOST_CAS.relative_to("/"), dirs_exist_ok=True)
        run(["chroot", str(rootfs), "update-ca-certificates"])
        # Debian's python3 refuses `pip install` outside a venv (PEP 668); the venv first on
        # PATH gives the Dockerfile the `python` and `pip` it expects from python:3.11-slim.
        run(["chroot", str(rootfs), "python3", "-m", "venv", VENV])
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            podman("import", "--change", f"ENV PATH={BASE_PATH}", "--change", "ENV LANG=C.UTF-8", "-", tag,
                   stdin=tar.stdout)
        if tar.returncode:
            raise PodmanError(f"tar of {rootfs} exited with {tar.returncode}")
    finally:
        remove_tree(rootfs)
    return tag


def build_image(podman: Podman, base: str, tag: str = IMAGE_TAG) -> str:
    """Build the repository's Dockerfile on ``base``; returns ``tag``."""
    podman("build", "--runtime", "runc", *limits(), "--format", "docker", "--network", "host",
           "--pull=never", "--build-arg", f"BASE={base}", "--tag", tag,
           "--file", str(REPO / "Dockerfile"), str(REPO))
    return tag


@dataclass
class Container:
    podman: Podman
    name: str
    url: str

    def logs(self) -> str:
        try:
            return self.podman("logs", self.name, timeout=60)
        except PodmanError as e:
            return f"(no logs: {e})"

    def exec(self, *argv: str) -> str:
        return self.podman("exec", self.name, *argv, timeout=120)

    def state(self, field: str) -> str:
        """One field of the container's state, e.g. ``Running`` or ``ExitCode``."""
        return self.podman("inspect", "--format", "{{.State.%s}}" % field, self.name).strip()

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds until ``/readyz`` answers 200; raises with the logs if the container
        exits or the time runs out."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            if self.state("Running") != "true":
                raise PodmanError(f"{self.name} exited with {self.state('ExitCode')}:\n{_tail(self.logs())}")
            time.sleep(0.05)
        raise PodmanError(f"{self.name}: /readyz not 200 within {timeout:.0f} s:\n{_tail(self.logs())}")

    def remove(self) -> None:
        self.podman.returncode("rm", "--force", "--time", "0", self.name)


def create_container(podman: Podman, image: str, name: str, models: Path, port: int) -> Container:
    """A container of ``image`` (created, not started) serving the ``.onnx`` files of
    ``models`` (mounted read-only, found through MODELS_DIR) on host port ``port``."""
    podman("create", "--name", name, "--runtime", "runc", *limits(), "--network", "host",
           "--env", f"PORT={port}", "--env", f"MODELS_DIR={MODELS_MOUNT}",
           "--volume", f"{models}:{MODELS_MOUNT}:ro", image)
    return Container(podman, name, f"http://127.0.0.1:{port}")


def start_container(podman: Podman, image: str, name: str, models: Path, port: int) -> Container:
    """:func:`create_container`, started and ready."""
    container = create_container(podman, image, name, models, port)
    podman("start", name)
    container.wait_ready()
    return container


def readable_models(models: Iterable[Path], folder: Path) -> Path:
    """Copies of ``models`` in ``folder``, readable by the image's non-root user
    (pytest's temporary folders are private to root)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    for path in models:
        target = folder / path.name
        shutil.copyfile(path, target)
        target.chmod(0o644)
    return folder
