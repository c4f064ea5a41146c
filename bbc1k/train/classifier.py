"""Train an image classifier from random weights, fast, and export it as ONNX.

No ImageNet: every weight starts random. What makes that work on a few
hundred photos in minutes on a laptop CPU:

- the photos are decoded ONCE, at low resolution, into a uint8 tensor in
  memory, so an epoch never touches the disk (:mod:`bbc1k.train.data`);
- augmentation on the whole batch as tensor maths (crops, flips, rotations,
  colour), so the small data looks new every epoch (:mod:`bbc1k.train.augment`);
- a small residual network (Page's ResNet-9, 16 channels wide, pooling
  before BatchNorm as airbench does), trained for many short epochs with a
  one-cycle learning rate, AdamW and label smoothing, the schedule on the
  clock, filling the time budget (:class:`bbc1k.nets.ResNet9`, :mod:`bbc1k.train.schedule`);
- its first layer starts as a whitening of the photos' 3x3 patches and
  stays fixed (as in Keller Jordan's airbench): three points better in
  5-fold cross-validation (:func:`bbc1k.nets.whiten_first_conv`);
- when the classes are bbc1k's, synthetic pictures (:mod:`bbc1k.synth`,
  rendered in a few seconds) fill a share of every batch: more views of the
  three shapes than a few hundred photos hold;
- optionally an ensemble, its logits averaged in one graph (:class:`bbc1k.nets.Ensemble`);
- bfloat16 where the chip has it natively (GPUs, CPUs with AMX or
  AVX512-BF16): half the time of a CPU epoch (:mod:`bbc1k.train.device`);
- test-time augmentation (the mean of the image and its mirror), built into
  the exported graph so the app gets exactly the accuracy printed here
  (:class:`bbc1k.nets.FlipAverage`).

The data is a folder with one subfolder of images per class (class names =
subfolder names, sorted). A seeded stratified split (``valid_frac``,
``split_seed``) keeps part of it for validation, the same split for every
run, or ``fold`` holds out one fold of a ``folds``-fold split (for
cross-validation: ``python -m bench.recipe_cv``); ``valid_frac`` 0 trains
on everything. The model is written in the bbc1k model format (docs/model-format.md).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bbc1k.export import export_onnx
from bbc1k.modelmeta import PHOTO_MEAN, PHOTO_STD, ModelMeta
from bbc1k.nets import WHITEN_IMAGES, Ensemble, FlipAverage, ResNet9, whiten_first_conv
from bbc1k.train import distributed
from bbc1k.train.augment import Augment, draw_indices, mix_batch
from bbc1k.train.data import DatasetError, find_images, load_images, render_synthetic, split_indices
from bbc1k.train.device import limit_cpu_threads, pick_device, use_bf16
from bbc1k.train.schedule import EpochHook, Normalise, run_schedule

DEFAULT_EPOCHS = 110
"""Epochs without a time budget: far more than with pretrained weights, since random weights learn slowly."""
SYNTHETIC_PER_PHOTO = 2
"""Synthetic pictures rendered per training photo when the recipe does not say how many."""

TRAINER = "bbc1k.train.classifier"
"""What the exported model's metadata names as its trainer."""


