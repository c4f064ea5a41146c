"""bbc1k.train.classifier (``bbc1k train classifier``, scripts/train_from_scratch.py):
trains from random weights on a folder of class subfolders and writes a
servable ONNX model (tiny synthetic data, CPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bbc1k.export import export_onnx
from bbc1k.modelmeta import ModelMeta, OutputSpec
from bbc1k.train.augment import Augment, mix_batch
from bbc1k.train.classifier import Recipe, export, onnx_accuracy, train
from bbc1k.train.cli import classifier_main
from bbc1k.train.data import DatasetError, find_images, stratified_split
from bbc1k.train.device import native_bf16, use_bf16
from tests.train.photo_folders import PER_CLASS


def test_trains_and_exports_a_servable_onnx(class_folders: Path, tmp_path: Path, capsys) -> None:
    import onnxruntime as ort

    from bbc1k.modelmeta import read_onnx_meta

    code = classifier_main([str(class_folders), "--out", str(tmp_path), "--name", "tiny", "--epochs", "1",
                            "--size", "24", "32", "--width", "4", "--batch-size", "4", "--quiet",
                            "--holdout", str(class_folders)])
    assert code == 0
    path = tmp_path / "tiny.onnx"
    assert path.is_file()

    meta = read_onnx_meta(str(path))
    assert meta.task == "classify"
    assert meta.classes == ["ball", "brick", "cylinder"]  # the sorted subfolder names
    assert meta.input_size == [24, 32]  # served at the size it trained at
    assert meta.resize == "squish"
    assert meta.extra["pretrained"] is False and meta.extra["epochs_run"] == 1
    assert meta.output("class_logits").shape == ["N", 3]

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((5, 3, 24, 32), dtype=np.float32)
    (logits,) = sess.run(None, {meta.input_name: x})
    assert logits.shape == (5, 3)
    assert np.isfinite(logits).all()

    out = capsys.readouterr().out
    assert "validation accuracy" in out
    assert "holdout accuracy" in out and f"on {3 * PER_CLASS} images" in out


def test_split_is_stratified_and_fixed() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    train, valid = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[valid]).tolist() == [2, 1, 1]  # each class keeps its share, at least one
    again_train, again_valid = stratified_split(labels, 0.2, seed=3)
    assert (valid == again_valid).all() and (train == again_train).all()


def test_augment_keeps_shape_and_range() -> None:
    x = torch.rand(6, 3, 30, 40)
    y = Augment()(x, (24, 32))
    assert y.shape == (6, 3, 24, 32)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_a_folder_without_class_subfolders_is_refused(class_folders: Path, tmp_path: Path, capsys) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    for i, picture in enumerate(sorted((class_folders / "ball").iterdir())):
        (loose / f"{i}.jpg").write_bytes(picture.read_bytes())

    assert classifier_main([str(loose), "--out", str(tmp_path / "models"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "one subfolder of images per class" in err and "4 loose image(s)" in err
    assert not (tmp_path / "models").exists()  # nothing written

    with pytest.raises(DatasetError, match="no such folder"):
        find_images(tmp_path / "missing")


def test_time_budget_ends_training_early_after_synthetic_pretraining(class_folders: Path) -> None:
    recipe = Recipe(size=(24, 32), width=4, batch_size=4, epochs=50, time_budget=1e-3,
                    synthetic=6, synthetic_epochs=1)
    result = train(class_folders, recipe, progress=False)
    assert result.epochs_run == 1  # the budget was spent after the first epoch
    assert result.classes == ["ball", "brick", "cylinder"]
    assert 0.0 <= result.valid_acc <= 1.0
    assert result.pretrain_seconds > 0


def test_synthetic_pictures_are_refused_for_classes_the_generator_cannot_draw(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), (i * 90, 40, 40)).save(tmp_path / name / f"{i}.png")
    with pytest.raises(DatasetError, match="synthetic pictures show only brick, ball, cylinder; the data has classes cat, dog"):
        train(tmp_path, Recipe(size=(24, 32), width=4, batch_size=2, epochs=1, synthetic=4), progress=False)


def test_a_broken_image_is_named(class_folders: Path, tmp_path: Path, capsys) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(class_folders, data)
    (data / "brick" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert classifier_main([str(data), "--out", str(tmp_path / "models"), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err
    assert not (tmp_path / "models").exists()


def test_mixup_blends_and_cutmix_pastes_with_matching_label_weights() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    x = torch.stack([torch.full((3, 8, 10), float(i)) for i in range(6)])  # image i is all i
    y = torch.arange(6)

    mixed, partner, lam = mix_batch(x, y, "mixup", alpha=1.0)
    assert 0.0 <= lam <= 1.0
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[partner])  # partner labels name the partner images

    pasted, partner, lam = mix_batch(x, y, "cutmix", alpha=1.0)
    for i in range(6):
        own = (pasted[i] == float(i)).float().mean().item()
        if partner[i] != i:
            assert own == pytest.approx(lam)  # the label weight is the share of pixels kept
        assert set(pasted[i].unique().tolist()) <= {float(i), float(partner[i])}
    assert (x == torch.stack([torch.full((3, 8, 10), float(i)) for i in range(6)])).all()  # input untouched

    with pytest.raises(ValueError, match="mixup"):
        mix_batch(x, y, "blend", alpha=1.0)


def test_ema_weights_are_validated_and_exported(class_folders: Path, tmp_path: Path, monkeypatch) -> None:
    import torch.optim.swa_utils as swa

    from bbc1k.modelmeta import read_onnx_meta

    averages = []

    class Recorded(swa.AveragedModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            averages.append(self)

    monkeypatch.setattr(swa, "AveragedModel", Recorded)
    recipe = Recipe(size=(24, 32), width=4, batch_size=4, epochs=3, ema=0.5, mix="cutmix",
                    eval_every=2, tta=False)
    result = train(class_folders, recipe, progress=False, log_epochs=False)
    assert [h["valid_acc"] is not None for h in result.history] == [False, True, True]  # every 2nd, and the last
    (ema,) = averages
    assert result.model is ema.module  # validated and exported: the average, not the last weights
    steps = 3 * (len(stratified_split(find_images(class_folders)[2], 0.2, 0)[0]) // 4)
    assert int(ema.n_averaged) == steps  # updated after every step
    extra = read_onnx_meta(str(export(result, recipe, tmp_path, "ema"))).extra
    assert extra["ema"] == 0.5 and extra["mix"] == "cutmix"


def test_precision_follows_the_setting() -> None:
    cpu = torch.device("cpu")
    assert use_bf16(Recipe(precision="fp32"), cpu) is False
    assert use_bf16(Recipe(precision="bf16"), cpu) is True
    assert use_bf16(Recipe(precision="auto"), cpu) == native_bf16(cpu)
    with pytest.raises(ValueError, match="precision"):
        use_bf16(Recipe(precision="fp16"), cpu)


def test_bf16_training_exports_a_float32_onnx(class_folders: Path, tmp_path: Path) -> None:
    import onnx

    code = classifier_main([str(class_folders), "--out", str(tmp_path), "--name", "bf16", "--epochs", "1",
                            "--size", "24", "32", "--width", "4", "--batch-size", "4", "--quiet", "--precision", "bf16",
                            "--mix", "mixup", "--ema", "0.9"])
    assert code == 0
    model = onnx.load(str(tmp_path / "bf16.onnx"))
    assert {i.data_type for i in model.graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}


def test_valid_frac_zero_trains_on_everything_and_exports(class_folders: Path, tmp_path: Path, capsys) -> None:
    from bbc1k.modelmeta import read_onnx_meta

    code = classifier_main([str(class_folders), "--out", str(tmp_path), "--name", "all", "--epochs", "2",
                            "--size", "24", "32", "--width", "4", "--batch-size", "4", "--quiet",
                            "--valid-frac", "0", "--eval-every", "1"])
    assert code == 0  # it used to fail loading zero validation photos ("need at least one array to stack")
    out = capsys.readouterr().out
    assert f"training on all {3 * PER_CLASS} photos, validation skipped" in out
    assert f"validation accuracy skipped (--valid-frac 0: trained on all {3 * PER_CLASS} photos)" in out
    extra = read_onnx_meta(str(tmp_path / "all.onnx")).extra
    assert extra["valid_acc"] is None and extra["valid_frac"] == 0
    assert extra["n_train"] == 3 * PER_CLASS and extra["n_valid"] == 0


class ColourModel(nn.Module):
    """Scores the three colour channels' means: the true class logits of
    solid red, green and blue pictures. Its FIRST output is a box whose
    argmax names the wrong colour, so reading output 0 as logits scores 0%."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        means = x.mean((2, 3))                                          # N x 3, RGB
        decoy = torch.cat([1 - means, -torch.ones_like(means[:, :1])], 1)  # N x 4
        return decoy, means


