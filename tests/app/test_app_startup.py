"""The server's start-up paths: the fastai .pkl behind --allow-pickle, and the
cache of optimised graphs filled on the first start and reused on the next."""
from __future__ import annotations

import pytest
from conftest import jpeg_bytes, launch, model_args, post_image, wait_ready
from PIL import Image


def test_fastai_pickle_is_served_with_the_flag(tmp_path):
    """The 2020 design: a fastai learn.export() .pkl, learn.predict per request."""
    import torch
    from fastai.vision.all import (CategoryBlock, DataBlock, ImageBlock, Learner, Resize, get_image_files,
                                   parent_label)
    from torch import nn

    data = tmp_path / "data"
    for k, label in enumerate(("ball", "brick", "cylinder")):
        (data / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), (80 * k, 40 * i, 100)).save(data / label / f"{i}.jpg")
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    item_tfms=Resize(32, method="squish")).dataloaders(data, bs=2, num_workers=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    learn = Learner(dls, model)
    pkl = tmp_path / "model.pkl"
    learn.export(pkl)

    s = wait_ready(launch(tmp_path / "run", "--classifier", str(pkl), "--allow-pickle"))
    try:
        r = post_image(s.url, jpeg_bytes(Image.new("RGB", (40, 30), (160, 0, 100))))
        assert r.status_code == 200, r.text
        cls = r.json()["classification"]
        assert set(cls["probabilities"]) == {"ball", "brick", "cylinder"}
        assert sum(cls["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert "unpickling executes code" in s.logs()
    finally:
        s.stop()


def test_server_fills_the_cache_and_reuses_it(tiny_models, tmp_path):
    """Two starts on one model cache: the first writes the optimised graphs, the second loads them."""
    entries = None
    for _ in range(2):
        server = wait_ready(launch(tmp_path, *model_args(tiny_models)))
        try:
            cache = tmp_path / "cache" / "ort-optimized"
            found = sorted(p.name for p in cache.glob("ort-optimized-*.onnx"))
            assert len(found) == 3
            assert entries in (None, found)
            entries = found
            assert "cannot" not in server.logs()
        finally:
            server.stop()
