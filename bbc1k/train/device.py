"""Where training runs, and in which arithmetic.

:func:`pick_device` is the one place in bbc1k that chooses between the GPU
and the CPU: the recipes, the lessons (through :func:`bbc1k.notebook.start`)
and the benchmarks all ask it.
"""
from __future__ import annotations

from typing import Any

import torch

# A shared laptop's CPU: more threads rarely make a small network faster.
CPU_THREADS = 2


def pick_device() -> torch.device:
    """The CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def limit_cpu_threads(device: torch.device, most: int = CPU_THREADS) -> None:
    """On a CPU, use at most ``most`` threads; a GPU's host threads are left alone."""
    if device.type == "cpu":
        torch.set_num_threads(min(most, torch.get_num_threads()))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively. On a CPU with AMX or
    AVX512-BF16, training under bfloat16 autocast takes about half the time
    (ResNet-9 w24 at 72x96 on 2 cores: 228 -> 466 img/s); on other CPUs it is
    emulated, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, hence getattr
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def use_bf16(recipe: Any, device: torch.device) -> bool:
    """Whether to train under bfloat16 autocast, by the recipe's ``precision``:
    "bf16" always, "fp32" never, "auto" where the chip computes it natively."""
    if recipe.precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {recipe.precision!r}")
    return recipe.precision == "bf16" or (recipe.precision == "auto" and native_bf16(device))
