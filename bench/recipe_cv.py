"""The from-scratch classifier recipe, cross-validated on real photos.

    python -m bench.recipe_cv --photos DIR                      # 5 folds, the recipe's defaults
    python -m bench.recipe_cv --photos DIR --set synthetic_mix=0 --folds 5 --jsonl cv.jsonl

A single 120-photo validation split moves several points with its seed, so
the recipe is judged on every photo once: the photos are cut into ``--folds``
seeded stratified folds (``bbc1k.train.data.stratified_folds``), and each
fold is scored by a model trained on the others with the recipe's time
budget (``--time-budget``, default the 270 s that keep the whole command
under 5 minutes on 2 CPU cores). ``--set NAME=VALUE`` changes a field of
``bbc1k.train.classifier.Recipe`` (a Python literal: ``--set size=(72,96)``).

Prints a line per fold (accuracy, epochs, seconds) and the mean and minimum
over the folds, with the load average. Each fold's model is also scored
with test-time crops that shift (the mean over the whole photo and
``--shift-crops`` crops of 90% of its side, each with its mirror), beside
the exported flip average, and at larger test inputs (``--test-scales``:
random-resized crops show objects larger in training than a whole photo
shows them, which a larger test input makes up for), and with two closer
looks at the photo (``--zoom-crops``: crops with full detail around where the
class map peaks and in the centre), so those levers are measured on the same
models. Figures, not pass/fail: take them on a quiet machine, since the time
budget turns a busy machine into fewer epochs.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
from dataclasses import replace
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bbc1k.train.augment import Augment
from bbc1k.train.classifier import Recipe, test_size, train
from bbc1k.train.data import find_images, load_images, split_indices
from bbc1k.train.schedule import Normalise
from bench.common import add_photos_arg, load_note, photos_dir, spread


def valid_photos(data_dir: Path, recipe: Recipe, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The fold's validation photos at ``size`` (float 0..1) and their labels."""
    _, paths, labels = find_images(data_dir)
    _, valid = split_indices(labels, recipe.valid_frac, recipe.split_seed, recipe.fold, recipe.folds)
    return load_images([paths[i] for i in valid], size).float() / 255, torch.from_numpy(labels[valid])


def scaled_input_accuracy(model: torch.nn.Module, data_dir: Path, recipe: Recipe, scale: float) -> float:
    """Accuracy on the fold's validation photos given to ``model`` at ``scale``
    times its training input size (the network ends in global pooling)."""
    x, y = valid_photos(data_dir, recipe, test_size(replace(recipe, test_scale=scale)))
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(Normalise.photos(device)(x.to(device)))
    return float((logits.argmax(1).cpu() == y).float().mean())


