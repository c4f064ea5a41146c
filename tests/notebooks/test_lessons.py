"""Lessons 01-03 run top to bottom on tiny CPU settings, and what they export
serves: the ONNX files carry their description and ONNX Runtime runs them on
a fresh image with the promised output shapes; the .pkl files load back."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bbc1k.layout import MASK_CLASSES, OBJECT_CLASSES

REPO = Path(__file__).resolve().parents[2]
LESSON_01 = REPO / "01-image-classification-with-fastai.ipynb"
LESSON_02 = REPO / "02-bounding-box-detection.ipynb"
LESSON_03 = REPO / "03-semantic-segmentation.ipynb"
LESSONS = [LESSON_01, LESSON_02, LESSON_03]
REQUIRED_PARAMETERS = ("DATA_SOURCE", "DATA_DIR", "N_IMAGES", "IMG_SIZE", "EPOCHS", "FREEZE_EPOCHS",
                       "PRETRAINED", "OUT_DIR", "SEED", "BATCH_SIZE", "ARCH", "LR_FIND_ITERS")


def tiny(data_dir: Path, out_dir: Path, img_size: int) -> dict:
    """Parameters small enough for 2 CPU cores. N_IMAGES and SEED match the GAN
    lesson's test, so the session's synthetic set is generated once."""
    return {"DATA_SOURCE": "synthetic", "DATA_DIR": str(data_dir), "N_IMAGES": 60, "SEED": 0,
            "IMG_SIZE": img_size, "BATCH_SIZE": 16, "ARCH": "resnet18", "PRETRAINED": False,
            "FREEZE_EPOCHS": 1, "EPOCHS": 1, "LR_FIND_ITERS": 20, "OUT_DIR": str(out_dir)}


def fresh_photo():
    """A picture none of the runs trained on, at the real photos' size."""
    from bbc1k.synth import render_sample

    image, _, _ = render_sample(seed=987, index=3, size=(512, 384))
    return image


def run_onnx(path: Path):
    """``(meta, {output name: array})`` for the fresh photo, prepared as the app prepares it."""
    import onnxruntime as ort

    from bbc1k.modelmeta import read_onnx_meta
    from bbc1k.serving.preprocess import prepare

    meta = read_onnx_meta(str(path))
    x, _ = prepare(fresh_photo(), meta)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names == [o.name for o in meta.outputs]
    outs = sess.run(None, {meta.input_name: x[None]})
    return meta, dict(zip(names, outs))


def load_pkl_and_predict(path: Path):
    """Load a learner the way a user would, in this process (not the kernel that
    trained it), and predict on the fresh photo."""
    from fastai.learner import load_learner
    from fastai.vision.core import PILImage

    learn = load_learner(path)
    return learn.predict(PILImage.create(np.asarray(fresh_photo())))


def executed_seconds(nb) -> float:
    return nb.metadata["bbc1k_test_seconds"]


@pytest.fixture(scope="module")
def lesson_runs(notebook_runner, shared_data_dir, tmp_path_factory):
    """Run each lesson at most once per session, on demand: {notebook: (nb, OUT_DIR)}."""
    done: dict[Path, tuple] = {}
    sizes = {LESSON_01: 64, LESSON_02: 128, LESSON_03: 64}  # 02's box head needs a multiple of 128

    def run(lesson: Path):
        if lesson not in done:
            work = tmp_path_factory.mktemp(lesson.stem[:2])
            out = work / "models"
            nb = notebook_runner(lesson, tiny(shared_data_dir, out, sizes[lesson]), work)
            print(f"{lesson.name}: {executed_seconds(nb):.0f} s")
            done[lesson] = (nb, out)
        return done[lesson]

    return run


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name[:2])
def test_lesson_has_one_parameters_cell_with_the_knobs(lesson):
    import nbformat

    nb = nbformat.read(lesson, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in REQUIRED_PARAMETERS:
        assert re.search(rf"^{name} = ", tagged[0].source, re.M), f"{lesson.name}: no {name} in the parameters cell"
    assert re.search(r'^PRETRAINED = True\b', tagged[0].source, re.M)
    assert re.search(r'^DATA_SOURCE = "auto"', tagged[0].source, re.M)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name[:2])
