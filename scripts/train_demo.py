"""Train the app's demo models by running the lessons headless (papermill).

Each lesson runs with small CPU-sized parameters on the embedded synthetic
data; the executed notebooks land in runs/ (open them to see the plots and
metrics), the models in models/. Lessons whose models already exist are
skipped, so a second run takes seconds.

Without ImageNet weights (offline), the lessons' resnets learn next to
nothing in a few CPU minutes (lesson 01's classifier stays near chance;
lesson 03's networks call every pixel background; lesson 02's boxes reach an
IoU of 0.13). Offline, the demo models come from the from-scratch recipes:

- the classifier from ``python -m bbc1k train classifier`` on the real
  photos shipped in ``real-photos/train``, with synthetic pictures mixed into
  every batch (bbc1k.train.classifier);
- the segmenter, and a detector that boxes its mask, from
  ``python -m bbc1k train segmenter`` on the synthetic images' masks, with
  the photos of ``real-photos/train`` teaching its image head the classes
  (bbc1k.train.segmenter); the exported segmenter's mask is named by the
  classifier just trained (``--classifier``), so the app's classification
  and mask agree.

Last, every served model is measured on ``real-photos/held-out``: real
photos no model here trained on.
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

# Real photos with class labels (real-photos/README.md): the offline recipes learn
# from train/; every demo model is measured on held-out/.
REAL_TRAIN, REAL_HELD_OUT = ROOT / "real-photos" / "train", ROOT / "real-photos" / "held-out"

# Offline (no ImageNet weights): (the files it writes in models/, the recipe
# of `bbc1k train`, its arguments, whether it reads the real photos rather
# than the synthetic dataset, the seconds of training its schedule fills).
# The classifier gets close to the 270 s its recipe is cross-validated with
# (bench.recipe_cv), within a main job of under 10 minutes: at 150 s, two
# main-job runs scored 85.8% and 93.3% on the held-out photos. Its PyTorch
# weights (.pt) name the segmenter's mask, so it trains first.
CLASSIFIER_WEIGHTS = ROOT / COMMON["OUT_DIR"] / "bbc-classifier.pt"
OFFLINE = [
    (["bbc-classifier.onnx", CLASSIFIER_WEIGHTS.name], "classifier",
     ["--name", "bbc-classifier", "--valid-frac", "0"], True, 240),
    (["bbc-segmenter.onnx", "bbc-detector.onnx"], "segmenter",
     ["--name", "bbc-segmenter", "--detector", "bbc-detector", "--photos", str(REAL_TRAIN),
      "--classifier", str(CLASSIFIER_WEIGHTS)], False, 150),
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


# The offline segmenter reads its synthetic images at 160 x 120: rendered at
# half the lessons' 512 x 384, the set is made in a third of the time (900
# images: 23 s against 64 s on 2 cores, `python -m bench.synth_speed`).
OFFLINE_IMAGE_SIZE = (256, 192)


def train_offline(recipe: str, args: list[str], real_photos: bool, seconds: int, models: Path) -> float:
    """Models from random weights, by a from-scratch recipe on the real photos
    or the synthetic set (a process of its own, as a user would run it: its
    threads and memory go with it)."""
    from bbc1k.data import get

    start = time.perf_counter()
    data = REAL_TRAIN if real_photos else get(COMMON["DATA_SOURCE"], ROOT / COMMON["DATA_DIR"],
                                              n_images=COMMON["N_IMAGES"], seed=COMMON["SEED"],
                                              size=OFFLINE_IMAGE_SIZE)
    subprocess.run([sys.executable, "-m", "bbc1k", "train", recipe, str(data), "--out", str(models),
                    "--seed", str(COMMON["SEED"]), "--time-budget", str(seconds), *args], check=True)
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
        jobs = [([f"{n}.onnx" for n in names], f"{notebook}: training, executed copy in runs/{notebook}",
                 lambda nb=notebook, own=own: run_lesson(nb, {**COMMON, **own, "PRETRAINED": True}, runs))
                for notebook, names, own in LESSONS]
    else:
        jobs = [(files, f"{', '.join(files)}: offline, so `bbc1k train {recipe}` trains from random "
                        f"weights ({seconds} s of training)",
                 lambda recipe=recipe, extra=extra, real=real, seconds=seconds:
                     train_offline(recipe, extra, real, seconds, models))
                for files, recipe, extra, real, seconds in OFFLINE]
    for files, what, job in jobs:
        wanted = [models / f for f in files]
        if not args.retrain and all(p.exists() for p in wanted):
            print(f"==> {', '.join(p.name for p in wanted)}: present, skipped")
            continue
        print(f"==> {what}", flush=True)
        print(f"==> done in {job():.0f} s", flush=True)
    report_on_real_photos(served)
    return 0


def report_on_real_photos(served: list[Path]) -> None:
    """How each served model (and its int8 copy, which the app serves) does on
    real photos none of them trained on."""
    from bbc1k.modelmeta import read_onnx_meta
    from bbc1k.photo_scores import score_model, scored_kind

    print(f"==> on {REAL_HELD_OUT.relative_to(ROOT)} (real photos no model here trained on):", flush=True)
    for path in served:
        for model in (path, path.with_suffix(".int8.onnx")):
            if model.exists() and scored_kind(read_onnx_meta(str(model))):
                print(f"    {score_model(model, REAL_HELD_OUT).line()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