@dataclass
class Recipe:
    """Everything that decides the result; saved in the model's metadata."""

    size: tuple[int, int] = (96, 128)  # (H, W), 4:3 as the photos. 5-fold CV: 120x160 89.5% vs 92.0% (270 s,
                                       # 39-53 epochs, not ~77); 72x96 90.2% vs 91.3% (240 s, AVX2: 85-89, not 48-53;
                                       # tested at 96x128 instead, folds 0-1: 88.3%, 86.7%, not 91.7%, 91.7%)
    test_scale: float = 1.0            # validated and exported at this many times ``size``. With the whitened
                                       # first layer 1.0 measured best (5-fold CV on 600 photos, same models:
                                       # 95.2% mean against 94.3% at 1.15); without it, 1.15 (92.0% against
                                       # 90.7% at 1.0, 91.3% at 1.3; four shifted crops averaged in: 91.8%)
    store_scale: float = 1.25          # photos are kept this much larger than the input, for crops
    width: int = 16                    # with pooling first, 48-53 epochs in 240 s on a 2-core AVX2 CPU, not 21-25
                                       # at 24 (5-fold CV at 240 s there: 91.3% mean, 87.5% min; 82.7%, 79.2%)
    epochs: int | None = None          # None: as many as the time budget holds, else DEFAULT_EPOCHS
    batch_size: int = 32               # 16 (twice the steps, 4% fewer images/s): folds 0-1 91.7%, 91.7% (240 s, AVX2)
    optimizer: str = "adamw"           # "adamw" or "sgd" (Nesterov; lr 0.05, decay 5e-4 there: 90.8%, 91.7%)
    lr: float = 3e-3                   # peak of the one-cycle schedule
    momentum: float = 0.9              # SGD only
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup: float = 0.25               # fraction of training spent raising the learning rate
    tta: bool = True                   # mirror averaged in; closer looks too (bench.recipe_cv --zoom-crops): +0.3 pt
    # Not used by default (bench.recipe_sweep, H100, 3 seeds): cutmix lost 3 points, mixup 0.6, EMA 0.3.
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
    fold: int | None = None            # hold out this fold of a stratified ``folds``-fold split instead
    folds: int = 5
    time_budget: float | None = None   # seconds of training on the data; the schedule fits into it
    synthetic: int | None = None       # synthetic pictures (bbc1k.synth) to train with; None: SYNTHETIC_PER_PHOTO
                                       # per training photo when the classes are bbc1k's; 0: none
    synthetic_mix: float = 0.25        # share of each batch drawn from the synthetic pictures (240 s, AVX2 CPU,
                                       # folds 0-3: 92.3%; none 89.2%, 68-74 epochs; 0.4, fold 0: 90.8% vs 93.3%;
                                       # only in the first half of training, fold 0: 88.3%)
    synthetic_epochs: int = 0          # epochs on the synthetic pictures alone, first
    progressive: float = 1.0           # input size at the start of training, as a fraction of ``size``,
                                       # growing to ``size`` by ``progressive_end`` of the schedule: early
                                       # epochs at low resolution cost less, so more epochs fit the budget
                                       # (0.6 in 5-fold CV: 82 to 91 epochs, 91.7% mean and 87.5% min
                                       # against 92.0% and 89.2%; not the default)
    progressive_end: float = 0.75
    whiten: bool = True                # start the first convolution as a whitening of the photos' 3x3
                                       # patches (as airbench does), and keep it fixed (5-fold CV on 600
                                       # photos: 95.2% mean, 92.5% min, against 92.0% and 89.2% without)
    ensemble: int = 1                  # networks trained one after the other, their logits averaged (2 in
                                       # one budget: 89.2% on fold 0 against 93.3% for one; each learns half)
    augment: Augment = field(default_factory=Augment)  # airbench's alternating flips and identity-initialised
                                       # convs: 91.7%, 90.8% (split seed 1, folds 0-1, 48 epochs), not 93.3%, 95.8%


