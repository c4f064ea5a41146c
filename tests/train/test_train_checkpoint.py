"""bbc1k.train.checkpoint: the classifier's PyTorch weights beside its ONNX,
and the segmenter whose mask that classifier names (``--classifier``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bbc1k.folders import DatasetError
from bbc1k.train import checkpoint
from bbc1k.train.cli import classifier_main, segmenter_main

TINY = ["--epochs", "1", "--width", "4", "--batch-size", "4", "--quiet"]


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from bbc1k.modelmeta import read_onnx_meta

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {read_onnx_meta(str(path)).input_name: x})[0]


@pytest.mark.parametrize("extra", [[], ["--ensemble", "2", "--no-tta"]])
def test_the_weights_rebuild_the_network_the_onnx_was_exported_from(class_folders: Path, tmp_path: Path,
                                                                    extra: list[str]) -> None:
    assert classifier_main([str(class_folders), "--out", str(tmp_path), "--name", "tiny", "--size", "24", "32",
                            *TINY, *extra]) == 0
    loaded = checkpoint.load(tmp_path / "tiny.pt")
    assert loaded.classes == ["ball", "brick", "cylinder"] and loaded.size == (24, 32)
    x = np.random.default_rng(0).random((3, 3, 24, 32), dtype=np.float32)
    with torch.no_grad():
        mine = loaded.network(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mine, onnx_logits(tmp_path / "tiny.onnx", x), rtol=1e-3, atol=1e-4)


def test_a_missing_or_foreign_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        checkpoint.load(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DatasetError, match="junk.pt: not classifier weights"):
        checkpoint.load(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(DatasetError, match="other.pt: not classifier weights written by"):
        checkpoint.load(tmp_path / "other.pt")


def test_the_classifier_names_the_segmenter_s_mask(synthetic_dataset: Path, class_folders: Path,
                                                   tmp_path: Path) -> None:
    from bbc1k.modelmeta import read_onnx_meta

    # The classifier's input (24x32) differs from the segmenter's (32x48): the graph resizes for it.
    assert classifier_main([str(class_folders), "--out", str(tmp_path), "--name", "clf", "--size", "24", "32",
                            *TINY]) == 0
    assert segmenter_main([str(synthetic_dataset), "--out", str(tmp_path), "--epochs", "1", "--size", "32", "48",
                           "--width", "4", "--batch-size", "4", "--photos", str(class_folders),
                           "--classifier", str(tmp_path / "clf.pt"), "--detector", "det"]) == 0
    meta = read_onnx_meta(str(tmp_path / "bbc-segmenter.onnx"))
    assert "named by the classifier" in meta.extra["architecture"] and meta.extra["classifier"].endswith("clf.pt")
    x = np.random.default_rng(1).random((4, 3, 32, 48), dtype=np.float32)
    masks = onnx_logits(tmp_path / "bbc-segmenter.onnx", x)
    small = torch.nn.functional.interpolate(torch.from_numpy(x), size=(24, 32), mode="bilinear", align_corners=False)
    says = onnx_logits(tmp_path / "clf.onnx", small.numpy()).argmax(1)           # ball, brick, cylinder
    named = 1 + masks[:, 1:].max((2, 3)).argmax(1)                                 # brick 1, ball 2, cylinder 3
    assert [["ball", "brick", "cylinder"][i] for i in says] == [meta.classes[i] for i in named]
    # Object logits differ by the classifier's log-probabilities alone, the same at every pixel.
    spread = masks[:, 2:] - masks[:, 1:2]
    np.testing.assert_allclose(spread, spread[..., :1, :1].repeat(32, 2).repeat(48, 3), atol=1e-4)
    assert (tmp_path / "det.onnx").is_file()


def test_a_classifier_of_other_classes_is_refused_before_training(synthetic_dataset: Path, class_folders: Path,
                                                                  tmp_path: Path, capsys) -> None:
    odd = tmp_path / "odd"
    for folder in ("cat", "dog"):
        shutil.copytree(class_folders / "ball", odd / folder)
    assert classifier_main([str(odd), "--out", str(tmp_path), "--name", "pets", "--size", "24", "32", *TINY]) == 0
    capsys.readouterr()
    assert segmenter_main([str(synthetic_dataset), "--out", str(tmp_path / "models"), "--epochs", "1",
                           "--size", "32", "48", "--classifier", str(tmp_path / "pets.pt")]) == 2
    err = capsys.readouterr().err
    assert "pets.pt: the classifier knows cat, dog; the masks' objects are brick, ball, cylinder" in err
    assert not (tmp_path / "models").exists()
    with pytest.raises(SystemExit):
        segmenter_main([str(synthetic_dataset), "--classifier", str(tmp_path / "pets.pt"), "--no-image-head"])
    assert "it needs the head" in capsys.readouterr().err
