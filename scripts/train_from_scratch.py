"""Train an image classifier from random weights, fast, and export it as ONNX.

No ImageNet: every weight starts random. What makes that work on a few
hundred photos in minutes on a laptop CPU:

- the photos are decoded ONCE, at low resolution, into a uint8 tensor held in
  memory (600 photos at 120x160 are 35 MB), so an epoch never touches the disk;
- augmentation runs on the whole batch as tensor maths (one affine warp gives
  random resized crops, flips and small rotations; colour jitter is a few
  multiplications), so the small data looks new every epoch;
- a small residual network (ResNet-9 in the style of Page's "How to train
  your ResNet", at a modest width) with BatchNorm, trained for many short
  epochs (110: random weights need far more steps than pretrained ones) with
  a one-cycle learning rate, AdamW and label smoothing;
- bfloat16 arithmetic where the chip has it natively (GPUs, and CPUs with
  AMX or AVX512-BF16), which halves the time of a CPU epoch;
- test-time augmentation (the mean of the image and its mirror), built into
  the exported graph so the app gets exactly the accuracy printed here.

Usage::

    python scripts/train_from_scratch.py DATA_DIR --out models/ [--name bbc-scratch]
        [--epochs 110] [--size 96 128] [--seed 0] [--time-budget 270] [--holdout DIR]

DATA_DIR holds one subfolder of images per class (class names = subfolder
names, sorted). A seeded stratified split (``--valid-frac``, ``--split-seed``)
keeps part of it for validation, the same split for every run. The model is
written to ``OUT/NAME.onnx`` in the bbc1k model format (docs/model-format.md).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

# Mean and std of the real photos' RGB (0..1): the network sees roughly unit
# variance input. They go into the model's metadata, so the app normalises
# the same way.
PHOTO_MEAN = (0.63, 0.60, 0.55)
PHOTO_STD = (0.23, 0.23, 0.23)


# ----------------------------------------------------------------- the data

class DatasetError(ValueError):
    """The data folder is not a folder of class subfolders holding images."""


def find_images(data_dir: str | Path) -> tuple[list[str], list[Path], np.ndarray]:
    """``(classes, image paths, label indices)`` of a folder of class subfolders."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    classes, paths, labels = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            paths += images
            labels += [len(classes)] * len(images)
            classes.append(sub.name)
    if len(classes) < 2:
        loose = sum(1 for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        raise DatasetError(
            f"{root}: expected one subfolder of images per class (at least two classes), "
            f"found {len(classes)} class folder(s){f' and {loose} loose image(s)' if loose else ''}. "
            f"Lay it out as {root}/<class name>/<image>.jpg")
    return classes, paths, np.array(labels, dtype=np.int64)


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """One photo as uint8 HxWx3 RGB, squished to ``size`` = (H, W).

    Decoded by the app's own :func:`bbc1k.inference.decode_image` (EXIF
    rotation, any image mode) and resized the way its "squish" fit does, so
    training, validation and the served model see images prepared alike.
    """
    from bbc1k.inference import ImageError, decode_image

    try:
        decoded = decode_image(Path(path).read_bytes())
    except ImageError as e:
        raise DatasetError(f"{path}: {e}") from None
    return np.asarray(decoded.image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def load_images(paths: list[Path], size: tuple[int, int], workers: int = 2) -> Any:
    """All photos as one uint8 tensor N x 3 x H x W (decoded once, kept in memory)."""
    import torch

    with ThreadPoolExecutor(workers) as pool:  # Pillow decodes without the GIL
        arrays = list(pool.map(lambda p: load_image(p, size), paths))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def stratified_split(labels: np.ndarray, valid_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: ``(train indices, valid indices)``; each class
    keeps ``valid_frac`` of its images (at least one if it has two or more)."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_valid = 0 if valid_frac <= 0 or len(idx) < 2 else max(1, round(valid_frac * len(idx)))
        valid += idx[:n_valid].tolist()
        train += idx[n_valid:].tolist()
    return np.sort(train), np.sort(valid)


# ----------------------------------------------------- augmentation on batches

@dataclass
class Augment:
    """Random resized crops, flips, small rotations and colour jitter, done on
    a whole batch at once (on the GPU when there is one)."""

    # Figures below: validation accuracy, 30-epoch runs, mean of 3 seeds.
    min_scale: float = 0.6       # smallest crop, as a fraction of the area; 0.35 lost 5 points (78% -> 73%)
    max_aspect: float = 4 / 3    # crop aspect ratio drawn in [1/max_aspect, max_aspect]
    max_rotate: float = 15.0     # degrees
    vflip: bool = False          # up/down flips lost 7 points (80% -> 73%): photos have an up and a down
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25

    def __call__(self, x: Any, out_size: tuple[int, int]) -> Any:
        """``x``: float batch N x 3 x H x W in 0..1 -> augmented batch at ``out_size``."""
        return self.colour(self.geometry(x, out_size))

    def geometry(self, x: Any, out_size: tuple[int, int]) -> Any:
        import torch.nn.functional as F

        grid = F.affine_grid(self.theta(x.shape[0], x.device), [x.shape[0], 3, *out_size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def theta(self, n: int, dev: Any) -> Any:
        """``n`` random affine maps (N x 2 x 3, output to input coordinates in
        -1..1) for ``F.affine_grid``: crop, aspect, rotation and flips."""
        import torch

        u = lambda lo, hi: torch.empty(n, device=dev).uniform_(lo, hi)  # noqa: E731
        area = u(self.min_scale, 1.0)
        log_r = math.log(self.max_aspect)
        aspect = torch.exp(u(-log_r, log_r))
        sx = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / image width
        sy = torch.sqrt(area / aspect).clamp(max=1.0)
        tx, ty = (1 - sx) * u(-1, 1), (1 - sy) * u(-1, 1)  # the crop stays inside the image
        angle = torch.deg2rad(u(-self.max_rotate, self.max_rotate))
        flip_x = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
        flip_y = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0) if self.vflip else 1.0
        cos, sin = torch.cos(angle), torch.sin(angle)
        # scale @ rotate @ flip, then shift
        return torch.stack([torch.stack([sx * cos * flip_x, -sx * sin * flip_y, tx], 1),
                            torch.stack([sy * sin * flip_x, sy * cos * flip_y, ty], 1)], 1)

    def colour(self, x: Any) -> Any:
        import torch

        n, dev = x.shape[0], x.device
        jitter = lambda s: 1 + torch.empty(n, 1, 1, 1, device=dev).uniform_(-s, s)  # noqa: E731
        grey = x.mean(1, keepdim=True)
        x = grey + (x - grey) * jitter(self.saturation)
        x = x.mean((1, 2, 3), keepdim=True) + (x - x.mean((1, 2, 3), keepdim=True)) * jitter(self.contrast)
        return (x * jitter(self.brightness)).clamp(0, 1)


# ----------------------------------------------------------------- the model

def conv_bn(c_in: int, c_out: int, pool: bool = False) -> Any:
    from torch import nn

    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


def make_resnet9(n_classes: int, width: int = 16) -> Any:
    """ResNet-9 (Page, 2018) at ``width`` channels in the stem: four stages
    doubling the width, residual blocks after the first and the third."""
    import torch
    from torch import nn

    class Scale(nn.Module):
        """Multiply by a constant. Max-pooled features are large and all
        positive: scaled-down logits start near uniform, and training stays stable."""

        def __init__(self, factor: float):
            super().__init__()
            self.factor = factor

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.factor

    class Residual(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.body = nn.Sequential(conv_bn(c, c), conv_bn(c, c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

    w = width
    return nn.Sequential(
        conv_bn(3, w, pool=True),                            # stride 2 early: cheap at full resolution
        conv_bn(w, 2 * w, pool=True), Residual(2 * w),
        conv_bn(2 * w, 4 * w, pool=True),
        conv_bn(4 * w, 8 * w, pool=True), Residual(8 * w),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(8 * w, n_classes, bias=False), Scale(0.125),
    )


def with_flip_tta(model: Any) -> Any:
    """The model averaged over the image and its mirror: test-time augmentation
    inside the graph, so the exported ONNX gives what validation measured."""
    import torch
    from torch import nn

    class FlipTTA(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.net(x) + self.net(torch.flip(x, dims=[3]))) / 2

    return FlipTTA(model)


# -------------------------------------------------------------- the training

@dataclass
class Recipe:
    """Everything that decides the result; saved in the model's metadata."""

    size: tuple[int, int] = (96, 128)  # (H, W) of the network input: the photos are 4:3
    store_scale: float = 1.25          # photos are kept this much larger than the input, for crops
    width: int = 24
    epochs: int = 110                  # far more than with pretrained weights: random weights learn slowly
    batch_size: int = 32
    optimizer: str = "adamw"           # "adamw" or "sgd" (Nesterov momentum, lr 0.02, weight decay 5e-4)
    lr: float = 3e-3                   # peak of the one-cycle schedule
    momentum: float = 0.9              # SGD only
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup: float = 0.25               # fraction of training spent raising the learning rate
    tta: bool = True
    # Measured, and not used by default (bench/recipe_sweep.py, H100, 3 seeds): cutmix lost 3 points,
    # mixup 0.6, an average of the weights 0.3; doubling the epochs gained nothing.
    mix: str = "none"                  # "mixup" or "cutmix": train on blends of two photos; "none"
    mix_alpha: float = 1.0             # the blend weight is drawn from Beta(mix_alpha, mix_alpha)
    ema: float = 0.0                   # decay of an exponential moving average of the weights
                                       # (validated and exported instead of the weights); 0: none
    precision: str = "auto"            # "auto": bfloat16 where the chip computes it natively, else "fp32"
    eval_every: int = 5                # validate every n-th epoch (and always after the last): a
                                       # validation costs a third of an epoch on a CPU
    seed: int = 0
    valid_frac: float = 0.2
    split_seed: int = 0
    time_budget: float | None = None   # seconds of training on the data; the schedule fits into it
    synthetic: int = 0                 # synthetic pictures to pretrain on first (bbc1k.synth), 0: none
    synthetic_epochs: int = 10
    augment: Augment = field(default_factory=Augment)


def one_cycle(progress: float, peak: float, warmup: float) -> float:
    """Learning rate at ``progress`` (0..1): linear warm-up, then cosine down to 0."""
    if progress < warmup:
        return peak * progress / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def pick_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16(device: Any) -> bool:
    """Whether ``device`` computes bfloat16 natively. On a CPU with AMX or
    AVX512-BF16, training under bfloat16 autocast takes about half the time
    (ResNet-9 w24 at 72x96 on 2 cores: 228 -> 466 img/s); on other CPUs it is
    emulated, slower than float32."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, hence getattr
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def use_bf16(recipe: Any, device: Any) -> bool:
    if recipe.precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {recipe.precision!r}")
    return recipe.precision == "bf16" or (recipe.precision == "auto" and native_bf16(device))


def mix_batch(x: Any, y: Any, kind: str, alpha: float) -> tuple[Any, Any, float]:
    """Mixup (blend two photos) or CutMix (paste a box of one into the other):
    ``(mixed batch, partner labels, weight of the batch's own labels)``."""
    import torch

    lam = float(np.random.beta(alpha, alpha))
    partner = torch.randperm(len(x), device=x.device)
    if kind == "mixup":
        return lam * x + (1 - lam) * x[partner], y[partner], lam
    if kind != "cutmix":
        raise ValueError(f"mix must be 'none', 'mixup' or 'cutmix', got {kind!r}")
    h, w = x.shape[-2:]
    bh, bw = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
    top, left = np.random.randint(0, h - bh + 1), np.random.randint(0, w - bw + 1)
    x = x.clone()
    x[..., top:top + bh, left:left + bw] = x[partner][..., top:top + bh, left:left + bw]
    return x, y[partner], 1 - bh * bw / (h * w)


def make_optimizer(model: Any, recipe: Any) -> Any:
    import torch

    decay = [p for p in model.parameters() if p.ndim > 1]  # no weight decay on BatchNorm and biases
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=0.0)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=recipe.momentum, nesterov=True)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {recipe.optimizer!r}")


@dataclass
class Normalise:
    """uint8 images -> float input: RGB scaled to 0..1, then (x - mean) / std."""

    mean: Any
    std: Any

    def __call__(self, x01: Any) -> Any:
        import torch

        return ((x01 - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def evaluate(model: Any, x_uint8: Any, y: Any, norm: Normalise, batch_size: int = 128) -> float:
    """Accuracy of ``model`` (already in eval mode) on uint8 images."""
    import torch

    correct = 0
    with torch.no_grad():
        for i in range(0, len(x_uint8), batch_size):
            logits = model(norm(x_uint8[i:i + batch_size].float() / 255))
            correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / max(1, len(x_uint8))


def run_schedule(model: Any, n_items: int, batch_loss: Any, recipe: Any, epochs: int, after_epoch: Any,
                 desc: str = "training", progress: bool = False, time_budget: float | None = None,
                 ema: Any = None) -> int:
    """One one-cycle training run of ``model`` over ``n_items`` training items
    in shuffled batches of ``recipe.batch_size``: ``batch_loss(indices)``
    gives the loss of a batch. Calls ``after_epoch(epoch, mean train loss,
    last)`` after each epoch, ``last`` true after the final one. With a
    ``time_budget`` (seconds) the schedule runs on the clock when that is
    further along than the steps, and training stops, mid-epoch if need be,
    when the budget is spent. ``ema``: a ``torch.optim.swa_utils.AveragedModel``
    updated after each step. Returns the number of items seen."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    opt = make_optimizer(model, recipe)
    steps_per_epoch = max(1, n_items // recipe.batch_size)  # drop the last partial batch
    total_steps = epochs * steps_per_epoch
    gen = torch.Generator(device="cpu").manual_seed(recipe.seed)
    t0, step, seen = time.perf_counter(), 0, 0
    with tqdm(total=total_steps, desc=desc, unit="step", disable=not progress) as bar:
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n_items, generator=gen).to(device)
            loss_sum, steps_done = 0.0, 0
            for b in range(steps_per_epoch):
                done = step / total_steps
                if time_budget:
                    done = max(done, (time.perf_counter() - t0) / time_budget)
                    if done >= 1 and steps_done:
                        break
                for group in opt.param_groups:
                    group["lr"] = one_cycle(done, recipe.lr, recipe.warmup)
                idx = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
                loss = batch_loss(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if ema is not None:
                    ema.update_parameters(model)
                loss_sum += loss.item()
                step, seen, steps_done = step + 1, seen + len(idx), steps_done + 1
                bar.update()
            model.eval()
            last = epoch == epochs - 1 or bool(time_budget and time.perf_counter() - t0 >= time_budget)
            after_epoch(epoch, loss_sum / steps_done, last)
            if last:
                break
    return seen


def classification_loss(model: Any, x_uint8: Any, y: Any, recipe: Recipe, norm: Normalise) -> Any:
    """``batch_loss(indices)`` for :func:`run_schedule`: augment the batch, mix
    it when asked, label-smoothed cross-entropy (bfloat16 where native)."""
    import torch
    import torch.nn.functional as F

    device = x_uint8.device
    bf16 = use_bf16(recipe, device)
    smooth = recipe.label_smoothing

    def batch_loss(idx: Any) -> Any:
        xb, yb = norm(recipe.augment(x_uint8[idx].float() / 255, recipe.size)), y[idx]
        yb2, lam = yb, 1.0
        if recipe.mix != "none":
            xb, yb2, lam = mix_batch(xb, yb, recipe.mix, recipe.mix_alpha)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(xb)
            loss = lam * F.cross_entropy(logits, yb, label_smoothing=smooth)
            if lam < 1:
                loss = loss + (1 - lam) * F.cross_entropy(logits, yb2, label_smoothing=smooth)
        return loss

    return batch_loss


def fit(model: Any, x_uint8: Any, y: Any, recipe: Recipe, epochs: int, norm: Normalise,
        after_epoch: Any, desc: str, progress: bool, time_budget: float | None = None,
        ema: Any = None) -> int:
    """Train the classifier on uint8 images ``x_uint8`` (kept on the device)
    with labels ``y``; see :func:`run_schedule`."""
    np.random.seed(recipe.seed)  # mix_batch's blend weights and boxes
    return run_schedule(model, len(x_uint8), classification_loss(model, x_uint8, y, recipe, norm), recipe,
                        epochs, after_epoch, desc, progress, time_budget, ema)


def render_synthetic(classes: list[str], n: int, size: tuple[int, int], seed: int) -> tuple[Any, Any]:
    """``n`` synthetic pictures (bbc1k.synth) of the given classes at ``size``
    (H, W): a uint8 tensor N x 3 x H x W and label indices into ``classes``."""
    import torch

    from bbc1k.synth import render_sample

    h, w = size
    render_at = (max(w, 32), max(h, 32))  # the renderer draws nothing smaller than 32 pixels
    images, labels = [], []
    for i in range(n):
        image, _, label = render_sample(seed, i, size=render_at, classes=classes)
        images.append(np.asarray(image.resize((w, h), Image.BILINEAR)))
        labels.append(classes.index(label))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels)


@dataclass
class Result:
    classes: list[str]
    valid_acc: float | None
    epochs_run: int
    train_seconds: float             # pretraining included
    load_seconds: float
    images_per_second: float
    history: list[dict]
    device: str
    pretrain_seconds: float = 0.0    # synthetic rendering and pretraining
    model: Any = field(repr=False, default=None)


def train(data_dir: str | Path, recipe: Recipe, progress: bool = True, log_epochs: bool = True) -> Result:
    """Train a ResNet-9 from scratch on ``data_dir`` following ``recipe``;
    ``progress``: a progress bar, ``log_epochs``: a line per epoch."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(recipe.seed)
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))  # a shared laptop; more rarely helps

    start = time.perf_counter()
    classes, paths, labels = find_images(data_dir)
    train_idx, valid_idx = stratified_split(labels, recipe.valid_frac, recipe.split_seed)
    store = (round(recipe.size[0] * recipe.store_scale), round(recipe.size[1] * recipe.store_scale))
    x_train = load_images([paths[i] for i in train_idx], store).to(device)
    x_valid = load_images([paths[i] for i in valid_idx], recipe.size).to(device)
    y_train = torch.from_numpy(labels[train_idx]).to(device)
    y_valid = torch.from_numpy(labels[valid_idx]).to(device)
    load_seconds = time.perf_counter() - start

    norm = Normalise(torch.tensor(PHOTO_MEAN, device=device).view(1, 3, 1, 1),
                     torch.tensor(PHOTO_STD, device=device).view(1, 3, 1, 1))
    model = make_resnet9(len(classes), recipe.width).to(device).to(memory_format=torch.channels_last)
    ema = None
    if recipe.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True)
    tta = with_flip_tta if recipe.tta else (lambda net: net)
    eval_model = tta(ema.module if ema is not None else model)
    t0 = time.perf_counter()
    seen = 0
    if recipe.synthetic:
        from bbc1k.layout import OBJECT_CLASSES

        if not set(classes) <= set(OBJECT_CLASSES):
            raise DatasetError(f"synthetic pretraining draws only {', '.join(OBJECT_CLASSES)}; "
                               f"{data_dir} has classes {', '.join(classes)}")
        x_syn, y_syn = render_synthetic(classes, recipe.synthetic, store, recipe.seed)

        def report_synthetic(epoch: int, loss: float, last: bool) -> None:
            if log_epochs:
                acc = evaluate(tta(model), x_valid, y_valid, norm) if len(valid_idx) else float("nan")
                tqdm.write(f"synthetic epoch {epoch + 1:3d}  train loss {loss:.3f}  valid acc {acc:.3f}  "
                           f"{time.perf_counter() - t0:6.1f} s")

        seen += fit(model, x_syn.to(device), y_syn.to(device), recipe, recipe.synthetic_epochs, norm,
                    report_synthetic, "synthetic", progress)
    pretrain_seconds = time.perf_counter() - t0

    history: list[dict] = []

    def report(epoch: int, loss: float, last: bool) -> None:
        due = last or (epoch + 1) % max(1, recipe.eval_every) == 0
        if not due:
            history.append({"epoch": epoch + 1, "train_loss": loss, "valid_acc": None,
                            "seconds": round(time.perf_counter() - t0, 2)})
            return
        eval_model.eval()
        acc = evaluate(eval_model, x_valid, y_valid, norm) if len(valid_idx) else None
        elapsed = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": loss, "valid_acc": acc, "seconds": round(elapsed, 2)})
        shown = f"{acc:.3f}" if acc is not None else "-"
        if log_epochs:
            tqdm.write(f"epoch {epoch + 1:3d}  train loss {loss:.3f}  valid acc {shown}  {elapsed:6.1f} s")

    seen += fit(model, x_train, y_train, recipe, recipe.epochs, norm, report, "training", progress,
                time_budget=recipe.time_budget, ema=ema)
    train_seconds = time.perf_counter() - t0
    return Result(classes=classes, valid_acc=history[-1]["valid_acc"], epochs_run=len(history),
                  train_seconds=train_seconds, load_seconds=load_seconds,
                  images_per_second=seen / train_seconds, history=history, device=str(device),
                  pretrain_seconds=pretrain_seconds, model=eval_model)


# ---------------------------------------------------------------- the export

def export(result: Result, recipe: Recipe, out_dir: str | Path, name: str) -> Path:
    """Write ``out_dir/name.onnx`` with its bbc1k description."""
    import torch

    from bbc1k.export import export_onnx
    from bbc1k.modelmeta import ModelMeta

    h, w = recipe.size
    facts = {k: v for k, v in asdict(recipe).items() if k != "augment"}
    facts.update(augment=asdict(recipe.augment), architecture=f"resnet9(width={recipe.width})",
                 pretrained=False, valid_acc=result.valid_acc, epochs_run=result.epochs_run,
                 train_seconds=round(result.train_seconds, 1), device=result.device,
                 pretrain_seconds=round(result.pretrain_seconds, 1),
                 trainer="scripts/train_from_scratch.py")
    meta = ModelMeta(task="classify", name=name, classes=list(result.classes), input_size=[h, w],
                     mean=list(PHOTO_MEAN), std=list(PHOTO_STD), resize="squish",
                     outputs=[{"name": "logits", "kind": "class_logits", "shape": ["N", len(result.classes)]}],
                     extra=facts)
    sample = torch.rand(2, 3, h, w)
    return export_onnx(result.model.float(), meta, Path(out_dir) / f"{name}.onnx", sample)


def onnx_accuracy(onnx_path: str | Path, data_dir: str | Path) -> tuple[float, int]:
    """Accuracy of an exported model on a folder of class subfolders, through
    ONNX Runtime with the app's own preprocessing (bbc1k.inference):
    ``(accuracy, number of images)``. Class folders are matched by name."""
    from bbc1k.inference import ImageError, decode_image, open_session, prepare
    from bbc1k.modelmeta import read_onnx_meta

    meta = read_onnx_meta(str(onnx_path))
    classes, paths, labels = find_images(data_dir)
    unknown = sorted(set(classes) - set(meta.classes))
    if unknown:
        raise DatasetError(f"{data_dir}: class folder(s) {unknown} are not among the model's {meta.classes}")
    session = open_session(onnx_path)
    correct = 0
    for path, label in zip(paths, labels):
        try:
            x, _ = prepare(decode_image(path.read_bytes()).image, meta)
        except ImageError as e:
            raise DatasetError(f"{path}: {e}") from None
        logits = session.run(None, {meta.input_name: x[None]})[0][0]
        correct += meta.classes[int(logits.argmax())] == classes[label]
    return correct / len(paths), len(paths)


# -------------------------------------------------------------- the command

def add_training_args(ap: argparse.ArgumentParser, d: Any, data_help: str, name: str,
                      size_note: str = "") -> None:
    """The options every from-scratch recipe takes, with ``d``'s defaults
    (a recipe dataclass): the data, where the model goes, its size and
    schedule, the seed and the arithmetic."""
    ap.add_argument("data_dir", help=data_help)
    ap.add_argument("--out", default="models", help="folder for NAME.onnx (default: models)")
    ap.add_argument("--name", default=name)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("H", "W"),
                    help=f"network input height and width{size_note} (default: {d.size[0]} {d.size[1]})")
    ap.add_argument("--width", type=int, default=d.width, help="channels of the first stage")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                    help="fit the learning-rate schedule into this many seconds of training and stop "
                         "then (270 keeps a classifier's whole run under 5 minutes on 2 CPU cores)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=d.precision,
                    help="auto: bfloat16 where the chip computes it natively (recent GPUs, CPUs with AMX "
                         "or AVX512-BF16), else fp32")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Recipe()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_args(ap, d, "folder with one subfolder of images per class", "bbc-scratch")
    ap.add_argument("--optimizer", choices=["sgd", "adamw"], default=d.optimizer)
    ap.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--synthetic", type=int, default=d.synthetic, metavar="N",
                    help="pretrain on N synthetic pictures first (classes must be bbc1k's)")
    ap.add_argument("--synthetic-epochs", type=int, default=d.synthetic_epochs)
    ap.add_argument("--valid-frac", type=float, default=d.valid_frac,
                    help="fraction of each class kept for validation (0: train on everything)")
    ap.add_argument("--split-seed", type=int, default=d.split_seed)
    ap.add_argument("--no-tta", action="store_true", help="no mirrored second look at test time")
    ap.add_argument("--mix", choices=["none", "mixup", "cutmix"], default=d.mix,
                    help="train on blends of two photos (default: none)")
    ap.add_argument("--mix-alpha", type=float, default=d.mix_alpha)
    ap.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                    help="validate and export a moving average of the weights (e.g. 0.995; default: 0, none)")
    ap.add_argument("--eval-every", type=int, default=d.eval_every, metavar="N",
                    help="validate every N-th epoch and after the last (default: %(default)s)")
    ap.add_argument("--holdout", default=None, metavar="DIR",
                    help="after export, measure the ONNX model on this folder of class subfolders")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    if not 0 <= args.valid_frac < 1:
        raise SystemExit(f"--valid-frac must be in [0, 1), got {args.valid_frac}")
    if args.epochs < 1 or min(args.size) < 16 or args.width < 1 or args.batch_size < 2:
        raise SystemExit("--epochs, --width must be positive, --size at least 16 16, --batch-size at least 2")
    return Recipe(size=tuple(args.size), width=args.width, epochs=args.epochs, batch_size=args.batch_size,
                  optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                  synthetic=args.synthetic, synthetic_epochs=args.synthetic_epochs, seed=args.seed,
                  valid_frac=args.valid_frac, split_seed=args.split_seed, time_budget=args.time_budget,
                  tta=not args.no_tta, mix=args.mix, mix_alpha=args.mix_alpha, ema=args.ema,
                  precision=args.precision, eval_every=args.eval_every)


def check_holdout(holdout: str | Path, data_dir: str | Path) -> None:
    """A holdout folder must name only classes the model will know: checked
    before training, so a typo does not cost a training run."""
    held, known = find_images(holdout)[0], find_images(data_dir)[0]
    unknown = sorted(set(held) - set(known))
    if unknown:
        raise DatasetError(f"{holdout}: class folder(s) {unknown} are not among {data_dir}'s classes {known}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recipe = recipe_from_args(args)
    start = time.perf_counter()
    try:
        if args.holdout:
            check_holdout(args.holdout, args.data_dir)
        result = train(args.data_dir, recipe, progress=not args.quiet)
        path = export(result, recipe, args.out, args.name)
        acc = f"{result.valid_acc:.1%}" if result.valid_acc is not None else "n/a (no validation split)"
        print(f"device {result.device}: {result.epochs_run} epochs in {result.train_seconds:.1f} s "
              f"({result.images_per_second:.0f} img/s), photos loaded in {result.load_seconds:.1f} s")
        print(f"validation accuracy {acc}; total {time.perf_counter() - start:.1f} s; wrote {path}")
        if args.holdout:
            hold_acc, n = onnx_accuracy(path, args.holdout)
            print(f"holdout accuracy (ONNX Runtime, app preprocessing) {hold_acc:.1%} "
                  f"on {n} images in {args.holdout}")
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
