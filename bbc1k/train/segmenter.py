"""Train a segmenter from random weights, fast, and export it as ONNX.

The classification recipe's ideas (:mod:`bbc1k.train.classifier`) applied to
masks: images and masks decoded once into memory, the same random affine
warp applied to both on whole batches (bilinear for the photo, nearest for
the mask), a small U-Net, one-cycle AdamW, bfloat16 where the chip has it,
and mirror averaging built into the exported graph.

Why not lesson 03's networks offline: from random weights a resnet18 body
with a transposed-convolution head, after 6 CPU epochs at 96 px, still calls
every pixel background (objects cover about 7% of a picture). A network a
hundred times smaller, with skip connections and a loss that weighs the rare
object pixels up, learns the masks in the same time.

Real photos carry a class label, not a mask. Given a folder of them
(``photos``), every step also sees some. By default the U-Net has an image
head (:class:`bbc1k.nets.UNet`): its decoder says where the object is, a
head on its deepest features names the picture's class, and the photos go
through the encoder and the head only, trained by their labels. The
synthetic masks teach where an object is, the photos what a real one looks
like. The decoder stops at half resolution (``half_res``), which leaves the
budget more epochs, and each step sees twice as many photos as masked
images (``photo_share`` 2.0). In the main job's 150 s on 2 CPU cores, the
masks of 120 held-out real photos named their class on 89.2-92.5% of them
(five runs, mean 90.2%), against 61% trained on the synthetic masks alone, and
85-90% (four runs) with the full-resolution decoder and as many photos as
masked images; the synthetic masks fit less well than without photos (mean
IoU 0.67-0.70 in 15-20 epochs, against 0.76 in 22).
Without the head, :func:`weak_label_loss` asks each photo's mask to show an
object of its class instead; it measured worse (52% against 57%).

Given a trained classifier (``classifier``: the weights ``bbc1k train
classifier`` writes beside its ONNX), the exported segmenter names its
object with that classifier's verdict instead of the head's
(:class:`bbc1k.nets.NamedByClassifier`, both networks in one graph): the
head still trains, for it teaches the encoder what real objects look like,
but a network trained on the photos for that alone names them better (a
segmenter trained as the main job trains it, 150 s on an AVX2-only CPU: its
masks named the class of 89.2% of the 120 held-out photos by the
classifier, 86.7% by its head), and the app's classification and mask then
agree. The detector keeps the head (its box needs only where the object is).
Averaging the head's and the classifier's probabilities names no better:
split seed 1, folds 0-1 (the classifier 48 epochs, the segmenter 150 s):
91.7%, 89.2% against the classifier's 93.3%, 95.8% (the head: 75.0%, 85.0%).

The first convolution starts as a whitening of the images' 3x3 patches
(:func:`bbc1k.nets.whiten_first_conv`), as in the classifier.

The data is a bbc1k dataset (images/, masks/, classification_labels.csv; see
README). The model is written in the bbc1k model format, task ``segment``,
classes in mask order; :func:`export_detector` also writes a ``detect`` model
whose box is the tight box of the main object's predicted pixels that
make up one blob (:func:`bbc1k.nets.boxes_from_mask_logits`). Both hold an
object in every picture (:class:`bbc1k.nets.OneObject`): where the mask
would be empty, the segmenter's most object-like pixels make it; the
validation figures (mean IoU, box IoU) are measured on them as exported.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bbc1k.export import export_onnx
from bbc1k.folders import check_classes
from bbc1k.layout import MASK_CLASSES
from bbc1k.modelmeta import PHOTO_MEAN, PHOTO_STD, ModelMeta, OutputSpec
from bbc1k.nets import (WHITEN_IMAGES, BoxFromMask, MaskFlipAverage, NamedByClassifier, OneObject, UNet, box_iou,
                        tight_boxes, whiten_first_conv)
from bbc1k.train import checkpoint, distributed
from bbc1k.train.augment import Augment, draw_indices, warp_pair
from bbc1k.train.data import DatasetError, find_images, load_images, load_segmentation_set, stratified_split
from bbc1k.train.device import limit_cpu_threads, pick_device, use_bf16
from bbc1k.train.schedule import Normalise, run_schedule

TRAINER = "bbc1k.train.segmenter"
"""What the exported models' metadata names as their trainer."""

DEFAULT_EPOCHS = 60
"""Epochs without a time budget."""

# Loss weight of an object pixel against a background one: objects are rare,
# and without this a young network's easiest answer is "all background".
OBJECT_WEIGHT = 4.0


