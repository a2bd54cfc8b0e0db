"""Metrics of generated facial motion: motion Fréchet distance (naturalness) and APD (diversity), paper Table 4.

* :func:`frechet_distance` — the Fréchet distance between Gaussians fit to two feature sets (as FID):
  ``‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})``.
* :func:`motion_features` — one feature vector per window of ``window_s`` seconds of a motion
  (:data:`FEATURE_NAMES`, documented in ``docs/metrics.md``): per face region, the RMS displacement of the
  head-local landmarks from their window mean, the mean and std of their speed and their mean acceleration; the
  mean and std of the mouth opening; the RMS angle of the head rotation from its window mean and the mean and
  std of the head's angular speed. Lengths in cm, angles in degrees, times in seconds.
* :func:`apd` — average pairwise distance of S samples: mean over the S(S−1)/2 pairs of the mean over frames and
  landmarks of the Euclidean distance, in cm (FLAME units are metres).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from neuface.checks import check_shape
from neuface.errors import NeufaceError

#: 68-point iBUG regions used by :func:`motion_features`.
REGIONS = {"contour": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
           "mouth": range(48, 68)}
#: Inner-lip points whose distance is the mouth opening.
MOUTH_OPENING = (62, 66)
_REGION_STATS = ("disp_cm", "speed_mean_cms", "speed_std_cms", "accel_mean_cms2")
FEATURE_NAMES = tuple(f"{r}_{s}" for r in REGIONS for s in _REGION_STATS) + (
    "mouth_open_mean_cm", "mouth_open_std_cm", "head_angle_rms_deg", "head_speed_mean_degs", "head_speed_std_degs")


def _as_float64(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise NeufaceError(f"{name} must be a (N, D) feature matrix, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise NeufaceError(f"{name} needs at least 2 feature vectors for a covariance, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise NeufaceError(f"{name} has non-finite values")
    return arr


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussian fits of two feature sets.

    Args:
        feats_a: (N, D) features (tensor or array), N ≥ 2.
        feats_b: (M, D) features, M ≥ 2.
        eps: added to both covariances' diagonals when their product's square root is not finite (singular
            covariances, e.g. fewer samples than dimensions).
    Returns:
        FD ≥ 0 (float64; the matrix square root's imaginary part, numerical noise, is dropped).
    """
    from scipy import linalg

    a, b = _as_float64(feats_a, "feats_a"), _as_float64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise NeufaceError(f"feature sets have different dimensions: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(cov_a.shape[0]) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    fd = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


def _rotation_angle(rel: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (...) angles in radians (robust near 0 and π)."""
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    skew = torch.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0],
                        rel[..., 1, 0] - rel[..., 0, 1]], dim=-1)
    return torch.atan2(0.5 * skew.norm(dim=-1), cos)


def _mean_rotation(rot: torch.Tensor) -> torch.Tensor:
    """(..., T, 3, 3) -> (..., 3, 3): the projection of the arithmetic mean matrix onto SO(3) (chordal mean)."""
    u, _, vh = torch.linalg.svd(rot.mean(-3))
    d = torch.det(u @ vh)
    fix = torch.ones(*d.shape, 3, dtype=rot.dtype, device=rot.device)
    fix[..., 2] = d
    return (u * fix[..., None, :]) @ vh


def motion_features(landmarks: torch.Tensor, rotations: torch.Tensor, fps: float, window_s: float = 1.0
                    ) -> torch.Tensor:
    """Per-window motion features (:data:`FEATURE_NAMES`) of one or many motions.

    Args:
        landmarks: (T, 68, 3) or (S, T, 68, 3) head-local 3D landmarks (metres).
        rotations: (T, 3, 3) or (S, T, 3, 3) head root rotations.
        fps: frame rate.
        window_s: window length in seconds (non-overlapping windows of ``round(window_s·fps)`` ≥ 3 frames;
            a remainder shorter than a window is dropped).
    Returns:
        (W, len(FEATURE_NAMES)) float64 features, W = S · (T // window) (0 rows when T is shorter than a window).
    """
    if landmarks.dim() == 3:
        landmarks, rotations = landmarks[None], rotations[None]
    sizes = check_shape(landmarks, "landmarks", ("S", "T", 68, 3))
    check_shape(rotations, "rotations", ("S", "T", 3, 3), sizes)
    if not (fps > 0 and window_s > 0):
        raise NeufaceError(f"fps and window_s must be > 0, got {fps}, {window_s}")
    n = max(3, int(round(window_s * fps)))
    n_win = sizes["T"] // n
    if n_win == 0:
        return torch.zeros(0, len(FEATURE_NAMES), dtype=torch.float64, device=landmarks.device)
    lmk = landmarks[:, : n_win * n].double().unflatten(1, (n_win, n)) * 100.0  # (S, W, n, 68, 3) cm
    rot = rotations[:, : n_win * n].double().unflatten(1, (n_win, n))  # (S, W, n, 3, 3)
    feats = []
    disp = (lmk - lmk.mean(2, keepdim=True)).norm(dim=-1)  # (S, W, n, 68)
    speed = (lmk[:, :, 1:] - lmk[:, :, :-1]).norm(dim=-1) * fps
    accel = (lmk[:, :, 2:] - 2 * lmk[:, :, 1:-1] + lmk[:, :, :-2]).norm(dim=-1) * fps ** 2
    for idx in REGIONS.values():
        sel = list(idx)
        feats += [disp[..., sel].pow(2).mean((-1, -2)).sqrt(), speed[..., sel].mean((-1, -2)),
                  speed[..., sel].std(-2, correction=0).mean(-1), accel[..., sel].mean((-1, -2))]
    opening = (lmk[..., MOUTH_OPENING[0], :] - lmk[..., MOUTH_OPENING[1], :]).norm(dim=-1)  # (S, W, n)
    feats += [opening.mean(-1), opening.std(-1, correction=0)]
    mean_rot = _mean_rotation(rot)
    angle = _rotation_angle(rot @ mean_rot[:, :, None].transpose(-1, -2))
    ang_speed = _rotation_angle(rot[:, :, 1:] @ rot[:, :, :-1].transpose(-1, -2)) * fps
    deg = 180.0 / math.pi
    feats += [angle.pow(2).mean(-1).sqrt() * deg, ang_speed.mean(-1) * deg, ang_speed.std(-1, correction=0) * deg]
    return torch.stack(feats, dim=-1).reshape(-1, len(FEATURE_NAMES))


def apd(samples: torch.Tensor) -> float:
    """Average pairwise distance in cm.

    Args:
        samples: (S, T, 68, 3) landmarks (metres) of S ≥ 2 samples of the same length.
    Returns:
        mean over the S(S−1)/2 pairs of the mean over T and the 68 landmarks of ``‖a − b‖₂``, × 100.
    """
    sizes = check_shape(samples, "samples", ("S", "T", "L", 3))
    n = sizes["S"]
    if n < 2:
        raise NeufaceError(f"APD needs at least 2 samples, got {n}")
    x = samples.double()
    total = x.new_zeros(())
    for i in range(n - 1):
        total += (x[i + 1:] - x[i]).norm(dim=-1).mean(dim=(1, 2)).sum()
    return float(total / (n * (n - 1) / 2)) * 100.0


__all__ = ["FEATURE_NAMES", "REGIONS", "apd", "frechet_distance", "motion_features"]
