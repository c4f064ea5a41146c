"""Train an image classifier from random weights, fast, and export it as ONNX.

The same command as ``python -m bbc1k train classifier``; the recipe, and why
it works from random weights, is in bbc1k/train/classifier.py.

Usage::

    python scripts/train_from_scratch.py DATA_DIR --out models/ [--name bbc-scratch]
        [--epochs 110] [--size 96 128] [--seed 0] [--time-budget 270] [--holdout DIR]

DATA_DIR holds one subfolder of images per class (class names = subfolder
names, sorted). A seeded stratified split (``--valid-frac``, ``--split-seed``)
keeps part of it for validation, the same split for every run
(``--valid-frac 0``: train on everything). The model is written to
``OUT/NAME.onnx`` in the bbc1k model format (docs/model-format.md).
"""
import sys

from bbc1k.train.cli import classifier_main

if __name__ == "__main__":
    sys.exit(classifier_main())
