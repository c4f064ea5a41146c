"""bbc1k.train.segmenter (``bbc1k train segmenter``,
scripts/train_segmenter_from_scratch.py): a segmenter (and a detector that
boxes its mask) from random weights on a bbc1k dataset, exported for the app
(tiny synthetic data, CPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bbc1k.nets import BoxFromMask, OneObject, box_iou, boxes_from_mask_logits, main_blob, tight_boxes
from bbc1k.train.augment import Augment, warp_pair
from bbc1k.train.cli import segmenter_main


def test_trains_and_exports_a_segmenter_and_a_detector(synthetic_dataset: Path, tmp_path: Path, capsys) -> None:
    import onnxruntime as ort

    from bbc1k.layout import MASK_CLASSES, OBJECT_CLASSES
    from bbc1k.modelmeta import read_onnx_meta

    code = segmenter_main([str(synthetic_dataset), "--out", str(tmp_path), "--epochs", "2", "--size", "32", "48",
                          "--width", "4", "--batch-size", "4", "--detector", "tiny-detector"])
    assert code == 0
    x = np.random.default_rng(0).random((3, 3, 32, 48), dtype=np.float32)

    meta = read_onnx_meta(str(tmp_path / "bbc-segmenter.onnx"))
    assert meta.task == "segment" and meta.classes == list(MASK_CLASSES)
    assert meta.input_size == [32, 48] and meta.resize == "squish"
    assert meta.output("mask_logits").shape == ["N", 4, 32, 48]
    assert set(meta.extra["class_iou"]) == set(MASK_CLASSES) and 0 <= meta.extra["mean_iou"] <= 1
    sess = ort.InferenceSession(str(tmp_path / "bbc-segmenter.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {meta.input_name: x})
    assert logits.shape == (3, 4, 32, 48) and np.isfinite(logits).all()

    det = read_onnx_meta(str(tmp_path / "tiny-detector.onnx"))
    assert det.task == "detect" and det.classes == list(OBJECT_CLASSES)
    box = det.output("box")
    assert box.box_format == "xyxy" and box.box_range == [-1.0, 1.0]
    sess = ort.InferenceSession(str(tmp_path / "tiny-detector.onnx"), providers=["CPUExecutionProvider"])
    (boxes,) = sess.run(None, {det.input_name: x})
    assert boxes.shape == (3, 4)
    assert (boxes >= -1).all() and (boxes <= 1).all()
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
    assert "validation mean IoU" in capsys.readouterr().out


def test_tight_boxes_of_masks() -> None:
    obj = torch.zeros(3, 4, 8)
    obj[0, 1:3, 2:6] = 1          # rows 1-2, columns 2-5
    obj[1, 0, 7] = 1              # one pixel in the top-right corner
    boxes = tight_boxes(obj)  # obj[2]: empty, so the whole picture
    expected = torch.tensor([[2 / 8 * 2 - 1, 1 / 4 * 2 - 1, 6 / 8 * 2 - 1, 3 / 4 * 2 - 1],
                             [7 / 8 * 2 - 1, -1.0, 1.0, 1 / 4 * 2 - 1],
                             [-1.0, -1.0, 1.0, 1.0]])
    assert torch.allclose(boxes, expected)
    assert torch.allclose(box_iou(boxes, boxes), torch.ones(3))
    half = torch.tensor([[-1.0, -1.0, 0.0, 1.0]])
    assert box_iou(half, torch.tensor([[-1.0, -1.0, 1.0, 1.0]])).item() == pytest.approx(0.5)


class Painted(nn.Module):
    """Logits that say: ball (2) in a big square, a stray brick (1) pixel elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 4, 8, 8)
        logits[:, 0] = 1.0
        logits[:, 2, 2:6, 2:6] = 5.0
        logits[:, 1, 7, 0] = 5.0
        return logits


def test_box_from_mask_boxes_the_main_object_class() -> None:
    boxes = BoxFromMask(Painted())(torch.zeros(2, 3, 8, 8))
    assert torch.allclose(boxes, torch.tensor([[-0.5, -0.5, 0.5, 0.5]] * 2))  # the stray pixel is left out


def test_main_blob_keeps_the_piece_that_holds_the_surest_pixel() -> None:
    obj, score = torch.zeros(2, 32, 32), torch.full((2, 32, 32), 0.6)
    obj[:, 4:12, 4:12] = 1        # the object ...
    obj[:, 4:12, 13:15] = 1       # ... a piece of it one pixel away (closer than a cell): joins
    obj[:, 18:30, 18:30] = 1      # clutter, larger, the segmenter less sure of it
    score[:, 18:30, 18:30] = 0.55
    score[0, 6, 6] = score[1, 8, 9] = 0.9
    kept = main_blob(obj, score)
    expected = torch.zeros_like(obj)
    expected[:, 4:12, 4:12] = expected[:, 4:12, 13:15] = 1
    assert torch.equal(kept, expected)
    score[1, 25, 25] = 0.95       # now the clutter holds the surest pixel
    assert torch.equal(main_blob(obj, score)[1], obj[1] - expected[1])
    assert torch.equal(main_blob(torch.zeros_like(obj), score), torch.zeros_like(obj))


