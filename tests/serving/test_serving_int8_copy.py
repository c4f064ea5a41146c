"""bbc1k.quantize.write_int8_copy: the int8 copy export writes beside a model,
calibrated on training images and kept only when it scores within half a point
of the float32 model on the validation set, with both figures in its description."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from bbc1k.download import sha256_of
from bbc1k.modelmeta import read_onnx_meta
from bbc1k.quantize import INT8_KEY, int8_path, quantize, write_int8_copy
from bbc1k.serving import open_session, prepare, softmax
from bbc1k.synth import render_sample


def _photos(seed: int, n: int) -> list[tuple]:
    return [render_sample(seed, i, size=(96, 72)) for i in range(n)]


@pytest.fixture
def model(tiny_models, tmp_path):
    """A copy of a tiny model in its own folder, by role."""
    def copy(role: str):
        dst = tmp_path / f"{role}.onnx"
        shutil.copy(tiny_models[role], dst)
        return dst
    return copy


def test_classifier_copy_is_checked_on_labels_and_described(model, tmp_path):
    src = model("classifier")
    meta = read_onnx_meta(str(src))
    train = [prepare(im, meta)[0] for im, _, _ in _photos(1, 16)]
    valid = [(prepare(im, meta)[0], label) for im, _, label in _photos(2, 12)]
    report = write_int8_copy(src, train, valid)
    assert report.path == int8_path(src) == tmp_path / "classifier.int8.onnx"
    assert report.metric == "accuracy" and report.n == 12 and not report.agreement
    assert report.float32 - report.int8 <= 0.005
    q = read_onnx_meta(str(report.path))
    info = q.extra[INT8_KEY]
    assert info["source_sha256"] == sha256_of(src)
    assert info["calibration"] == "training images" and info["calibration_images"] == 16
    assert info["check"] == {"metric": "accuracy", "float32": round(report.float32, 5),
                             "int8": round(report.int8, 5), "n": 12, "against": "validation labels"}
    assert (q.task, q.classes, q.input_size) == (meta.task, meta.classes, meta.input_size)
    assert "int8 copy classifier.int8.onnx: accuracy" in report.line()


def test_image_files_are_prepared_as_the_app_does(model, tmp_path):
    src = model("classifier")
    files = []
    for i, (im, _, label) in enumerate(_photos(3, 6)):
        path = tmp_path / f"{label}-{i}.jpg"
        im.save(path)
        files.append((path, label))
    report = write_int8_copy(src, [p for p, _ in files], files)
    assert report.path is not None and report.n == 6


def test_copy_losing_more_than_the_tolerance_is_not_written_and_an_old_one_goes(model):
    src = model("classifier")
    stale = int8_path(src)
    stale.write_bytes(b"an older copy")
    valid = [(im, label) for im, _, label in _photos(4, 6)]
    meta = read_onnx_meta(str(src))
    report = write_int8_copy(src, [prepare(im, meta)[0] for im, _ in valid][:4],
                             [(prepare(im, meta)[0], label) for im, label in valid], tolerance=-1.0)
    assert report.path is None and not stale.exists()
    assert "not written" in report.line()


def test_segmenter_is_judged_by_mean_iou_on_masks(model):
    src = model("segmenter")
    meta = read_onnx_meta(str(src))
    photos = _photos(5, 8)
    report = write_int8_copy(src, [prepare(im, meta)[0] for im, _, _ in photos],
                             [(prepare(im, meta)[0], mask) for im, mask, _ in photos])
    assert report.metric == "mean IoU" and 0 <= report.int8 <= 1 and report.path is not None


def test_detector_without_labels_is_judged_by_agreement(model):
    src = model("detector")
    report = write_int8_copy(src, max_calibration=8)  # synthetic calibration, agreement with float32
    assert report.agreement and report.metric == "accuracy" and report.float32 == 1.0 and report.n == 8
    assert read_onnx_meta(str(report.path)).extra[INT8_KEY]["calibration"] == "synthetic bbc1k photos"
    assert report.path is not None


def test_box_iou_against_object_masks(model):
    src = model("detector")
    meta = read_onnx_meta(str(src))
    photos = _photos(6, 6)
    valid = [(prepare(im, meta)[0], mask) for im, mask, _ in photos]
    from bbc1k.quantize import _check_for

    chk = _check_for(meta, valid)
    assert chk.metric == "box IoU" and chk.targets.shape == (6, 4)
    score = chk.score(open_session(src, threads=1))
    assert 0 <= score <= 1


def test_quantized_copy_stays_close_to_the_float_model(tiny_models, tmp_path):
    src = tiny_models["classifier"]
    meta = read_onnx_meta(str(src))
    out = quantize(src, tmp_path / "q.onnx")  # synthetic calibration
    ops = {n.op_type for n in __import__("onnx").load(str(out)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    x = np.stack([prepare(render_sample(99, i)[0], meta)[0] for i in range(6)])
    p32 = softmax(open_session(src, threads=1).run(None, {"image": x})[0])
    p8 = softmax(open_session(out, threads=1).run(None, {"image": x})[0])
    assert np.abs(p32 - p8).max() < 0.05


def test_weights_use_seven_bits_so_cpus_without_vnni_do_not_saturate(tiny_models, tmp_path):
    # On an AVX2-only CPU, full-range int8 weights lost a third of the demo classifier's
    # answers (67% agreement with float32); 7-bit ones kept all of them.
    import onnx
    from onnx import numpy_helper

    out = quantize(tiny_models["classifier"], tmp_path / "q.onnx")
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64


def test_batchnorm_after_a_pool_is_quantized_per_channel_without_warnings(tmp_path, caplog):
    # The recipe's ResNet-9 pools before BatchNorm, so its BatchNorms stay in the exported graph.
    import onnx
    import torch

    from bbc1k.export import export_onnx
    from bbc1k.modelmeta import ModelMeta
    from bbc1k.nets import ResNet9

    torch.manual_seed(0)
    meta = ModelMeta(task="classify", name="pool-first", classes=["ball", "brick", "cylinder"], input_size=[24, 32],
                     outputs=[{"name": "logits", "kind": "class_logits", "shape": ["N", 3]}])
    src = export_onnx(ResNet9(3, width=4), meta, tmp_path / "r9.onnx", torch.rand(2, 3, 24, 32))
    assert any(n.op_type == "BatchNormalization" for n in onnx.load(str(src)).graph.node)
    with caplog.at_level(logging.WARNING):
        out = quantize(src, tmp_path / "r9.int8.onnx")
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]
    assert out.is_file()


def test_a_recipes_split_of_a_dataset(model, synthetic_dataset):
    """What the from-scratch recipes call after export: image files, class names
    for the classifier, mask files for the segmenter and the detector."""
    from bbc1k.layout import image_path, mask_path, read_labels
    from bbc1k.quantize import int8_copy_from_split

    rows = read_labels(synthetic_dataset)
    images = [image_path(synthetic_dataset, r.filename) for r in rows]
    masks = [mask_path(synthetic_dataset, r.filename) for r in rows]
    train, valid = list(range(0, len(rows), 2)), list(range(1, len(rows), 2))
    got = {}
    for role, targets in (("classifier", [r.label for r in rows]), ("segmenter", masks), ("detector", masks)):
        report = int8_copy_from_split(model(role), images, targets, train, valid)
        got[role] = (report.metric, report.n, report.path is not None)
    assert got == {"classifier": ("accuracy", 12, True), "segmenter": ("mean IoU", 12, True),
                   "detector": ("box IoU", 12, True)}
    no_split = int8_copy_from_split(model("classifier"), images, masks, train, [], max_calibration=4)
    assert no_split.agreement and no_split.n == len(train)  # calibrated on 4, judged on all