class BoxOnly(nn.Module):
    """A detector's box alone: no class logits to score."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)).repeat(1, 2)[:, :4]


def test_onnx_accuracy_reads_the_class_logits_output_by_name(tmp_path: Path) -> None:
    data = tmp_path / "colours"
    for name, rgb in (("red", (255, 0, 0)), ("green", (0, 255, 0)), ("blue", (0, 0, 255))):
        (data / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), rgb).save(data / name / f"{i}.png")
    meta = ModelMeta(task="classify+detect", name="colours", classes=["red", "green", "blue"],
                     input_size=[24, 32], mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0],
                     outputs=[OutputSpec("box", "box", ["N", 4], box_format="xyxy", box_range=[-1.0, 1.0]),
                              OutputSpec("scores", "class_logits", ["N", 3])])
    path = export_onnx(ColourModel(), meta, tmp_path / "colours.onnx", torch.rand(2, 3, 24, 32))
    assert onnx_accuracy(path, data) == (1.0, 6)


def test_onnx_accuracy_needs_a_class_logits_output(tmp_path: Path, class_folders: Path) -> None:
    meta = ModelMeta(task="detect", name="boxes", classes=["ball", "brick", "cylinder"], input_size=[24, 32],
                     outputs=[OutputSpec("box", "box", ["N", 4], box_format="xyxy", box_range=[-1.0, 1.0])])
    path = export_onnx(BoxOnly(), meta, tmp_path / "boxes.onnx", torch.rand(2, 3, 24, 32))
    with pytest.raises(ValueError, match="class_logits"):
        onnx_accuracy(path, class_folders)

