"""Models for the serving benchmark, made once and cached (``runs/bench-serve/``):

    python -m bench.bench_models --photos DIR   # make (or show) them; bench.serve_bench uses them

- a resnet34 classifier at 256 px trained from scratch (``pretrained=False``)
  on the real photos (``--photos`` or $BBC1K_PHOTOS): with plain PyTorch on a
  GPU machine by ``python -m bench.train_gpu`` when its weights are in
  runs/bench-serve/gpu/, else briefly with fastai on the CPUs; wrapped in a
  fastai Learner and exported both as the 2020 design's ``.pkl``
  (``learn.export``) and as ``.onnx`` (``bbc1k.export``), plus the int8 copy
  export writes beside it (calibrated on the training photos, checked on the
  held-out ones: ``bbc1k.quantize``);
- an untrained resnet34 classify+detect model and a resnet34 U-Net segmenter at
  256 px (with int8 copies), only to measure memory with three realistic models;
- ``tiny(out)``: a small untrained network on synthetic photos, the same three
  files, to check the benchmark itself in seconds (``serve_bench --tiny``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from torch import nn

from bench.common import add_photos_arg, load_note, photos_dir

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "runs" / "bench-serve"
SIZE = 256
SEED = 42


def _dls(photos: Path, bs: int = 16):
    from fastai.vision.all import (CategoryBlock, DataBlock, ImageBlock, Normalize, RandomSplitter, Resize,
                                   get_image_files, imagenet_stats, parent_label)

    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      splitter=RandomSplitter(0.2, seed=SEED), get_y=parent_label,
                      item_tfms=Resize(SIZE, method="squish"),
                      batch_tfms=Normalize.from_stats(*imagenet_stats))
    return block.dataloaders(photos, bs=bs, num_workers=0)


GPU_WEIGHTS = CACHE / "gpu"
"""Weights from ``python -m bench.train_gpu`` (plain PyTorch on a GPU machine), when present."""


def _train_fastai(dls, epochs: int):
    """Train with fastai on this machine's CPUs (slow: about 13 min an epoch on 2 busy cores)."""
    from fastai.vision.all import accuracy, resnet34, vision_learner

    learn = vision_learner(dls, resnet34, pretrained=False, metrics=accuracy)
    learn.fit_one_cycle(epochs, 2e-3)
    return learn, {"trained_with": f"fastai vision_learner, {epochs} epochs on CPU",
                   "valid_accuracy": float(learn.validate()[1])}


