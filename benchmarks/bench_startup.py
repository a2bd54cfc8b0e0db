"""Fixed cost of a fit job: what every per-sequence ``neuface fit`` process pays before its first step, and what a
shard (``scale.shard_size``) or a K-clip batch shares.

Subprocess rows (a fresh interpreter each, best of 3): ``neuface --help`` (no torch import), the imports a fit
needs (torch + ``neuface.fitting.api``); reference = ``python -c pass``. In-process rows, each against the same
step done a second time through the process caches a shard uses (``reference`` = cached): building the FLAME
layer from the kit's files, loading DECA's ResNet-50 checkpoint (the kit's ``deca_model.tar``, same size as the
real one) and the builtin encoder, and the sha256 of the encoder weights a checkpoint is keyed by.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger("benchmarks.bench_startup")


def _best_subprocess(code: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def _twice(make) -> tuple[float, float]:
    t0 = time.perf_counter()
    make()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    make()
    return first, time.perf_counter() - t0


def run(quick: bool = False) -> list[dict]:
    """Rows ``{name, value, unit, reference, ratio}``; see the module docstring."""
    from neuface.encoders.shipped import SHIPPED_DIR
    from neuface.fitting import api
    from neuface.process_cache import cached_flame_layer, file_key
    from neuface.synthetic.kit import DECA_CHECKPOINT_PATH, build_kit

    repeats = 1 if quick else 3
    bare = _best_subprocess("pass", repeats)
    rows = []
    for label, code in (("neuface --help (no torch import)", "import sys; from neuface.cli import main; "
                         "sys.argv=['neuface','--help']\ntry: main(['--help'])\nexcept SystemExit: pass"),
                        ("imports of a fit job (torch, neuface.fitting.api)", "import neuface.fitting.api")):
        value = _best_subprocess(code, repeats)
        rows.append({"name": f"process start + {label} (ref: python -c pass)", "value": value, "unit": "s",
                     "reference": bare, "ratio": value / bare})
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "kit"
        build_kit(out, with_deca=not quick)
        model, emb = out / "flame/generic_model.pkl", out / "flame/landmark_embedding.npy"
        cases = [("FLAME layer from files", lambda: cached_flame_layer(model, emb, 100, 50, cpu)),
                 ("builtin encoder load", lambda: api._fresh_encoder("builtin",
                                                                     str(SHIPPED_DIR / "builtin-kit-seed0.pt"), cpu))]
        if not quick:
            deca = str(out / DECA_CHECKPOINT_PATH)
            cases += [("DECA ResNet-50 checkpoint load", lambda: api._fresh_encoder("deca", deca, cpu)),
                      ("sha256 of the DECA checkpoint (checkpoint key)",
                       lambda: api._HASHES.get(file_key(deca), lambda: api.sha256_file(deca)))]
        for label, make in cases:
            first, cached = _twice(make)
            log.info("%s: %.3f s first, %.3f s cached", label, first, cached)
            rows.append({"name": f"{label}, per process (ref: shared in a shard, cached)", "value": first,
                         "unit": "s", "reference": cached, "ratio": first / max(cached, 1e-9)})
    return rows
