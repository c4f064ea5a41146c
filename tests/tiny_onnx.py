"""Tiny real ONNX models for the app and serving tests, made by bbc1k.export:
a classifier (squish), a classifier + detector (crop, constant box ``BOX``) and a
segmenter (pad). Imported by the ``tiny_models`` fixture of tests/conftest.py."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bbc1k.export import export_onnx
from bbc1k.modelmeta import ModelMeta, OutputSpec

INPUT = 32
BOX = (-0.5, -0.5, 0.5, 0.5)  # the tiny detector's constant box, in [-1, 1] model-input units


def features() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


class Detector(nn.Module):
    """Class logits and the same box for every picture."""

    def __init__(self) -> None:
        super().__init__()
        self.head = features()
        self.register_buffer("box", torch.tensor([BOX]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(x), x[:, :1, 0, 0] * 0 + self.box


def make_models(folder: Path) -> dict[str, Path]:
    """classifier (squish), classify+detect (crop, constant box) and segmenter
    (pad; class 3 where the red channel is bright, else background)."""
    torch.manual_seed(0)
    classes = ["brick", "ball", "cylinder"]
    sample = torch.rand(2, 3, INPUT, INPUT)

    seg = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        seg.weight.zero_()
        seg.bias.copy_(torch.tensor([0.0, -5.0, -5.0, 0.0]))
        seg.weight[3, 0, 0, 0] = 10.0  # class 3 where normalised red > 0

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    out["classifier"] = export_onnx(features(), ModelMeta(
        task="classify", name="tiny-classifier", classes=classes, input_size=[INPUT, INPUT], resize="squish",
        outputs=[OutputSpec("logits", "class_logits", ["N", 3])]), folder / "classifier.onnx", sample)
    out["detector"] = export_onnx(Detector(), ModelMeta(
        task="classify+detect", name="tiny-detector", classes=classes, input_size=[INPUT, INPUT], resize="crop",
        outputs=[OutputSpec("logits", "class_logits", ["N", 3]),
                 OutputSpec("box", "box", ["N", 4], box_format="xyxy", box_range=[-1, 1])]),
        folder / "detector.onnx", sample)
    out["segmenter"] = export_onnx(seg, ModelMeta(
        task="segment", name="tiny-segmenter", classes=["background", *classes], input_size=[INPUT, INPUT],
        resize="pad", outputs=[OutputSpec("mask", "mask_logits", ["N", 4, INPUT, INPUT])]),
        folder / "segmenter.onnx", sample)
    return out
