"""export_learner writes the int8 copy beside a lesson's export, calibrated on
its training images and judged on its validation set (classes, masks)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bbc1k.modelmeta import read_onnx_meta
from bbc1k.quantize import INT8_KEY

pytest.importorskip("fastai")


def _photos(folder, n: int = 4):
    for k, label in enumerate(("ball", "brick", "cylinder")):
        (folder / label).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 30), (80 * k, 40 * i, 100)).save(folder / label / f"{i}.png")


def test_classifier_export_has_a_checked_int8_copy(tmp_path):
    import torch
    from fastai.vision.all import (CategoryBlock, DataBlock, ImageBlock, Learner, RandomSplitter, Resize,
                                   get_image_files, parent_label)
    from torch import nn

    from bbc1k.export import export_learner

    _photos(tmp_path / "data")
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    splitter=RandomSplitter(0.25, seed=0), item_tfms=Resize(32, method="squish")
                    ).dataloaders(tmp_path / "data", bs=4, num_workers=0)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)))
    files = export_learner(learn, "tiny", tmp_path / "out", "classify")
    assert files["int8"] == tmp_path / "out" / "tiny.int8.onnx"
    check = read_onnx_meta(str(files["int8"])).extra[INT8_KEY]["check"]
    assert check["metric"] == "accuracy" and check["against"] == "validation labels"
    assert check["n"] == len(dls.valid_ds) and check["float32"] - check["int8"] <= 0.005


def test_segmenter_export_is_judged_on_masks(tmp_path):
    import torch
    from fastai.vision.all import DataBlock, ImageBlock, Learner, MaskBlock, RandomSplitter, Resize
    from torch import nn

    from bbc1k.export import export_learner

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        m = np.zeros((24, 32), np.uint8)
        m[4:12, 8 + i:20 + i] = 1 + i % 3
        Image.fromarray((rng.random((24, 32, 3)) * 80 + m[..., None] * 50).astype(np.uint8)).save(images / f"{i}.png")
        Image.fromarray(m).save(masks / f"{i}.png")
    dls = DataBlock(blocks=(ImageBlock, MaskBlock(["background", "brick", "ball", "cylinder"])),
                    get_items=lambda p: sorted(p.glob("*.png")), get_y=lambda p: masks / p.name,
                    splitter=RandomSplitter(0.25, seed=0), item_tfms=Resize(32, method="squish")
                    ).dataloaders(images, bs=4, num_workers=0)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Conv2d(3, 4, 1))
    files = export_learner(learn, "seg", tmp_path / "out", "segment")
    check = read_onnx_meta(str(files["int8"])).extra[INT8_KEY]["check"]
    assert check["metric"] == "mean IoU" and check["n"] == len(dls.valid_ds) == 2
