"""The recipes' command lines.

    python -m bbc1k train classifier DATA_DIR --out models/ [--name bbc-scratch]
        [--time-budget 270 | --epochs 110] [--size 96 128] [--seed 0] [--holdout DIR]
        [--synthetic N] [--ensemble K] [--fold K --folds 5]
    python -m bbc1k train segmenter DATASET_DIR --out models/ [--name bbc-segmenter]
        [--time-budget 150 | --epochs 60] [--size 96 128] [--width 16] [--detector NAME] [--photos DIR]
        [--classifier models/bbc-classifier.pt]

``scripts/train_from_scratch.py`` and ``scripts/train_segmenter_from_scratch.py``
run :func:`classifier_main` and :func:`segmenter_main` with the same options.
Exit status: 0 done, 2 bad usage or unusable data (the message says why).

Under ``torchrun --nproc_per_node N`` (or ``torchrun -m bbc1k train ...``) the
N processes train together (:mod:`bbc1k.train.distributed`): ``--batch-size``
is the batch of one step over all of them, and rank 0 alone prints and
writes the model.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bbc1k.folders import check_classes
from bbc1k.train import checkpoint, classifier, distributed, segmenter
from bbc1k.train.data import DatasetError, find_images, split_indices, stratified_split


def _summary(module: Any) -> str:
    """The first paragraph of a recipe module's docstring: one line for --help."""
    return module.__doc__.split("\n\n")[0]


def add_training_args(ap: argparse.ArgumentParser, d: Any, data_help: str, name: str, default_epochs: int,
                      size_note: str = "") -> None:
    """The options every from-scratch recipe takes, with ``d``'s defaults
    (a recipe dataclass): the data and its split, where the model goes, its
    size and schedule, the seed and the arithmetic."""
    ap.add_argument("data_dir", help=data_help)
    ap.add_argument("--out", default="models", help="folder for NAME.onnx (default: models)")
    ap.add_argument("--name", default=name)
    ap.add_argument("--epochs", type=int, default=d.epochs,
                    help="epochs of the schedule (default: as many as --time-budget holds, "
                         f"{default_epochs} without one)")
    ap.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("H", "W"),
                    help=f"network input height and width{size_note} (default: {d.size[0]} {d.size[1]})")
    ap.add_argument("--width", type=int, default=d.width, help="channels of the first stage")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--valid-frac", type=float, default=d.valid_frac,
                    help="fraction of each class kept for validation (0: train on everything, "
                         "no validation; default: %(default)s)")
    ap.add_argument("--split-seed", type=int, default=d.split_seed)
    ap.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                    help="fit the learning-rate schedule into this many seconds of training and stop "
                         "then (270 keeps a classifier's whole run under 5 minutes on 2 CPU cores)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=d.precision,
                    help="auto: bfloat16 where the chip computes it natively (recent GPUs, CPUs with AMX "
                         "or AVX512-BF16), else fp32")
    ap.add_argument("--no-whiten", action="store_true",
                    help="a random first layer rather than one that whitens the images' 3x3 patches")


def _valid_frac_ok(value: float) -> bool:
    return 0 <= value < 1


def _uneven_batch(batch_size: int) -> str | None:
    """Why ``batch_size`` cannot be shared by torchrun's processes, or None."""
    n = distributed.planned_world()
    if batch_size % n == 0:
        return None
    return (f"--batch-size {batch_size} does not split evenly over the {n} processes torchrun started "
            f"(it is the batch of one step over all of them): use a multiple of {n}")


