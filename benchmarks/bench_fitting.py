"""NeuFace optimisation throughput: seconds per M-step (encoder fwd+bwd + FLAME + all losses + Adam) and
images/s for one window of 7 views × 20 frames, next to the machine's fp32 matmul rate measured in this run.

``reference`` of a step row = the step time the model FLOPs (counted with ``torch.utils.flop_counter`` on the
same step: encoder, FLAME and losses) would take at the measured matmul rate, so ``ratio`` = utilisation
(model FLOPs per step / step time / matmul FLOP/s). Inputs are random crops and landmarks (timings do not
depend on content); the head model is the synthetic kit's (same size as FLAME: 5023 vertices). DECA's
ResNet-50 is measured on a smaller window (stated in the row) because 140 crops need ~15 GB on CPU.
"""

from __future__ import annotations

import logging
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._common import best_of, matmul_gflops
from neuface.encoders.base import freeze_batchnorm
from neuface.fitting.config import resolve_annotator
from neuface.fitting.data import SequenceBatch
from neuface.fitting.neuface import e_step, optimisable_parameters, window_loss
from neuface.flame import FlameLayer

log = logging.getLogger("benchmarks.bench_fitting")


def random_sequence(n_frames: int, n_views: int, size: int = 224, seed: int = 0) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    lmk = torch.rand(n_frames, n_views, 68, 2, generator=g) * 1.2 - 0.6
    eye = torch.eye(3, dtype=torch.float64).expand(n_frames, n_views, 3, 3).clone()
    return SequenceBatch(
        sequence="bench", views=[f"v{i}" for i in range(n_views)],
        images=torch.randint(0, 256, (n_frames, n_views, 3, size, size), generator=g, dtype=torch.uint8),
        landmarks=lmk, landmarks_px=lmk, valid=torch.ones(n_frames, n_views, 68, dtype=torch.bool),
        detected=torch.ones(n_frames, n_views, dtype=torch.bool), transforms=eye, crop_size=size, fps=25.0)


def _flame() -> FlameLayer:
    from neuface.synthetic.kit import generate

    model, emb = generate(0)
    return FlameLayer(model, emb)


def measure(encoder, flame: FlameLayer, n_frames: int, n_views: int, repeats: int, **options) -> dict:
    """Best-of step time, FLOPs per step and E-step time for one window of ``n_frames`` × ``n_views``
    (``options``: annotator settings such as ``amp`` / ``channels_last``)."""
    settings = resolve_annotator("neuface", {"window_frames": n_frames, "progress": False, **options})
    seq = random_sequence(n_frames, n_views)
    dev = torch.device("cpu")
    encoder.eval()
    freeze_batchnorm(encoder, freeze_affine=True)
    opt = torch.optim.Adam(optimisable_parameters(encoder), lr=settings.lr)
    targets = e_step(encoder, flame, seq, settings, dev, encoder.input_size)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = window_loss(encoder, flame, seq, 0, n_frames, settings, dev, encoder.input_size, targets)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    best = best_of(step, repeats)
    t0 = time.perf_counter()  # the E-step timed warm, like the steps (the first call above pays the warm-up)
    e_step(encoder, flame, seq, settings, dev, encoder.input_size)
    return {"step_s": best, "flops": float(counter.get_total_flops()), "estep_s": time.perf_counter() - t0}


def run(quick: bool = False) -> list[dict]:
    """Rows ``{name, value, unit, reference, ratio}``; see the module docstring."""
    gflops = matmul_gflops(512 if quick else 2048, 3 if quick else 7)
    rows = [{"name": "fp32 matmul cpu (machine peak proxy)", "value": gflops, "unit": "GFLOP/s",
             "reference": None, "ratio": None}]
    flame = _flame()
    cases = []
    try:
        from neuface.encoders import BuiltinEncoder, DecaEncoder

        cases.append(("builtin", BuiltinEncoder().reset_parameters(0), 2 if quick else 20, 7, 1 if quick else 2))
        cases.append(("deca ResNet-50", DecaEncoder(), 1 if quick else 2, 7, 1))
    except ImportError:  # pragma: no cover - encoders not installed
        log.warning("neuface.encoders not available: no encoder rows")
    for name, enc, n_f, n_v, repeats in cases:
        m = measure(enc, flame, n_f, n_v, repeats)
        ideal = m["flops"] / (gflops * 1e9)
        n_img = n_f * n_v
        label = f"{name} NeuFace M-step {n_v} views x {n_f} frames cpu f32 ({m['flops'] / 1e9:.1f} GFLOP)"
        rows.append({"name": label, "value": m["step_s"], "unit": "s/step", "reference": ideal,
                     "ratio": ideal / m["step_s"]})
        rows.append({"name": f"{name} NeuFace M-step throughput ({n_img} images)", "value": n_img / m["step_s"],
                     "unit": "images/s", "reference": n_img / ideal, "ratio": ideal / m["step_s"]})
        rows.append({"name": f"{name} E-step {n_img} images (no grad, incl. targets)", "value": m["estep_s"],
                     "unit": "s", "reference": None, "ratio": None})
    rows += _option_rows(flame, quick)
    return rows


def _option_rows(flame: FlameLayer, quick: bool) -> list[dict]:
    """The GPU-path options on this CPU: M-step time of the builtin encoder (mono, 5 frames) with channels-last,
    bf16 autocast and ``torch.compile``, each against plain fp32 contiguous in the same run."""
    from neuface.encoders import BuiltinEncoder

    n_f, repeats = (2, 1) if quick else (5, 3)

    def step_time(**options) -> float:
        enc = BuiltinEncoder().reset_parameters(0)
        if options.pop("compile_", False):
            enc = torch.compile(enc)
        return measure(enc, flame, n_f, 1, repeats, **options)["step_s"]

    ref = step_time(channels_last=False)
    rows = []
    for label, options in (("channels_last", {"channels_last": True}), ("bf16 autocast", {"amp": True,
                           "channels_last": False}), ("torch.compile", {"compile_": True, "channels_last": False})):
        try:
            value = step_time(**options)
        except Exception as exc:  # noqa: BLE001 - an option that does not run here is reported, not fatal
            log.warning("%s does not run on this machine: %s", label, str(exc).splitlines()[0][:200])
            continue
        rows.append({"name": f"builtin M-step mono x {n_f} frames, {label} (ref: fp32 contiguous)", "value": value,
                     "unit": "s/step", "reference": ref, "ratio": value / ref})
    return rows
