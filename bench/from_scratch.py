"""From random weights: the fast recipe against fastai's defaults, on one fixed split.

    python -m bench.from_scratch --photos DIR          # both (or set BBC1K_PHOTOS=DIR)
    python -m bench.from_scratch --photos DIR --skip-anchor --seeds 0 1 2

Both contenders train with ``pretrained=False`` on the same seeded stratified
80/20 split of a folder of class subfolders and are scored on the same
validation photos:

- recipe: ``bbc1k.train.classifier`` (ResNet-9, small inputs, data in
  memory, batch augmentation, one-cycle AdamW, flip TTA), with its defaults
  and a time budget (``--time-budget``, 270 s) its schedule fits into;
- anchor: fastai's defaults (resnet18, 128 px ``Resize``, ``aug_transforms``,
  ``fit_one_cycle(12)``), as lesson 01 would train without ImageNet weights.

Prints accuracy, wall time (loading included) and training images per second
for each, and the device. Figures, not pass/fail; on a shared machine the
times mean little: compare them only within one run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bbc1k.train.classifier import Recipe, train
from bbc1k.train.data import find_images, stratified_split
from bbc1k.train.device import limit_cpu_threads, pick_device
from bench.common import add_photos_arg, load_note, photos_dir, spread


def run_recipe(data_dir: Path, seed: int, split_seed: int, epochs: int | None,
               time_budget: float | None) -> dict:
    recipe = Recipe(seed=seed, split_seed=split_seed, time_budget=time_budget)
    if epochs:
        recipe.epochs = epochs
    start = time.perf_counter()
    result = train(data_dir, recipe, progress=False, log_epochs=False)
    wall = time.perf_counter() - start
    h, w = recipe.size
    per_epoch = result.train_seconds / result.epochs_run
    print(f"recipe seed {seed}: {result.valid_acc:.1%} after {result.epochs_run} epochs, "
          f"{per_epoch:.2f} s per epoch, {wall:.0f} s in all", flush=True)
    return {"variant": f"recipe resnet9 w{recipe.width} {h}x{w} seed {seed}", "acc": result.valid_acc,
            "wall_s": wall, "epochs": result.epochs_run, "img_s": result.images_per_second,
            "device": result.device, "history": result.history}


def run_anchor(data_dir: Path, split_seed: int, epochs: int) -> dict:
    """fastai's defaults from scratch on the recipe's split."""
    from fastai.vision.all import (CategoryBlock, DataBlock, ImageBlock, IndexSplitter, Resize, accuracy,
                                   aug_transforms, get_image_files, parent_label, resnet18, vision_learner)

    limit_cpu_threads(pick_device())
    _, paths, labels = find_images(data_dir)
    _, valid_idx = stratified_split(labels, 0.2, split_seed)
    files = sorted(get_image_files(data_dir))
    position = {Path(p): i for i, p in enumerate(files)}
    valid_files = [position[Path(paths[i])] for i in valid_idx]

    start = time.perf_counter()
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda _: files,
                      get_y=parent_label, splitter=IndexSplitter(valid_files),
                      item_tfms=Resize(128), batch_tfms=aug_transforms())
    dls = block.dataloaders(data_dir, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs)
    acc = float(learn.validate()[1])
    wall = time.perf_counter() - start
    seen = epochs * len(dls.train) * dls.train.bs
    return {"variant": "anchor fastai resnet18 128px", "acc": acc, "wall_s": wall, "epochs": epochs,
            "img_s": seen / wall, "device": str(dls.device)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photos_arg(ap)
    ap.add_argument("--skip-anchor", action="store_true", help="do not train the fastai-defaults anchor")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds of the recipe")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="recipe epochs (default: the recipe's)")
    ap.add_argument("--time-budget", type=float, default=270, metavar="SECONDS",
                    help="recipe training time the schedule must fit into (default 270: 5 minutes "
                         "with loading and export on 2 CPU cores; a GPU finishes long before); 0: none")
    ap.add_argument("--anchor-epochs", type=int, default=12)
    args = ap.parse_args(argv)
    data_dir = photos_dir(args.photos)

    rows = [run_recipe(data_dir, s, args.split_seed, args.epochs, args.time_budget or None)
            for s in args.seeds]
    if len(rows) > 1:
        accs = [r["acc"] for r in rows]
        print(f"recipe over {len(rows)} seeds: accuracy {spread(accs)}")
    if not args.skip_anchor:
        rows.append(run_anchor(data_dir, args.split_seed, args.anchor_epochs))

    print(f"\nfixed split: seed {args.split_seed}, 80/20 stratified, data {data_dir}; {load_note()}")
    print(f"{'variant':<40} {'device':>7} {'epochs':>6} {'accuracy':>9} {'wall s':>8} {'img/s':>7}")
    for r in rows:
        print(f"{r['variant']:<40} {r['device']:>7} {r['epochs']:>6} {r['acc']:>9.1%} "
              f"{r['wall_s']:>8.1f} {r['img_s']:>7.0f}")
    if not args.skip_anchor:
        anchor = rows[-1]
        for r in rows[:-1]:
            when = next((h["seconds"] for h in r["history"]
                         if h["valid_acc"] is not None and h["valid_acc"] >= anchor["acc"]), None)
            reached = f"after {when:.1f} s of training" if when is not None else "never"
            print(f"{r['variant']} reached the anchor's {anchor['acc']:.1%} {reached} "
                  f"(the anchor took {anchor['wall_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