def _error(message: str) -> int:
    """Say what is wrong (once, not once per process); exit status 2."""
    if distributed.is_main():
        print(f"error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------ the classifier

def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The classifier's options."""
    d = classifier.Recipe()
    ap = argparse.ArgumentParser(prog=prog, description=_summary(classifier))
    add_training_args(ap, d, "folder with one subfolder of images per class", "bbc-scratch",
                      classifier.DEFAULT_EPOCHS)
    ap.add_argument("--optimizer", choices=["sgd", "adamw"], default=d.optimizer)
    ap.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--synthetic", type=int, default=d.synthetic, metavar="N",
                    help="render N synthetic pictures to train with (classes must be bbc1k's; default: "
                         f"{classifier.SYNTHETIC_PER_PHOTO} per training photo when they are, else none; 0: none)")
    ap.add_argument("--synthetic-mix", type=float, default=d.synthetic_mix, metavar="SHARE",
                    help="share of each batch drawn from the synthetic pictures (default: %(default)s)")
    ap.add_argument("--synthetic-epochs", type=int, default=d.synthetic_epochs,
                    help="epochs on the synthetic pictures alone before the photos (default: %(default)s)")
    ap.add_argument("--ensemble", type=int, default=d.ensemble, metavar="K",
                    help="train K networks one after the other and export the mean of their logits "
                         "(they share the time budget; default: %(default)s)")
    ap.add_argument("--fold", type=int, default=None, metavar="K",
                    help="validate on fold K of a stratified split into --folds folds (instead of --valid-frac)")
    ap.add_argument("--folds", type=int, default=d.folds)
    ap.add_argument("--test-scale", type=float, default=d.test_scale, metavar="S",
                    help="validate and export at S times --size (default: %(default)s)")
    ap.add_argument("--no-tta", action="store_true", help="no mirrored second look at test time")
    ap.add_argument("--mix", choices=["none", "mixup", "cutmix"], default=d.mix,
                    help="train on blends of two photos (default: none)")
    ap.add_argument("--mix-alpha", type=float, default=d.mix_alpha)
    ap.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                    help="validate and export a moving average of the weights (e.g. 0.995; default: 0, none)")
    ap.add_argument("--eval-every", type=int, default=d.eval_every, metavar="N",
                    help="validate every N-th epoch and after the last (default: %(default)s)")
    ap.add_argument("--holdout", default=None, metavar="DIR",
                    help="after export, measure the ONNX model on this folder of class subfolders")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def recipe_from_args(args: argparse.Namespace) -> classifier.Recipe:
    """The classifier recipe the options describe; exits on values it cannot train with."""
    if not _valid_frac_ok(args.valid_frac):
        raise SystemExit(f"--valid-frac must be in [0, 1), got {args.valid_frac}")
    if (args.epochs is not None and args.epochs < 1) or min(args.size) < 16 or args.width < 1 or args.batch_size < 2:
        raise SystemExit("--epochs, --width must be positive, --size at least 16 16, --batch-size at least 2")
    if not 0 <= args.synthetic_mix < 1 or args.ensemble < 1 or (args.synthetic or 0) < 0 or args.test_scale <= 0:
        raise SystemExit("--synthetic-mix must be in [0, 1), --ensemble at least 1, --synthetic at least 0, "
                         "--test-scale positive")
    if args.fold is not None and not (args.folds >= 2 and 0 <= args.fold < args.folds):
        raise SystemExit(f"--fold must be in 0..{args.folds - 1} and --folds at least 2; "
                         f"got --fold {args.fold} --folds {args.folds}")
    if _uneven_batch(args.batch_size):
        raise SystemExit(_error(_uneven_batch(args.batch_size)))
    return classifier.Recipe(
        size=tuple(args.size), width=args.width, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
        synthetic=args.synthetic, synthetic_mix=args.synthetic_mix, synthetic_epochs=args.synthetic_epochs,
        ensemble=args.ensemble, test_scale=args.test_scale, seed=args.seed, valid_frac=args.valid_frac,
        split_seed=args.split_seed, fold=args.fold, folds=args.folds, time_budget=args.time_budget,
        tta=not args.no_tta, whiten=not args.no_whiten, mix=args.mix, mix_alpha=args.mix_alpha, ema=args.ema,
        precision=args.precision, eval_every=args.eval_every)


def check_holdout(holdout: str | Path, data_dir: str | Path) -> None:
    """A holdout folder must name only classes the model will know: checked
    before training, so a typo does not cost a training run."""
    check_classes(holdout, find_images(holdout)[0], find_images(data_dir)[0], f"{data_dir}'s classes")


