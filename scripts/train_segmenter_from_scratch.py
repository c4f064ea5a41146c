"""Train a segmenter from random weights, fast, and export it as ONNX.

The classification recipe's ideas (scripts/train_from_scratch.py) applied to
masks: images and masks decoded once into memory, the same random affine
warp applied to both on whole batches (bilinear for the photo, nearest for
the mask), a small U-Net, one-cycle AdamW, bfloat16 where the chip has it,
and mirror averaging built into the exported graph.

Why not lesson 03's networks offline: from random weights a resnet18 body
with a transposed-convolution head, after 6 CPU epochs at 96 px, still calls
every pixel background (objects cover about 7% of a picture). A network a
hundred times smaller, with skip connections and a loss that weighs the rare
object pixels up, learns the masks in the same time.

Usage::

    python scripts/train_segmenter_from_scratch.py DATASET_DIR --out models/ [--name bbc-segmenter]
        [--time-budget 150] [--epochs 60] [--size 96 128] [--width 16]

DATASET_DIR is a bbc1k dataset (images/, masks/, classification_labels.csv;
see README). The model is written to ``OUT/NAME.onnx`` in the bbc1k model
format, task ``segment``, classes in mask order.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_from_scratch as recipe  # noqa: E402  (its neighbour in scripts/)

# Loss weight of an object pixel against a background one: objects are rare,
# and without this a young network's easiest answer is "all background".
OBJECT_WEIGHT = 4.0


@dataclass
class SegRecipe:
    """Everything that decides the result; saved in the model's metadata."""

    size: tuple[int, int] = (96, 128)  # (H, W), multiples of 8: the U-Net halves them three times
    store_scale: float = 1.25
    width: int = 16
    epochs: int = 60
    batch_size: int = 16
    lr: float = 3e-3
    optimizer: str = "adamw"           # read by the recipe's make_optimizer, as are weight_decay and momentum
    momentum: float = 0.9
    weight_decay: float = 0.01
    warmup: float = 0.2
    seed: int = 0
    valid_frac: float = 0.2
    split_seed: int = 0
    time_budget: float | None = None
    precision: str = "auto"
    augment: recipe.Augment = field(default_factory=lambda: recipe.Augment(min_scale=0.5))


def load_dataset(dataset: str | Path, store: tuple[int, int]) -> tuple[Any, Any, np.ndarray]:
    """``(images uint8 N x 3 x H x W, masks uint8 N x H x W, class labels)``
    of a bbc1k dataset, squished to ``store`` (H, W)."""
    import torch

    from bbc1k.layout import image_path, mask_path, read_labels

    rows = read_labels(dataset)
    if not rows:
        raise recipe.DatasetError(f"{dataset}: no labelled images")
    h, w = store

    def mask(row: Any) -> np.ndarray:
        path = mask_path(dataset, row.filename)
        if not path.is_file():
            raise recipe.DatasetError(f"{path}: missing (every image needs its mask)")
        return np.asarray(Image.open(path).resize((w, h), Image.Resampling.NEAREST), dtype=np.uint8)

    with ThreadPoolExecutor(2) as pool:
        images = list(pool.map(lambda r: recipe.load_image(image_path(dataset, r.filename), store), rows))
        masks = list(pool.map(mask, rows))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.stack(masks)), np.array([r.label_index for r in rows])


