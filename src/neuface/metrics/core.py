"""Fidelity metrics of the NeuFace paper (§3.4, §4.1) as pure tensor functions.

Units and conventions (see ``docs/metrics.md``):

* 3D inputs are FLAME model-space coordinates in **metres**; every 3D metric converts them to **millimetres**
  first (``scale=1000``) so values do not depend on the model's unit and are comparable across models in mm.
* MSI_3D (Motion Stability Index): for each point ``i`` the acceleration is the second difference
  ``a_i(t) = x_i(t+1) - 2 x_i(t) + x_i(t-1)`` (mm / frame², so MSI depends on the frame rate), its temporal
  variance is ``σ_i = Σ_axes Var_t(a_i)`` (population variance over the ``F - 2`` accelerations, summed over
  x, y, z: the trace of the covariance, i.e. ``mean_t ‖a_i(t) - mean_t a_i‖²``; rotation invariant), and
  ``MSI = mean_i 1 / max(σ_i, eps)`` in 1/mm² (frame⁴/mm²). ``eps`` (default :data:`MSI_EPS` = 1e-6 mm²,
  an acceleration jitter of 1 µm/frame²) floors the variance: a perfectly smooth (e.g. constant-velocity)
  trajectory gives exactly ``1 / eps`` = 1e6 for each point. Scale: multiplying coordinates by ``c``
  multiplies every σ by ``c²`` and MSI by ``1 / c²`` (until the floor).
* CVD (cross-view vertex distance): per-vertex L1 norm ``|dx| + |dy| + |dz|`` between the meshes of two views
  of the same frame after canonical alignment (global rotation zeroed by the caller), averaged over vertices,
  in mm.
* NME: mean Euclidean 2D landmark error over the 68 points divided by the outer-eye-corner distance of the
  target (iBUG points 36 and 45, 0-based), in **percent**.
* MPVE: mean per-vertex Euclidean distance in mm (canonical frame: both meshes with zero global rotation).

All reductions run in float64. Functions accept any device / floating dtype.
"""

from __future__ import annotations

import torch

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError

__all__ = [
    "MM_PER_M",
    "MSI_EPS",
    "EYE_CORNERS",
    "acceleration",
    "acceleration_variance",
    "msi_from_variance",
    "msi_3d_batch",
    "msi_3d",
    "cvd_matrix",
    "cvd",
    "cvd_per_view",
    "nme_per_sample",
    "nme",
    "mpve",
]

#: Metres → millimetres.
MM_PER_M = 1000.0
#: Floor of the acceleration variance in MSI (mm² / frame⁴).
MSI_EPS = 1e-6
#: iBUG-68 outer eye corners (0-based) used to normalise NME.
EYE_CORNERS = (36, 45)


def acceleration(points: torch.Tensor) -> torch.Tensor:
    """Second temporal difference ``x(t+1) - 2 x(t) + x(t-1)``.

    Args:
        points: (..., F, K, 3) point trajectories.
    Returns:
        (..., F - 2, K, 3) accelerations (same units as ``points`` per frame²).
    """
    sizes = check_shape(points, "points", ("...", "F", "K", 3))
    check_floating(points, "points")
    if sizes["F"] < 3:
        raise ShapeError(f"an acceleration needs at least 3 frames, got {sizes['F']}")
    return points[..., 2:, :, :] - 2.0 * points[..., 1:-1, :, :] + points[..., :-2, :, :]


def acceleration_variance(points: torch.Tensor, scale: float = MM_PER_M) -> torch.Tensor:
    """Per-point temporal variance of the acceleration, summed over the 3 axes (float64).

    Args:
        points: (..., F, K, 3) trajectories (metres), F >= 4.
        scale: unit conversion applied first (default metres → mm).
    Returns:
        (..., K) ``Σ_axes Var_t(a)`` (population variance over the F - 2 accelerations), in scale units² / frame⁴.
    """
    sizes = check_shape(points, "points", ("...", "F", "K", 3))
    if sizes["F"] < 4:
        raise ShapeError(f"MSI needs at least 4 frames (2 accelerations), got {sizes['F']}")
    acc = acceleration(points.to(torch.float64) * scale)
    centred = acc - acc.mean(dim=-3, keepdim=True)
    return centred.square().mean(dim=-3).sum(dim=-1)


def msi_from_variance(variance: torch.Tensor, eps: float = MSI_EPS) -> torch.Tensor:
    """(..., K) acceleration variances → (...) ``mean_K 1 / max(σ, eps)``."""
    if not eps > 0:
        raise ShapeError(f"eps must be > 0, got {eps}")
    return (1.0 / variance.clamp(min=eps)).mean(dim=-1)


def msi_3d_batch(points: torch.Tensor, scale: float = MM_PER_M, eps: float = MSI_EPS) -> torch.Tensor:
    """MSI_3D of a batch of trajectories.

    Args:
        points: (..., F, K, 3) landmarks or vertices in metres (F >= 4).
        scale: unit conversion (default metres → mm, so MSI is in 1/mm² with accelerations per frame²).
        eps: floor of each point's acceleration variance (scale units²).
    Returns:
        (...) float64 MSI values.
    """
    return msi_from_variance(acceleration_variance(points, scale), eps)


def msi_3d(points: torch.Tensor, scale: float = MM_PER_M, eps: float = MSI_EPS) -> float:
    """MSI_3D of one trajectory set (F, K, 3) in metres → float (1/mm² by default). Higher = smoother."""
    check_shape(points, "points", ("F", "K", 3))
    return float(msi_3d_batch(points, scale, eps))


