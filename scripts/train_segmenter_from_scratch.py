"""Train a segmenter from random weights, fast, and export it as ONNX.

The same command as ``python -m bbc1k train segmenter``; the recipe, and why
it works from random weights, is in bbc1k/train/segmenter.py.

Usage::

    python scripts/train_segmenter_from_scratch.py DATASET_DIR --out models/ [--name bbc-segmenter]
        [--time-budget 150] [--epochs 60] [--size 96 128] [--width 16] [--detector bbc-detector]

DATASET_DIR is a bbc1k dataset (images/, masks/, classification_labels.csv;
see README). The model is written to ``OUT/NAME.onnx`` in the bbc1k model
format, task ``segment``, classes in mask order.
"""
import sys

from bbc1k.train.cli import segmenter_main

if __name__ == "__main__":
    sys.exit(segmenter_main())