def _learner_from_gpu_weights(dls):
    """A fastai Learner around the torchvision resnet34 that train_gpu.py trained."""
    import io

    import torch
    import torchvision
    from fastai.vision.all import CrossEntropyLossFlat, Learner, accuracy

    info = json.loads((GPU_WEIGHTS / "train.json").read_text())
    if info["classes"] != [str(v) for v in dls.vocab]:
        raise RuntimeError(f"class order differs: {info['classes']} vs {list(dls.vocab)}")
    data = b"".join(p.read_bytes() for p in sorted(GPU_WEIGHTS.glob("resnet34.pt.*")))
    state = torch.load(io.BytesIO(data), map_location="cpu")
    model = torchvision.models.resnet34(weights=None, num_classes=len(info["classes"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    learn = Learner(dls, model.eval(), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    return learn, {"trained_with": f"plain PyTorch on {info['device']} ({info['torch']}), {info['epochs']} epochs "
                                   f"in {info['seconds']} s, wrapped in a fastai Learner",
                   "valid_accuracy": info["valid_accuracy"]}


def classifier(photos: Path, epochs: int = 2, threads: int = 2) -> dict:
    """The benchmark classifier (trained once, cached): ``.pkl`` (fastai
    ``learn.export``) and ``.onnx`` (``bbc1k.export``), with facts about it."""
    facts_path = CACHE / "classifier.json"
    if facts_path.exists():
        return json.loads(facts_path.read_text())
    import torch

    from bbc1k.export import export_onnx
    from bbc1k.modelmeta import ModelMeta, OutputSpec

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    CACHE.mkdir(parents=True, exist_ok=True)
    dls = _dls(photos)
    if (GPU_WEIGHTS / "train.json").exists():
        learn, how = _learner_from_gpu_weights(dls)
    else:
        learn, how = _train_fastai(dls, epochs)
    pkl = CACHE / "bbc-resnet34.pkl"
    learn.export(pkl)
    vocab = [str(v) for v in dls.vocab]
    meta = ModelMeta(task="classify", name="bbc-resnet34", classes=vocab, input_size=[SIZE, SIZE],
                     resize="squish", outputs=[OutputSpec("logits", "class_logits", ["N", len(vocab)])],
                     extra={"architecture": "resnet34", "pretrained": False, **how})
    onnx_path = export_onnx(learn.model.eval(), meta, CACHE / "bbc-resnet34.onnx", torch.randn(2, 3, SIZE, SIZE))
    facts = {"pkl": str(pkl), "onnx": str(onnx_path), "classes": vocab,
             "train_items": [str(p) for p in dls.train.items],
             "valid_items": [str(p) for p in dls.valid.items], **how}
    facts_path.write_text(json.dumps(facts, indent=1))
    return facts


def int8_copy(onnx_path: str, facts: dict | None = None, *, tolerance: float | None = None) -> str:
    """The int8 copy export writes beside ``onnx_path`` (made once): calibrated
    on the training photos and checked on the held-out ones when ``facts``
    names them, else on synthetic photos by agreement with float32 (with
    ``tolerance``: an untrained model kept only to measure memory)."""
    from bbc1k.download import sha256_of
    from bbc1k.modelmeta import read_onnx_meta
    from bbc1k.quantize import INT8_KEY, TOLERANCE, int8_path, write_int8_copy

    out = int8_path(onnx_path)
    made_from = read_onnx_meta(str(out)).extra.get(INT8_KEY, {}).get("source_sha256") if out.exists() else None
    if made_from != sha256_of(onnx_path):  # none yet, or one the app would not serve (older, or stale)
        train = facts.get("train_items") if facts else None
        valid = [(p, Path(p).parent.name) for p in facts["valid_items"]] if facts else None
        report = write_int8_copy(onnx_path, train, valid, tolerance=TOLERANCE if tolerance is None else tolerance)
        print(f"  {report.line()}", flush=True)
        if report.path is None:
            raise SystemExit(f"{onnx_path}: {report.line()}")
    return str(out)


def tiny(out: Path, photos_per_class: int = 12, size: int = 64) -> dict:
    """A small untrained classifier on synthetic photos: ``.pkl``, ``.onnx`` and
    its int8 copy, and the photos (``photos``) to post, for checking the benchmark."""
    facts_path = out / "classifier.json"
    if facts_path.exists():
        return json.loads(facts_path.read_text())
    import torch
    from fastai.vision.all import (CategoryBlock, DataBlock, ImageBlock, Learner, RandomSplitter, Resize,
                                   get_image_files, parent_label)

    from bbc1k.export import export_onnx
    from bbc1k.modelmeta import ModelMeta, OutputSpec
    from bbc1k.synth import render_sample

    photos = out / "photos"
    for i in range(photos_per_class * 3):
        im, _, label = render_sample(SEED, i, size=(160, 120))
        (photos / label).mkdir(parents=True, exist_ok=True)
        im.save(photos / label / f"{i:03d}.jpg", quality=90)
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    splitter=RandomSplitter(0.25, seed=SEED), item_tfms=Resize(size, method="squish")
                    ).dataloaders(photos, bs=8, num_workers=0)
    torch.manual_seed(SEED)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(dls.vocab)))
    learn = Learner(dls, net)
    learn.export((out / "tiny.pkl").resolve())
    vocab = [str(v) for v in dls.vocab]
    meta = ModelMeta(task="classify", name="tiny", classes=vocab, input_size=[size, size], resize="squish",
                     outputs=[OutputSpec("logits", "class_logits", ["N", len(vocab)])])
    onnx_path = export_onnx(net.eval(), meta, out / "tiny.onnx", torch.randn(2, 3, size, size))
    facts = {"pkl": str(out / "tiny.pkl"), "onnx": str(onnx_path), "classes": vocab, "photos": str(photos),
             "train_items": [str(p) for p in dls.train.items], "valid_items": [str(p) for p in dls.valid.items],
             "trained_with": "nothing (untrained, for checking the benchmark)", "valid_accuracy": float("nan")}
    int8_copy(str(onnx_path), facts, tolerance=1.0)
    facts_path.write_text(json.dumps(facts, indent=1))
    return facts


class Multitask(nn.Module):
    """An untrained resnet34 body with a class head and a box head (xyxy in [-1, 1])."""

    def __init__(self, n_classes: int):
        from fastai.vision.all import create_body, create_head, resnet34

        super().__init__()
        self.body = create_body(resnet34(), pretrained=False)
        self.cls = create_head(512, n_classes)
        self.box = nn.Sequential(create_head(512, 4), nn.Tanh())

    def forward(self, x):
        f = self.body(x)
        return self.cls(f), self.box(f)


def detector_and_segmenter() -> dict[str, str]:
    """Untrained but full-size resnet34 classify+detect and U-Net segmenter exports."""
    det_path, seg_path = CACHE / "bbc-multitask.onnx", CACHE / "bbc-segmenter.onnx"
    if det_path.exists() and seg_path.exists():
        return {"detector": str(det_path), "segmenter": str(seg_path)}
    import torch
    from fastai.vision.all import create_body, resnet34
    from fastai.vision.models.unet import DynamicUnet

    from bbc1k.export import export_onnx
    from bbc1k.layout import MASK_CLASSES, OBJECT_CLASSES
    from bbc1k.modelmeta import ModelMeta, OutputSpec

    torch.manual_seed(SEED)
    sample = torch.randn(2, 3, SIZE, SIZE)
    export_onnx(Multitask(len(OBJECT_CLASSES)), ModelMeta(
        task="classify+detect", name="bbc-multitask", classes=list(OBJECT_CLASSES), input_size=[SIZE, SIZE],
        outputs=[OutputSpec("logits", "class_logits", ["N", 3]),
                 OutputSpec("box", "box", ["N", 4], box_format="xyxy", box_range=[-1, 1])]), det_path, sample)
    unet = DynamicUnet(create_body(resnet34(), pretrained=False), len(MASK_CLASSES), (SIZE, SIZE))
    export_onnx(unet, ModelMeta(
        task="segment", name="bbc-segmenter", classes=list(MASK_CLASSES), input_size=[SIZE, SIZE],
        outputs=[OutputSpec("mask", "mask_logits", ["N", 4, SIZE, SIZE])]), seg_path, sample, atol=1e-3)
    return {"detector": str(det_path), "segmenter": str(seg_path)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_photos_arg(ap)
    photos = photos_dir(ap.parse_args().photos)
    facts = classifier(photos)
    print(json.dumps({k: v for k, v in facts.items() if not k.endswith("_items")}, indent=1))
    print(int8_copy(facts["onnx"], facts))
    three = detector_and_segmenter()
    print(three, [int8_copy(p, tolerance=1.0) for p in three.values()])
    print(load_note())


if __name__ == "__main__":
    main()