@dataclass
class SegRecipe:
    """Everything that decides the result; saved in the model's metadata."""

    size: tuple[int, int] = (96, 128)  # (H, W), multiples of 8: the U-Net halves them three times
    store_scale: float = 1.25
    width: int = 16
    epochs: int | None = None          # None: as many as the time budget holds, else DEFAULT_EPOCHS
    batch_size: int = 16
    lr: float = 3e-3
    optimizer: str = "adamw"           # read by make_optimizer, as are weight_decay and momentum
    momentum: float = 0.9
    weight_decay: float = 0.01
    warmup: float = 0.2
    seed: int = 0
    valid_frac: float = 0.2            # 0: train on everything, no validation
    split_seed: int = 0
    time_budget: float | None = None
    precision: str = "auto"
    photos: str | None = None          # a folder of class subfolders (brick/, ball/, cylinder/): real photos
                                       # with a class label only, for the image head (or a weak target without it)
    photo_share: float | None = None   # photos per step, as a share of the batch of masked images; None: the
                                       # share measured best, 2.0 with the image head, 0.5 without (photos decoded too)
    photo_weight: float = 0.5          # weight of the photos' loss
    whiten: bool = True                # the first convolution starts as a whitening of the images' 3x3 patches
    image_head: bool = True            # the picture's class from a head of its own (UNet's ``image_head``)
    half_res: bool = True              # the decoder stops at half resolution (UNet's ``half_res``)
    classifier: str | None = None      # weights of a trained classifier (bbc1k.train.checkpoint) that names the
                                       # mask's object in the exported segmenter instead of the image head
    augment: Augment = field(default_factory=lambda: Augment(min_scale=0.5))

    def __post_init__(self) -> None:
        if self.photo_share is None:
            self.photo_share = 2.0 if self.image_head else 0.5


def weak_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """What a class label alone says about a photo's mask: its object is of
    that class. Each object class is scored by its mean probability on the
    1% of pixels where it is likeliest (the smallest objects in the photos
    cover about that much, so no object is asked to grow); the label's class must win among the object classes (a
    cross-entropy over their scores) and claim its pixels outright (its
    score near 1). ``logits``: N x C x H x W, class 0 background;
    ``labels``: mask class indices 1..C-1."""
    scores = logits.float().softmax(1)[:, 1:].flatten(2)
    k = max(1, scores.shape[-1] // 100)
    scores = scores.topk(k, dim=-1).values.mean(-1)
    share = scores / scores.sum(1, keepdim=True).clamp_min(1e-6)
    target = (labels - 1)[:, None]
    return -(torch.log(share.gather(1, target) + 1e-6) + torch.log(scores.gather(1, target) + 1e-6)).mean()


def iou_per_class(model: nn.Module, x_uint8: torch.Tensor, masks: torch.Tensor, norm: Normalise, n_classes: int,
                  batch_size: int = 32) -> list[float]:
    """Intersection over union of each class over a whole set (NaN: class
    absent); in a process group each process counts its share, the counts are summed."""
    x_uint8, masks = distributed.shard(x_uint8), distributed.shard(masks)
    inter, union = np.zeros(n_classes), np.zeros(n_classes)
    with torch.no_grad():
        for i in range(0, len(x_uint8), batch_size):
            pred = model(norm(x_uint8[i:i + batch_size].float() / 255)).argmax(1)
            truth = masks[i:i + batch_size]
            for c in range(n_classes):
                inter[c] += ((pred == c) & (truth == c)).sum().item()
                union[c] += ((pred == c) | (truth == c)).sum().item()
    if distributed.world() > 1:
        counts = distributed.all_sum([*inter, *union])
        inter, union = np.array(counts[:n_classes]), np.array(counts[n_classes:])
    return [float(a / b) if b else float("nan") for a, b in zip(inter, union)]


@dataclass
class SegResult:
    classes: list[str]
    class_iou: list[float]
    epochs_run: int
    train_seconds: float
    device: str
    box_iou: float = float("nan")    # mean IoU of BoxFromMask's boxes with the masks' tight boxes
    n_train: int = 0
    n_valid: int = 0                 # 0: no validation split, so no IoU figures
    model: Any = field(repr=False, default=None)     # the segmenter, its mask named by its image head, never
                                                     # empty (OneObject): what the detector boxes
    segmenter: Any = field(repr=False, default=None)  # what the segmenter export writes: ``model``, or
                                                      # its mask named by the recipe's classifier
    sample: Any = field(repr=False, default=None)  # a few normalised validation images

    @property
    def mean_iou(self) -> float:
        with warnings.catch_warnings():  # all NaN (no validation): NaN, without numpy's warning
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(self.class_iou))


