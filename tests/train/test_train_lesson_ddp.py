"""Lesson 01's training on two processes, fastai's way
(scripts/train_lesson_classifier.py, bbc1k.train.lesson_ddp): under torchrun
on CPUs (gloo), both ranks take half the batches, the validation metrics are
the whole validation set's, and rank 0 alone exports."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bbc1k.modelmeta import read_onnx_meta

REPO = Path(__file__).resolve().parents[2]
N_IMAGES, BATCH = 60, 8


@pytest.mark.slow
def test_two_ranks_share_the_lesson_and_rank_0_exports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "scripts" / "train_lesson_classifier.py"), "--data-source", "synthetic",
         "--data-dir", str(tmp_path / "data"), "--n-images", str(N_IMAGES), "--synthetic-size", "128", "96",
         "--img-size", "64", "--batch-size", str(BATCH), "--arch", "resnet18", "--no-pretrained",
         "--freeze-epochs", "0", "--epochs", "1", "--out", str(tmp_path / "models")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout

    n_train, n_valid = map(int, re.search(r"(\d+) training and (\d+) validation images", out).groups())
    assert n_train + n_valid == N_IMAGES
    shares = {int(r): (int(b), int(i), int(v)) for r, b, i, v in re.findall(
        r"rank (\d) of 2: trained on (\d+) batches \((\d+) images\), validated (\d+) images", out)}
    assert sorted(shares) == [0, 1]  # both ranks took part
    for batches, images, _ in shares.values():
        assert batches == n_train // BATCH // 2 and images == batches * BATCH  # half of one process's batches
    assert sum(v for _, _, v in shares.values()) == n_valid  # between them, the whole validation set

    written = {p.name for p in (tmp_path / "models").iterdir()}  # export_learner may add an int8 copy
    assert {"bbc-classifier.onnx", "bbc-classifier.pkl"} <= written
    assert all(name.startswith("bbc-classifier.") for name in written)
    assert out.count("wrote ") == 1  # by rank 0 alone
    # the metrics gathered from both ranks are those of the whole set, which rank 0 alone measured for the export
    gathered = dict(re.findall(r"(valid_loss|accuracy) ([\d.]+)", out.split("last epoch")[1].splitlines()[0]))
    extra = read_onnx_meta(str(tmp_path / "models" / "bbc-classifier.onnx")).extra
    assert extra["processes"] == 2 and extra["n_valid"] == n_valid
    assert float(gathered["valid_loss"]) == pytest.approx(extra["metrics"]["valid_loss"], abs=1e-4)
    assert float(gathered["accuracy"]) == pytest.approx(extra["metrics"]["accuracy"], abs=1e-4)


def test_alone_hides_the_other_processes_from_fastai_and_restores(monkeypatch) -> None:
    from fastai.torch_core import num_distrib

    from bbc1k.train.lesson_ddp import alone

    monkeypatch.setenv("WORLD_SIZE", "2")
    with alone():
        assert num_distrib() == 1
    assert os.environ["WORLD_SIZE"] == "2"
    monkeypatch.delenv("WORLD_SIZE")
    with alone():
        assert num_distrib() == 1
    assert "WORLD_SIZE" not in os.environ
