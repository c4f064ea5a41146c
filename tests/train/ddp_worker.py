"""What each process runs under ``torchrun`` in test_train_distributed.py, and
the single-process reference it is compared with.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m tests.train.ddp_worker OUT PHOTOS

Each rank writes ``OUT/rank<r>.pt``: its weights after a short
:func:`run_schedule` run (with a clock that races ahead on rank 1) and after
the classifier recipe, what the recipe reported, and the scores of
:func:`split_scores`; then the recipe's command line runs, which writes
``OUT/models/tiny.onnx`` from rank 0 alone.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from bbc1k.nets import ResNet9
from bbc1k.train import distributed, schedule
from bbc1k.train.classifier import Recipe, evaluate, train
from bbc1k.train.cli import classifier_main
from bbc1k.train.segmenter import iou_per_class

N_ITEMS, BATCH, EPOCHS = 36, 8, 3  # 4 steps an epoch, the last 4 items dropped


def tiny_run(ghosts: int = 1, clock=None) -> tuple[dict[str, torch.Tensor], list[float]]:
    """A ResNet-9 trained by :func:`run_schedule` on fixed random pictures,
    without augmentation: ``(state dict, mean loss of each epoch)``.

    ``ghosts``: one process doing what that many CPU processes do together:
    each batch is cut into ``ghosts`` shares, each share goes through the
    network with its own copy of the BatchNorm running statistics (so is
    normalised by its own batch statistics), the shares' losses are averaged,
    and the copies are averaged after each epoch. ``clock``: stands in for
    ``time.perf_counter``, with a time budget of 100 s for it to decide about."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N_ITEMS, 3, 16, 16, generator=gen)
    y = torch.randint(0, 3, (N_ITEMS,), generator=gen)
    torch.manual_seed(0)
    model = ResNet9(3, width=4)
    net = distributed.wrap(model)
    copies = [{k: b.clone() for k, b in model.named_buffers()} for _ in range(ghosts)]

    def forward(share: int, xs: torch.Tensor) -> torch.Tensor:
        return net(xs) if ghosts == 1 else torch.func.functional_call(model, copies[share], (xs,))

    def batch_loss(idx: torch.Tensor, progress: float) -> torch.Tensor:
        return torch.stack([F.cross_entropy(forward(i, x[part]), y[part])
                            for i, part in enumerate(idx.chunk(ghosts))]).mean()

    losses: list[float] = []

    def after_epoch(epoch: int, loss: float, last: bool) -> None:
        losses.append(loss)
        if ghosts > 1:
            with torch.no_grad():
                for k, b in model.named_buffers():
                    b.copy_(sum(c[k] for c in copies) / ghosts if b.is_floating_point() else copies[0][k])
                    for c in copies:
                        c[k].copy_(b)

    recipe = Recipe(batch_size=BATCH, lr=1e-2, warmup=0.3)
    real = schedule.time
    schedule.time = SimpleNamespace(perf_counter=clock) if clock else real
    try:
        schedule.run_schedule(net, N_ITEMS, batch_loss, recipe, EPOCHS, after_epoch,
                              time_budget=100.0 if clock else None)
    finally:
        schedule.time = real
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, losses


def still() -> float:
    """A clock that never moves: the schedule runs on its steps alone."""
    return 0.0


class Racing:
    """A clock that reads 0 once, then a million seconds: a process that
    trusted it would think a 100 s budget spent after its first step."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return 0.0 if self.calls == 1 else 1e6


def split_scores() -> tuple[float, list[float]]:
    """Accuracy and per-class IoU of models that always answer class 0, on
    sets whose two shares (every other item) score differently: rank 0's
    share alone would give 1.0 and [1.0, nan], rank 1's 0.0 and [0.0, 0.0],
    the mean of the two 0.5; the whole set gives 0.6 and [2/3, 0.0]."""
    labels = torch.tensor([0, 1, 0, 1, 0])
    acc = evaluate(lambda x: torch.tensor([1.0, 0.0]).expand(len(x), 2), torch.zeros(5, 3, 2, 2, dtype=torch.uint8),
                   labels, lambda x: x)
    masks = torch.stack([torch.zeros(2, 2), torch.ones(2, 2), torch.zeros(2, 2)]).long()
    ious = iou_per_class(lambda x: torch.stack([torch.ones(len(x), 2, 2), torch.zeros(len(x), 2, 2)], 1),
                         torch.zeros(3, 3, 2, 2, dtype=torch.uint8), masks, lambda x: x, n_classes=2)
    return acc, ious


def main(out: Path, photos: Path) -> None:
    device = distributed.setup(torch.device("cpu"))
    me = distributed.rank()
    tiny, tiny_losses = tiny_run(ghosts=1, clock=Racing() if me == 1 else still)
    recipe = Recipe(size=(24, 32), width=4, batch_size=4, epochs=2, eval_every=1, precision="fp32")
    result = train(photos, recipe, progress=False, log_epochs=False)
    split_acc, split_iou = split_scores()
    torch.save({"world": distributed.world(), "device": str(device), "split_acc": split_acc, "split_iou": split_iou,
                "tiny": tiny, "tiny_losses": tiny_losses, "recipe": result.model.state_dict(),
                "history": result.history, "valid_acc": result.valid_acc}, out / f"rank{me}.pt")
    code = classifier_main([str(photos), "--out", str(out / "models"), "--name", "tiny", "--epochs", "1",
                            "--size", "24", "32", "--width", "4", "--batch-size", "4", "--quiet"])
    sys.exit(code)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
