"""Notebook plumbing: where we run (Colab, GPU or CPU), seeding, mixed precision,
whether pretrained weights can be had, which learning rate the finder's
suggestions give, and downloading an export from Colab. The lessons call these
so their own cells can stay about the deep learning.

Importing this module needs neither torch nor fastai; the functions import them.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLAB_INSTALL = 'pip install "bbc1k[train] @ git+https://github.com/bbc1k/workshop"'
"""What the first cell of every lesson runs, only in Colab."""

# Rough training cost of one image at 128x128 px on one CPU core (forward and
# backward, milliseconds), measured with torch on a 2-core x86 machine. Only
# used to tell a CPU user what to expect; never to decide anything.
_CPU_MS_PER_IMAGE_128 = {"resnet18": 45.0, "resnet34": 90.0, "resnet50": 200.0}
_DEFAULT_CPU_MS = 90.0


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights were asked for but are neither cached nor downloadable."""


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


@dataclass(frozen=True)
class Runtime:
    """Where this notebook trains. ``device`` is a torch device string."""

    device: str
    colab: bool
    cpu_threads: int

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def mixed_precision(self, learn: Any) -> Any:
        """``learn.to_fp16()`` on a CUDA GPU (about twice as fast there);
        unchanged on a CPU, where half precision brings nothing."""
        return learn.to_fp16() if self.cuda else learn

    @property
    def num_workers(self) -> int:
        """DataLoader worker processes: several feed a GPU; on a CPU the cores
        are better spent on the network itself, so load in the main process."""
        return min(8, os.cpu_count() or 1) if self.cuda else 0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (and CUDA) so a run can be repeated."""
    from fastai.torch_core import set_seed

    set_seed(seed, reproducible=True)


def start(seed: int, *, arch: str | None = None, n_images: int | None = None,
          img_size: int | None = None, epochs: int | None = None) -> Runtime:
    """Seed everything, choose the device and say so. On a CPU it prints a
    rough time for the training ahead (``n_images`` seen ``epochs`` times at
    ``img_size`` px with ``arch``) and how to make the run smaller."""
    import torch

    from bbc1k.train.device import pick_device  # imports torch: only when a lesson starts

    seed_everything(seed)
    threads = torch.get_num_threads()
    device = pick_device()
    rt = Runtime(device=device.type, colab=in_colab(), cpu_threads=threads)
    if rt.cuda:
        print(f"Training on the GPU ({torch.cuda.get_device_name(0)}) with mixed precision.")
        return rt
    print(cpu_time_note(threads, arch=arch, n_images=n_images, img_size=img_size, epochs=epochs))
    return rt


def estimate_cpu_seconds(arch: str | None, n_images: int, img_size: int, epochs: int, threads: int) -> float:
    """A rough number of seconds to train ``epochs`` passes over ``n_images``."""
    per_image = _CPU_MS_PER_IMAGE_128.get(arch or "", _DEFAULT_CPU_MS) / 1000
    return per_image * (img_size / 128) ** 2 * n_images * epochs / max(1, threads)


def cpu_time_note(threads: int, *, arch: str | None = None, n_images: int | None = None,
                  img_size: int | None = None, epochs: int | None = None) -> str:
    """The message a CPU user sees before training."""
    lines = [f"No GPU found: training runs on the CPU ({threads} threads)."]
    if n_images and img_size and epochs:
        secs = estimate_cpu_seconds(arch, n_images, img_size, epochs, threads)
        lines.append(f"Expect very roughly {_human(secs)} of training at these settings "
                     f"({n_images} images, {img_size} px, {epochs} epochs"
                     f"{', ' + arch if arch else ''}); a GPU does it 20-50x faster.")
    lines.append("For a quick look, set smaller values in the parameters cell, e.g. "
                 "N_IMAGES=600, IMG_SIZE=128, EPOCHS=3, ARCH='resnet18'"
                 + (", or choose Runtime > Change runtime type > GPU." if in_colab() else "."))
    return "\n".join(lines)


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def weights_url(arch: str) -> str:
    """The download address of torchvision's default ImageNet weights for ``arch``."""
    import torchvision

    try:
        return torchvision.models.get_model_weights(arch).DEFAULT.url
    except (ValueError, KeyError, AttributeError):
        raise ValueError(f"torchvision has no pretrained weights called {arch!r}") from None


def cached_weights_path(url: str) -> Path:
    """Where torch keeps a downloaded checkpoint (it skips the download when present)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.request.urlparse(url).path).name


def check_pretrained(arch: str, pretrained: bool = True, *, timeout: float = 5.0, url: str | None = None) -> bool:
    """Make sure ``vision_learner(..., pretrained=True)`` will find its weights.

    Returns ``pretrained`` when the weights are cached or their server answers
    within ``timeout`` seconds. Otherwise raises :class:`PretrainedUnavailable`
    with what to do (set ``PRETRAINED = False``), rather than letting a download
    hang or a long traceback appear halfway through the lesson.
    """
    if not pretrained:
        print(f"PRETRAINED=False: {arch} starts from random weights. "
              "Expect lower accuracy than with ImageNet weights, and train longer; "
              "lesson 01's 'No internet?' section shows a network built to learn from scratch.")
        return False
    url = url or weights_url(arch)
    if cached_weights_path(url).exists():
        return True
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise PretrainedUnavailable(
            f"Cannot fetch the pretrained {arch} weights from {url} ({reason}).\n"
            f"This machine seems to be offline. Either connect it, or put the file at "
            f"{cached_weights_path(url)}, or train from scratch: set PRETRAINED = False in the "
            "parameters cell at the top (or run papermill with -p PRETRAINED False) and run again."
        ) from None


LR_SUGGESTIONS = ("minimum", "steep", "valley")
"""The learning-rate finder's suggestions the lessons ask for (fastai's ``suggest_funcs``)."""


def chosen_lr(suggestions: Any, choice: str | float) -> float:
    """The learning rate ``choice`` names: one of the finder's ``suggestions``
    (``"minimum"``, ``"steep"``, ``"valley"``) or a number of one's own. Says which."""
    if isinstance(choice, str):
        if choice not in LR_SUGGESTIONS:
            raise ValueError(f"LR = {choice!r}: use one of the finder's suggestions "
                             f"({', '.join(map(repr, LR_SUGGESTIONS))}) or a number")
        lr = float(getattr(suggestions, choice))
        print(f"learning rate: {lr:.2e}, the finder's {choice!r} suggestion")
        return lr
    lr = float(choice)
    if not lr >= 0:
        raise ValueError(f"LR = {choice!r}: a learning rate is a number of 0 or more")
    print(f"learning rate: {lr:.2e}, set by hand (LR = {choice!r})")
    return lr


def offer_download(path: str | os.PathLike) -> None:
    """In Colab, download ``path`` to this computer (files in a Colab runtime
    vanish with it); elsewhere, say where the file is."""
    if in_colab():
        from google.colab import files  # exists only in Colab

        files.download(str(path))
    else:
        print(f"the file is at {Path(path).resolve()}")
