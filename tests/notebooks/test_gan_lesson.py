"""Lesson 04 (GANs) runs top to bottom on small settings and exports a working generator."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "04-generative-adversarial-networks.ipynb"
NZ = 16
IMG_SIZE = 64


@pytest.fixture(scope="module")
def executed(notebook_runner, shared_data_dir, tmp_path_factory):
    """The lesson executed once on tiny settings: (executed notebook, OUT_DIR)."""
    out = tmp_path_factory.mktemp("gan-lesson")
    params = {
        "DATA_SOURCE": "synthetic", "DATA_DIR": str(shared_data_dir), "N_IMAGES": 60,
        "IMG_SIZE": IMG_SIZE, "DIGITS_SOURCE": "sklearn", "TOY_STEPS": 512,
        "NAIVE_ITERS": 3, "DIGITS_ITERS": 3, "BBC_ITERS": 4, "BATCH_SIZE": 8,
        "WIDTH": 0.0625, "NZ": NZ, "LIVE": True, "OUT_DIR": str(out / "models"), "SEED": 0,
    }
    nb = notebook_runner(NOTEBOOK, params, out)
    return nb, out / "models"


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_committed_notebook_has_one_parameters_cell_and_no_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("DATA_SOURCE", "DATA_DIR", "N_IMAGES", "IMG_SIZE", "BBC_ITERS", "PRETRAINED",
                 "OUT_DIR", "SEED", "BATCH_SIZE", "DIGITS_SOURCE", "WIDTH"):
        assert re.search(rf"^{name} = ", tagged[0].source, re.M), name
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_toy_gan_reaches_the_equilibrium(executed):
    """The one-parameter GAN ends with b_G and b_D at the mean of the real data."""
    nb, _ = executed
    found = re.search(r"b_D = (-?[\d.]+), b_G = (-?[\d.]+) \(mean of the real data: (-?[\d.]+)\)",
                      _outputs_text(nb))
    assert found, "the toy GAN printed no result"
    b_d, b_g, mean = map(float, found.groups())
    assert abs(b_d - mean) < 0.05 and abs(b_g - mean) < 0.05, found.group(0)


@pytest.mark.slow
def test_exported_generator_makes_images(executed):
    """The ONNX generator carries its description and turns noise into [-1, 1] pictures."""
    import onnxruntime as ort

    from bbc1k.modelmeta import read_onnx_meta

    _, models = executed
    onnx_path = models / "bbc-generator.onnx"
    assert onnx_path.is_file() and (models / "bbc-generator.pt").is_file()
    meta = read_onnx_meta(onnx_path)
    assert (meta.task, meta.name, meta.input_name, meta.latent_dim) == ("generate", "bbc-generator", "z", NZ)
    assert meta.input_size == [IMG_SIZE, IMG_SIZE]
    image = meta.output("image")
    assert image is not None and image.value_range == [-1, 1]

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    noise = np.random.default_rng(0).standard_normal((2, NZ, 1, 1)).astype(np.float32)
    pictures, = sess.run(None, {meta.input_name: noise})
    assert pictures.shape == (2, 3, IMG_SIZE, IMG_SIZE)
    assert pictures.dtype == np.float32
    assert np.isfinite(pictures).all() and pictures.min() >= -1.0 and pictures.max() <= 1.0
    assert pictures.std() > 0  # noise in, not a constant picture out


# --- bbc1k.gan_data: the lesson's data plumbing --------------------------------------------------

def _one_square_dataset(root: Path) -> Path:
    """A bbc_train with one 100x60 black picture holding a white 10x10 square at x 88..98, y 40..50."""
    import json

    from PIL import Image

    from bbc1k import layout

    ds = root / layout.DATASET_DIRNAME
    (ds / layout.IMAGES_DIR).mkdir(parents=True)
    pixels = np.zeros((60, 100, 3), np.uint8)
    pixels[40:50, 88:98] = 255
    Image.fromarray(pixels).save(ds / layout.IMAGES_DIR / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [88, 40, 10, 10]}],
            "categories": layout.coco_categories()}
    (ds / layout.BBOXES_JSON).write_text(json.dumps(coco))
    return ds


def test_object_crop_centres_the_object_and_whole_crop_takes_the_middle(tmp_path: Path) -> None:
    from bbc1k.gan_data import load_bbc_images

    ds = _one_square_dataset(tmp_path)
    obj = load_bbc_images(ds, size=15, crop="object")
    whole = load_bbc_images(ds, size=15, crop="whole")
    assert obj.shape == whole.shape == (1, 3, 15, 15)
    # margin 1.5: a 15-px square around the 10-px object (shifted left to stay inside)
    assert obj[0, :, 4:11, 4:11].min() > 0.9 and obj[0, :, 0, 0].max() < 0.1
    # the whole picture's centre square spans x 20..80: the object lies outside it
    assert whole.max() < 0.1


def test_object_crop_stays_inside_the_picture() -> None:
    from bbc1k.gan_data import _square_around

    x0, y0, x1, y1 = _square_around([90, 50, 10, 10], (100, 60), margin=3.0)   # box in the corner
    assert (x1 - x0, y1 - y0) == (30, 30) and (x1, y1) == (100, 60)
    x0, y0, x1, y1 = _square_around([0, 0, 100, 60], (100, 60), margin=1.5)    # box bigger than fits
    assert (x0, y0, x1, y1) == (20, 0, 80, 60)


def test_bbc_images_of_a_synthetic_set(synthetic_dataset: Path) -> None:
    from bbc1k.gan_data import load_bbc_images

    images = load_bbc_images(synthetic_dataset, size=32, limit=5)
    assert images.shape == (5, 3, 32, 32) and images.dtype.is_floating_point
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.01


def test_bbc_images_refuse_bad_input(tmp_path: Path) -> None:
    from bbc1k.gan_data import load_bbc_images

    with pytest.raises(FileNotFoundError, match="images"):
        load_bbc_images(tmp_path / "nowhere")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no pictures"):
        load_bbc_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="crop"):
        load_bbc_images(tmp_path / "empty", crop="middle")


def test_bundled_digits_need_no_download() -> None:
    from bbc1k.gan_data import load_digits

    digits = load_digits(size=32)
    assert digits.shape == (1797, 1, 32, 32)
    assert digits.min() == 0 and digits.max() <= 1 and digits.max() > 0.9
    with pytest.raises(ValueError, match="source"):
        load_digits(source="emnist")


def test_mnist_falls_back_to_bundled_digits_with_a_warning(monkeypatch, tmp_path: Path) -> None:
    from bbc1k import gan_data

    def offline(size, root):
        raise OSError("no network")

    monkeypatch.setattr(gan_data, "_mnist_digits", offline)
    with pytest.warns(UserWarning, match="no network.*bundled"):
        digits = gan_data.load_digits(size=16, source="mnist", root=tmp_path)
    assert digits.shape == (1797, 1, 16, 16)


def test_importing_gan_data_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, bbc1k.gan_data; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
