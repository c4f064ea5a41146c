"""The from-scratch classifier on 1 process against N (torchrun, DistributedDataParallel).

    python -m bench.recipe_processes --photos DIR [--processes 1 2] [--epochs 110] [--target 0.85]
    python -m bench.recipe_processes --photos DIR --processes 1 2 4 8 --batch-size 256 --lr 0.01   # 8 GPUs
    python -m bench.recipe_processes --tiny                                # checks the benchmark itself

Each run is the recipe's own command, ``torchrun --standalone --nproc_per_node
N -m bbc1k train classifier DIR`` with the same seed, split and global batch:
N processes train the same schedule as one (bbc1k.train.distributed). On a
CPU machine the N processes share its cores (torchrun gives each one
thread; one process alone takes two), so expect little gain from N on 2
cores (an AVX2 CPU, 25 epochs: 170 s on 2 processes against 185 s on 1,
1.08x; one thread keeps small convolutions busier than two share them, and
the gradient exchange takes part of that back). On GPUs each process has a GPU.

Options the benchmark does not know go to the recipe (``--batch-size``,
``--lr``, ``--time-budget``, ...): its batch is the global one, so on many GPUs
raise it to keep each GPU busy (that changes the recipe: compare accuracies).

Prints per run: wall time (start-up and loading included), training time and
images/s as the recipe reports them, the final validation accuracy, and the
training time to reach ``--target`` validation accuracy (first validation at
or above it). Figures, not pass/fail; the load average is printed beside them.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import add_photos_arg, load_note, photos_dir

REPO = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"device (\S+): (\d+) epochs in ([\d.]+) s \(([\d.]+) img/s\)")
ACCURACY = re.compile(r"validation accuracy ([\d.]+)%")
EPOCH = re.compile(r"^epoch +(\d+) +train loss [\d.]+ +valid acc ([\d.]+) +([\d.]+) s", re.M)


def run(photos: Path, processes: int, extra: list[str]) -> dict:
    """One run of the recipe on ``processes`` processes: its figures, parsed from what rank 0 prints."""
    with tempfile.TemporaryDirectory(prefix="bbc1k-recipe-procs-") as out:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "bbc1k", "train", "classifier", str(photos), "--out", out, "--quiet", *extra]
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    device, epochs, seconds, img_s = SUMMARY.search(done.stdout).groups()
    acc = ACCURACY.search(done.stdout)
    return {"processes": processes, "device": device, "epochs": int(epochs), "wall_s": wall,
            "train_s": float(seconds), "img_s": float(img_s), "acc": float(acc.group(1)) / 100 if acc else None,
            "curve": [(int(e), float(a), float(s)) for e, a, s in EPOCH.findall(done.stdout)]}


def time_to(curve: list[tuple[int, float, float]], target: float) -> str:
    """Training seconds until the first validation at or above ``target``."""
    for _, acc, seconds in curve:
        if acc >= target:
            return f"{seconds:.1f} s"
    return "not reached"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_photos_arg(ap)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to compare (default 1 2)")
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--eval-every", type=int, default=5, help="validate every N-th epoch (time to accuracy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.85, help="validation accuracy for time-to-accuracy")
    ap.add_argument("--tiny", action="store_true", help="36 synthetic photos, 2 epochs at 24x32: checks the "
                    "benchmark in a minute (its figures mean nothing)")
    a, recipe_args = ap.parse_known_args(argv)
    extra = ["--seed", str(a.seed), "--eval-every", str(a.eval_every), *recipe_args]
    if a.tiny:
        from bench import bench_models

        photos = Path(bench_models.tiny(Path(tempfile.gettempdir()) / "bbc1k-serve-bench-tiny")["photos"])
        extra += ["--epochs", "2", "--size", "24", "32", "--width", "4", "--batch-size", "8", "--eval-every", "1"]
    else:
        photos = photos_dir(a.photos)
    if a.epochs:
        extra += ["--epochs", str(a.epochs)]
    print(f"recipe on {photos}, {' vs '.join(map(str, a.processes))} processes; {load_note()}", flush=True)
    rows = []
    for n in a.processes:
        rows.append(run(photos, n, extra))
        r = rows[-1]
        print(f"  {n} process(es): {r['train_s']:.1f} s training, {r['img_s']:.0f} img/s, wall {r['wall_s']:.1f} s; "
              f"{load_note()}", flush=True)
    base = rows[0]
    print(f"\n| processes | device | epochs | train s | img/s | vs {base['processes']} | wall s | valid acc "
          f"| to {a.target:.0%} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = f"{r['acc']:.1%}" if r["acc"] is not None else "-"
        print(f"| {r['processes']} | {r['device']} | {r['epochs']} | {r['train_s']:.1f} | {r['img_s']:.0f} "
              f"| {r['img_s'] / base['img_s']:.2f}x | {r['wall_s']:.1f} | {acc} | {time_to(r['curve'], a.target)} |")
    print(f"\n{load_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
