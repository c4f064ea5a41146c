"""The recipes on several processes: torch.distributed, as ``torchrun`` starts them.

    torchrun --nproc_per_node 2 scripts/train_from_scratch.py DATA_DIR --out models

``torchrun`` gives each process its ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` and where to meet (``MASTER_ADDR``, ``MASTER_PORT``);
:func:`setup` joins the group they describe: NCCL between GPUs (one GPU per
process), gloo between CPU processes. Without torchrun (``WORLD_SIZE`` unset
or 1) every helper here leaves things as they are, so one process trains
exactly as it did before any of this existed.

How the recipes share the work (:func:`bbc1k.train.schedule.run_schedule`):

- every process holds all the photos (they are small) and draws the same
  seeded permutation each epoch; each step's batch of ``batch_size`` photos
  (the *global* batch) is cut into equal shares, one per process, so the
  schedule (steps, learning rates) does not depend on the number of processes;
- random augmentations are drawn for the whole batch on every process, each
  keeping its share's rows (:class:`bbc1k.train.augment.Augment`), so the
  processes see the pictures one process would have seen;
- DistributedDataParallel averages the gradients. BatchNorm: on GPUs,
  SyncBatchNorm (statistics over the whole batch: N GPUs train as one would);
  on CPUs, where SyncBatchNorm does not run, each process normalises its share
  by its own statistics, and the running averages are averaged across
  processes before each validation (an average of exponential moving averages
  is the moving average of the averages, so nothing is lost by waiting);
- validation: each process scores every ``world``-th image, counts are summed;
- a time budget runs on rank 0's clock, broadcast every step, so every process
  sets the same learning rate and stops on the same step;
- only rank 0 prints and writes files.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn


def planned_world() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def world() -> int:
    """The number of processes training together (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process prints and writes files: rank 0, or the only
    process (before joining the group, torchrun's ``RANK`` says)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes, unless joined already or
    alone; return the device this process trains on (on GPUs, the one of its
    ``LOCAL_RANK``)."""
    if planned_world() <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def close() -> None:
    """Leave the process group, if this process joined one, once every process
    has come to leave it. A rank that left while rank 0 was still exporting
    was sometimes aborted by gloo ("terminate called without an active
    exception"), about one run in three under the tests. If a process fails
    instead, torchrun stops the others."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module) -> nn.Module:
    """``model`` for the training forward passes: itself alone; in a group,
    DistributedDataParallel around it (with SyncBatchNorm on GPUs; the
    BatchNorm layers are replaced in place, so ``model`` stays the module to
    validate and export)."""
    if world() <= 1:
        return model
    ddp = nn.parallel.DistributedDataParallel
    # Each process keeps its own running statistics between validations (average_buffers joins them)
    # rather than taking rank 0's at every step. torch 2.14 renamed the switch.
    own_buffers = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                   else {"broadcast_buffers": False})
    device = next(model.parameters()).device
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the children in place
        return ddp(model, device_ids=[device], **own_buffers)
    return ddp(model, **own_buffers)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper, or ``model``."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _device() -> torch.device:
    """Where the group's collectives take their tensors (NCCL: on the GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_batch(batch_size: int) -> int:
    """Each process's share of a global batch of ``batch_size``; a batch that
    does not split evenly is refused (the shares' mean gradients would
    weigh the photos unequally)."""
    n = world()
    if batch_size % n:
        raise ValueError(f"the batch size ({batch_size}) must split evenly over the {n} processes")
    return batch_size // n


def shard(t: torch.Tensor) -> torch.Tensor:
    """This process's share of a validation set: every ``world``-th item."""
    n = world()
    return t if n <= 1 else t[rank()::n]


def all_sum(values: Sequence[float]) -> list[float]:
    """``values`` summed over the processes (float64); alone: ``values`` unchanged."""
    if world() <= 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.tolist()


def mean(value: float) -> float:
    """The mean of ``value`` over the processes."""
    return value if world() <= 1 else all_sum([value])[0] / world()


def from_rank0(value: float) -> float:
    """Rank 0's ``value``, on every process."""
    if world() <= 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.broadcast(t, 0)
    return t.item()


def average_buffers(module: nn.Module) -> None:
    """Replace each floating-point buffer (BatchNorm's running mean and
    variance) by its mean over the processes; the integer step counters are
    equal everywhere already."""
    n = world()
    if n <= 1:
        return
    for buf in unwrap(module).buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(n)
