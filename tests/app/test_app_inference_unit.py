"""bbc1k.inference on its own: fitting geometry, mode handling, CPU count,
and the fastai .pkl path behind --allow-pickle."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import jpeg_bytes, launch, post_image, wait_ready
from PIL import Image

from bbc1k import inference
from bbc1k.modelmeta import ModelMeta, OutputSpec


def meta(resize: str, h: int = 32, w: int = 32) -> ModelMeta:
    return ModelMeta(task="detect", name="m", classes=["a"], input_size=[h, w], resize=resize,
                     outputs=[OutputSpec("box", "box", ["N", 4])])


@pytest.mark.parametrize("resize,expected", [
    ("squish", [0, 0, 200, 100]),
    ("crop", [50, 0, 150, 100]),   # centre square of a 200x100 image
    ("pad", [0, -50, 200, 150]),   # the padded square reaches past the top and bottom
])
def test_fit_maps_the_whole_input_back(resize, expected):
    fitted, fit = inference.fit_image(Image.new("RGB", (200, 100)), meta(resize))
    assert fitted.size == (32, 32)
    x0, y0 = fit.to_image(0, 0)
    x1, y1 = fit.to_image(32, 32)
    assert [x0, y0, x1, y1] == pytest.approx(expected, abs=1e-6)
    # box_to_image clips to the image and applies the upload scale
    box = inference.box_to_image(np.array([-1, -1, 1, 1]), fit, scale=(2.0, 2.0))
    assert box == pytest.approx([max(0, expected[0]) * 2, max(0, expected[1]) * 2,
                                 min(200, expected[2]) * 2, min(100, expected[3]) * 2])


def test_pad_leaves_black_borders_and_normalises():
    m = meta("pad")
    x, _ = inference.prepare(Image.new("RGB", (200, 100), (255, 255, 255)), m)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    black = (0 - np.array(m.mean)) / np.array(m.std)
    white = (1 - np.array(m.mean)) / np.array(m.std)
    assert x[:, 0, 0] == pytest.approx(black, abs=1e-5)  # padding row
    assert x[:, 16, 16] == pytest.approx(white, abs=1e-5)


def test_high_depth_modes_keep_their_range():
    signed = Image.fromarray(np.array([[-1000, 0], [500, 3000]], dtype=np.int32))
    assert signed.mode == "I"
    rgb = np.asarray(inference._to_rgb(signed))
    assert rgb[0, 0, 0] == 0 and rgb[1, 1, 0] == 255
    sixteen = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert np.asarray(inference._to_rgb(sixteen))[0, :, 0].tolist() == [0, 255]
    eight_in_16 = Image.fromarray(np.array([[0, 128]], dtype=np.uint16))
    assert np.asarray(inference._to_rgb(eight_in_16))[0, 1, 0] == 128
    nan = Image.fromarray(np.array([[np.nan, 0.5]], dtype=np.float32))
    assert np.asarray(inference._to_rgb(nan))[0, :, 0].tolist() == [0, 128]


def test_cgroup_quota_parsing():
    assert inference._cgroup2_quota("max 100000") is None
    assert inference._cgroup2_quota("150000 100000") == 1.5
    assert inference._cgroup2_quota("garbage") is None
    assert 1 <= inference.cpu_count() <= (len(__import__("os").sched_getaffinity(0)))


def test_jpeg_is_shrunk_while_decoding():
    big = Image.new("RGB", (4000, 3000), (10, 200, 30))
    d = inference.decode_image(jpeg_bytes(big), work_side=512)
    assert (d.width, d.height) == (4000, 3000)
    assert max(d.image.size) == 512
    assert d.scale == pytest.approx((4000 / 512, 3000 / 384))


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
