"""Lesson 01's training as a script, on several processes the way fastai documents it.

    torchrun --standalone --nproc_per_node 2 scripts/train_lesson_classifier.py --out models
    accelerate launch --multi_gpu --num_processes 2 scripts/train_lesson_classifier.py --out models
    python scripts/train_lesson_classifier.py --out models          # one process, as the notebook

The lesson's cells, in order: the dataset (``bbc1k.data.get``, under
``rank0_first``: rank 0 downloads or generates it, the others then find it in
place), its DataBlock, ``vision_learner``, ``fit_one_cycle`` with the body
frozen then unfrozen, inside ``learn.distrib_ctx()``, which wraps the model
in DistributedDataParallel (through Hugging Face Accelerate) and gives each
process its share of every epoch's batches; validation predictions are
gathered from every process, so the metrics are the whole validation set's.
After the context, rank 0 alone exports (``bbc1k.export.export_learner``).
Each process says how many batches it trained on.

Four things fastai 2.8 does not do on CPUs, which this module handles
(:func:`prepare_for_cpus`, :func:`alone`), so the same script also runs
under torchrun on a machine without GPUs (gloo), as the tests do:

- ``DistributedDL._broadcast`` copies the shuffled order to CUDA before
  broadcasting it ("nccl only works with cuda tensors"); with gloo there is
  no CUDA. :func:`patch_cpu_broadcast` broadcasts on the group's own device;
- ``sync_bn`` (SyncBatchNorm) runs only on GPUs: off on CPUs;
- Accelerate treats torchrun's CPU processes as one each unless
  ``ACCELERATE_USE_CPU`` is set (what ``accelerate launch --cpu`` sets);
  ``accelerate launch --cpu --num_processes 2`` itself starts one process,
  so CPUs are launched with torchrun;
- after the context fastai still gathers validation results from every
  process while ``WORLD_SIZE`` says there are several; rank 0 exports alone,
  so it validates as the only process.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

try:
    import accelerate  # noqa: F401
except ModuleNotFoundError as e:  # fastai.distributed would fail with "name 'Accelerator' is not defined"
    raise ModuleNotFoundError("fastai's distributed training needs Hugging Face Accelerate: "
                              "pip install accelerate") from e
from fastai.callback.core import Callback
from fastai.distributed import DistributedDL, rank0_first
from fastai.torch_core import num_distrib, rank_distrib

from bbc1k.notebook import check_pretrained, seed_everything


def _broadcast_on_group_device(self: DistributedDL, t: list[int], rank: int) -> list[int]:
    """``DistributedDL._broadcast`` with the tensor where the group's backend
    wants it: on the GPU for NCCL (as fastai does), on the CPU for gloo."""
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    t = torch.tensor(t, dtype=torch.long, device=device)
    torch.distributed.broadcast(t, rank)
    return t.cpu().tolist()


def patch_cpu_broadcast() -> None:
    """Let fastai's DistributedDL share its order of items over gloo (CPUs)."""
    DistributedDL._broadcast = _broadcast_on_group_device


def prepare_for_cpus() -> bool:
    """On a machine without GPUs, under a launcher of several processes: make
    Accelerate and fastai's DistributedDL work over gloo. Returns whether
    training runs on CPUs."""
    if torch.cuda.is_available():
        return False
    if num_distrib() > 1:
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")  # before the first Accelerator is made
        patch_cpu_broadcast()
    return True


@contextmanager
def alone() -> Iterator[None]:
    """fastai reads ``WORLD_SIZE`` at every call to decide whether to gather
    results from the other processes; inside this context it does not."""
    saved = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["WORLD_SIZE"]
        else:
            os.environ["WORLD_SIZE"] = saved


