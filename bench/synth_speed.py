"""How fast bbc1k.synth writes a dataset: images per second, whole pipeline (render + JPEG + PNG + index).

    python -m bench.synth_speed --n 1000 --workers 2

Prints wall time and images/s for each worker count asked for, measured one
after the other in this run. The machine may be shared: figures are noisy.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bbc1k.synth import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images to write (default 1000)")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1],
                    help="worker counts to time, one run each (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print(f"cpu cores: {os.cpu_count()}; n={args.n}; size={args.width}x{args.height}")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            cpu0 = os.times()
            generate(Path(tmp) / "bbc_train", args.n, seed=args.seed, size=(args.width, args.height),
                     workers=workers, progress=False)
            wall = time.perf_counter() - start
            cpu1 = os.times()
            cpu = (cpu1.user + cpu1.children_user + cpu1.system + cpu1.children_system) - (
                cpu0.user + cpu0.children_user + cpu0.system + cpu0.children_system)
            print(f"workers={workers}: {wall:.1f} s wall, {args.n / wall:.1f} images/s, "
                  f"{1000 * cpu / args.n:.0f} ms CPU per image "
                  f"(1000 images would take {1000 * wall / args.n:.0f} s)")


if __name__ == "__main__":
    main()
