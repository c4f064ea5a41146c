"""Lesson 01's training as a script, on one process or several (fastai's
``learn.distrib_ctx()``); the logic, and what fastai needs on CPUs, is in
bbc1k/train/lesson_ddp.py.

Usage::

    torchrun --standalone --nproc_per_node 2 scripts/train_lesson_classifier.py --out models
    accelerate launch --multi_gpu --num_processes 2 scripts/train_lesson_classifier.py --out models
    python scripts/train_lesson_classifier.py --out models      # one process

Options are lesson 01's parameters (``--help``). Rank 0 writes
``OUT/bbc-classifier.pkl`` and ``OUT/bbc-classifier.onnx``.
"""
import sys

from bbc1k.train.lesson_ddp import main

if __name__ == "__main__":
    sys.exit(main())
