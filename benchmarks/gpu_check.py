"""``make gpu-check``: the prepared GPU run (one script, under 8 minutes on one modern GPU).

1. the ``cuda``-marked tests (``pytest -m cuda``);
2. NeuFace on one 7-view × 120-frame rendered sequence with DECA's ResNet-50 layout (the synthetic kit's
   ``deca_model.tar``, random but deterministic weights), default schedule (bf16 autocast, channels-last):
   seconds per sequence, passes, steps, peak GPU memory; the same with fp32 as the reference;
3. monocular 120-frame clips fitted K = 1, 8, 32 at a time (``neuface.fitting.batched``), a fixed
   ``--passes`` schedule: clips per GPU-hour and peak memory at each K (ratio against K = 1).

Figures go to ``benchmarks/results/gpu-check.json`` (and the log). Without a CUDA device it says so and exits 2:
nothing here is measured on a CPU. Usage: ``python -m benchmarks.gpu_check [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from neuface.io_utils import atomic_path
from neuface.logs import setup_logging

log = logging.getLogger("benchmarks.gpu_check")

SEVEN_VIEWS = ("front", "down", "top", "left_30", "left_60", "right_30", "right_60")


def _peak(device: torch.device) -> float | None:
    """Peak allocated GPU memory in GiB since the last reset (None on a CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_tests(timeout: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    log.info("cuda tests: rc %d, %s (%.0f s)", proc.returncode, tail[0], time.perf_counter() - t0)
    return {"rc": proc.returncode, "summary": tail[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test of this script)")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only with --quick, as a smoke test")
    parser.add_argument("--passes", type=int, default=10, help="fixed passes of the K-clip throughput runs")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", default="benchmarks/results/gpu-check.json")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(0)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        log.error("no CUDA device: gpu-check did not run (nothing was measured)")
        return 2
    if args.device == "cpu" and not args.quick:
        parser.error("--device cpu is a smoke test of the script: use it with --quick")
    from neuface.encoders import load_encoder
    from neuface.fitting.batched import fit_neuface_batch
    from neuface.fitting.config import resolve_annotator
    from neuface.fitting.data import load_sequence
    from neuface.fitting.demo_data import write_synthetic_sequence
    from neuface.fitting.neuface import fit_neuface
    from neuface.flame import FlameLayer
    from neuface.synthetic.kit import DECA_CHECKPOINT_PATH, build_kit

    device = torch.device(args.device)
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__}
    if device.type == "cuda" and not args.skip_tests:
        results["cuda_tests"] = cuda_tests(timeout=150)
    n_frames = 6 if args.quick else 120
    views = SEVEN_VIEWS[:2] if args.quick else SEVEN_VIEWS
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_kit(tmp / "kit")
        flame = FlameLayer.from_files(tmp / "kit/flame/generic_model.pkl",
                                      tmp / "kit/flame/landmark_embedding.npy").to(device)
        deca = load_encoder("deca", str(tmp / "kit" / DECA_CHECKPOINT_PATH), device)
        multi = write_synthetic_sequence(tmp / "mv", flame.cpu(), n_frames=n_frames, views=views, size=224,
                                         noise_px=1.0, seed=7, sequence="mv")
        mono = write_synthetic_sequence(tmp / "mono", flame.cpu(), n_frames=n_frames, views=("front",), size=224,
                                        noise_px=1.0, seed=8, sequence="mono")
        flame = flame.to(device)
        seq_mv = load_sequence(multi.crops, multi.landmarks)
        seq_mono = load_sequence(mono.crops, mono.landmarks)
        base = {"progress": False, "n_passes": 3 if args.quick else 60, "device": str(device)}
        for label, amp in (("bf16", True), ("fp32", False)):
            settings = resolve_annotator("neuface", {**base, "amp": amp})
            _reset(device)
            t0 = time.perf_counter()
            out = fit_neuface(copy.deepcopy(deca), flame, seq_mv, settings, device)
            _sync(device)
            wall = time.perf_counter() - t0
            results[f"seven_view_{label}"] = {"seconds_per_sequence": wall, "passes": out.details["passes"],
                                              "steps": out.n_steps, "peak_gib": _peak(device),
                                              "frames": n_frames, "views": len(views)}
            log.info("7-view x %d frames, %s: %.1f s, %d passes, %d steps, peak %s GiB", n_frames, label, wall,
                     out.details["passes"], out.n_steps, _peak(device))
        settings = resolve_annotator("neuface", {**base, "amp": True, "n_passes": 1 if args.quick else args.passes,
                                                 "converge_tol": 0.0})
        ks = [1, 2] if args.quick else args.ks
        for k in ks:
            _reset(device)
            t0 = time.perf_counter()
            outs = fit_neuface_batch(copy.deepcopy(deca), flame, [seq_mono] * k, settings, device)
            _sync(device)
            wall = time.perf_counter() - t0
            failed = sum(isinstance(o, Exception) for o in outs)
            results[f"mono_k{k}"] = {"seconds": wall, "clips_per_hour": k * 3600 / wall, "failed": failed,
                                     "passes": settings.n_passes, "peak_gib": _peak(device)}
            log.info("mono x %d frames, K=%d, %d passes: %.1f s, %.0f clips/hour, peak %s GiB", n_frames, k,
                     settings.n_passes, wall, k * 3600 / wall, _peak(device))
        one = results[f"mono_k{ks[0]}"]["clips_per_hour"]
        for k in ks:
            results[f"mono_k{k}"]["ratio_to_k1"] = results[f"mono_k{k}"]["clips_per_hour"] / one
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path, suffix=".json") as tmp_path:
        Path(tmp_path).write_text(json.dumps(results, indent=2))
    log.info("wrote %s", out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