def train(dataset: str | Path, rec: SegRecipe, log: bool = True) -> SegResult:
    """Train the small U-Net on a bbc1k dataset following ``rec``; under
    torchrun, with the other processes (:mod:`bbc1k.train.distributed`;
    rank 0 alone prints)."""
    torch.manual_seed(rec.seed)
    device = distributed.setup(pick_device())
    limit_cpu_threads(device)
    show = log and distributed.is_main()
    store = (round(rec.size[0] * rec.store_scale), round(rec.size[1] * rec.store_scale))
    x_all, m_all, labels = load_segmentation_set(dataset, store)
    train_idx, valid_idx = stratified_split(labels, rec.valid_frac, rec.split_seed)
    x_train, m_train = x_all[train_idx].to(device), m_all[train_idx].to(device)
    # validation at the network's input size
    small = lambda t, mode: F.interpolate(t, size=rec.size, mode=mode)  # noqa: E731
    x_valid = small(x_all[valid_idx].float(), "bilinear").round().to(torch.uint8).to(device)
    m_valid = small(m_all[valid_idx][:, None].float(), "nearest")[:, 0].long().to(device)
    validate = len(valid_idx) > 0
    if show and not validate:
        print(f"no validation split (valid_frac {rec.valid_frac}): training on all {len(train_idx)} images, "
              "validation skipped", flush=True)

    classes = list(MASK_CLASSES)
    namer = _namer(rec, classes)  # before training: a wrong file costs no training time
    norm = Normalise.photos(device)
    model = UNet(len(classes), rec.width, rec.image_head, rec.half_res)
    if rec.whiten:  # before DDP wraps the model: every process computes it from the same images
        whiten_first_conv(model.down[0][0], norm(x_train[:WHITEN_IMAGES].float() / 255), rec.seed)
    model = model.to(device).to(memory_format=torch.channels_last)
    weight = torch.tensor([1.0] + [OBJECT_WEIGHT] * (len(classes) - 1), device=device)
    bf16 = use_bf16(rec, device)
    net, part = distributed.wrap(model), (distributed.rank(), distributed.world())

    photos = _labelled_photos(rec, store, device)
    gen = torch.Generator(device="cpu").manual_seed(rec.seed + 1)  # the same draws in every process

    def batch_loss(idx: torch.Tensor, progress: float) -> torch.Tensor:
        xb, mb = warp_pair(rec.augment, x_train[idx].float() / 255, m_train[idx], rec.size, part)
        n = round(len(idx) * rec.photo_share) if photos is not None else 0
        if n:
            drawn = draw_indices(gen, len(photos[0]), n, part).to(device)
            xp = rec.augment(photos[0][drawn].float() / 255, rec.size, part)
            xb = torch.cat([xb, xp])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if n and rec.image_head:  # the photos only through the encoder and the head
                logits, named = net(norm(xb), masked=len(idx))
                photo_loss = F.cross_entropy(named[len(idx):].float(), photos[1][drawn] - 1)
            else:
                logits = net(norm(xb))
                photo_loss = weak_label_loss(logits[len(idx):], photos[1][drawn]) if n else 0.0
            return F.cross_entropy(logits[:len(idx)], mb, weight=weight) + rec.photo_weight * photo_loss

    epochs_run = 0

    def report(epoch: int, loss: float, last: bool) -> None:
        nonlocal epochs_run
        epochs_run = epoch + 1
        if log and (last or epochs_run % 5 == 0):  # every process validates: the counts are summed
            shown = f"{np.nanmean(iou_per_class(model, x_valid, m_valid, norm, len(classes))):.3f}" if validate else "-"
            if show:
                print(f"epoch {epochs_run:3d}  train loss {loss:.3f}  valid mean IoU {shown}  "
                      f"{time.perf_counter() - t0:6.1f} s", flush=True)

    t0 = time.perf_counter()
    epochs = rec.epochs if rec.epochs is not None or rec.time_budget else DEFAULT_EPOCHS
    run_schedule(net, len(x_train), batch_loss, rec, epochs, report, time_budget=rec.time_budget)
    train_seconds = time.perf_counter() - t0
    final = MaskFlipAverage(model).eval()
    # Validated as exported: every bbc1k picture holds one object, so no mask is left empty.
    unnamed = OneObject(final).eval()
    named = unnamed if namer is None else OneObject(namer(final).to(device)).eval()
    nan = float("nan")
    ious = iou_per_class(named, x_valid, m_valid, norm, len(classes)) if validate else [nan] * len(classes)
    boxes = nan
    if validate:
        x_mine, m_mine = distributed.shard(x_valid), distributed.shard(m_valid)
        with torch.no_grad():
            predicted = [BoxFromMask(unnamed)(norm(x_mine[i:i + 32].float() / 255)) for i in range(0, len(x_mine), 32)]
        each = box_iou(torch.cat(predicted), tight_boxes((m_mine > 0).float())) if predicted else torch.zeros(0)
        if distributed.world() > 1:
            total, count = distributed.all_sum([each.sum().item(), len(each)])
            boxes = total / count
        else:
            boxes = each.mean().item()
    sample = norm(x_valid[:4].float() / 255).cpu() if validate else None
    return SegResult(classes=classes, class_iou=ious, epochs_run=epochs_run, train_seconds=train_seconds,
                     device=str(device), box_iou=boxes, n_train=len(train_idx), n_valid=len(valid_idx),
                     model=unnamed, segmenter=named, sample=sample)


