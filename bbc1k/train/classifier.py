"""Train an image classifier from random weights, fast, and export it as ONNX.

No ImageNet: every weight starts random. What makes that work on a few
hundred photos in minutes on a laptop CPU:

- the photos are decoded ONCE, at low resolution, into a uint8 tensor held in
  memory (600 photos at 120x160 are 35 MB), so an epoch never touches the disk
  (:mod:`bbc1k.train.data`);
- augmentation runs on the whole batch as tensor maths (one affine warp gives
  random resized crops, flips and small rotations; colour jitter is a few
  multiplications), so the small data looks new every epoch
  (:mod:`bbc1k.train.augment`);
- a small residual network (ResNet-9 in the style of Page's "How to train
  your ResNet", at a modest width) with BatchNorm, trained for many short
  epochs (110: random weights need far more steps than pretrained ones) with
  a one-cycle learning rate, AdamW and label smoothing
  (:class:`bbc1k.nets.ResNet9`, :mod:`bbc1k.train.schedule`);
- bfloat16 arithmetic where the chip has it natively (GPUs, and CPUs with
  AMX or AVX512-BF16), which halves the time of a CPU epoch
  (:mod:`bbc1k.train.device`);
- test-time augmentation (the mean of the image and its mirror), built into
  the exported graph so the app gets exactly the accuracy printed here
  (:class:`bbc1k.nets.FlipAverage`).

The data is a folder with one subfolder of images per class (class names =
subfolder names, sorted). A seeded stratified split (``valid_frac``,
``split_seed``) keeps part of it for validation, the same split for every
run; ``valid_frac`` 0 trains on everything and skips validation. The model is
written in the bbc1k model format (docs/model-format.md).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bbc1k.export import export_onnx
from bbc1k.modelmeta import PHOTO_MEAN, PHOTO_STD, ModelMeta, read_onnx_meta
from bbc1k.nets import FlipAverage, ResNet9
from bbc1k.serving.decode import ImageError, decode_image
from bbc1k.serving.preprocess import prepare
from bbc1k.train import distributed
from bbc1k.train.augment import Augment, mix_batch
from bbc1k.train.data import DatasetError, find_images, load_images, render_synthetic, stratified_split
from bbc1k.train.device import limit_cpu_threads, pick_device, use_bf16
from bbc1k.train.schedule import EpochHook, Normalise, run_schedule

TRAINER = "bbc1k.train.classifier"
"""What the exported model's metadata names as its trainer."""


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
    # Measured, and not used by default (bench.recipe_sweep, H100, 3 seeds): cutmix lost 3 points,
    # mixup 0.6, an average of the weights 0.3; doubling the epochs gained nothing.
    mix: str = "none"                  # "mixup" or "cutmix": train on blends of two photos; "none"
    mix_alpha: float = 1.0             # the blend weight is drawn from Beta(mix_alpha, mix_alpha)
    ema: float = 0.0                   # decay of an exponential moving average of the weights
                                       # (validated and exported instead of the weights); 0: none
    precision: str = "auto"            # "auto": bfloat16 where the chip computes it natively, else "fp32"
    eval_every: int = 5                # validate every n-th epoch (and always after the last): a
                                       # validation costs a third of an epoch on a CPU
    seed: int = 0
    valid_frac: float = 0.2            # 0: train on everything, no validation
    split_seed: int = 0
    time_budget: float | None = None   # seconds of training on the data; the schedule fits into it
    synthetic: int = 0                 # synthetic pictures to pretrain on first (bbc1k.synth), 0: none
    synthetic_epochs: int = 10
    augment: Augment = field(default_factory=Augment)


def classification_loss(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, recipe: Recipe,
                        norm: Normalise) -> Callable[[torch.Tensor], torch.Tensor]:
    """``batch_loss(indices)`` for :func:`run_schedule`: augment the batch, mix
    it when asked, label-smoothed cross-entropy (bfloat16 where native).
    ``model``: what the training forward passes go through (in a process
    group, the DistributedDataParallel wrapper). Mixup and CutMix pair photos
    within each process's share of a batch."""
    device = x_uint8.device
    bf16 = use_bf16(recipe, device)
    smooth = recipe.label_smoothing
    part = (distributed.rank(), distributed.world())

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb, yb = norm(recipe.augment(x_uint8[idx].float() / 255, recipe.size, part)), y[idx]
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


def evaluate(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, norm: Normalise,
             batch_size: int = 128) -> float:
    """Accuracy of ``model`` (already in eval mode) on uint8 images; in a
    process group each process scores its share and the counts are summed."""
    x_uint8, y = distributed.shard(x_uint8), distributed.shard(y)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x_uint8), batch_size):
            logits = model(norm(x_uint8[i:i + batch_size].float() / 255))
            correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    correct, total = distributed.all_sum([correct, len(x_uint8)])
    return correct / max(1, total)


def fit(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, recipe: Recipe, epochs: int, norm: Normalise,
        after_epoch: EpochHook, desc: str, progress: bool, time_budget: float | None = None,
        ema: Any = None) -> int:
    """Train the classifier on uint8 images ``x_uint8`` (kept on the device)
    with labels ``y``; see :func:`run_schedule` (``model`` is what the
    training forward passes go through: :func:`distributed.wrap`'s)."""
    np.random.seed(recipe.seed)  # mix_batch's blend weights and boxes
    return run_schedule(model, len(x_uint8), classification_loss(model, x_uint8, y, recipe, norm), recipe,
                        epochs, after_epoch, desc, progress, time_budget, ema)


