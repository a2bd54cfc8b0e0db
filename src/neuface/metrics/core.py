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
* NME: mean Euclidean 2D landmark error over the 68 points divided by a size of the **target**, in **percent**.
  ``norm="bbox"`` (the headline, 300VW / Menpo practice): ``√(w·h)`` of the target's landmark bounding box,
  which stays meaningful when the head turns; ``norm="eye"``: the outer-eye-corner distance (iBUG points 36
  and 45, 0-based), which shrinks towards 0 in profile and so inflates the NME of turned heads.
* MPVE: mean per-vertex Euclidean distance in mm. :func:`mpve` compares the meshes as given (canonical frame:
  both with zero global rotation); :func:`mpve_aligned` first aligns each predicted mesh onto its ground truth
  with a similarity Procrustes (:func:`similarity_align`: rotation, isotropic scale, translation; on all
  vertices, per sample), as NoW-style protocols do, so it measures shape and expression, not pose or size.

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
    "NME_NORMS",
    "landmark_normaliser",
    "nme_per_sample",
    "nme_bbox_per_sample",
    "nme",
    "mpve",
    "similarity_align",
    "mpve_aligned_per_sample",
    "mpve_aligned",
]

#: Metres → millimetres.
MM_PER_M = 1000.0
#: Floor of the acceleration variance in MSI (mm² / frame⁴).
MSI_EPS = 1e-6
#: iBUG-68 outer eye corners (0-based) used to normalise NME.
EYE_CORNERS = (36, 45)
#: NME normalisations: ``bbox`` = √(w·h) of the target's landmark box (headline), ``eye`` = outer-eye-corner
#: distance.
NME_NORMS = ("bbox", "eye")


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


def landmark_normaliser(target: torch.Tensor, norm: str = "bbox") -> torch.Tensor:
    """The size an NME divides by, per sample (float64, same units as ``target``).

    Args:
        target: (..., 68, 2) reference landmarks (pixels); must be finite.
        norm: ``"bbox"``: ``√(w·h)`` of the axis-aligned bounding box of the 68 target points (w, h: extents
            along x and y); ``"eye"``: ``‖target_36 - target_45‖`` (outer eye corners).
    Returns:
        (...) float64 normaliser (0 for a degenerate target).
    """
    check_shape(target, "target", ("...", 68, 2))
    t = target.to(torch.float64)
    if norm == "bbox":
        extent = t.amax(dim=-2) - t.amin(dim=-2)  # (..., 2): w, h
        return (extent[..., 0] * extent[..., 1]).clamp(min=0.0).sqrt()
    if norm == "eye":
        return (t[..., EYE_CORNERS[0], :] - t[..., EYE_CORNERS[1], :]).norm(dim=-1)
    raise ShapeError(f"norm must be one of {', '.join(NME_NORMS)}, got {norm!r}")


def nme_per_sample(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                   norm: str = "bbox") -> torch.Tensor:
    """NME of each sample in percent, NaN where the sample is invalid.

    A sample is valid when ``valid`` is True, all its points (pred and target) are finite and the target's
    normaliser (:func:`landmark_normaliser`) is > 0.

    Args:
        pred: (..., 68, 2) predicted 2D landmarks (pixels).
        target: (..., 68, 2) reference landmarks (same pixels).
        valid: optional (...) bool.
        norm: ``"bbox"`` (default, headline: √(w·h) of the target's landmark box) or ``"eye"`` (outer-eye-corner
            distance of the target).
    Returns:
        (...) float64: ``100 · mean_k ‖pred_k - target_k‖ / normaliser(target)``.
    """
    sizes = check_shape(pred, "pred", ("...", 68, 2))
    check_shape(target, "target", ("...", 68, 2), sizes)
    if pred.shape != target.shape:
        raise ShapeError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if norm not in NME_NORMS:
        raise ShapeError(f"norm must be one of {', '.join(NME_NORMS)}, got {norm!r}")
    p, t = pred.to(torch.float64), target.to(device=pred.device, dtype=torch.float64)
    ok = torch.isfinite(p).all(dim=(-2, -1)) & torch.isfinite(t).all(dim=(-2, -1))
    if valid is not None:
        if tuple(valid.shape) != tuple(pred.shape[:-2]):
            raise ShapeError(f"valid must have shape {tuple(pred.shape[:-2])}, got {tuple(valid.shape)}")
        ok = ok & valid.to(device=ok.device, dtype=torch.bool)
    p = torch.where(ok[..., None, None], p, torch.zeros_like(p))
    t = torch.where(ok[..., None, None], t, torch.zeros_like(t))
    size = landmark_normaliser(t, norm)
    ok = ok & (size > 0)
    err = (p - t).norm(dim=-1).mean(dim=-1) / size.clamp(min=1e-12) * 100.0
    return torch.where(ok, err, torch.full_like(err, float("nan")))


