"""Train the benchmark's resnet34 (256 px, from scratch) with plain PyTorch,
for a machine that has a GPU but no fastai. bench_models.py wraps the weights
in a fastai Learner (for the 2020 design's .pkl) and exports the ONNX.

    python -m bench.train_gpu --photos PHOTOS_DIR OUT_DIR [--epochs 30]

PHOTOS_DIR (``--photos`` or ``$BBC1K_PHOTOS``) holds <class>/<name>.jpg and
split.json ({"train": [...], "valid": [...]}); the weights are written to
OUT_DIR in parts of at most 15 MB (resnet34.pt.000, ...).
"""
from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from bbc1k.modelmeta import IMAGENET_MEAN, IMAGENET_STD
from bbc1k.train.device import pick_device
from bench.common import add_photos_arg, load_note, photos_dir

SIZE = 256
MEAN = np.array(IMAGENET_MEAN, np.float32)  # fastai's normalisation, which bench_models.py keeps
STD = np.array(IMAGENET_STD, np.float32)
PART = 15 * 1000 * 1000


def load(root: Path, names: list[str], classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for n in names:
        im = Image.open(root / n).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        xs.append(((np.asarray(im, np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1))
        ys.append(classes.index(n.split("/")[0]))
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_photos_arg(ap, "; it must hold split.json")
    ap.add_argument("out", type=Path, help="folder for the weights (resnet34.pt.000, ...) and train.json")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--bs", type=int, default=32)
    a = ap.parse_args()
    photos = photos_dir(a.photos)
    torch.manual_seed(42)
    dev = pick_device()
    split = json.loads((photos / "split.json").read_text())
    classes = sorted({n.split("/")[0] for n in split["train"]})  # fastai's vocab order
    xt, yt = load(photos, split["train"], classes)
    xv, yv = load(photos, split["valid"], classes)
    xt, yt, xv, yv = xt.to(dev), yt.to(dev), xv.to(dev), yv.to(dev)
    model = torchvision.models.resnet34(weights=None, num_classes=len(classes)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    steps = a.epochs * ((len(xt) + a.bs - 1) // a.bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(1, steps))
    started = time.perf_counter()
    acc = float("nan")
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xt), device=dev)
        for i in range(0, len(xt), a.bs):
            idx = perm[i:i + a.bs]
            x = xt[idx]
            flip = torch.rand(len(idx), device=dev) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = torch.nn.functional.cross_entropy(model(x), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f} valid accuracy {acc:.3f}", flush=True)
    took = time.perf_counter() - started
    buf = io.BytesIO()
    # float16 weights halve what travels back (the benchmark loads them as float32)
    torch.save({k: v.cpu().half() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}, buf)
    data = buf.getvalue()
    a.out.mkdir(parents=True, exist_ok=True)
    for n, i in enumerate(range(0, len(data), PART)):
        (a.out / f"resnet34.pt.{n:03d}").write_bytes(data[i:i + PART])
    (a.out / "train.json").write_text(json.dumps({"classes": classes, "epochs": a.epochs, "seconds": round(took, 1),
                                                  "valid_accuracy": acc, "device": dev.type,
                                                  "torch": torch.__version__}))
    print(f"trained in {took:.1f} s on {dev}; {len(data) / 1e6:.1f} MB of weights; {load_note()}")


if __name__ == "__main__":
    main()
