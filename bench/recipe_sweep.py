"""Variants of the from-scratch recipe, several seeds each, side by side.

    python -m bench.recipe_sweep --photos DIR [--variants base cutmix ...] [--seeds 0 1 2]
                                 [--parallel 8] [--jsonl results.jsonl]

Each variant is the recipe (``bbc1k.train.classifier``) with a few
settings changed and a fixed number of epochs: the number that fits in about
270 s of training on this project's 2-core CPU (bfloat16 on AMX, measured
per epoch with ``--eval-every`` large), so a GPU, where all of them take
seconds, tells which variant to pick for the CPU. All runs share one seeded
80/20 split. Runs go to separate processes, ``--parallel`` at a time (on a
GPU, small networks leave it mostly idle: parallel runs fill it).

Prints one line per run (accuracy, epochs, seconds, time to 90%) and a table
of mean / min / max accuracy per variant. Figures, not pass/fail.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from bbc1k.train.classifier import Recipe, train
from bench.common import add_photos_arg, load_note, photos_dir

# name -> Recipe settings (width 24 unless given); "epochs" from 2-core CPU seconds per epoch (bf16):
# w24 72x96 1.30 s, w24 96x128 2.20 s, w16 72x96 0.75 s; most promising first.
S = (72, 96)  # the recipe's input size before 96x128 measured best
VARIANTS: dict[str, dict] = {
    "cutmix+ema": {"epochs": 190, "size": S, "mix": "cutmix", "ema": 0.995},
    "base": {"epochs": 190, "size": S},
    "w16+cutmix+ema": {"epochs": 320, "size": S, "width": 16, "mix": "cutmix", "ema": 0.995},
    "96x128+cutmix+ema": {"epochs": 110, "size": (96, 128), "mix": "cutmix", "ema": 0.995},
    "cutmix": {"epochs": 190, "size": S, "mix": "cutmix"},
    "ema": {"epochs": 190, "size": S, "ema": 0.995},
    "mixup": {"epochs": 190, "size": S, "mix": "mixup", "mix_alpha": 0.4},
    "w16": {"epochs": 320, "size": S, "width": 16},
    "96x128": {"epochs": 110, "size": (96, 128)},
    "w16-96x128+cutmix+ema": {"epochs": 200, "width": 16, "size": (96, 128), "mix": "cutmix", "ema": 0.995},
    "base-400": {"epochs": 400, "size": S},
    "cutmix+ema-400": {"epochs": 400, "size": S, "mix": "cutmix", "ema": 0.995},
}


def run_one(data_dir: str, name: str, settings: dict, seed: int, eval_every: int) -> dict:
    recipe = Recipe(seed=seed, eval_every=eval_every, **settings)
    result = train(data_dir, recipe, progress=False, log_epochs=False)
    curve = [(h["seconds"], h["valid_acc"]) for h in result.history if h["valid_acc"] is not None]
    to_90 = next((s for s, a in curve if a >= 0.9), None)
    return {"variant": name, "seed": seed, "acc": result.valid_acc, "epochs": result.epochs_run,
            "train_s": round(result.train_seconds, 1), "img_s": round(result.images_per_second),
            "to_90_s": to_90, "device": result.device, "curve": curve}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photos_arg(ap)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time (default 1)")
    ap.add_argument("--eval-every", type=int, default=10, help="validate every N-th epoch (default 10)")
    ap.add_argument("--epochs-scale", type=float, default=1.0,
                    help="multiply every variant's epochs (a quick check: 0.02)")
    ap.add_argument("--jsonl", type=Path, default=None, help="append each run's figures to this file")
    args = ap.parse_args(argv)
    data_dir = photos_dir(args.photos)

    variants = {v: {**VARIANTS[v], "epochs": max(1, round(VARIANTS[v]["epochs"] * args.epochs_scale))}
                for v in args.variants}
    jobs = [(str(data_dir), v, variants[v], s, args.eval_every) for v in args.variants for s in args.seeds]
    rows: list[dict] = []
    # spawn: a forked CUDA context cannot be used in the child
    with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_one, *job) for job in jobs]):
            row = future.result()
            rows.append(row)
            to_90 = f"{row['to_90_s']:.1f} s" if row["to_90_s"] is not None else "never"
            print(f"{row['variant']:<20} seed {row['seed']}: {row['acc']:.1%} after {row['epochs']} epochs, "
                  f"{row['train_s']} s, {row['img_s']} img/s, 90% at {to_90}", flush=True)
            if args.jsonl:
                with args.jsonl.open("a") as f:
                    f.write(json.dumps(row) + "\n")

    print(f"\n{load_note()}; data {data_dir}")
    print(f"{'variant':<20} {'settings':<48} {'mean':>6} {'min':>6} {'max':>6}")
    for v in args.variants:
        accs = [r["acc"] for r in rows if r["variant"] == v]
        if not accs:
            continue
        print(f"{v:<20} {json.dumps(variants[v]):<48} {statistics.mean(accs):>6.1%} "
              f"{min(accs):>6.1%} {max(accs):>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
