"""The from-scratch training engine: every weight starts random, no ImageNet.

    python -m bbc1k train classifier DATA_DIR --out models [--time-budget 270]
    python -m bbc1k train segmenter DATASET_DIR --out models [--detector bbc-detector]
    torchrun --standalone --nproc_per_node 2 -m bbc1k train classifier DATA_DIR --out models

Modules, in the order they build on each other:

- ``device``: the one choice of CPU or GPU, bfloat16 where native, CPU threads;
- ``data``: photos decoded once into memory, seeded stratified splits,
  synthetic pictures, a bbc1k dataset's images and masks;
- ``augment``: random crops, flips, rotations and colour on whole batches,
  the same warp for photos and their masks, mixup and CutMix;
- ``distributed``: the same recipes on several processes under ``torchrun``
  (DistributedDataParallel; NCCL on GPUs, gloo on CPUs);
- ``schedule``: the one-cycle learning rate, the optimiser and the training loop;
- ``classifier``: ResNet-9 on class folders, exported with mirror averaging;
- ``checkpoint``: the classifier's PyTorch weights beside its ONNX, rebuilt on loading;
- ``segmenter``: a small U-Net on masks, and a detector that boxes its mask;
- ``cli``: the command lines (``scripts/train_*_from_scratch.py`` are thin
  wrappers over them);
- ``lesson_ddp``: lesson 01's fastai training as a script, on one process or
  several (``learn.distrib_ctx()``; ``scripts/train_lesson_classifier.py``).

The networks themselves live in :mod:`bbc1k.nets`. Importing this package
imports nothing heavy; its modules import torch.
"""