def shifted_crops_accuracy(model: torch.nn.Module, data_dir: Path, recipe: Recipe, n_crops: int,
                           side: float = 0.9) -> float:
    """Accuracy of ``model`` on the fold's validation photos when its logits
    are averaged over the whole photo and ``n_crops`` crops of ``side`` of
    its width and height (the four corners, then the centre), each squished
    to the input size like the whole photo."""
    h, w = recipe.size
    big = (round(h / side), round(w / side))
    x, y = valid_photos(data_dir, recipe, big)
    device = next(model.parameters()).device
    norm = Normalise.photos(device)
    ch, cw = h, w
    corners = [(0, 0), (0, big[1] - cw), (big[0] - ch, 0), (big[0] - ch, big[1] - cw),
               ((big[0] - ch) // 2, (big[1] - cw) // 2)][:n_crops]
    with torch.no_grad():
        views = [F.interpolate(x, size=recipe.size, mode="bilinear", antialias=True, align_corners=False)]
        views += [x[:, :, t:t + ch, l:l + cw] for t, l in corners]
        logits = sum(model(norm(v.to(device))) for v in views) / len(views)
    return float((logits.argmax(1).cpu() == y).float().mean())


def zoomed_crops_accuracy(model: torch.nn.Module, data_dir: Path, recipe: Recipe, side: float) -> float:
    """Accuracy of ``model`` on the fold's validation photos when its logits
    are averaged over the whole photo and two closer looks, crops of ``side``
    of its width and height taken from the photo at twice the input size (so
    with full detail): one centred where the network's class map (of the
    classes the whole photo suggests, weighted by their probability) peaks,
    one in the centre. The network is the model's (first) ResNet-9. Photo and
    crops are given at the size the model is validated at (:func:`test_size`)."""
    from bbc1k.nets import ResNet9

    net = next(m for m in model.modules() if isinstance(m, ResNet9))
    size = test_size(recipe)
    x, y = valid_photos(data_dir, recipe, size)
    big, _ = valid_photos(data_dir, recipe, (2 * size[0], 2 * size[1]))
    device = next(model.parameters()).device
    norm = Normalise.photos(device)
    x, big = norm(x.to(device)), big.to(device)
    with torch.no_grad():
        whole = model(x)
        cam = torch.einsum("nkhw,nk->nhw", net.class_map(x), whole.softmax(1))
        h, w = cam.shape[1:]
        peak = cam.flatten(1).argmax(1)
        centres = [torch.stack([(peak % w + 0.5) / w, (peak // w + 0.5) / h], 1) * 2 - 1,  # (x, y) in -1..1
                   torch.zeros(len(x), 2, device=device)]
        logits = whole
        for centre in centres:
            theta = torch.zeros(len(x), 2, 3, device=device)
            theta[:, 0, 0] = theta[:, 1, 1] = side
            theta[:, :, 2] = centre.clamp(-(1 - side), 1 - side)
            grid = F.affine_grid(theta, [len(x), 3, *size], align_corners=False)
            logits = logits + model(norm(F.grid_sample(big, grid, align_corners=False)))
    return float((logits.argmax(1).cpu() == y).float().mean())


def parse_sets(pairs: list[str]) -> dict:
    """``["name=value", ...]`` -> Recipe fields; a value is a Python literal or a
    plain word; ``augment.NAME=VALUE`` changes a field of the recipe's Augment."""
    names = {f.name for f in dataclasses.fields(Recipe)}
    names |= {f"augment.{f.name}" for f in dataclasses.fields(Augment)}
    out, augment = {}, {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in names:
            raise SystemExit(f"--set {pair}: expected NAME=VALUE with NAME one of {', '.join(sorted(names))}")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        if name.startswith("augment."):
            augment[name.removeprefix("augment.")] = value
        else:
            out[name] = value
    if augment:
        out["augment"] = Augment(**augment)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photos_arg(ap)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only", type=int, nargs="+", default=None, metavar="K", help="run only these folds")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=270, metavar="SECONDS", help="0: none")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change a recipe field")
    ap.add_argument("--jsonl", type=Path, default=None, help="append one JSON line per fold here")
    ap.add_argument("--test-scales", type=float, nargs="*", default=[1.15, 1.3], metavar="S",
                    help="also score each model on photos S times its input size (default 1.15 1.3)")
    ap.add_argument("--shift-crops", type=int, default=4, choices=range(0, 6), metavar="N",
                    help="test-time crops beside the whole photo (0-5; default 4, the corners)")
    ap.add_argument("--zoom-crops", type=float, default=None, metavar="SIDE",
                    help="also score each model with two closer looks (crops of SIDE of the photo, at twice "
                         "the input size): where its class map peaks and in the centre")
    args = ap.parse_args(argv)
    data_dir = photos_dir(args.photos)
    changes = parse_sets(args.set)
    sys.stdout.reconfigure(line_buffering=True)
    print(f"recipe changes: {changes or 'none'}; {args.folds} folds, split seed {args.split_seed}; {load_note()}")

    accs, shifted, zoomed = [], [], []
    scaled: dict[float, list[float]] = {s: [] for s in args.test_scales}
    for k in args.only if args.only is not None else range(args.folds):
        recipe = Recipe(**{**changes, "fold": k, "folds": args.folds, "split_seed": args.split_seed,
                           "time_budget": args.time_budget or None})
        start = time.perf_counter()
        result = train(data_dir, recipe, progress=False, log_epochs=False)
        wall = time.perf_counter() - start
        accs.append(result.valid_acc)
        shifted.append(shifted_crops_accuracy(result.model, data_dir, recipe, args.shift_crops))
        for s in args.test_scales:
            scaled[s].append(scaled_input_accuracy(result.model, data_dir, recipe, s))
        at_scales = "".join(f"at {s}x the input: {v[-1]:.1%}; " for s, v in scaled.items())
        if args.zoom_crops:
            zoomed.append(zoomed_crops_accuracy(result.model, data_dir, recipe, args.zoom_crops))
            at_scales += f"with closer looks too: {zoomed[-1]:.1%}; "
        print(f"fold {k}: {result.valid_acc:.1%} of {result.n_valid} photos (with {args.shift_crops} shifted "
              f"crops too: {shifted[-1]:.1%}; {at_scales}trained on {result.n_train}; "
              f"{result.epochs_run} epochs, {result.train_seconds:.0f} s training, {wall:.0f} s in all "
              f"({result.device}); {load_note()}")
        if args.jsonl:
            with args.jsonl.open("a") as f:
                f.write(json.dumps({"changes": repr(changes), "fold": k, "acc": result.valid_acc,
                                    "acc_shifted_crops": shifted[-1],
                                    "acc_scaled": {str(s): v[-1] for s, v in scaled.items()},
                                    "acc_zoomed": zoomed[-1] if zoomed else None,
                                    "epochs": result.epochs_run, "train_s": result.train_seconds,
                                    "wall_s": wall, "load": load_note()}) + "\n")
    print(f"\n{len(accs)} folds: {spread(accs)} (changes: {changes or 'none'}); {load_note()}")
    print(f"with {args.shift_crops} shifted crops too: {spread(shifted)}")
    for s, v in scaled.items():
        print(f"at {s}x the input size: {spread(v)}")
    if zoomed:
        print(f"with two closer looks ({args.zoom_crops} of the side) too: {spread(zoomed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
