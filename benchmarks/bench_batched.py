"""Many clips per process: NeuFace throughput in clips/hour for K = 1, 2, 4 clips fitted as one batched
computation (``neuface.fitting.batched``), against K = 1 fitted by the single-clip loop in the same run.

K monocular rendered clips (different seeds, same length) start from the builtin encoder the package ships
and run a fixed schedule (``converge_tol`` 0, so every clip does the same work and throughput compares like with
like). ``value`` = clips/hour of the batched fit at K, ``reference`` = clips/hour of ``fit_neuface`` on one
clip at a time, ``ratio`` = value / reference. On a 2-core CPU the ResNet is already compute-bound at one
clip's window, so little is expected here; the gain is on a GPU, where one clip's window fills a fraction of
the device (``make gpu-check``).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import kit_flame_and_shipped_encoder
from neuface.fitting.batched import fit_neuface_batch
from neuface.fitting.config import resolve_annotator
from neuface.fitting.data import load_sequence
from neuface.fitting.demo_data import write_synthetic_sequence
from neuface.fitting.neuface import fit_neuface

log = logging.getLogger("benchmarks.bench_batched")


def clips_and_encoder(n_clips: int, n_frames: int, quick: bool, tmp: Path):
    flame, encoder = kit_flame_and_shipped_encoder(quick)
    seqs = []
    for i in range(n_clips):
        s = write_synthetic_sequence(tmp / f"c{i}", flame, n_frames=n_frames, views=("front",), size=224,
                                     noise_px=1.0, seed=100 + i, sequence=f"clip{i}")
        seqs.append(load_sequence(s.crops, s.landmarks))
    return flame, encoder, seqs


def run(quick: bool = False) -> list[dict]:
    """Rows ``{name, value, unit, reference, ratio}``; see the module docstring."""
    ks = (1, 2) if quick else (1, 2, 4)
    n_frames, passes = (4, 2) if quick else (20, 4)
    settings = resolve_annotator("neuface", {"lr": 2e-4, "window_frames": 5, "n_passes": passes,
                                             "converge_tol": 0.0, "progress": False, "channels_last": False})
    cpu = torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        flame, encoder, seqs = clips_and_encoder(max(ks), n_frames, quick, Path(tmp))
        fit_neuface(copy.deepcopy(encoder), flame, seqs[0], settings.replace(n_passes=1), cpu)  # warm-up
        fit_neuface_batch(copy.deepcopy(encoder), flame, seqs[:2], settings.replace(n_passes=1), cpu)
        t0 = time.perf_counter()
        for seq in seqs[:2]:
            fit_neuface(copy.deepcopy(encoder), flame, seq, settings, cpu)
        ref = 2 * 3600.0 / (time.perf_counter() - t0)
        log.info("single-clip loop: %.1f clips/hour", ref)
        for k in ks:
            t0 = time.perf_counter()
            out = fit_neuface_batch(copy.deepcopy(encoder), flame, seqs[:k], settings, cpu)
            wall = time.perf_counter() - t0
            assert all(not isinstance(o, Exception) for o in out), out
            value = k * 3600.0 / wall
            log.info("K=%d: %.1f s, %.1f clips/hour", k, wall, value)
            rows.append({"name": f"neuface clips/hour, K={k} batched, mono {n_frames} frames, {passes} passes "
                                 "(ref: one clip at a time)", "value": value, "unit": "clips/h",
                         "reference": ref, "ratio": value / ref})
    return rows
