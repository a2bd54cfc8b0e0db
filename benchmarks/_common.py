"""Helpers shared by the benchmark modules."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time in seconds of ``repeats`` calls of ``fn`` (warm it up before: the first call is timed too)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of fp32 ``n×n @ n×n`` rate in GFLOP/s (2 n³ FLOPs per product): the machine's reference rate."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n ** 3 / best_of(lambda: a @ b, repeats) / 1e9


def kit_flame_and_shipped_encoder(quick: bool):
    """The default kit's head model (seed 0) and the builtin encoder the package ships for it (``quick``: a few
    pre-training steps instead, for smoke runs)."""
    from neuface.encoders.builtin import load_builtin
    from neuface.encoders.pretrain import pretrain_builtin
    from neuface.encoders.shipped import SHIPPED_DIR
    from neuface.flame import FlameLayer
    from neuface.pretrain_settings import PretrainSettings
    from neuface.synthetic.kit import generate

    model, emb = generate(0)
    flame = FlameLayer(model, emb)
    if quick:
        encoder, _ = pretrain_builtin(flame, PretrainSettings(steps=20, batch_size=8, pool_size=16))
    else:
        encoder = load_builtin(SHIPPED_DIR / "builtin-kit-seed0.pt")
    return flame, encoder