@dataclass
class Result:
    classes: list[str]
    valid_acc: float | None          # None: no validation split (valid_frac 0)
    epochs_run: int
    train_seconds: float             # pretraining included
    load_seconds: float
    images_per_second: float
    history: list[dict]
    device: str
    pretrain_seconds: float = 0.0    # synthetic rendering and pretraining
    n_train: int = 0
    n_valid: int = 0
    model: Any = field(repr=False, default=None)


def train(data_dir: str | Path, recipe: Recipe, progress: bool = True, log_epochs: bool = True) -> Result:
    """Train a ResNet-9 from scratch on ``data_dir`` following ``recipe``;
    ``progress``: a progress bar, ``log_epochs``: a line per epoch (rank 0
    alone shows them). Under torchrun, trains with the other processes
    (:mod:`bbc1k.train.distributed`); every process gets the same result."""
    torch.manual_seed(recipe.seed)
    device = distributed.setup(pick_device())
    limit_cpu_threads(device)
    say = tqdm.write if log_epochs and distributed.is_main() else (lambda line: None)

    start = time.perf_counter()
    classes, paths, labels = find_images(data_dir)
    train_idx, valid_idx = stratified_split(labels, recipe.valid_frac, recipe.split_seed)
    store = (round(recipe.size[0] * recipe.store_scale), round(recipe.size[1] * recipe.store_scale))
    x_train = load_images([paths[i] for i in train_idx], store).to(device)
    x_valid = load_images([paths[i] for i in valid_idx], recipe.size).to(device)
    y_train = torch.from_numpy(labels[train_idx]).to(device)
    y_valid = torch.from_numpy(labels[valid_idx]).to(device)
    load_seconds = time.perf_counter() - start
    if not len(valid_idx):
        say(f"no validation split (valid_frac {recipe.valid_frac}): training on all "
            f"{len(train_idx)} photos, validation skipped")

    norm = Normalise.photos(device)
    model = ResNet9(len(classes), recipe.width).to(device).to(memory_format=torch.channels_last)
    ema = None
    if recipe.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True)
    tta = FlipAverage if recipe.tta else (lambda net: net)
    eval_model = tta(ema.module if ema is not None else model)
    net = distributed.wrap(model)
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
                say(f"synthetic epoch {epoch + 1:3d}  train loss {loss:.3f}  valid acc {acc:.3f}  "
                    f"{time.perf_counter() - t0:6.1f} s")

        seen += fit(net, x_syn.to(device), y_syn.to(device), recipe, recipe.synthetic_epochs, norm,
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
        say(f"epoch {epoch + 1:3d}  train loss {loss:.3f}  valid acc {shown}  {elapsed:6.1f} s")

    seen += fit(net, x_train, y_train, recipe, recipe.epochs, norm, report, "training", progress,
                time_budget=recipe.time_budget, ema=ema)
    train_seconds = time.perf_counter() - t0
    return Result(classes=classes, valid_acc=history[-1]["valid_acc"], epochs_run=len(history),
                  train_seconds=train_seconds, load_seconds=load_seconds,
                  images_per_second=seen / train_seconds, history=history, device=str(device),
                  pretrain_seconds=pretrain_seconds, n_train=len(train_idx), n_valid=len(valid_idx),
                  model=eval_model)


def export(result: Result, recipe: Recipe, out_dir: str | Path, name: str) -> Path:
    """Write ``out_dir/name.onnx`` with its bbc1k description."""
    h, w = recipe.size
    facts = {k: v for k, v in asdict(recipe).items() if k != "augment"}
    facts.update(augment=asdict(recipe.augment), architecture=f"resnet9(width={recipe.width})",
                 pretrained=False, valid_acc=result.valid_acc, epochs_run=result.epochs_run,
                 train_seconds=round(result.train_seconds, 1), device=result.device,
                 pretrain_seconds=round(result.pretrain_seconds, 1),
                 n_train=result.n_train, n_valid=result.n_valid, trainer=TRAINER)
    meta = ModelMeta(task="classify", name=name, classes=list(result.classes), input_size=[h, w],
                     mean=list(PHOTO_MEAN), std=list(PHOTO_STD), resize="squish",
                     outputs=[{"name": "logits", "kind": "class_logits", "shape": ["N", len(result.classes)]}],
                     extra=facts)
    sample = torch.rand(2, 3, h, w)
    return export_onnx(result.model.float(), meta, Path(out_dir) / f"{name}.onnx", sample)


def onnx_accuracy(onnx_path: str | Path, data_dir: str | Path) -> tuple[float, int]:
    """Accuracy of an exported model on a folder of class subfolders, through
    ONNX Runtime with the app's own preprocessing (bbc1k.serving):
    ``(accuracy, number of images)``. Class folders are matched by name, and
    the scores are the output whose kind is ``class_logits``, found by name in
    the model's metadata (a model may put another output first)."""
    from bbc1k.serving.runtime import open_session  # ONNX Runtime: only this check needs it

    meta = read_onnx_meta(str(onnx_path))
    logits_out = meta.output("class_logits")
    if logits_out is None:
        raise ValueError(f"{onnx_path}: no output of kind 'class_logits' among "
                         f"{[(o.name, o.kind) for o in meta.outputs]}")
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
        (logits,) = session.run([logits_out.name], {meta.input_name: x[None]})
        correct += meta.classes[int(logits[0].argmax())] == classes[label]
    return correct / len(paths), len(paths)
