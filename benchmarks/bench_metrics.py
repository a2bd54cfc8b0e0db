"""Metrics throughput (sequences/s, CPU) for 7-view fits, next to a naive loop measured in the same run.

Input: fit files of F frames × 7 views (100 frames; 20 with ``--quick``) with random smooth parameters on
the synthetic kit model (FLAME sizes: 5023 vertices), plus ground truth (so MPVE is computed too).

Ours: :func:`neuface.metrics.sequence_metrics` (one canonical FLAME evaluation per frame and view in chunks;
posed meshes derived by rotating about the root joint; pairwise CVD with ``cdist``; streaming MSI moments).

Reference: the straightforward script — FLAME called once per (frame, view) for the posed mesh and once for
the canonical mesh, MSI with a Python loop over views, CVD with a Python loop over frames and view pairs,
MPVE with a loop over frames, aligned MPVE with a numpy Umeyama (SVD, det sign fix) per frame and view. Its
values are checked against ours first (same metrics to 1e-3 relative).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neuface.flame import FlameLayer
from neuface.metrics import msi_3d, sequence_metrics, write_fit_file
from neuface.synthetic.kit import generate

log = logging.getLogger("benchmarks.bench_metrics")

VIEWS = ["front", "down", "top", "left_30", "left_60", "right_30", "right_60"]


def _make_sequence(root: Path, n_f: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    n_v = len(VIEWS)
    smooth = np.cumsum(rng.normal(size=(n_f, 1, 1)) * 0.02, axis=0)
    expression = (smooth + rng.normal(size=(n_f, n_v, 50)) * 0.1).astype(np.float32)
    global_pose = (np.cumsum(rng.normal(size=(n_f, 1, 3)) * 0.005, axis=0) + rng.normal(size=(n_f, n_v, 3)) * 0.01)
    pose = np.zeros((n_f, n_v, 12))
    pose[..., 3] = np.abs(rng.normal(size=(n_f, n_v))) * 0.05
    lm = rng.uniform(50, 200, size=(n_f, n_v, 68, 2))
    fit = write_fit_file(root / f"fit{seed}.h5", sequence=f"s{seed}", annotator="bench", views=VIEWS,
                         shape=rng.normal(size=100) * 0.5, expression=expression, global_pose=global_pose,
                         pose=pose, landmarks=lm, landmarks_pred=lm + rng.normal(size=lm.shape),
                         detected=np.ones((n_f, n_v), bool))
    gt = root / f"gt{seed}.npz"
    np.savez(gt, shape=rng.normal(size=100) * 0.5, expression=expression[:, 0], pose=pose[:, 0],
             global_pose=global_pose, landmarks=lm.astype(np.float32), views=np.array(VIEWS))
    return fit, gt


def naive_metrics(fit_path: Path, gt_path: Path, flame: FlameLayer) -> dict[str, float]:
    """Reference: per-(frame, view) FLAME calls and Python loops (MSI, CVD, MPVE)."""
    import h5py

    with h5py.File(fit_path) as f:
        p = {k: torch.as_tensor(f[k][()]) for k in ("shape", "expression", "global_pose", "pose")}
    gt = np.load(gt_path)
    n_f, n_v = p["expression"].shape[:2]
    posed_v = torch.zeros(n_v, n_f, flame.num_vertices, 3)
    posed_l = torch.zeros(n_v, n_f, 68, 3)
    canon = torch.zeros(n_f, n_v, flame.num_vertices, 3)
    with torch.no_grad():
        for f in range(n_f):
            for v in range(n_v):
                kw = {"shape": p["shape"][None], "expression": p["expression"][f, v][None],
                      "pose": p["pose"][f, v][None]}
                out = flame(global_pose=p["global_pose"][f, v][None], **kw)
                posed_v[v, f], posed_l[v, f] = out.vertices[0], out.landmarks3d[0]
                canon[f, v] = flame(**kw).vertices[0]
        msi_l = np.mean([msi_3d(posed_l[v]) for v in range(n_v)])
        msi_v = np.mean([msi_3d(posed_v[v]) for v in range(n_v)])
        per_frame = []
        for f in range(n_f):
            pairs = [(canon[f, i] - canon[f, j]).abs().sum(-1).mean() for i in range(n_v) for j in range(i + 1, n_v)]
            per_frame.append(float(torch.stack(pairs).mean()) * 1000)
        errs, aligned = [], []
        for f in range(n_f):
            g = flame(shape=torch.as_tensor(gt["shape"], dtype=torch.float32)[None],
                      expression=torch.as_tensor(gt["expression"][f], dtype=torch.float32)[None],
                      pose=torch.as_tensor(gt["pose"][f], dtype=torch.float32)[None]).vertices[0]
            errs.append(float((canon[f] - g).norm(dim=-1).mean()) * 1000)
            for v in range(n_v):
                aligned.append(_umeyama_error_mm(canon[f, v].double().numpy(), g.double().numpy()))
    return {"msi3d_l": float(msi_l), "msi3d_v": float(msi_v), "cvd": float(np.mean(per_frame)),
            "mpve": float(np.mean(errs)), "mpve_aligned": float(np.mean(aligned))}


def _umeyama_error_mm(p: np.ndarray, g: np.ndarray) -> float:
    """Mean per-vertex error (mm) of (N, 3) ``p`` after a similarity Procrustes onto ``g`` (no reflection)."""
    pc, gc = p - p.mean(0), g - g.mean(0)
    u, sv, vt = np.linalg.svd(gc.T @ pc / len(p))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rot = u @ d @ vt
    s = np.trace(np.diag(sv) @ d) / (pc**2).sum(1).mean()
    return float(np.linalg.norm(s * pc @ rot.T - gc, axis=1).mean() * 1000)


def run(quick: bool = False) -> list[dict]:
    """Rows ``{name, value, unit, reference, ratio}`` (sequences/s; ratio = ours / naive loop)."""
    n_f, n_seq = (20, 1) if quick else (100, 3)
    model, emb = generate(0)
    flame = FlameLayer(model, emb, n_shape=100, n_exp=50)
    with tempfile.TemporaryDirectory() as tmp:
        seqs = [_make_sequence(Path(tmp), n_f, s) for s in range(n_seq)]
        t0 = time.perf_counter()
        ref_vals = naive_metrics(*seqs[0], flame)
        ref_s = time.perf_counter() - t0
        res = sequence_metrics(seqs[0][0], flame, gt_path=seqs[0][1])["metrics"]
        for key, ref in ref_vals.items():
            if not math.isclose(res[key], ref, rel_tol=1e-3, abs_tol=1e-6):
                raise RuntimeError(f"bench_metrics: {key} differs from the naive reference: {res[key]} vs {ref}")
        t0 = time.perf_counter()
        for fit, gt in seqs:
            sequence_metrics(fit, flame, gt_path=gt)
        ours_s = (time.perf_counter() - t0) / n_seq
    name = f"sequence_metrics {n_f} frames x 7 views + GT, cpu f32 (naive per-frame loop ref)"
    return [{"name": name, "value": 1.0 / ours_s, "unit": "seq/s", "reference": 1.0 / ref_s,
             "ratio": ref_s / ours_s}]
