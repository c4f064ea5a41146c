"""The recipes under ``torchrun`` (bbc1k.train.distributed): two CPU
processes over gloo train the same network as one process over the same
shares would, end with identical weights, and write one model, from rank 0.

Why "one process over the same shares" and not "one process over the whole
batch": on CPUs SyncBatchNorm does not run, so each process normalises its
share by its own batch statistics. The reference (tests/train/ddp_worker.py,
``tiny_run(ghosts=2)``) does exactly that in one process: each half-batch
through the network with its own copy of the running statistics, the two
losses averaged, the copies averaged after each epoch. Run with one thread,
as torchrun's processes are, it matches the two processes to the last bit;
the tolerance is 1e-6. A reference that normalises whole batches differs by
about 0.1, so the comparison can fail.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bbc1k.train.augment import Augment, warp_pair
from bbc1k.train.cli import parse_args, recipe_from_args, segmenter_main
from tests.train.ddp_worker import EPOCHS, still, tiny_run

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-6


def torchrun(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Two processes on this machine, as ``torchrun --standalone --nproc_per_node 2 ...``."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def two_ranks(class_folders: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Run tests/train/ddp_worker.py on two ranks once; what each wrote, and what was printed."""
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun("-m", "tests.train.ddp_worker", str(out), str(class_folders))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    yield {"out": out, "ranks": ranks, "stdout": done.stdout}


def _differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    assert a.keys() == b.keys()
    return {k: (a[k].double() - b[k].double()).abs().max().item() for k in a}


@pytest.mark.slow
def test_two_ranks_end_identical_and_equal_one_process_over_the_same_shares(two_ranks: dict) -> None:
    r0, r1 = two_ranks["ranks"]
    assert r0["world"] == r1["world"] == 2 and r0["device"] == "cpu"
    # identical, to the bit: the same averaged gradients, the same averaged running statistics
    assert all(torch.equal(r0["tiny"][k], r1["tiny"][k]) for k in r0["tiny"])
    # rank 1's clock raced past the 100 s budget after one step; rank 0's, which decides, did not
    assert len(r0["tiny_losses"]) == len(r1["tiny_losses"]) == EPOCHS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in torchrun's processes: the same order of additions
    try:
        shares, share_losses = tiny_run(ghosts=2, clock=still)
        whole, _ = tiny_run(ghosts=1, clock=still)
    finally:
        torch.set_num_threads(threads)
    assert max(_differences(shares, r0["tiny"]).values()) <= TOLERANCE  # weights and running statistics
    assert share_losses == pytest.approx(r0["tiny_losses"], rel=1e-6)
    # the comparison can fail: BatchNorm over whole batches is another training
    params = {k for k in whole if "running" not in k and "tracked" not in k}
    assert max(v for k, v in _differences(whole, r0["tiny"]).items() if k in params) > 1e-3


@pytest.mark.slow
def test_validation_counts_are_summed_over_the_ranks(two_ranks: dict) -> None:
    for rank in two_ranks["ranks"]:  # each rank scored every other item; the whole set's figures, on both
        assert rank["split_acc"] == pytest.approx(0.6)
        assert rank["split_iou"] == pytest.approx([2 / 3, 0.0])


@pytest.mark.slow
def test_the_recipe_on_two_ranks_agrees_and_rank_0_alone_writes(two_ranks: dict) -> None:
    r0, r1 = two_ranks["ranks"]
    assert all(torch.equal(r0["recipe"][k], r1["recipe"][k]) for k in r0["recipe"])
    assert r0["valid_acc"] == r1["valid_acc"] is not None
    drop_clock = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert drop_clock(r0["history"]) == drop_clock(r1["history"])

    written = {p.name for p in (two_ranks["out"] / "models").iterdir()}
    assert "tiny.onnx" in written and all(name.startswith("tiny.") for name in written)
    out = two_ranks["stdout"]
    assert out.count("wrote ") == 1 and out.count("validation accuracy") == 1  # rank 0 alone exported
    assert out.count("epoch   1") == 1  # rank 0's epoch line; rank 1 is silent


@pytest.mark.slow
def test_the_segmenter_command_under_torchrun(synthetic_dataset: Path, tmp_path: Path) -> None:
    done = torchrun("-m", "bbc1k", "train", "segmenter", str(synthetic_dataset), "--out", str(tmp_path),
                    "--epochs", "1", "--size", "32", "48", "--width", "4", "--batch-size", "4",
                    "--detector", "tiny-detector")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = {p.name for p in tmp_path.iterdir()}
    assert {"bbc-segmenter.onnx", "tiny-detector.onnx"} <= written
    assert all(name.startswith(("bbc-segmenter.", "tiny-detector.")) for name in written)
    assert done.stdout.count("wrote ") == done.stdout.count("validation mean IoU") == 1  # rank 0 alone


def test_a_batch_that_does_not_split_over_the_processes_is_refused(class_folders: Path, monkeypatch,
                                                                    capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")  # as torchrun --nproc_per_node 4 sets them
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit, match="2"):
        recipe_from_args(parse_args([str(class_folders), "--batch-size", "30"]))
    assert "--batch-size 30 does not split evenly over the 4 processes" in capsys.readouterr().err
    assert recipe_from_args(parse_args([str(class_folders), "--batch-size", "32"])).batch_size == 32
    monkeypatch.setenv("RANK", "1")  # the other processes say nothing
    with pytest.raises(SystemExit, match="2"):
        segmenter_main([str(class_folders), "--batch-size", "6"])
    assert capsys.readouterr().err == ""


def test_shares_of_a_batch_are_augmented_as_the_whole_batch() -> None:
    """What makes N processes see the pictures one process would."""
    x, masks = torch.rand(8, 3, 20, 24), torch.randint(0, 4, (8, 20, 24))
    aug = Augment(vflip=True)
    torch.manual_seed(3)
    whole = aug(x, (16, 16))
    whole_x, whole_m = warp_pair(aug, x, masks, (16, 16))
    for k in range(2):
        torch.manual_seed(3)
        rows = slice(4 * k, 4 * k + 4)
        assert torch.equal(aug(x[rows], (16, 16), (k, 2)), whole[rows])
        share_x, share_m = warp_pair(aug, x[rows], masks[rows], (16, 16), (k, 2))
        assert torch.equal(share_x, whole_x[rows]) and torch.equal(share_m, whole_m[rows])


def test_a_model_with_sync_batchnorm_exports(tmp_path: Path) -> None:
    """On GPUs the recipes train with SyncBatchNorm (replaced in place) and
    rank 0 exports that very model."""
    import onnxruntime as ort
    from torch import nn

    from bbc1k.export import export_onnx
    from bbc1k.modelmeta import ModelMeta
    from bbc1k.nets import FlipAverage, ResNet9

    model = ResNet9(3, width=4)
    nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    meta = ModelMeta(task="classify", name="sync", classes=["a", "b", "c"], input_size=[24, 32],
                     outputs=[{"name": "logits", "kind": "class_logits", "shape": ["N", 3]}])
    path = export_onnx(FlipAverage(model), meta, tmp_path / "sync.onnx", torch.rand(2, 3, 24, 32))
    (logits,) = ort.InferenceSession(str(path)).run(None, {meta.input_name: torch.rand(3, 3, 24, 32).numpy()})
    assert logits.shape == (3, 3)
