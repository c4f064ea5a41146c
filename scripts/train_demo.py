"""Train the app's demo models by running the lessons headless (papermill).

Each lesson runs with small CPU-sized parameters on the embedded synthetic
data; the executed notebooks land in runs/ (open them to see the plots and
metrics), the models in models/. Lessons whose models already exist are
skipped, so a second run takes seconds.

Without ImageNet weights (offline), the lessons' resnets learn next to
nothing in a few CPU minutes (lesson 01's classifier stays near chance;
lesson 03's networks call every pixel background; lesson 02's boxes reach an
IoU of 0.13). Offline, the demo models come from the from-scratch recipes,
trained on the same synthetic images instead:

- the classifier from ``python -m bbc1k train classifier`` (bbc1k.train.classifier);
- the segmenter, and a detector that boxes its mask, from
  ``python -m bbc1k train segmenter`` (bbc1k.train.segmenter).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One synthetic set serves all three lessons (made once, then reused).
COMMON = {"DATA_SOURCE": "synthetic", "DATA_DIR": "data", "N_IMAGES": 900, "SEED": 0,
          "OUT_DIR": "models", "ARCH": "resnet18", "LR_FIND_ITERS": 20}

# Per lesson: the models it exports, then its settings with ImageNet weights
# (a few epochs of fine-tuning suffice). Lesson 02's box head needs a multiple of 128 px.
LESSONS = [
    ("01-image-classification-with-fastai.ipynb", ["bbc-classifier"],
     {"IMG_SIZE": 128, "BATCH_SIZE": 32, "FREEZE_EPOCHS": 1, "EPOCHS": 3}),
    ("02-bounding-box-detection.ipynb", ["bbc-detector", "bbc-multitask"],
     {"IMG_SIZE": 128, "BATCH_SIZE": 32, "FREEZE_EPOCHS": 1, "EPOCHS": 2}),
    ("03-semantic-segmentation.ipynb", ["bbc-segmenter"],
     {"IMG_SIZE": 128, "BATCH_SIZE": 16, "FREEZE_EPOCHS": 1, "EPOCHS": 2}),
]

# The models the app serves (scripts/main.sh).
SERVED = ["bbc-classifier", "bbc-detector", "bbc-segmenter"]

# Offline (no ImageNet weights): (models, the recipe of `bbc1k train`, its
# arguments, whether it reads one folder per class rather than the dataset
# itself). The recipes fit their schedules into SCRATCH_SECONDS of training each.
SCRATCH_SECONDS = 150
OFFLINE = [
    (["bbc-classifier"], "classifier", ["--name", "bbc-classifier"], True),
    (["bbc-segmenter", "bbc-detector"], "segmenter",
     ["--name", "bbc-segmenter", "--detector", "bbc-detector"], False),
]


def pretrained_available(arch: str) -> bool:
    """ImageNet weights when they can be had (cached or downloadable), else
    random weights: the lessons say so and explain the difference."""
    from bbc1k.notebook import PretrainedUnavailable, check_pretrained

    try:
        return check_pretrained(arch, True)
    except PretrainedUnavailable as e:
        print(f"==> {e}\n==> so the demo models train from random weights (lower accuracy)", flush=True)
        return False


def train_offline(recipe: str, args: list[str], class_folders: bool, models: Path, runs: Path) -> float:
    """Models from random weights, by a from-scratch recipe on the synthetic set
    (a process of its own, as a user would run it: its threads and memory go with it)."""
    from bbc1k.data import get
    from bbc1k.layout import link_class_folders

    start = time.perf_counter()
    dataset = get(COMMON["DATA_SOURCE"], ROOT / COMMON["DATA_DIR"], n_images=COMMON["N_IMAGES"], seed=COMMON["SEED"])
    data = link_class_folders(dataset, runs / "classifier-images") if class_folders else dataset
    subprocess.run([sys.executable, "-m", "bbc1k", "train", recipe, str(data), "--out", str(models),
                    "--seed", str(COMMON["SEED"]), "--time-budget", str(SCRATCH_SECONDS), *args], check=True)
    return time.perf_counter() - start


def run_lesson(notebook: str, params: dict, runs: Path) -> float:
    import papermill as pm

    start = time.perf_counter()
    pm.execute_notebook(str(ROOT / notebook), str(runs / notebook), parameters=params,
                        cwd=str(ROOT), kernel_name="python3", progress_bar=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--retrain", action="store_true", help="train again even where models exist")
    args = ap.parse_args(argv)
    # Idle OpenMP threads spin by default; on a small or shared machine they
    # starve the data loader and each other (an epoch took several times longer).
    # The kernels and the recipe inherit this.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    models, runs = ROOT / COMMON["OUT_DIR"], ROOT / "runs"
    runs.mkdir(exist_ok=True)
    served = [models / f"{n}.onnx" for n in SERVED]
    if not args.retrain and all(p.exists() for p in served):
        print(f"==> {', '.join(p.name for p in served)}: present, skipped (--retrain trains them again)")
        return 0
    if pretrained_available(COMMON["ARCH"]):
        jobs = [(names, f"{notebook}: training, executed copy in runs/{notebook}",
                 lambda nb=notebook, own=own: run_lesson(nb, {**COMMON, **own, "PRETRAINED": True}, runs))
                for notebook, names, own in LESSONS]
    else:
        jobs = [(names, f"{', '.join(names)}: offline, so `bbc1k train {recipe}` trains from random "
                        f"weights ({SCRATCH_SECONDS} s of training)",
                 lambda recipe=recipe, extra=extra, folders=folders:
                     train_offline(recipe, extra, folders, models, runs))
                for names, recipe, extra, folders in OFFLINE]
    for names, what, job in jobs:
        wanted = [models / f"{n}.onnx" for n in names]
        if not args.retrain and all(p.exists() for p in wanted):
            print(f"==> {', '.join(p.name for p in wanted)}: present, skipped")
            continue
        print(f"==> {what}", flush=True)
        print(f"==> done in {job():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