def classification_loss(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, recipe: Recipe,
                        norm: Normalise, synthetic: Pictures | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``batch_loss(indices, progress)`` for :func:`run_schedule`: augment the batch at
    :func:`input_size` for that progress (``recipe.synthetic_mix`` of it drawn from the
    ``synthetic`` pictures, when given), mix it when asked, label-smoothed cross-entropy
    (bfloat16 where native). ``model``: what the training forward passes go through (in a
    process group, the DistributedDataParallel wrapper). Mixup and CutMix pair photos
    within each process's share of a batch."""
    device = x_uint8.device
    bf16 = use_bf16(recipe, device)
    smooth = recipe.label_smoothing
    part = (distributed.rank(), distributed.world())
    gen = torch.Generator(device="cpu").manual_seed(recipe.seed + 1)  # the same draws in every process

    def batch_of(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = x_uint8[idx], y[idx]
        if synthetic is not None and recipe.synthetic_mix > 0:
            n = round(len(idx) * recipe.synthetic_mix / (1 - recipe.synthetic_mix))
            drawn = draw_indices(gen, len(synthetic.x), n, part).to(device)
            xb, yb = torch.cat([xb, synthetic.x[drawn]]), torch.cat([yb, synthetic.y[drawn]])
        return xb, yb

    def batch_loss(idx: torch.Tensor, progress: float) -> torch.Tensor:
        xb, yb = batch_of(idx)
        xb = norm(recipe.augment(xb.float() / 255, input_size(recipe, progress), part))
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


def fit(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, recipe: Recipe, epochs: int | None,
        norm: Normalise, after_epoch: EpochHook, desc: str, progress: bool, time_budget: float | None = None,
        ema: Any = None, synthetic: Pictures | None = None) -> int:
    """Train on uint8 images ``x_uint8`` (on the device) with labels ``y``, ``synthetic`` pictures
    in each batch when given; see :func:`run_schedule` (``model``: :func:`distributed.wrap`'s)."""
    np.random.seed(recipe.seed)  # mix_batch's blend weights and boxes
    return run_schedule(model, len(x_uint8), classification_loss(model, x_uint8, y, recipe, norm, synthetic),
                        recipe, epochs, after_epoch, desc, progress, time_budget, ema)


@dataclass
class Pictures:
    """uint8 images N x 3 x H x W and their label indices, on the training device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Result:
    classes: list[str]
    valid_acc: float | None          # None: no validation split (valid_frac 0)
    epochs_run: int                  # over all the ensemble's networks
    train_seconds: float             # synthetic rendering and pretraining included
    load_seconds: float
    images_per_second: float
    history: list[dict]
    device: str
    pretrain_seconds: float = 0.0    # synthetic rendering and pretraining
    n_train: int = 0
    n_valid: int = 0
    n_synthetic: int = 0
    model: Any = field(repr=False, default=None)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``size`` at scale 1, else ``scale`` times it in multiples of 8 (few distinct
    sizes, so kernels are reused; the network's global pooling takes any size)."""
    if scale == 1:
        return tuple(size)
    return tuple(max(8, round(side * scale / 8) * 8) for side in size)


def input_size(recipe: Recipe, progress: float) -> tuple[int, int]:
    """(H, W) of the training input at ``progress`` (0..1) of the schedule:
    from ``progressive`` times ``size`` up to ``size`` by ``progressive_end``."""
    grown = min(1.0, progress / max(recipe.progressive_end, 1e-6))
    scale = min(1.0, recipe.progressive + (1 - recipe.progressive) * grown)
    return tuple(min(side, s) for side, s in zip(recipe.size, _scaled(recipe.size, scale)))


def test_size(recipe: Recipe) -> tuple[int, int]:
    """(H, W) the trained network is validated and exported at: ``size`` times ``test_scale``."""
    return _scaled(recipe.size, recipe.test_scale)


def synthetic_count(recipe: Recipe, classes: list[str], n_train: int) -> int:
    """How many synthetic pictures to render: ``recipe.synthetic``, or when
    that is None, ``SYNTHETIC_PER_PHOTO`` per training photo if the classes
    are bbc1k's (the generator draws nothing else), else none."""
    from bbc1k.layout import OBJECT_CLASSES

    fits = set(classes) <= set(OBJECT_CLASSES)
    if recipe.synthetic is None:
        return SYNTHETIC_PER_PHOTO * n_train if fits else 0
    if recipe.synthetic and not fits:
        raise DatasetError(f"synthetic pictures show only {', '.join(OBJECT_CLASSES)}; "
                           f"the data has classes {', '.join(classes)}")
    return recipe.synthetic


@dataclass
class _Run:
    """What every network of an ensemble trains and is validated on."""

    train: Pictures
    valid: Pictures
    synthetic: Pictures | None
    norm: Normalise
    say: Callable[[str], None]
    progress: bool
    log_epochs: bool
    t0: float


def _train_member(k: int, run: _Run, recipe: Recipe, n_classes: int, time_budget: float | None,
                  history: list[dict]) -> tuple[nn.Module, int]:
    """Network ``k`` of the ensemble (its own seed): synthetic pretraining
    when asked, then training on the photos, synthetic pictures mixed in.
    Returns the network to evaluate (its flip average, its EMA's when
    asked) and the number of pictures seen."""
    recipe = replace(recipe, seed=recipe.seed + k)
    torch.manual_seed(recipe.seed)
    device = run.train.x.device
    model = ResNet9(n_classes, recipe.width).to(device).to(memory_format=torch.channels_last)
    if recipe.whiten:
        whiten_first_conv(model[0][0], run.norm(run.train.x[:WHITEN_IMAGES].float() / 255), recipe.seed)
    ema = None
    if recipe.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True)
    tta = FlipAverage if recipe.tta else (lambda net: net)
    eval_model = tta(ema.module if ema is not None else model)
    net = distributed.wrap(model)
    tag = f"net {k + 1}/{recipe.ensemble} " if recipe.ensemble > 1 else ""
    seen, began = 0, time.perf_counter()
    if run.synthetic is not None and recipe.synthetic_epochs:
        def report_synthetic(epoch: int, loss: float, last: bool) -> None:
            if run.log_epochs:
                acc = evaluate(tta(model), run.valid.x, run.valid.y, run.norm) if len(run.valid) else float("nan")
                run.say(f"{tag}synthetic epoch {epoch + 1:3d}  train loss {loss:.3f}  valid acc {acc:.3f}  "
                        f"{time.perf_counter() - run.t0:6.1f} s")

        seen += fit(net, run.synthetic.x, run.synthetic.y, recipe, recipe.synthetic_epochs, run.norm,
                    report_synthetic, "synthetic", run.progress)
        if time_budget:
            time_budget = max(1e-3, time_budget - (time.perf_counter() - began))

    def report(epoch: int, loss: float, last: bool) -> None:
        elapsed = round(time.perf_counter() - run.t0, 2)
        row = {"net": k, "epoch": epoch + 1, "train_loss": loss, "valid_acc": None, "seconds": elapsed}
        history.append(row)
        if not (last or (epoch + 1) % max(1, recipe.eval_every) == 0):
            return
        eval_model.eval()
        row["valid_acc"] = evaluate(eval_model, run.valid.x, run.valid.y, run.norm) if len(run.valid) else None
        shown = f"{row['valid_acc']:.3f}" if row["valid_acc"] is not None else "-"
        run.say(f"{tag}epoch {epoch + 1:3d}  train loss {loss:.3f}  valid acc {shown}  {elapsed:6.1f} s")

    epochs = recipe.epochs if recipe.epochs is not None or time_budget else DEFAULT_EPOCHS
    seen += fit(net, run.train.x, run.train.y, recipe, epochs, run.norm, report, "training", run.progress,
                time_budget=time_budget, ema=ema, synthetic=run.synthetic)
    return eval_model, seen


def train(data_dir: str | Path, recipe: Recipe, progress: bool = True, log_epochs: bool = True) -> Result:
    """Train ``recipe.ensemble`` ResNet-9s from scratch on ``data_dir``
    following ``recipe``; ``progress``: a progress bar, ``log_epochs``: a
    line per epoch (rank 0 alone shows them). The time budget covers
    rendering the synthetic pictures and every network. Under torchrun,
    trains with the other processes (:mod:`bbc1k.train.distributed`);
    every process gets the same result."""
    torch.manual_seed(recipe.seed)
    device = distributed.setup(pick_device())
    limit_cpu_threads(device)
    say = tqdm.write if log_epochs and distributed.is_main() else (lambda line: None)

    start = time.perf_counter()
    classes, paths, labels = find_images(data_dir)
    train_idx, valid_idx = split_indices(labels, recipe.valid_frac, recipe.split_seed, recipe.fold, recipe.folds)
    store = (round(recipe.size[0] * recipe.store_scale), round(recipe.size[1] * recipe.store_scale))
    photos = Pictures(load_images([paths[i] for i in train_idx], store).to(device),
                      torch.from_numpy(labels[train_idx]).to(device))
    valid = Pictures(load_images([paths[i] for i in valid_idx], test_size(recipe)).to(device),
                     torch.from_numpy(labels[valid_idx]).to(device))
    load_seconds = time.perf_counter() - start
    if not len(valid_idx):
        say(f"no validation split (valid_frac {recipe.valid_frac}): training on all "
            f"{len(train_idx)} photos, validation skipped")

    t0 = time.perf_counter()
    n_syn = synthetic_count(recipe, classes, len(train_idx))
    synthetic = None
    if n_syn:
        x_syn, y_syn = render_synthetic(classes, n_syn, store, recipe.seed)
        synthetic = Pictures(x_syn.to(device), y_syn.to(device))
        say(f"rendered {n_syn} synthetic pictures in {time.perf_counter() - t0:.1f} s")
    pretrain_seconds = time.perf_counter() - t0
    run = _Run(photos, valid, synthetic, Normalise.photos(device), say, progress, log_epochs, t0)

    members, history, seen = [], [], 0
    for k in range(recipe.ensemble):
        budget = None
        if recipe.time_budget:  # what is left, shared fairly among the networks still to train
            budget = max(1e-3, (recipe.time_budget - (time.perf_counter() - t0)) / (recipe.ensemble - k))
        member, n = _train_member(k, run, recipe, len(classes), budget, history)
        members.append(member)
        seen += n
    model = members[0] if len(members) == 1 else Ensemble(members)
    model.eval()
    valid_acc = evaluate(model, valid.x, valid.y, run.norm) if len(valid_idx) else None
    if len(members) > 1:
        say(f"ensemble of {len(members)}: valid acc {valid_acc:.3f}" if valid_acc is not None
            else f"ensemble of {len(members)}")
    train_seconds = time.perf_counter() - t0
    return Result(classes=classes, valid_acc=valid_acc, epochs_run=len(history),
                  train_seconds=train_seconds, load_seconds=load_seconds,
                  images_per_second=seen / train_seconds, history=history, device=str(device),
                  pretrain_seconds=pretrain_seconds, n_train=len(train_idx), n_valid=len(valid_idx),
                  n_synthetic=n_syn, model=model)


def export(result: Result, recipe: Recipe, out_dir: str | Path, name: str) -> Path:
    """Write ``out_dir/name.onnx`` with its bbc1k description."""
    h, w = test_size(recipe)
    facts = {k: v for k, v in asdict(recipe).items() if k != "augment"}
    architecture = (f"{recipe.ensemble} x " if recipe.ensemble > 1 else "") + f"resnet9(width={recipe.width})"
    facts.update(augment=asdict(recipe.augment), architecture=architecture,
                 pretrained=False, valid_acc=result.valid_acc, epochs_run=result.epochs_run,
                 train_seconds=round(result.train_seconds, 1), device=result.device,
                 pretrain_seconds=round(result.pretrain_seconds, 1),
                 n_train=result.n_train, n_valid=result.n_valid, n_synthetic=result.n_synthetic,
                 trainer=TRAINER)
    meta = ModelMeta(task="classify", name=name, classes=list(result.classes), input_size=[h, w],
                     mean=list(PHOTO_MEAN), std=list(PHOTO_STD), resize="squish",
                     outputs=[{"name": "logits", "kind": "class_logits", "shape": ["N", len(result.classes)]}],
                     extra=facts)
    sample = torch.rand(2, 3, h, w)
    return export_onnx(result.model.float(), meta, Path(out_dir) / f"{name}.onnx", sample)


def onnx_accuracy(onnx_path: str | Path, data_dir: str | Path) -> tuple[float, int]:
    """Accuracy of an exported model on a folder of class subfolders, through
    ONNX Runtime with the app's own preprocessing (:mod:`bbc1k.photo_scores`):
    ``(accuracy, number of images)``. Class folders are matched by name, and
    the scores are the output whose kind is ``class_logits``, found by name in
    the model's metadata (a model may put another output first)."""
    from bbc1k.photo_scores import score_model

    score = score_model(onnx_path, data_dir, kind="class_logits")
    return score.accuracy, score.total
