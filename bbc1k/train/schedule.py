"""The training schedule both recipes share: a one-cycle learning rate
(linear warm-up, cosine down to 0), AdamW or Nesterov SGD without weight
decay on BatchNorm and biases, shuffled batches from tensors already on the
device, and an optional time budget the schedule fits into.
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from bbc1k.modelmeta import PHOTO_MEAN, PHOTO_STD
from bbc1k.train import distributed


class ScheduleSettings(Protocol):
    """What :func:`run_schedule` reads of a recipe."""

    batch_size: int
    optimizer: str       # "adamw" or "sgd"
    lr: float            # peak of the one-cycle schedule
    momentum: float      # SGD only
    weight_decay: float
    warmup: float        # fraction of training spent raising the learning rate
    seed: int


def one_cycle(progress: float, peak: float, warmup: float) -> float:
    """Learning rate at ``progress`` (0..1): linear warm-up, then cosine down to 0."""
    if progress < warmup:
        return peak * progress / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def make_optimizer(model: nn.Module, recipe: ScheduleSettings) -> torch.optim.Optimizer:
    """The recipe's optimiser, learning rate 0 (the schedule sets it each step)."""
    decay = [p for p in model.parameters() if p.ndim > 1]  # no weight decay on BatchNorm and biases
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=0.0)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=recipe.momentum, nesterov=True)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {recipe.optimizer!r}")


@dataclass
class Normalise:
    """uint8 images -> float input: RGB scaled to 0..1, then (x - mean) / std."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def photos(cls, device: torch.device) -> Normalise:
        """With the real photos' mean and std (:data:`bbc1k.modelmeta.PHOTO_MEAN`),
        which the exported models' metadata names too."""
        return cls(torch.tensor(PHOTO_MEAN, device=device).view(1, 3, 1, 1),
                   torch.tensor(PHOTO_STD, device=device).view(1, 3, 1, 1))

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        return ((x01 - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


EpochHook = Callable[[int, float, bool], None]
"""``after_epoch(epoch, mean train loss, last)``."""
BatchLoss = Callable[[torch.Tensor, float], torch.Tensor]
"""``batch_loss(indices, progress)``: the loss of a batch, ``progress`` (0..1)
how far the schedule is (for what changes over training, like the input size)."""


def run_schedule(model: nn.Module, n_items: int, batch_loss: BatchLoss,
                 recipe: ScheduleSettings, epochs: int | None, after_epoch: EpochHook,
                 desc: str = "training", progress: bool = False, time_budget: float | None = None,
                 ema: torch.optim.swa_utils.AveragedModel | None = None) -> int:
    """One one-cycle training run of ``model`` over ``n_items`` training items
    in shuffled batches of ``recipe.batch_size``: ``batch_loss(indices,
    progress)`` gives the loss of a batch. Calls ``after_epoch(epoch, mean train loss,
    last)`` after each epoch, ``last`` true after the final one. With a
    ``time_budget`` (seconds) the schedule runs on the clock when that is
    further along than the steps, and training stops, mid-epoch if need be,
    when the budget is spent; ``epochs`` None (with a time budget): as many
    epochs as the budget holds, the schedule on the clock alone, so a faster
    machine trains longer rather than stopping early. ``ema``: a ``torch.optim.swa_utils.AveragedModel``
    updated after each step. Returns the number of items seen.

    In a process group (:mod:`bbc1k.train.distributed`) ``model`` is the
    DistributedDataParallel wrapper ``batch_loss`` calls, ``batch_size`` the
    global batch: every process draws the same permutation and takes its
    equal share of each batch, the clock is rank 0's, the loss reported is
    the mean over the processes, and the count returned is of all of them."""
    device = next(model.parameters()).device
    opt = make_optimizer(model, recipe)
    share, me, n_procs = distributed.check_batch(recipe.batch_size), distributed.rank(), distributed.world()
    if n_procs > 1 and n_items < recipe.batch_size:  # alone, a short batch is taken whole; shared, one would be empty
        raise ValueError(f"{n_items} training items are fewer than one batch ({recipe.batch_size}) "
                         f"to share over {n_procs} processes: lower the batch size")
    if epochs is None and not time_budget:
        raise ValueError("epochs=None trains until the time budget is spent: give a time budget")
    steps_per_epoch = max(1, n_items // recipe.batch_size)  # drop the last partial batch
    total_steps = epochs * steps_per_epoch if epochs is not None else None
    gen = torch.Generator(device="cpu").manual_seed(recipe.seed)
    t0, step, seen = time.perf_counter(), 0, 0

    def elapsed() -> float:
        return distributed.from_rank0(time.perf_counter() - t0)

    # Without an epoch count the bar counts the budget's seconds: steps have no total then.
    on_clock = total_steps is None
    with tqdm(total=round(time_budget) if on_clock else total_steps, desc=desc, unit="s" if on_clock else "step",
              disable=not (progress and distributed.is_main())) as bar:
        for epoch in range(epochs) if epochs is not None else itertools.count():
            model.train()
            order = torch.randperm(n_items, generator=gen).to(device)
            loss_sum, steps_done = 0.0, 0
            for b in range(steps_per_epoch):
                done = step / total_steps if total_steps else 0.0
                if time_budget:
                    now = elapsed()
                    done = max(done, now / time_budget)
                    if done >= 1 and steps_done:
                        break
                for group in opt.param_groups:
                    group["lr"] = one_cycle(done, recipe.lr, recipe.warmup)
                start = b * recipe.batch_size + me * share
                idx = order[start:start + share]
                loss = batch_loss(idx, done)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if ema is not None:
                    ema.update_parameters(distributed.unwrap(model))
                loss_sum += loss.item()
                step, seen, steps_done = step + 1, seen + len(idx) * n_procs, steps_done + 1
                bar.update(min(bar.total, round(now)) - bar.n if on_clock else 1)
            model.eval()
            distributed.average_buffers(model)
            if ema is not None:
                distributed.average_buffers(ema)
            last = epoch + 1 == epochs or bool(time_budget and elapsed() >= time_budget)
            after_epoch(epoch, distributed.mean(loss_sum / steps_done), last)
            if last:
                break
    return seen
