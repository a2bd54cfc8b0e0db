"""Encoder training throughput (images/s, forward+backward, BN frozen) next to the machine's fp32 matmul rate.

NeuFace optimizes the encoder on windows of 7 views × 20 frames = 140 crops. Rows: images/s of one
forward+backward pass for the ``builtin`` encoder and DECA's ResNet-50 ``E_flame`` on CPU float32
(channels-last). ``reference`` = the images/s the model would reach if all its FLOPs (counted with
``torch.utils.flop_counter`` on the same pass) ran at the fp32 matmul rate measured in this run, so ``ratio`` is
the achieved utilisation. A first row reports that matmul rate itself (GFLOP/s; reference = none).
ResNet-50 at batch 140 needs ~15 GB of activations and ~30 s per pass on a small CPU, so it is measured at a
smaller batch (stated in the row name); images/s is nearly batch-independent at these sizes.
"""

from __future__ import annotations

import logging
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._common import matmul_gflops
from neuface.encoders import BuiltinEncoder, DecaEncoder, FlameEncoder

log = logging.getLogger("benchmarks.bench_encoders")


def _loss(out) -> torch.Tensor:
    return out.shape.square().mean() + out.expression.square().mean() + out.cam.square().mean() \
        + out.global_pose.square().mean() + out.jaw_pose.square().mean()


def step_flops(model: FlameEncoder, batch: int = 1) -> float:
    """FLOPs of one forward+backward pass at ``batch`` (convolutions and matmuls)."""
    images = torch.rand(batch, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        _loss(model(images)).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def images_per_s(model: FlameEncoder, batch: int, repeats: int) -> float:
    """Best-of forward+backward rate (one warm-up pass first)."""
    images = torch.rand(batch, 3, 224, 224)
    best = float("inf")
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        _loss(model(images)).backward()
        model.zero_grad(set_to_none=True)
        if i > 0:
            best = min(best, time.perf_counter() - t0)
    return batch / best


def run(quick: bool = False) -> list[dict]:
    """Rows ``{name, value, unit, reference, ratio}``; see the module docstring."""
    n = 512 if quick else 2048
    gflops = matmul_gflops(n, 3 if quick else 5)
    rows = [{"name": f"fp32 matmul {n}x{n} cpu (machine peak proxy)", "value": gflops, "unit": "GFLOP/s",
             "reference": None, "ratio": None}]
    cases = [
        ("builtin", BuiltinEncoder().reset_parameters(0), 16 if quick else 140, 1 if quick else 3),
        ("deca ResNet-50", DecaEncoder(), 2 if quick else 20, 1 if quick else 2),
    ]
    for name, model, batch, repeats in cases:
        model = model.to_channels_last().train().freeze_batchnorm()
        flops = step_flops(model)
        rate = images_per_s(model, batch, repeats)
        peak = gflops * 1e9 / flops
        log.debug("%s: %.3g GFLOP per image fwd+bwd, %.3g images/s", name, flops / 1e9, rate)
        rows.append({"name": f"{name} fwd+bwd B={batch} cpu f32 ({flops / 1e9:.2f} GFLOP/img; ref = matmul-bound)",
                     "value": rate, "unit": "images/s", "reference": peak, "ratio": rate / peak})
    return rows