def _namer(rec: SegRecipe, classes: list[str]) -> Callable[[nn.Module], nn.Module] | None:
    """What names a trained segmenter's mask by ``rec.classifier``
    (:class:`NamedByClassifier`), or None without one. Raises
    :class:`DatasetError` when the classifier's classes are not the masks' object classes."""
    if not rec.classifier:
        return None
    if not rec.image_head:
        raise DatasetError("a classifier names the object the image head would name: it needs image_head")
    loaded = checkpoint.load(rec.classifier)
    objects = classes[1:]
    if sorted(loaded.classes) != sorted(objects):
        raise DatasetError(f"{rec.classifier}: the classifier knows {', '.join(loaded.classes)}; "
                           f"the masks' objects are {', '.join(objects)}")
    order = [loaded.classes.index(c) for c in objects]
    return lambda masks: NamedByClassifier(masks, loaded.network, order, loaded.size)


def _labelled_photos(rec: SegRecipe, store: tuple[int, int],
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``rec.photos`` as (uint8 images, mask class indices) on the device, or None."""
    if not rec.photos:
        return None
    classes, paths, labels = find_images(rec.photos)
    check_classes(rec.photos, classes, list(MASK_CLASSES[1:]), "the mask classes")
    to_mask = torch.tensor([MASK_CLASSES.index(c) for c in classes])
    return load_images(paths, store).to(device), to_mask[torch.from_numpy(labels)].to(device)


def _measured(value: float, result: SegResult) -> float | None:
    """A validation figure for the metadata, None without validation."""
    return round(value, 4) if result.n_valid else None


def export(result: SegResult, rec: SegRecipe, out_dir: str | Path, name: str) -> Path:
    """Write ``out_dir/name.onnx`` with its bbc1k description."""
    h, w = rec.size
    facts = {k: v for k, v in asdict(rec).items() if k != "augment"}
    architecture = f"small U-Net (width={rec.width})" + ("; its object named by the classifier (ResNet-9) of "
                                                          f"{Path(rec.classifier).name}" if rec.classifier else "")
    facts.update(augment=asdict(rec.augment), architecture=architecture, pretrained=False,
                 object_weight=OBJECT_WEIGHT, epochs_run=result.epochs_run,
                 train_seconds=round(result.train_seconds, 1), device=result.device,
                 mean_iou=_measured(result.mean_iou, result),
                 class_iou={c: _measured(v, result) for c, v in zip(result.classes, result.class_iou)},
                 n_train=result.n_train, n_valid=result.n_valid, trainer=TRAINER)
    meta = ModelMeta(task="segment", name=name, classes=result.classes, input_size=[h, w],
                     mean=list(PHOTO_MEAN), std=list(PHOTO_STD), resize="squish",
                     outputs=[{"name": "mask", "kind": "mask_logits", "shape": ["N", len(result.classes), h, w]}],
                     extra=facts)
    return export_onnx(result.segmenter.float().cpu(), meta, Path(out_dir) / f"{name}.onnx", torch.rand(2, 3, h, w))


def export_detector(result: SegResult, rec: SegRecipe, out_dir: str | Path, name: str) -> Path:
    """Write ``out_dir/name.onnx``, task ``detect``: :class:`BoxFromMask` of
    the trained segmenter, checked on validation images (on random noise the
    main class would hang on near-ties)."""
    h, w = rec.size
    meta = ModelMeta(task="detect", name=name, classes=[c for c in result.classes if c != "background"],
                     input_size=[h, w], mean=list(PHOTO_MEAN), std=list(PHOTO_STD), resize="squish",
                     outputs=[OutputSpec("box", "box", ["N", 4], box_format="xyxy", box_range=[-1.0, 1.0])],
                     extra={"architecture": f"small U-Net (width={rec.width}); box: tight box of the main object's "
                                            "predicted pixels, its surest blob", "pretrained": False,
                            "box_iou": _measured(result.box_iou, result), "epochs_run": result.epochs_run,
                            "trainer": TRAINER})
    sample = result.sample if result.sample is not None else torch.rand(2, 3, h, w)
    return export_onnx(BoxFromMask(result.model.float().cpu()), meta, Path(out_dir) / f"{name}.onnx", sample)
