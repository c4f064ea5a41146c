"""Train the app's demo models by running the lessons headless (papermill).

Each lesson runs with small CPU-sized parameters on the embedded synthetic
data; the executed notebooks land in runs/ (open them to see the plots and
metrics), the models in models/. Lessons whose models already exist are
skipped, so a second run takes seconds.

Without ImageNet weights (offline), lesson 01's resnet learns nothing useful
in a few CPU minutes, so the classifier comes from the from-scratch recipe
(scripts/train_from_scratch.py) trained on the same synthetic images instead.
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
# (a few epochs of fine-tuning suffice) and without them (offline: what fits
# scripts/main.sh's 15 minutes on 2 CPU cores; random weights learn little in
# that time). Lesson 02's box head needs a multiple of 128 px.
LESSONS = [
    ("01-image-classification-with-fastai.ipynb", ["bbc-classifier"],
     {"IMG_SIZE": 128, "BATCH_SIZE": 32, "FREEZE_EPOCHS": 1, "EPOCHS": 3},
     None),  # offline: the from-scratch recipe instead (see train_offline_classifier)
    ("02-bounding-box-detection.ipynb", ["bbc-detector", "bbc-multitask"],
     {"IMG_SIZE": 128, "BATCH_SIZE": 32, "FREEZE_EPOCHS": 1, "EPOCHS": 2},
     {"IMG_SIZE": 128, "BATCH_SIZE": 32, "FREEZE_EPOCHS": 1, "EPOCHS": 1}),
    ("03-semantic-segmentation.ipynb", ["bbc-segmenter"],
     {"IMG_SIZE": 128, "BATCH_SIZE": 16, "FREEZE_EPOCHS": 1, "EPOCHS": 2},
     {"IMG_SIZE": 64, "BATCH_SIZE": 16, "FREEZE_EPOCHS": 1, "EPOCHS": 1}),
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


# Seconds of training the offline classifier gets (the recipe fits its schedule into them).
SCRATCH_SECONDS = 150


def train_offline_classifier(models: Path, runs: Path) -> float:
    """The classifier from random weights: the from-scratch recipe on the
    synthetic set's images, linked into one folder per class."""
    from bbc1k.data import get
    from bbc1k.layout import link_class_folders

    start = time.perf_counter()
    dataset = get(COMMON["DATA_SOURCE"], ROOT / COMMON["DATA_DIR"], n_images=COMMON["N_IMAGES"], seed=COMMON["SEED"])
    view = link_class_folders(dataset, runs / "classifier-images")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_from_scratch.py"), str(view),
                    "--out", str(models), "--name", "bbc-classifier", "--seed", str(COMMON["SEED"]),
                    "--time-budget", str(SCRATCH_SECONDS)], check=True)
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
    pretrained: bool | None = None
    for notebook, names, with_weights, without_weights in LESSONS:
        wanted = [models / f"{n}.onnx" for n in names]
        if not args.retrain and all(p.exists() for p in wanted):
            print(f"==> {notebook}: models present ({', '.join(p.name for p in wanted)}), skipped")
            continue
        if pretrained is None:
            pretrained = pretrained_available(COMMON["ARCH"])
        if not pretrained and names == ["bbc-classifier"]:
            print("==> bbc-classifier: offline, so the from-scratch recipe trains it "
                  f"({SCRATCH_SECONDS} s of training)", flush=True)
            seconds = train_offline_classifier(models, runs)
            print(f"==> bbc-classifier: done in {seconds:.0f} s", flush=True)
            continue
        own = with_weights if pretrained else without_weights
        print(f"==> {notebook}: training, executed copy in runs/{notebook}", flush=True)
        seconds = run_lesson(notebook, {**COMMON, **own, "PRETRAINED": pretrained}, runs)
        print(f"==> {notebook}: done in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