def nme_bbox_per_sample(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """(..., 68, 2) landmarks → (...) NME in % of √(w·h) of the target's landmark box (NaN where invalid)."""
    return nme_per_sample(pred, target, valid, norm="bbox")


def nme(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, norm: str = "bbox") -> float:
    """Mean NME (%) over the valid samples of (..., 68, 2) landmarks; NaN when no sample is valid.

    ``norm``: ``"bbox"`` (default, √(w·h) of the target's landmark box) or ``"eye"`` (outer eye corners).
    """
    per = nme_per_sample(pred, target, valid, norm)
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


def _pair(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked float64 (..., N, 3) pair broadcast to one shape (on ``pred``'s device); may hold non-finite values."""
    sizes = check_shape(pred, "pred", ("...", "N", 3))
    check_shape(gt, "gt", ("...", "N", 3), sizes)
    check_floating(pred, "pred")
    check_floating(gt, "gt")
    p, g = pred.to(torch.float64), gt.to(device=pred.device, dtype=torch.float64)
    try:
        p, g = torch.broadcast_tensors(p, g)
    except RuntimeError as exc:
        raise ShapeError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} do not broadcast") from exc
    return p, g


def _umeyama(p: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Finite float64 (..., N, 3) pair → aligned ``p`` and ``(s, R, t)`` (see :func:`similarity_align`)."""
    mu_p, mu_g = p.mean(dim=-2, keepdim=True), g.mean(dim=-2, keepdim=True)
    pc, gc = p - mu_p, g - mu_g
    cov = gc.transpose(-1, -2) @ pc / p.shape[-2]  # (..., 3, 3)
    u, sv, vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    d = torch.ones_like(sv)
    d[..., -1] = sign
    rot = u @ (d[..., :, None] * vh)
    var_p = pc.square().sum(dim=-1).mean(dim=-1)
    scale = torch.where(var_p > 0, (sv * d).sum(dim=-1) / var_p.clamp(min=torch.finfo(torch.float64).tiny),
                        torch.zeros_like(var_p))
    trans = (mu_g - scale[..., None, None] * (mu_p @ rot.transpose(-1, -2)))[..., 0, :]
    aligned = scale[..., None, None] * (p @ rot.transpose(-1, -2)) + trans[..., None, :]
    return aligned, (scale, rot, trans)


def similarity_align(pred: torch.Tensor, gt: torch.Tensor, return_transform: bool = False
                     ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per-sample similarity Procrustes (Umeyama 1991) of ``pred`` onto ``gt``, in float64.

    Finds ``s > 0``, a proper rotation ``R`` (``det R = +1``: a reflection is never used, even when it would fit
    better) and ``t`` minimising ``Σ_n ‖s R p_n + t - g_n‖²`` independently for every leading index. With
    ``Σ = (1/N) Σ_n (g_n - ḡ)(p_n - p̄)ᵀ = U S Vᵀ`` and ``D = diag(1, 1, sign(det U · det V))``:
    ``R = U D Vᵀ``, ``s = tr(S D) / σ_p²`` (``σ_p²`` = mean squared distance of ``pred`` to its centroid),
    ``t = ḡ - s R p̄``. A ``pred`` whose points all coincide gets ``s = 0`` (aligned onto ``gt``'s centroid).

    Args:
        pred: (..., N, 3) points to move (any unit).
        gt: (..., N, 3) target points, broadcastable to ``pred``.
        return_transform: also return ``(s, R, t)``.
    Returns:
        aligned ``s R p + t`` as (..., N, 3) float64 (broadcast shape); with ``return_transform`` also
        ``(s (...), R (..., 3, 3), t (..., 3))`` so that ``aligned = s · pred @ Rᵀ + t``.
    Raises:
        ShapeError: wrong shapes, non-floating or non-finite input.
    """
    p, g = _pair(pred, gt)
    if not (bool(torch.isfinite(p).all()) and bool(torch.isfinite(g).all())):
        raise ShapeError("similarity_align needs finite pred and gt")
    aligned, transform = _umeyama(p, g)
    return (aligned, transform) if return_transform else aligned


def mpve_aligned_per_sample(pred: torch.Tensor, gt: torch.Tensor, scale: float = MM_PER_M) -> torch.Tensor:
    """Per-sample MPVE after similarity alignment of ``pred`` onto ``gt`` (:func:`similarity_align`).

    Args:
        pred: (..., N, 3) predicted vertices (metres; any pose: rotation, scale and translation are removed).
        gt: (..., N, 3) ground truth, broadcastable to ``pred``.
        scale: unit conversion (default metres → mm).
    Returns:
        (...) float64 ``mean_n ‖s R pred_n + t - gt_n‖`` in mm (scale units); NaN for a sample with a
        non-finite point.
    """
    p, g = _pair(pred, gt)
    bad = ~(torch.isfinite(p).all(dim=(-2, -1)) & torch.isfinite(g).all(dim=(-2, -1)))
    p = torch.where(bad[..., None, None], torch.zeros_like(p), p) * scale
    g = torch.where(bad[..., None, None], torch.zeros_like(g), g) * scale
    err = (_umeyama(p, g)[0] - g).norm(dim=-1).mean(dim=-1)
    return torch.where(bad, torch.full_like(err, float("nan")), err)


def mpve_aligned(pred: torch.Tensor, gt: torch.Tensor, scale: float = MM_PER_M) -> float:
    """MPVE in mm after per-sample similarity Procrustes on all vertices, averaged over samples.

    Args:
        pred: (..., N, 3) predicted vertices (metres), e.g. (F, V, N, 3).
        gt: (..., N, 3) ground truth broadcastable to ``pred`` (e.g. (F, 1, N, 3)).
    Returns:
        ``mean_samples mean_n ‖s R pred_n + t - gt_n‖`` (float64) in mm; 0 for a rotated, scaled, shifted copy.
    """
    return float(mpve_aligned_per_sample(pred, gt, scale).mean())
