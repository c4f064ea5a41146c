"""How real is the synthetic data? Train a small CNN on synthetic pictures only, test it on real photos.

    python bench/synth_realism.py                      # 2000 synthetic images, 8 epochs, 96x72 inputs
    python bench/synth_realism.py --n 3000 --epochs 10 --keep /tmp/synth3000

The real photos (``--photos``, default /work/shared/data/bbc-photos with
ball/, brick/, cylinder/ subfolders) are used only for testing; without them the
benchmark says so and stops. Prints the accuracy on the photos next to chance
(always answering the largest class) and a confusion table. CPU, two threads:
a few minutes.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bbc1k import layout
from bbc1k.synth import generate

DEFAULT_PHOTOS = Path("/work/shared/data/bbc-photos")


def load_folder_dataset(root: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Real photos in ``root/<class>/*.jpg`` as uint8 N x H x W x 3 and label indices (0-based)."""
    xs, ys = [], []
    for k, name in enumerate(layout.OBJECT_CLASSES):
        for path in sorted((root / name).glob("*.jpg")):
            with Image.open(path) as im:
                xs.append(np.asarray(im.convert("RGB").resize(size, Image.BILINEAR)))
            ys.append(k)
    return np.stack(xs), np.array(ys)


def load_bbc_dataset(root: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for row in layout.read_labels(root):
        with Image.open(layout.image_path(root, row.filename)) as im:
            xs.append(np.asarray(im.convert("RGB").resize(size, Image.BILINEAR)))
        ys.append(row.label_index - 1)
    return np.stack(xs), np.array(ys)


def small_cnn(n_classes: int):
    import torch.nn as nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2))

    return nn.Sequential(block(3, 24), block(24, 48), block(48, 96), block(96, 160),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(160, n_classes))


def to_tensor(x: np.ndarray):
    import torch

    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    return (t - 0.5) / 0.25


def augment(xb, gen):
    """Flips, small shifts and brightness/contrast/colour jitter, on a normalised batch."""
    import torch

    n = xb.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
    dx, dy = (int(v) for v in torch.randint(-6, 7, (2,), generator=gen))
    xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
    scale = 1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    shift = 0.4 * (torch.rand(n, 3, 1, 1, generator=gen) - 0.5)
    return xb * scale + shift


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int, batch: int = 64):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = small_cnn(len(layout.OBJECT_CLASSES))
    xt, yt = to_tensor(x), torch.from_numpy(y).long()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    steps = epochs * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            xb, yb = augment(xt[idx], gen), yt[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            total += len(idx)
        print(f"  epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.3f}, synthetic train accuracy {correct / total:.1%}")
    return model


def predict(model, x: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(to_tensor(x[i:i + 256])).argmax(1).numpy() for i in range(0, len(x), 256)])


def report(name: str, y: np.ndarray, pred: np.ndarray) -> None:
    k = len(layout.OBJECT_CLASSES)
    chance = np.bincount(y, minlength=k).max() / len(y)
    print(f"{name}: accuracy {np.mean(pred == y):.1%} on {len(y)} images (chance, the largest class: {chance:.1%})")
    print("  confusion (rows: true, columns: predicted)")
    print("  " + " " * 10 + "".join(f"{c:>10}" for c in layout.OBJECT_CLASSES) + "    recall")
    for i, c in enumerate(layout.OBJECT_CLASSES):
        row = [int(np.sum((y == i) & (pred == j))) for j in range(k)]
        print(f"  {c:>10}" + "".join(f"{v:>10}" for v in row) + f"    {row[i] / max(1, sum(row)):.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="synthetic training images (default 2000)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--size", type=int, default=96, help="input width in pixels; height is 3/4 of it (default 96)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="real photos: <dir>/{ball,brick,cylinder}/*.jpg")
    ap.add_argument("--keep", type=Path, help="generate into (or reuse) this folder instead of a temporary one")
    ap.add_argument("--render", type=int, nargs=2, default=(512, 384), metavar=("W", "H"),
                    help="size the synthetic pictures are rendered at (default 512 384, as the photos)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped to a file

    if not all((args.photos / c).is_dir() for c in layout.OBJECT_CLASSES):
        print(f"no real photos in {args.photos} (expected ball/, brick/, cylinder/): nothing to compare against; skipped")
        return
    import torch

    torch.set_num_threads(args.threads)
    size = (args.size, args.size * 3 // 4)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.keep or Path(tmp) / "bbc_train"
        start = time.perf_counter()
        if not (data / layout.LABELS_CSV).exists():
            generate(data, args.n, seed=args.seed, size=tuple(args.render), progress=False)
            print(f"generated {args.n} synthetic images in {time.perf_counter() - start:.0f} s")
        x, y = load_bbc_dataset(data, size)
    xr, yr = load_folder_dataset(args.photos, size)
    print(f"training a small CNN on {len(x)} synthetic images at {size[0]}x{size[1]} for {args.epochs} epochs")
    start = time.perf_counter()
    model = train(x, y, args.epochs, args.seed)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    report("real photos", yr, predict(model, xr))


if __name__ == "__main__":
    main()