class Cluttered(nn.Module):
    """Logits that say: ball (2) in a square, and again, less surely, in a far corner."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 4, 32, 32)
        logits[:, 0] = 1.0
        logits[:, 2, 8:16, 8:24] = 5.0
        logits[:, 2, 28:32, 28:32] = 3.0
        return logits


def test_box_from_mask_leaves_out_far_pieces_of_the_main_class(tmp_path: Path) -> None:
    """The box is the object's, not also the clutter's; so is the exported graph's."""
    import onnxruntime as ort

    detector = BoxFromMask(Cluttered())
    expected = torch.tensor([[8 / 32 * 2 - 1, 8 / 32 * 2 - 1, 24 / 32 * 2 - 1, 16 / 32 * 2 - 1]] * 2)
    assert torch.allclose(detector(torch.zeros(2, 3, 32, 32)), expected)
    assert torch.allclose(boxes_from_mask_logits(Cluttered()(torch.zeros(1, 3, 32, 32)), blob=False),
                          torch.tensor([[-0.5, -0.5, 1.0, 1.0]]))  # every pixel of the class: clutter too
    torch.onnx.export(detector, (torch.zeros(2, 3, 32, 32),), tmp_path / "d.onnx", input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False)
    (boxes,) = ort.InferenceSession(str(tmp_path / "d.onnx")).run(None, {"x": np.zeros((3, 3, 32, 32), np.float32)})
    assert np.allclose(boxes, expected[:1].numpy())