def cvd_matrix(vertices: torch.Tensor, scale: float = MM_PER_M) -> torch.Tensor:
    """Mean per-vertex L1 distance between every pair of views.

    Args:
        vertices: (..., V, N, 3) canonical meshes (metres) of V views.
        scale: unit conversion (default metres → mm).
    Returns:
        (..., V, V) float64 symmetric matrix, zero diagonal: ``mean_n Σ_axes |X_i,n - X_j,n|``.
    """
    sizes = check_shape(vertices, "vertices", ("...", "V", "N", 3))
    check_floating(vertices, "vertices")
    lead = vertices.shape[:-3]
    flat = vertices.to(torch.float64).reshape(-1, sizes["V"], sizes["N"] * 3) * scale
    dist = torch.cdist(flat, flat, p=1.0) / sizes["N"]
    return dist.reshape(*lead, sizes["V"], sizes["V"])


def _pair_mean(matrix: torch.Tensor) -> torch.Tensor:
    n_v = matrix.shape[-1]
    return matrix.sum(dim=(-2, -1)) / (n_v * (n_v - 1))


def cvd(vertices: torch.Tensor, scale: float = MM_PER_M) -> torch.Tensor:
    """Per-frame CVD: mean over the ``V (V - 1) / 2`` view pairs of the mean per-vertex L1 distance.

    Args:
        vertices: (F, V, N, 3) canonical meshes (global rotation zeroed), metres, V >= 2.
    Returns:
        (F,) float64 CVD in mm (scale units).
    """
    sizes = check_shape(vertices, "vertices", ("F", "V", "N", 3))
    if sizes["V"] < 2:
        raise ShapeError(f"CVD needs at least 2 views, got {sizes['V']}")
    return _pair_mean(cvd_matrix(vertices, scale))


def cvd_per_view(vertices: torch.Tensor, scale: float = MM_PER_M) -> torch.Tensor:
    """Per-view CVD (paper Fig. 7): view ``i`` against every other view, averaged over frames.

    Args:
        vertices: (F, V, N, 3) canonical meshes, V >= 2.
    Returns:
        (V,) float64 in mm: ``mean_f mean_{j != i} CVD_f(i, j)``.
    """
    sizes = check_shape(vertices, "vertices", ("F", "V", "N", 3))
    if sizes["V"] < 2:
        raise ShapeError(f"CVD needs at least 2 views, got {sizes['V']}")
    return cvd_matrix(vertices, scale).sum(dim=-1).mean(dim=0) / (sizes["V"] - 1)


def nme_per_sample(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """NME of each sample in percent, NaN where the sample is invalid.

    A sample is valid when ``valid`` is True, all its points (pred and target) are finite and the target's
    outer-eye-corner distance is > 0.

    Args:
        pred: (..., 68, 2) predicted 2D landmarks (pixels).
        target: (..., 68, 2) reference landmarks (same pixels).
        valid: optional (...) bool.
    Returns:
        (...) float64: ``100 · mean_k ‖pred_k - target_k‖ / ‖target_36 - target_45‖``.
    """
    sizes = check_shape(pred, "pred", ("...", 68, 2))
    check_shape(target, "target", ("...", 68, 2), sizes)
    if pred.shape != target.shape:
        raise ShapeError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    p, t = pred.to(torch.float64), target.to(torch.float64)
    ok = torch.isfinite(p).all(dim=(-2, -1)) & torch.isfinite(t).all(dim=(-2, -1))
    if valid is not None:
        if tuple(valid.shape) != tuple(pred.shape[:-2]):
            raise ShapeError(f"valid must have shape {tuple(pred.shape[:-2])}, got {tuple(valid.shape)}")
        ok = ok & valid.to(device=ok.device, dtype=torch.bool)
    p = torch.where(ok[..., None, None], p, torch.zeros_like(p))
    t = torch.where(ok[..., None, None], t, torch.zeros_like(t))
    iod = (t[..., EYE_CORNERS[0], :] - t[..., EYE_CORNERS[1], :]).norm(dim=-1)
    ok = ok & (iod > 0)
    err = (p - t).norm(dim=-1).mean(dim=-1) / iod.clamp(min=1e-12) * 100.0
    return torch.where(ok, err, torch.full_like(err, float("nan")))


def nme(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """Mean NME (%) over the valid samples of (..., 68, 2) landmarks; NaN when no sample is valid."""
    per = nme_per_sample(pred, target, valid)
    ok = torch.isfinite(per)
    if not bool(ok.any()):
        return float("nan")
    return float(per[ok].mean())


def mpve(pred: torch.Tensor, gt: torch.Tensor, scale: float = MM_PER_M) -> float:
    """Mean per-vertex Euclidean error in mm between canonical meshes.

    Args:
        pred: (..., N, 3) predicted vertices (metres, global rotation zeroed).
        gt: (..., N, 3) ground truth, broadcastable to ``pred`` (e.g. (F, 1, N, 3) against (F, V, N, 3)).
    Returns:
        ``mean ‖pred - gt‖`` in mm (scale units).
    """
    check_shape(pred, "pred", ("...", "N", 3))
    check_shape(gt, "gt", ("...", "N", 3))
    check_floating(pred, "pred")
    check_floating(gt, "gt")
    try:
        diff = pred.to(torch.float64) - gt.to(device=pred.device, dtype=torch.float64)
    except RuntimeError as exc:
        raise ShapeError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} do not broadcast") from exc
    return float((diff * scale).norm(dim=-1).mean())