class ShareReport(Callback):
    """Counts the training batches and images, and the validation images, this
    process handled; each process prints one line after each fit."""

    def before_fit(self) -> None:
        self.train_batches = self.train_images = self.valid_images = 0

    def after_batch(self) -> None:
        n = len(self.learn.yb[0])
        if self.training:
            self.train_batches, self.train_images = self.train_batches + 1, self.train_images + n
        else:
            self.valid_images += n

    def after_fit(self) -> None:
        print(f"rank {rank_distrib()} of {max(1, num_distrib())}: trained on {self.train_batches} batches "
              f"({self.train_images} images), validated {self.valid_images} images", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Lesson 01's parameters, as options with its defaults."""
    ap = argparse.ArgumentParser(prog="train_lesson_classifier.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-source", default="auto", help="auto, welchlabs, github or synthetic (default: auto)")
    ap.add_argument("--data-dir", default="data", help="the dataset goes to DATA_DIR/bbc_train")
    ap.add_argument("--n-images", type=int, default=1000, help="images to generate when the dataset is synthetic")
    ap.add_argument("--synthetic-size", type=int, nargs=2, default=None, metavar=("W", "H"),
                    help="size of generated images (default: bbc1k.data.get's)")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64, help="per process")
    ap.add_argument("--arch", default="resnet34", help="any torchvision ResNet")
    ap.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                    help="start from ImageNet weights (--no-pretrained: from random weights)")
    ap.add_argument("--freeze-epochs", type=int, default=4, help="first epochs (of the head alone when pretrained)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs of the whole network")
    ap.add_argument("--out", default="models", help="where NAME.pkl and NAME.onnx go")
    ap.add_argument("--name", default="bbc-classifier")
    ap.add_argument("--seed", type=int, default=42)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train as lesson 01 does, on every process the launcher started; rank 0 exports."""
    args = parse_args(argv)
    on_cpus = prepare_for_cpus()
    import torchvision
    from fastai.vision.all import (CategoryBlock, ColReader, DataBlock, ImageBlock, Normalize, RandomSplitter,
                                   Resize, accuracy, aug_transforms, imagenet_stats, vision_learner)

    from bbc1k.data import get, labels_frame
    from bbc1k.export import export_learner
    from bbc1k.layout import OBJECT_CLASSES

    seed_everything(args.seed)
    main_rank = rank_distrib() == 0
    size = {"size": tuple(args.synthetic_size)} if args.synthetic_size else {}
    path = rank0_first(get, args.data_source, args.data_dir, n_images=args.n_images, seed=args.seed,
                       progress=main_rank, **size)
    df = labels_frame(path)
    bbc = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=list(OBJECT_CLASSES), sort=False)),
        get_x=ColReader("filename", pref=path / "images"),
        get_y=ColReader("label"),
        splitter=RandomSplitter(valid_pct=0.2, seed=args.seed),  # the same split on every process
        item_tfms=Resize(args.img_size, method="squish"),
        batch_tfms=[*aug_transforms(), Normalize.from_stats(*imagenet_stats)],
    )
    workers = 0 if on_cpus else min(8, (os.cpu_count() or 1) // max(1, num_distrib()))
    dls = bbc.dataloaders(df, bs=args.batch_size, num_workers=workers)
    if main_rank:
        print(f"{len(dls.train_ds)} training and {len(dls.valid_ds)} validation images; classes: {dls.vocab}; "
              f"{max(1, num_distrib())} process(es) on {'CPUs' if on_cpus else 'GPUs'}", flush=True)
    if args.pretrained:
        rank0_first(check_pretrained, args.arch)  # rank 0 first: the others then find the weights cached
    elif main_rank:
        check_pretrained(args.arch, False)  # says what training from random weights means
    learn = rank0_first(vision_learner, dls, getattr(torchvision.models, args.arch), metrics=accuracy,
                        pretrained=args.pretrained, path=args.out, model_dir=".")
    if not on_cpus:
        learn = learn.to_fp16()
    report = ShareReport()
    with learn.distrib_ctx(sync_bn=not on_cpus):  # SyncBatchNorm runs only on GPUs
        if args.freeze_epochs:  # the learning rates are the lesson's
            learn.fit_one_cycle(args.freeze_epochs, slice(5e-4, 5e-3) if args.pretrained else 3e-3, cbs=report)
        if args.epochs:
            learn.unfreeze()
            learn.fit_one_cycle(args.epochs, slice(5e-6, 5e-5) if args.pretrained else 2e-3, cbs=report)
    if not main_rank:
        return 0
    names = learn.recorder.metric_names[1:-1]  # between "epoch" and "time": train_loss, valid_loss, accuracy
    print("last epoch (validation gathered from every process): "
          + ", ".join(f"{k} {v:.5f}" for k, v in zip(names, learn.recorder.values[-1])), flush=True)
    facts = _facts(args, num_distrib())
    with alone():
        files = export_learner(learn, args.name, args.out, "classify", extra=facts)
    print(f"wrote {files['onnx']} and {files['pkl']}", flush=True)
    return 0


def _facts(args: argparse.Namespace, processes: int) -> dict[str, Any]:
    """What the export's description records of this run."""
    return {"architecture": args.arch, "epochs": args.freeze_epochs + args.epochs,
            "processes": max(1, processes), "trainer": "scripts/train_lesson_classifier.py"}