def classifier_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Train the classifier, export it, and measure it on ``--holdout``
    (under torchrun: every process trains, rank 0 exports and measures)."""
    args = parse_args(argv, prog)
    recipe = recipe_from_args(args)
    start = time.perf_counter()
    try:
        if args.holdout:
            check_holdout(args.holdout, args.data_dir)
        result = classifier.train(args.data_dir, recipe, progress=not args.quiet)
        if not distributed.is_main():
            return 0
        path = classifier.export(result, recipe, args.out, args.name)
        weights = checkpoint.save(result, recipe, checkpoint.weights_path(path))
        acc = (f"{result.valid_acc:.1%}" if result.valid_acc is not None
               else f"skipped (--valid-frac 0: trained on all {result.n_train} photos)")
        print(f"device {result.device}: {result.epochs_run} epochs in {result.train_seconds:.1f} s "
              f"({result.images_per_second:.0f} img/s), photos loaded in {result.load_seconds:.1f} s")
        print(f"validation accuracy {acc}; total {time.perf_counter() - start:.1f} s; wrote {path} "
              f"(and its PyTorch weights, {weights.name})")
        print(_classifier_int8_copy(path, args.data_dir, recipe).line())
        if args.holdout:
            hold_acc, n = classifier.onnx_accuracy(path, args.holdout)
            print(f"holdout accuracy (ONNX Runtime, app preprocessing) {hold_acc:.1%} "
                  f"on {n} images in {args.holdout}")
    except DatasetError as e:
        return _error(str(e))
    finally:
        distributed.close()
    return 0


def _classifier_int8_copy(path: Path, data_dir: str | Path, recipe: classifier.Recipe) -> Any:
    """The int8 copy the app serves by default, calibrated on the recipe's
    training photos and judged on its validation photos (bbc1k.quantize)."""
    from bbc1k.quantize import int8_copy_from_split

    classes, paths, labels = find_images(data_dir)
    train_idx, valid_idx = split_indices(labels, recipe.valid_frac, recipe.split_seed, recipe.fold, recipe.folds)
    return int8_copy_from_split(path, paths, [classes[i] for i in labels], train_idx, valid_idx)


# ------------------------------------------------------------- the segmenter

def _segmenter_int8_copies(written: list[Path], dataset: str | Path, rec: segmenter.SegRecipe) -> list[Any]:
    """An int8 copy of each exported model, calibrated on the training images
    and judged against the validation masks (bbc1k.quantize)."""
    import numpy as np

    from bbc1k.layout import image_path, mask_path, read_labels
    from bbc1k.quantize import int8_copy_from_split

    rows = read_labels(dataset)
    train_idx, valid_idx = stratified_split(np.array([r.label_index for r in rows]), rec.valid_frac, rec.split_seed)
    images = [image_path(dataset, r.filename) for r in rows]
    masks = [mask_path(dataset, r.filename) for r in rows]
    return [int8_copy_from_split(p, images, masks, train_idx, valid_idx) for p in written]


def segmenter_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Train the segmenter, export it, and with ``--detector`` the detector
    that boxes its mask (under torchrun: every process trains, rank 0 exports)."""
    d = segmenter.SegRecipe()
    ap = argparse.ArgumentParser(prog=prog, description=_summary(segmenter))
    add_training_args(ap, d, "a bbc1k dataset folder (images/, masks/, classification_labels.csv)",
                      "bbc-segmenter", segmenter.DEFAULT_EPOCHS, size_note=", multiples of 8")
    ap.add_argument("--photos", default=None, metavar="DIR",
                    help="also learn from real photos with class labels only (DIR/brick/, DIR/ball/, "
                         "DIR/cylinder/): they teach the image head the classes (without it, the mask of "
                         "each must show its class)")
    ap.add_argument("--classifier", default=None, metavar="WEIGHTS",
                    help="name the mask's object with this classifier (the NAME.pt `bbc1k train classifier` "
                         "writes beside NAME.onnx) instead of the image head, which still trains; the exported "
                         "segmenter holds both networks (the detector keeps the head)")
    ap.add_argument("--no-image-head", action="store_true",
                    help="the mask's pixels name their own classes, without the head that names the picture's")
    ap.add_argument("--full-res", action="store_true",
                    help="decode the mask at full resolution (default: the decoder stops at half resolution and "
                         "its logits are upsampled, which leaves the time budget more epochs)")
    ap.add_argument("--detector", default=None, metavar="NAME",
                    help="also write OUT/NAME.onnx: a detector whose box is the tight box of the main object's "
                         "predicted pixels")
    args = ap.parse_args(argv)
    if min(args.size) < 16 or any(s % 8 for s in args.size):
        ap.error(f"--size must be multiples of 8, at least 16; got {args.size[0]} {args.size[1]}")
    if (args.epochs is not None and args.epochs < 1) or args.width < 1 or args.batch_size < 2:
        ap.error("--epochs and --width must be positive, --batch-size at least 2")
    if not _valid_frac_ok(args.valid_frac):
        ap.error(f"--valid-frac must be in [0, 1), got {args.valid_frac}")
    if args.classifier and args.no_image_head:
        ap.error("--classifier names the object the image head would name: it needs the head (drop --no-image-head)")
    if _uneven_batch(args.batch_size):
        raise SystemExit(_error(_uneven_batch(args.batch_size)))
    rec = segmenter.SegRecipe(size=tuple(args.size), width=args.width, epochs=args.epochs,
                              batch_size=args.batch_size, seed=args.seed, valid_frac=args.valid_frac,
                              split_seed=args.split_seed, time_budget=args.time_budget, precision=args.precision,
                              photos=args.photos, whiten=not args.no_whiten, image_head=not args.no_image_head,
                              half_res=not args.full_res, classifier=args.classifier)
    start = time.perf_counter()
    try:
        result = segmenter.train(args.data_dir, rec)
    except DatasetError as e:
        return _error(str(e))
    finally:
        distributed.close()
    if not distributed.is_main():
        return 0
    written = [segmenter.export(result, rec, args.out, args.name)]
    if args.detector:
        written.append(segmenter.export_detector(result, rec, args.out, args.detector))
    for report in _segmenter_int8_copies(written, args.data_dir, rec):
        print(report.line())
    if result.n_valid:
        per_class = ", ".join(f"{c} {v:.3f}" for c, v in zip(result.classes, result.class_iou))
        measured = f"validation mean IoU {result.mean_iou:.3f} ({per_class}), box IoU {result.box_iou:.3f}"
    else:
        measured = f"validation skipped (--valid-frac 0: trained on all {result.n_train} images)"
    print(f"device {result.device}: {result.epochs_run} epochs in {result.train_seconds:.1f} s; "
          f"{measured}; total {time.perf_counter() - start:.1f} s; wrote {', '.join(map(str, written))}")
    return 0