class Unsure(nn.Module):
    """Mask logits: picture 0 holds a ball (2); in picture 1 no pixel beats the
    background, a cylinder-like (3) patch comes closest, a ball-like pixel next."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 4, 8, 8)
        logits[:, 0] = 2.0
        logits[0, 2, 1:3, 1:4] = 4.0
        logits[1, 3, 4:6, 4:6] = 1.5
        logits[1, 3, 4, 4] = 1.8
        logits[1, 2, 0, 0] = 0.5
        return logits


def test_one_object_fills_an_empty_mask_with_its_most_object_like_pixels() -> None:
    x = torch.zeros(2, 3, 8, 8)
    logits = OneObject(Unsure())(x)
    assert torch.equal(logits[0], Unsure()(x)[0])        # an object already: unchanged
    mask = logits.argmax(1)
    expected = torch.zeros(8, 8, dtype=torch.long)
    expected[4:6, 4:6] = 3                                 # within one logit of the surest pixel
    assert torch.equal(mask[1], expected)
    assert torch.allclose(BoxFromMask(OneObject(Unsure()))(x)[1], torch.tensor([0.0, 0.0, 0.5, 0.5]))


def test_validation_measures_the_networks_the_exports_write(synthetic_dataset: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from bbc1k.train.segmenter import SegRecipe, export, export_detector, train

    rec = SegRecipe(size=(32, 48), width=4, batch_size=4, epochs=1)
    result = train(synthetic_dataset, rec, log=False)
    assert isinstance(result.model, OneObject) and isinstance(result.segmenter, OneObject)
    x = result.sample
    with torch.no_grad():
        masks, boxes = result.segmenter(x).numpy(), BoxFromMask(result.model)(x).numpy()
    for path, validated in [(export(result, rec, tmp_path, "seg"), masks),
                            (export_detector(result, rec, tmp_path, "det"), boxes)]:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (written,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        assert np.allclose(written, validated, atol=1e-4)


def test_warp_pair_moves_masks_with_their_photos() -> None:
    torch.manual_seed(0)
    x = torch.zeros(4, 3, 40, 40)
    masks = torch.zeros(4, 40, 40, dtype=torch.uint8)
    x[:, :, 10:30, 5:20] = 1.0     # a bright object ...
    masks[:, 10:30, 5:20] = 2      # ... and its mask
    aug = Augment(brightness=0, contrast=0, saturation=0)
    xa, ma = warp_pair(aug, x, masks, (32, 32))
    assert xa.shape == (4, 3, 32, 32) and ma.shape == (4, 32, 32)
    assert ma.dtype == torch.long and set(ma.unique().tolist()) <= {0, 2}
    bright = xa.mean(1) > 0.5
    agree = (bright == (ma == 2)).float().mean().item()
    assert agree > 0.97  # only the edge pixels may differ (bilinear photo, nearest mask)


def test_a_dataset_without_masks_is_refused(synthetic_dataset: Path, tmp_path: Path, capsys) -> None:
    import shutil

    data = tmp_path / "bbc_train"
    shutil.copytree(synthetic_dataset, data)
    next((data / "masks").iterdir()).unlink()
    assert segmenter_main([str(data), "--out", str(tmp_path / "models"), "--epochs", "1", "--size", "32", "48"]) == 2
    assert "missing (every image needs its mask)" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_size_must_halve_three_times(synthetic_dataset: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        segmenter_main([str(synthetic_dataset), "--size", "30", "40"])
    assert "multiples of 8" in capsys.readouterr().err


def test_valid_frac_zero_trains_on_everything_and_exports(synthetic_dataset: Path, tmp_path: Path, capsys) -> None:
    from bbc1k.modelmeta import read_onnx_meta

    code = segmenter_main([str(synthetic_dataset), "--out", str(tmp_path), "--epochs", "1", "--size", "32", "48",
                           "--width", "4", "--batch-size", "4", "--valid-frac", "0", "--detector", "all-detector"])
    assert code == 0
    out = capsys.readouterr().out
    assert "training on all 24 images, validation skipped" in out
    assert "validation skipped (--valid-frac 0: trained on all 24 images)" in out
    extra = read_onnx_meta(str(tmp_path / "bbc-segmenter.onnx")).extra
    assert extra["mean_iou"] is None and extra["n_valid"] == 0 and extra["n_train"] == 24
    assert read_onnx_meta(str(tmp_path / "all-detector.onnx")).extra["box_iou"] is None


def test_valid_frac_must_leave_something_to_train_on(synthetic_dataset: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        segmenter_main([str(synthetic_dataset), "--valid-frac", "1"])
    assert "--valid-frac must be in [0, 1)" in capsys.readouterr().err


def test_a_class_label_alone_pulls_the_mask_towards_its_class() -> None:
    from bbc1k.train.segmenter import weak_label_loss

    logits = torch.zeros(1, 4, 10, 10)
    logits[0, 0] = 5.0                     # background everywhere...
    logits[0, 2, 4:6, 4:6] = 10.0          # ...but a ball in the middle
    ball, brick = torch.tensor([2]), torch.tensor([1])
    assert weak_label_loss(logits, ball) < 0.2 < 5 < weak_label_loss(logits, brick)
    nothing = torch.zeros(1, 4, 10, 10)
    nothing[0, 0] = 5.0                    # all background: the label's class claims no pixel
    assert weak_label_loss(nothing, ball) > 2
    logits.requires_grad_(True)
    weak_label_loss(logits, brick).backward()
    assert logits.grad[0, 1].sum() < 0 < logits.grad[0, 2].sum()  # raise brick, lower ball


def test_real_photos_with_class_labels_train_the_segmenter_too(synthetic_dataset: Path, class_folders: Path,
                                                               tmp_path: Path, capsys) -> None:
    import shutil

    from bbc1k.modelmeta import read_onnx_meta

    code = segmenter_main([str(synthetic_dataset), "--out", str(tmp_path), "--epochs", "1", "--size", "32", "48",
                          "--width", "4", "--batch-size", "4", "--photos", str(class_folders)])
    assert code == 0
    facts = read_onnx_meta(str(tmp_path / "bbc-segmenter.onnx")).extra
    assert facts["photos"] == str(class_folders) and facts["image_head"] and facts["whiten"] and facts["half_res"]
    assert facts["photo_share"] == 2.0
    # Without the image head the photos train the mask through the weak-label loss instead.
    assert segmenter_main([str(synthetic_dataset), "--out", str(tmp_path), "--epochs", "1", "--size", "32", "48",
                           "--width", "4", "--batch-size", "4", "--photos", str(class_folders), "--no-image-head",
                           "--no-whiten", "--full-res", "--name", "plain"]) == 0
    facts = read_onnx_meta(str(tmp_path / "plain.onnx")).extra
    assert not facts["image_head"] and not facts["whiten"] and not facts["half_res"]
    assert facts["photo_share"] == 0.5  # the photos go through the decoder too: fewer per step
    photo = next((class_folders / "ball").iterdir())
    for folder in ("cat", "dog"):  # classes no mask can show
        (tmp_path / "odd" / folder).mkdir(parents=True)
        shutil.copy(photo, tmp_path / "odd" / folder / photo.name)
    capsys.readouterr()
    assert segmenter_main([str(synthetic_dataset), "--out", str(tmp_path), "--epochs", "1", "--size", "32", "48",
                           "--photos", str(tmp_path / "odd")]) == 2
    assert "['cat', 'dog'] are not among the mask classes" in capsys.readouterr().err
