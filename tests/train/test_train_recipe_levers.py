"""The classifier recipe's levers for real photos: cross-validation folds, a
schedule that fills its time budget, synthetic pictures mixed into every
batch, an ensemble exported as one graph, a larger test input, progressive
resizing, a whitened first layer (tiny data, CPU)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bbc1k.modelmeta import read_onnx_meta
from bbc1k.nets import Ensemble, ResNet9, whiten_first_conv
from bbc1k.train import classifier, schedule
from bbc1k.train.classifier import Pictures, Recipe, classification_loss, input_size, synthetic_count, train
from bbc1k.train.cli import classifier_main
from bbc1k.train.data import DatasetError, split_indices, stratified_folds
from bbc1k.train.schedule import Normalise, run_schedule


def test_folds_hold_out_every_item_once_and_keep_the_classes_balanced() -> None:
    labels = np.array([0] * 11 + [1] * 7 + [2] * 3)
    folds = stratified_folds(labels, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))
    for c in range(3):
        per_fold = [int((labels[f] == c).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, per_fold
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert all((a == b).all() for a, b in zip(folds, stratified_folds(labels, 5, seed=0)))
    assert any((a != b).any() for a, b in zip(folds, stratified_folds(labels, 5, seed=1)))
    train, valid = split_indices(labels, 0.2, 0, fold=2)
    assert (valid == folds[2]).all() and not set(train) & set(valid) and len(train) + len(valid) == len(labels)
    with pytest.raises(ValueError, match="fold must be in 0..4"):
        split_indices(labels, 0.2, 0, fold=5)


def test_without_an_epoch_count_the_schedule_fills_its_time_budget(monkeypatch) -> None:
    now = [0.0]

    def clock() -> float:  # every reading of the clock moves it on a second
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(schedule, "time", SimpleNamespace(perf_counter=clock))
    progress: list[float] = []
    real_one_cycle = schedule.one_cycle
    monkeypatch.setattr(schedule, "one_cycle", lambda done, peak, warmup: progress.append(done) or
                        real_one_cycle(done, peak, warmup))
    model = nn.Linear(2, 1)
    recipe = SimpleNamespace(batch_size=4, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, warmup=0.2, seed=0)
    epochs: list[tuple[int, bool]] = []
    run_schedule(model, 8, lambda idx, done: model(torch.ones(len(idx), 2)).pow(2).mean(), recipe, None,
                 lambda epoch, loss, last: epochs.append((epoch, last)), time_budget=60.0)
    assert len(epochs) > 10 and epochs[-1][1] and not any(last for _, last in epochs[:-1])
    assert progress[0] < 0.1 and progress[-1] > 0.9  # one whole cycle, on the clock
    with pytest.raises(ValueError, match="time budget"):
        run_schedule(model, 8, lambda idx, done: model(torch.ones(len(idx), 2)).sum(), recipe, None, lambda *a: None)


def test_synthetic_pictures_take_their_share_of_every_batch() -> None:
    seen: list[torch.Tensor] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.detach())
            return self.w.expand(len(x), 3)

    photos = torch.zeros((8, 3, 30, 40), dtype=torch.uint8)            # dark photos
    synthetic = Pictures(torch.full((10, 3, 30, 40), 255, dtype=torch.uint8), torch.full((10,), 2))
    norm = Normalise.photos(torch.device("cpu"))
    for mix, expected in ((0.5, 8), (0.25, 5), (0.0, 4)):
        recipe = Recipe(size=(24, 32), synthetic_mix=mix, precision="fp32")
        classification_loss(Probe(), photos, torch.zeros(8, dtype=torch.long), recipe, norm, synthetic)(
            torch.arange(4), 0.5)
        batch = seen.pop()
        assert len(batch) == expected
        if expected > 4:  # the photos first, then the (bright) synthetic pictures
            assert batch[4:].mean() > batch[:4].mean() + 1


def test_synthetic_pictures_are_drawn_only_for_bbc1k_classes() -> None:
    bbc = ["ball", "brick", "cylinder"]
    assert synthetic_count(Recipe(), bbc, 10) == 20           # by default, two per training photo
    assert synthetic_count(Recipe(), ["cat", "dog"], 10) == 0  # the generator draws no cats
    assert synthetic_count(Recipe(synthetic=0), bbc, 10) == 0
    assert synthetic_count(Recipe(synthetic=7), bbc, 10) == 7
    with pytest.raises(DatasetError, match="synthetic pictures show only"):
        synthetic_count(Recipe(synthetic=7), ["cat", "dog"], 10)


def test_an_ensemble_is_the_mean_of_its_networks() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    x = torch.randn(5, 4)
    assert torch.allclose(Ensemble([a, b])(x), (a(x) + b(x)) / 2)


def test_an_ensemble_trains_and_exports_as_one_model(class_folders: Path, tmp_path: Path, capsys) -> None:
    import onnxruntime as ort

    code = classifier_main([str(class_folders), "--out", str(tmp_path), "--name", "pair", "--epochs", "1",
                            "--size", "24", "32", "--width", "4", "--batch-size", "4", "--quiet",
                            "--ensemble", "2", "--synthetic", "6", "--fold", "1", "--folds", "3",
                            "--test-scale", "1.25"])
    assert code == 0
    meta = read_onnx_meta(str(tmp_path / "pair.onnx"))
    assert meta.extra["architecture"] == "2 x resnet9(width=4)"
    assert meta.extra["epochs_run"] == 2 and meta.extra["n_synthetic"] == 6
    assert meta.extra["fold"] == 1 and meta.extra["n_valid"] == 4  # 12 photos, a third held out
    assert meta.input_size == [32, 40]  # trained at 24x32, served at 1.25 times that (multiples of 8)
    session = ort.InferenceSession(str(tmp_path / "pair.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {meta.input_name: np.zeros((1, 3, 32, 40), np.float32)})
    assert logits.shape == (1, 3)
    assert "ensemble of 2: valid acc" in capsys.readouterr().out


def test_progressive_resizing_grows_the_input_to_its_size_by_the_end() -> None:
    recipe = Recipe(size=(96, 128), progressive=0.5, progressive_end=0.75)
    sizes = [input_size(recipe, p) for p in np.linspace(0, 1, 21)]
    assert sizes[0] == (48, 64) and sizes[15] == sizes[-1] == (96, 128)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(sizes, sizes[1:]))
    assert all(h % 8 == 0 and w % 8 == 0 for h, w in sizes)
    assert {input_size(Recipe(size=(96, 128)), p) for p in (0.0, 0.5, 1.0)} == {(96, 128)}
    assert input_size(Recipe(size=(100, 130), progressive=0.5), 1.0) == (100, 130)  # ends at the size it exports

    seen: list[tuple[int, ...]] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape[-2:]))
            return self.w.expand(len(x), 3)

    recipe = Recipe(size=(32, 48), progressive=0.5, synthetic_mix=0, precision="fp32")
    photos, labels = torch.zeros((4, 3, 40, 60), dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    loss = classification_loss(Probe(), photos, labels, recipe, Normalise.photos(torch.device("cpu")))
    for progress in (0.0, 1.0):
        loss(torch.arange(4), progress)
    assert seen == [(16, 24), (32, 48)]


def test_whitening_decorrelates_the_first_layer_and_freezes_it(class_folders: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    # Neighbouring pixels and channels correlated, as in photos.
    x = torch.nn.functional.avg_pool2d(torch.randn(16, 1, 34, 42), 3, stride=1) + 0.2 * torch.randn(16, 3, 32, 40)
    model = ResNet9(3, width=8)
    conv = model[0][0]
    whiten_first_conv(conv, x)
    assert not conv.weight.requires_grad
    assert torch.equal(conv.weight[4:], -conv.weight[:4])  # each filter and its negative
    out = torch.nn.functional.conv2d(x, conv.weight[:4], padding=1)[..., 1:-1, 1:-1]
    cov = torch.cov(out.permute(1, 0, 2, 3).reshape(4, -1))
    assert torch.allclose(cov, torch.eye(4), atol=0.1), cov  # unit variance, uncorrelated

    set_to: list[torch.Tensor] = []

    def recording(conv: nn.Conv2d, x: torch.Tensor, seed: int) -> None:
        whiten_first_conv(conv, x, seed)
        set_to.append(conv.weight.detach().clone())

    monkeypatch.setattr(classifier, "whiten_first_conv", recording)
    recipe = Recipe(size=(24, 32), width=4, epochs=2, batch_size=4, synthetic=0, whiten=True, precision="fp32")
    result = train(class_folders, recipe, progress=False, log_epochs=False)
    net = result.model.net
    assert len(set_to) == 1 and torch.equal(net[0][0].weight, set_to[0])  # set from the photos, then kept
    torch.manual_seed(recipe.seed)
    assert not torch.equal(net[1][0].weight, ResNet9(3, recipe.width)[1][0].weight)  # the rest trained
