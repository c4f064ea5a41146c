"""bbc1k.photo_scores: exported models scored on photos with class labels only
(the tiny real models of tests/tiny_onnx.py, through ONNX Runtime)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bbc1k.folders import DatasetError
from bbc1k.modelmeta import read_onnx_meta
from bbc1k.photo_scores import predicted_class, score_model, scored_kind


def _folders(root: Path, colours: dict[str, tuple[int, int, int]], n: int = 2) -> Path:
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 30), colour).save(root / name / f"{name}_{i}.jpg")
    return root


def test_a_segmenter_is_scored_by_the_main_class_of_its_mask(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    # The tiny segmenter paints cylinder where red is bright, background elsewhere.
    photos = _folders(tmp_path / "photos", {"cylinder": (255, 0, 0), "ball": (0, 0, 0)})
    score = score_model(tiny_models["segmenter"], photos)
    assert score.kind == "mask_logits" and score.total == 4 and score.accuracy == 0.5
    assert score.confusion == Counter({("cylinder", "cylinder"): 2, ("ball", "background"): 2})
    assert "main class of the mask right on 50.0% of 4 photos" in score.line()


def test_a_classifier_is_scored_by_its_top_class(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import onnxruntime as ort

    from bbc1k.serving import decode_image, prepare

    photos = _folders(tmp_path / "photos", {"brick": (200, 60, 50), "ball": (220, 200, 160)})
    score = score_model(tiny_models["classifier"], photos)
    meta = read_onnx_meta(str(tiny_models["classifier"]))
    session = ort.InferenceSession(str(tiny_models["classifier"]), providers=["CPUExecutionProvider"])
    expected = Counter()
    for path in sorted(photos.glob("*/*.jpg")):
        x, _ = prepare(decode_image(path.read_bytes()).image, meta)
        (logits,) = session.run(None, {meta.input_name: x[None]})
        expected[path.parent.name, meta.classes[int(np.argmax(logits))]] += 1
    assert score.kind == "class_logits" and score.confusion == expected


def test_what_cannot_be_scored_says_why(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    meta = read_onnx_meta(str(tiny_models["segmenter"]))
    assert scored_kind(meta) == "mask_logits"
    with pytest.raises(ValueError, match="no output of kind 'class_logits'"):
        score_model(tiny_models["segmenter"], tmp_path, kind="class_logits")
    photos = _folders(tmp_path / "pets", {"cat": (0, 0, 0), "dog": (9, 9, 9)}, n=1)
    with pytest.raises(DatasetError, match=r"\['cat', 'dog'\] are not among the model's"):
        score_model(tiny_models["classifier"], photos)
    empty_mask = {meta.outputs[0].name: np.zeros((1, 4, 2, 2), np.float32)}
    empty_mask[meta.outputs[0].name][0, 0] = 1.0
    assert predicted_class(meta, empty_mask, "mask_logits") == "background"
