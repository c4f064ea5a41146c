"""bbc1k.notebook and bbc1k.viz: the helpers the lessons lean on."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from bbc1k import notebook, viz


@pytest.fixture
def empty_torch_hub(tmp_path, monkeypatch):
    import torch

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/resnet18-f37072fd.pth"


def test_pretrained_false_needs_nothing(capsys):
    assert notebook.check_pretrained("resnet18", False, url="http://127.0.0.1:9/never") is False
    assert "random weights" in capsys.readouterr().out


def test_unreachable_weights_fail_fast_with_the_fix(empty_torch_hub):
    start = time.perf_counter()
    with pytest.raises(notebook.PretrainedUnavailable) as e:
        notebook.check_pretrained("resnet18", True, url=closed_port_url(), timeout=2)
    assert time.perf_counter() - start < 10
    assert "PRETRAINED = False" in str(e.value) and "-p PRETRAINED False" in str(e.value)


def test_cached_weights_are_enough(empty_torch_hub):
    url = closed_port_url()
    cached = notebook.cached_weights_path(url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert notebook.check_pretrained("resnet18", True, url=url) is True


def test_reachable_weights_are_accepted(empty_torch_hub, http_server):
    url = http_server.serve("/models/resnet18-f37072fd.pth", b"weights")
    assert notebook.check_pretrained("resnet18", True, url=url) is True
    assert [r.method for r in http_server.requests] == ["HEAD"]


def test_weights_url_names_torchvision_weights():
    assert notebook.weights_url("resnet34").endswith(".pth")
    with pytest.raises(ValueError, match="no pretrained weights"):
        notebook.weights_url("not_a_net")


def test_start_seeds_and_picks_a_device(capsys):
    import torch

    rt = notebook.start(3, arch="resnet18", n_images=600, img_size=128, epochs=4)
    a = torch.rand(3)
    notebook.start(3)
    assert torch.equal(a, torch.rand(3))
    assert rt.device == ("cuda" if torch.cuda.is_available() else "cpu")
    out = capsys.readouterr().out
    if not rt.cuda:
        assert "No GPU found" in out and "Expect very roughly" in out and "IMG_SIZE=128" in out
        assert rt.num_workers == 0


def test_mixed_precision_only_on_cuda():
    class FakeLearner:
        def to_fp16(self):
            return "fp16"

    learner = FakeLearner()
    assert notebook.Runtime("cpu", False, 2).mixed_precision(learner) is learner
    assert notebook.Runtime("cuda", False, 2).mixed_precision(learner) == "fp16"


def test_cpu_estimate_scales_with_the_work():
    base = notebook.estimate_cpu_seconds("resnet18", 600, 128, 4, 2)
    assert notebook.estimate_cpu_seconds("resnet18", 600, 256, 4, 2) == pytest.approx(4 * base)
    assert notebook.estimate_cpu_seconds("resnet34", 600, 128, 4, 2) > base
    assert notebook.estimate_cpu_seconds("resnet18", 600, 128, 4, 1) == pytest.approx(2 * base)


def test_in_colab_follows_the_environment(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert notebook.in_colab() is False
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20250101")
    assert notebook.in_colab() is True


def test_to_image_accepts_tensors_arrays_and_pil():
    import torch
    from PIL import Image

    chw = torch.zeros(3, 4, 5, dtype=torch.long)
    chw[0] = 255
    img = viz.to_image(chw)
    assert img.shape == (4, 5, 3) and img[..., 0].max() == 1.0 and img[..., 1].max() == 0.0
    assert viz.to_image(Image.new("RGB", (5, 4), (0, 255, 0)))[0, 0].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="image of shape"):
        viz.to_image(np.zeros((2, 3, 4, 5)))


def test_box_to_pixels_maps_the_scaled_corners():
    assert viz.box_to_pixels([-1, -1, 1, 1], 200, 100) == (0, 0, 200, 100)
    assert viz.box_to_pixels([0, 0, 0.5, 1], 200, 100) == (100, 50, 150, 100)


def test_mask_overlay_colours_object_pixels_only():
    image = np.full((4, 4, 3), 0.5, dtype=np.float32)
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0], mask[1, 1] = 1, 3  # brick, cylinder
    out = viz.mask_overlay(image, mask, alpha=1.0)
    assert out[0, 0].tolist() == pytest.approx(list(viz.MASK_COLORS["brick"]))
    assert out[1, 1].tolist() == pytest.approx(list(viz.MASK_COLORS["cylinder"]))
    assert out[2, 2].tolist() == pytest.approx([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="differs"):
        viz.mask_overlay(image, np.zeros((3, 3)))


def test_figures_carry_boxes_and_a_legend():
    import matplotlib

    matplotlib.use("Agg")
    images = [np.zeros((10, 20, 3))] * 2
    fig = viz.show_boxes(images, true=[[-1, -1, 0, 0]] * 2, pred=[[0, 0, 1, 1]] * 2, titles=["a", "b"])
    assert sum(len(ax.patches) for ax in fig.axes) == 4
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["true box", "predicted box"]
    fig = viz.show_masks(images, [np.zeros((10, 20), dtype=np.uint8)] * 2)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["brick", "ball", "cylinder"]
    fig = viz.show_grid(images * 3, titles=list("abcdef"), ncols=4)
    assert len(fig.axes) == 8


def test_chosen_lr_takes_a_suggestion_or_a_number(capsys):
    from collections import namedtuple

    Suggested = namedtuple("SuggestedLRs", notebook.LR_SUGGESTIONS)
    found = Suggested(minimum=4e-3, steep=1e-3, valley=2.5e-3)
    assert notebook.chosen_lr(found, "valley") == 2.5e-3
    assert notebook.chosen_lr(found, "minimum") == 4e-3
    assert "the finder's 'minimum' suggestion" in capsys.readouterr().out
    assert notebook.chosen_lr(found, 0) == 0.0
    assert "set by hand" in capsys.readouterr().out
    with pytest.raises(ValueError, match="'valey'.*'valley'"):
        notebook.chosen_lr(found, "valey")
    with pytest.raises(ValueError, match="0 or more"):
        notebook.chosen_lr(found, -1e-3)


def test_offer_download_only_downloads_in_colab(monkeypatch, tmp_path, capsys):
    import sys
    import types

    model = tmp_path / "bbc-classifier.onnx"
    model.write_bytes(b"onnx")
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    notebook.offer_download(model)
    assert str(model) in capsys.readouterr().out

    downloaded = []
    colab = types.ModuleType("google.colab")
    colab.files = types.SimpleNamespace(download=downloaded.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    notebook.offer_download(model)
    assert downloaded == [str(model)]