def augment_pair(aug: recipe.Augment, x01: Any, masks: Any, out_size: tuple[int, int]) -> tuple[Any, Any]:
    """The same random warp on photos (bilinear) and masks (nearest), then
    colour jitter on the photos alone."""
    import torch.nn.functional as F

    grid = F.affine_grid(aug.theta(x01.shape[0], x01.device), [x01.shape[0], 3, *out_size], align_corners=False)
    x = F.grid_sample(x01, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    m = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return aug.colour(x), m[:, 0].long()


def make_unet(n_classes: int, width: int = 16) -> Any:
    """A small U-Net: three stages down (convolutions, max-pooling), three up
    (bilinear upsampling, the skip connection of the same scale, a convolution)."""
    import torch
    from torch import nn

    conv = recipe.conv_bn
    w = width

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.ModuleList([conv(3, w), conv(w, 2 * w), conv(2 * w, 4 * w)])
            self.middle = nn.Sequential(conv(4 * w, 8 * w), conv(8 * w, 8 * w))
            self.up = nn.ModuleList([conv(12 * w, 4 * w), conv(6 * w, 2 * w), conv(3 * w, w)])
            self.pool = nn.MaxPool2d(2)
            self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.out = nn.Conv2d(w, n_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
                x = self.pool(x)
            x = self.middle(x)
            for block, skip in zip(self.up, reversed(skips)):
                x = block(torch.cat([self.upsample(x), skip], 1))
            return self.out(x)

    return UNet()


def with_flip_tta(model: Any) -> Any:
    """Mask logits averaged over the image and its mirror (mirrored back)."""
    import torch
    from torch import nn

    class FlipTTA(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.net(x) + torch.flip(self.net(torch.flip(x, dims=[3])), dims=[3])) / 2

    return FlipTTA(model)


def extent(present: Any) -> tuple[Any, Any]:
    """First and last index where ``present`` (N x L, 0/1 floats) is 1, as
    edges scaled to -1..1 (the first pixel's left edge, the last one's right)."""
    import torch

    n = present.shape[1]
    first = present.argmax(1).float()
    last = (n - 1) - torch.flip(present, dims=[1]).argmax(1).float()
    return 2 * first / n - 1, 2 * (last + 1) / n - 1


def tight_boxes(obj: Any) -> Any:
    """(x0, y0, x1, y1) in -1..1 of each N x H x W 0/1 mask; the whole
    picture where a mask is empty."""
    import torch

    x0, x1 = extent(obj.amax(1))
    y0, y1 = extent(obj.amax(2))
    box = torch.stack([x0, y0, x1, y1], 1)
    whole = torch.cat([-torch.ones_like(box[:, :2]), torch.ones_like(box[:, 2:])], 1)
    return torch.where(obj.amax((1, 2))[:, None] > 0, box, whole)


def box_iou(a: Any, b: Any) -> Any:
    """IoU of matching rows of two N x 4 (x0, y0, x1, y1) box tensors."""
    import torch

    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    inter = iw * ih
    return inter / (area(a) + area(b) - inter)


def box_from_mask(segmenter: Any) -> Any:
    """A detector made of a segmenter: the tight box of the pixels of the
    picture's main object class (the one with the most probability mass),
    as (x0, y0, x1, y1) in [-1, 1] of the input; the whole input when no
    pixel is an object. The dataset's boxes are defined the same way, as the
    tight box of the mask."""
    import torch
    from torch import nn

    class BoxFromMask(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.net(x)
            mass = torch.softmax(logits, 1)[:, 1:].sum((2, 3))             # N x objects
            main = mass.argmax(1) + 1                                        # N
            return tight_boxes((logits.argmax(1) == main[:, None, None]).float())

    return BoxFromMask(segmenter)


def iou_per_class(model: Any, x_uint8: Any, masks: Any, norm: recipe.Normalise, n_classes: int,
                  batch_size: int = 32) -> list[float]:
    """Intersection over union of each class over a whole set (NaN: class absent)."""
    import torch

    inter, union = np.zeros(n_classes), np.zeros(n_classes)
    with torch.no_grad():
        for i in range(0, len(x_uint8), batch_size):
            pred = model(norm(x_uint8[i:i + batch_size].float() / 255)).argmax(1)
            truth = masks[i:i + batch_size]
            for c in range(n_classes):
                inter[c] += ((pred == c) & (truth == c)).sum().item()
                union[c] += ((pred == c) | (truth == c)).sum().item()
    return [float(a / b) if b else float("nan") for a, b in zip(inter, union)]


@dataclass
class SegResult:
    classes: list[str]
    class_iou: list[float]
    epochs_run: int
    train_seconds: float
    device: str
    box_iou: float = float("nan")    # mean IoU of box_from_mask's boxes with the masks' tight boxes
    model: Any = field(repr=False, default=None)
    sample: Any = field(repr=False, default=None)  # a few normalised validation images

    @property
    def mean_iou(self) -> float:
        return float(np.nanmean(self.class_iou))


def train(dataset: str | Path, rec: SegRecipe, log: bool = True) -> SegResult:
    """Train the small U-Net on a bbc1k dataset following ``rec``."""
    import torch
    import torch.nn.functional as F

    from bbc1k.layout import MASK_CLASSES

    torch.manual_seed(rec.seed)
    device = recipe.pick_device()
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    store = (round(rec.size[0] * rec.store_scale), round(rec.size[1] * rec.store_scale))
    x_all, m_all, labels = load_dataset(dataset, store)
    train_idx, valid_idx = recipe.stratified_split(labels, rec.valid_frac, rec.split_seed)
    x_train, m_train = x_all[train_idx].to(device), m_all[train_idx].to(device)
    # validation at the network's input size
    small = lambda t, mode: F.interpolate(t, size=rec.size, mode=mode)  # noqa: E731
    x_valid = small(x_all[valid_idx].float(), "bilinear").round().to(torch.uint8).to(device)
    m_valid = small(m_all[valid_idx][:, None].float(), "nearest")[:, 0].long().to(device)

    classes = list(MASK_CLASSES)
    norm = recipe.Normalise(torch.tensor(recipe.PHOTO_MEAN, device=device).view(1, 3, 1, 1),
                            torch.tensor(recipe.PHOTO_STD, device=device).view(1, 3, 1, 1))
    model = make_unet(len(classes), rec.width).to(device).to(memory_format=torch.channels_last)
    weight = torch.tensor([1.0] + [OBJECT_WEIGHT] * (len(classes) - 1), device=device)
    bf16 = recipe.use_bf16(rec, device)

    def batch_loss(idx: Any) -> Any:
        xb, mb = augment_pair(rec.augment, x_train[idx].float() / 255, m_train[idx], rec.size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return F.cross_entropy(model(norm(xb)), mb, weight=weight)

    epochs_run = 0

    def report(epoch: int, loss: float, last: bool) -> None:
        nonlocal epochs_run
        epochs_run = epoch + 1
        if log and (last or epochs_run % 5 == 0):
            ious = iou_per_class(model, x_valid, m_valid, norm, len(classes))
            print(f"epoch {epochs_run:3d}  train loss {loss:.3f}  valid mean IoU {np.nanmean(ious):.3f}  "
                  f"{time.perf_counter() - t0:6.1f} s", flush=True)

    t0 = time.perf_counter()
    recipe.run_schedule(model, len(x_train), batch_loss, rec, rec.epochs, report, time_budget=rec.time_budget)
    train_seconds = time.perf_counter() - t0
    final = with_flip_tta(model).eval()
    nan = float("nan")
    ious = iou_per_class(final, x_valid, m_valid, norm, len(classes)) if len(valid_idx) else [nan] * len(classes)
    boxes = nan
    if len(valid_idx):
        with torch.no_grad():
            predicted = torch.cat([box_from_mask(final)(norm(x_valid[i:i + 32].float() / 255))
                                   for i in range(0, len(x_valid), 32)])
        boxes = box_iou(predicted, tight_boxes((m_valid > 0).float())).mean().item()
    sample = norm(x_valid[:4].float() / 255).cpu() if len(valid_idx) else None
    return SegResult(classes=classes, class_iou=ious, epochs_run=epochs_run, train_seconds=train_seconds,
                     device=str(device), box_iou=boxes, model=final, sample=sample)


def export(result: SegResult, rec: SegRecipe, out_dir: str | Path, name: str) -> Path:
    """Write ``out_dir/name.onnx`` with its bbc1k description."""
    import torch

    from bbc1k.export import export_onnx
    from bbc1k.modelmeta import ModelMeta

    h, w = rec.size
    facts = {k: v for k, v in asdict(rec).items() if k != "augment"}
    facts.update(augment=asdict(rec.augment), architecture=f"small U-Net (width={rec.width})", pretrained=False,
                 object_weight=OBJECT_WEIGHT, epochs_run=result.epochs_run,
                 train_seconds=round(result.train_seconds, 1), device=result.device,
                 mean_iou=round(result.mean_iou, 4),
                 class_iou={c: round(v, 4) for c, v in zip(result.classes, result.class_iou)},
                 trainer="scripts/train_segmenter_from_scratch.py")
    meta = ModelMeta(task="segment", name=name, classes=result.classes, input_size=[h, w],
                     mean=list(recipe.PHOTO_MEAN), std=list(recipe.PHOTO_STD), resize="squish",
                     outputs=[{"name": "mask", "kind": "mask_logits", "shape": ["N", len(result.classes), h, w]}],
                     extra=facts)
    return export_onnx(result.model.float().cpu(), meta, Path(out_dir) / f"{name}.onnx", torch.rand(2, 3, h, w))


def export_detector(result: SegResult, rec: SegRecipe, out_dir: str | Path, name: str) -> Path:
    """Write ``out_dir/name.onnx``, task ``detect``: :func:`box_from_mask` of
    the trained segmenter, checked on validation images (on random noise the
    main class would hang on near-ties)."""
    import torch

    from bbc1k.export import export_onnx
    from bbc1k.modelmeta import ModelMeta, OutputSpec

    h, w = rec.size
    meta = ModelMeta(task="detect", name=name, classes=[c for c in result.classes if c != "background"],
                     input_size=[h, w], mean=list(recipe.PHOTO_MEAN), std=list(recipe.PHOTO_STD), resize="squish",
                     outputs=[OutputSpec("box", "box", ["N", 4], box_format="xyxy", box_range=[-1.0, 1.0])],
                     extra={"architecture": f"small U-Net (width={rec.width}); box: tight box of the main object's "
                                            "predicted pixels", "pretrained": False,
                            "box_iou": round(result.box_iou, 4), "epochs_run": result.epochs_run,
                            "trainer": "scripts/train_segmenter_from_scratch.py"})
    sample = result.sample if result.sample is not None else torch.rand(2, 3, h, w)
    return export_onnx(box_from_mask(result.model.float().cpu()), meta, Path(out_dir) / f"{name}.onnx", sample)


def main(argv: list[str] | None = None) -> int:
    d = SegRecipe()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    recipe.add_training_args(ap, d, "a bbc1k dataset folder (images/, masks/, classification_labels.csv)",
                             "bbc-segmenter", size_note=", multiples of 8")
    ap.add_argument("--detector", default=None, metavar="NAME",
                    help="also write OUT/NAME.onnx: a detector whose box is the tight box of the main object's "
                         "predicted pixels")
    args = ap.parse_args(argv)
    if min(args.size) < 16 or any(s % 8 for s in args.size):
        ap.error(f"--size must be multiples of 8, at least 16; got {args.size[0]} {args.size[1]}")
    if args.epochs < 1 or args.width < 1 or args.batch_size < 2:
        ap.error("--epochs and --width must be positive, --batch-size at least 2")
    rec = SegRecipe(size=tuple(args.size), width=args.width, epochs=args.epochs, batch_size=args.batch_size,
                    seed=args.seed, time_budget=args.time_budget, precision=args.precision)
    start = time.perf_counter()
    try:
        result = train(args.data_dir, rec)
    except recipe.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    written = [export(result, rec, args.out, args.name)]
    if args.detector:
        written.append(export_detector(result, rec, args.out, args.detector))
    per_class = ", ".join(f"{c} {v:.3f}" for c, v in zip(result.classes, result.class_iou))
    print(f"device {result.device}: {result.epochs_run} epochs in {result.train_seconds:.1f} s; "
          f"validation mean IoU {result.mean_iou:.3f} ({per_class}), box IoU {result.box_iou:.3f}; "
          f"total {time.perf_counter() - start:.1f} s; wrote {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