def test_lesson_is_portable(lesson):
    """No absolute paths, no wget, and pip only inside the Colab-only first cell."""
    import nbformat

    nb = nbformat.read(lesson, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    for src in code:
        assert "wget" not in src
        assert not re.search(r"""["'](/|[A-Z]:\\)(home|Users|work|tmp|content)""", src), src
    pips = [src for src in code if "pip install" in src]
    assert len(pips) == 1 and 'if "google.colab" in sys.modules' in pips[0]


@pytest.mark.slow
def test_lesson_01_exports_a_working_classifier(lesson_runs):
    nb, out = lesson_runs(LESSON_01)
    meta, outs = run_onnx(out / "bbc-classifier.onnx")
    assert meta.task == "classify" and meta.name == "bbc-classifier"
    assert meta.classes == list(OBJECT_CLASSES)
    assert meta.input_size == [64, 64] and meta.resize == "squish"
    assert meta.mean == pytest.approx([0.485, 0.456, 0.406]) and meta.std == pytest.approx([0.229, 0.224, 0.225])
    assert outs["logits"].shape == (1, 3) and np.isfinite(outs["logits"]).all()
    assert meta.extra["architecture"] == "resnet18" and meta.extra["epochs"] == 2
    assert set(meta.extra["metrics"]) == {"valid_loss", "accuracy"}
    label, _, probs = load_pkl_and_predict(out / "bbc-classifier.pkl")
    assert label in OBJECT_CLASSES and probs.shape == (3,)


@pytest.mark.slow
def test_lesson_02_exports_a_detector_and_a_multitask_model(lesson_runs):
    nb, out = lesson_runs(LESSON_02)
    meta, outs = run_onnx(out / "bbc-detector.onnx")
    assert meta.task == "detect" and meta.input_size == [128, 128]
    assert [(o.name, o.kind, o.box_format) for o in meta.outputs] == [("box", "box", "xyxy")]
    box = outs["box"]
    assert box.shape == (1, 4) and np.all(np.abs(box) <= 1.0)
    assert {"box_iou", "valid_loss"} <= set(meta.extra["metrics"])

    meta, outs = run_onnx(out / "bbc-multitask.onnx")
    assert meta.task == "classify+detect" and meta.classes == list(OBJECT_CLASSES)
    assert [(o.name, o.kind) for o in meta.outputs] == [("box", "box"), ("logits", "class_logits")]
    assert outs["box"].shape == (1, 4) and np.all(np.abs(outs["box"]) <= 1.0)
    assert outs["logits"].shape == (1, 3) and np.isfinite(outs["logits"]).all()
    assert {"class_accuracy", "box_iou"} <= set(meta.extra["metrics"])
    # The losses and metrics defined in the notebook travel inside the .pkl (cloudpickle),
    # so it loads here; its network gives what the ONNX graph gives. (fastai's predict
    # cannot run a box learner on a bare image: its batches expect boxes to pad.)
    import torch
    from fastai.learner import load_learner

    from bbc1k.serving.preprocess import prepare

    learn = load_learner(out / "bbc-multitask.pkl")
    x, _ = prepare(fresh_photo(), meta)
    with torch.no_grad():
        y = learn.model.eval()(torch.from_numpy(x[None])).numpy()
    np.testing.assert_allclose(y[:, :4], outs["box"], atol=1e-4)
    np.testing.assert_allclose(y[:, 4:], outs["logits"], atol=1e-4)


@pytest.mark.slow
def test_lesson_03_exports_a_segmenter(lesson_runs):
    nb, out = lesson_runs(LESSON_03)
    meta, outs = run_onnx(out / "bbc-segmenter.onnx")
    assert meta.task == "segment" and meta.classes == list(MASK_CLASSES)
    assert outs["mask"].shape == (1, 4, 64, 64)
    assert meta.extra["architecture"] in ("resnet18 + U-Net", "resnet18 + transposed convs")
    assert set(meta.extra["class_iou"]) == set(MASK_CLASSES)
    mask, *_ = load_pkl_and_predict(out / "bbc-segmenter.pkl")
    assert tuple(mask.shape) == (64, 64) and int(mask.max()) < len(MASK_CLASSES)


@pytest.mark.slow
def test_lesson_01_pretrained_path_freezes_then_fine_tunes(notebook_runner, shared_data_dir, tmp_path, monkeypatch):
    """The learners' default, PRETRAINED=True: the body is frozen for the head's
    epochs, then unfrozen with discriminative learning rates. No network here,
    so a stand-in checkpoint (random weights under the real file name) sits in
    a temporary torch cache, where torchvision looks before downloading."""
    import torch
    import torchvision

    from bbc1k.notebook import cached_weights_path, weights_url

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # the kernel inherits it
    checkpoint = cached_weights_path(weights_url("resnet18"))
    checkpoint.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), checkpoint)

    out = tmp_path / "models"
    nb = notebook_runner(LESSON_01, {**tiny(shared_data_dir, out, 64), "PRETRAINED": True}, tmp_path)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "learn.unfreeze()" in code
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "random weights" not in printed  # the from-scratch warning did not fire
    meta, outs = run_onnx(out / "bbc-classifier.onnx")
    assert meta.task == "classify" and outs["logits"].shape == (1, 3)
