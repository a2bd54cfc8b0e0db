"""NeuFace losses (paper Eq. 2-4) and the latent targets of the E-step, plus appendix B's naive variants.

Pure tensor functions, float32/float64, any device. Normalisations (documented once):

* :func:`landmark_loss` (Eq. 2): mean over valid landmark *coordinates* of ``|pred - target|`` (DECA's
  ``batch_kp_2d_l1_loss``: sum of ``|dx| + |dy|`` over valid points divided by twice their count), in crop NDC.
* :func:`temporal_loss` (Eq. 3): mean over (frame, view) of ``‖q - q̂‖²`` with ``q̂`` detached;
  :func:`temporal_loss_official` is the official code's scale (per-component MSE summed over views, ``V / 4``
  times larger), which the annotators use by default (``temporal_scale``) so the paper's λ_temp = 100 means
  the same.
* :func:`multiview_loss` (Eq. 4): mean over (frame, view, vertex, xyz) of ``|M - M̂|`` with ``M̂`` detached.
* Naive (appendix B): :func:`temporal_loss_naive` = mean over views and consecutive frame pairs of
  ``‖q_f - q_{f+1}‖²`` (sign-aligned); :func:`multiview_loss_naive` = mean over frames, view pairs ``i < j``,
  vertices and xyz of ``|M_i - M_j|``. Means instead of the appendix's sums keep the λ scales comparable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError
from neuface.geometry.rotations import canonicalize_quaternions

__all__ = [
    "landmark_loss",
    "temporal_target",
    "temporal_loss",
    "temporal_loss_official",
    "temporal_loss_naive",
    "multiview_target",
    "softmax_view_confidence",
    "multiview_loss",
    "multiview_loss_naive",
    "canonical_vertices",
]


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Masked L1 landmark loss (Eq. 2).

    Args:
        pred: (B, K, 2) projected landmarks (crop NDC).
        target: (B, K, 2) detections (crop NDC; may be NaN where ``valid`` is False).
        valid: (B, K) bool per-point validity.
    Returns:
        () mean absolute coordinate error over valid points (0 when none is valid).
    """
    sizes = check_shape(pred, "pred", ("B", "K", 2))
    check_shape(target, "target", ("B", "K", 2), sizes)
    check_shape(valid, "valid", ("B", "K"), sizes)
    check_floating(pred, "pred")
    mask = valid.to(torch.bool)[..., None]
    safe = torch.where(mask, target.to(pred.dtype), pred.detach())  # NaN-free, zero gradient where invalid
    diff = (pred - safe).abs() * mask.to(pred.dtype)
    count = mask.sum().to(pred.dtype) * 2.0
    return diff.sum() / count.clamp(min=1.0)


def _window_index(n: int, window: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, window) frame indices of the centred, symmetrically shrinking windows and their (n, window) mask."""
    t = torch.arange(n, device=device)
    half = torch.minimum(torch.minimum(t, n - 1 - t), torch.full_like(t, window // 2))
    offsets = torch.arange(window, device=device) - window // 2
    idx = t[:, None] + offsets[None, :]
    mask = offsets.abs()[None, :] <= half[:, None]
    return idx.clamp(0, n - 1), mask


def temporal_target(quats: torch.Tensor, window: int, reduce: str = "mean") -> torch.Tensor:
    """E-step temporal target: centred moving average (or median) of head-rotation quaternions over time.

    The sequence of each view is first put on one sign branch (:func:`canonicalize_quaternions`), then frame
    ``t`` averages frames ``[t - h, t + h]`` with ``h = min(window // 2, t, F - 1 - t)`` (the window shrinks
    symmetrically at the ends: it stays centred and no frame is dropped). ``median`` takes the per-component
    median of the same frames. The result is renormalised to unit length and its sign is chosen to agree with
    the input quaternion of the same frame (``q · q̂ >= 0``), so ``‖q - q̂‖²`` measures the rotation gap.

    Args:
        quats: (F, V, 4) unit quaternions (XYZW), time first.
        window: odd window length in frames (1 = the input, sign-aligned).
        reduce: ``"mean"`` or ``"median"``.
    Returns:
        (F, V, 4) unit target quaternions (no gradient).
    """
    sizes = check_shape(quats, "quats", ("F", "V", 4))
    check_floating(quats, "quats")
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ShapeError(f"window must be a positive odd number of frames, got {window!r}")
    if reduce not in ("mean", "median"):
        raise ShapeError(f"reduce must be 'mean' or 'median', got {reduce!r}")
    n = sizes["F"]
    with torch.no_grad():
        q = quats.detach()
        if n == 0:
            return q.clone()
        cq = canonicalize_quaternions(q, dim=0)
        idx, mask = _window_index(n, window, q.device)
        gathered = cq[idx]  # (F, W, V, 4)
        m = mask[:, :, None, None]
        if reduce == "mean":
            target = (gathered * m).sum(dim=1) / m.sum(dim=1).to(q.dtype)
        else:
            nan = torch.full_like(gathered, float("nan"))
            target = torch.nanmedian(torch.where(m, gathered, nan), dim=1).values
        target = target / target.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        sign = torch.where((target * q).sum(dim=-1, keepdim=True) < 0, -1.0, 1.0).to(q.dtype)
        return target * sign


def temporal_loss(quats: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Temporal consistency loss (Eq. 3): mean squared L2 distance to the (detached) E-step target.

    Args:
        quats: (..., 4) predicted unit quaternions.
        target: (..., 4) targets from :func:`temporal_target` (same sign branch).
    Returns:
        () loss.
    """
    check_shape(quats, "quats", ("...", 4))
    check_shape(target, "target", tuple(quats.shape))
    check_floating(quats, "quats")
    return (quats - target.detach().to(quats.dtype)).square().sum(dim=-1).mean()


def temporal_loss_official(quats: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 3 scaled as the official code: per-component mean squared error, summed over the views.

    Args:
        quats: (F, V, 4) predicted unit quaternions.  target: (F, V, 4) E-step targets.
    Returns:
        () ``Σ_v mean_{f, c} (q - q̂)²`` = ``V / 4`` × :func:`temporal_loss`.
    """
    sizes = check_shape(quats, "quats", ("F", "V", 4))
    check_shape(target, "target", ("F", "V", 4), sizes)
    check_floating(quats, "quats")
    return (quats - target.detach().to(quats.dtype)).square().mean(dim=(0, 2)).sum()


def temporal_loss_naive(quats: torch.Tensor) -> torch.Tensor:
    """Appendix B's Markov-chain temporal loss: consecutive-frame quaternion differences (no latent target).

    Args:
        quats: (F, V, 4) unit quaternions, time first (F >= 2 for a non-zero loss).
    Returns:
        () mean over views and frame pairs of ``min(‖q_f - q_{f+1}‖², ‖q_f + q_{f+1}‖²)``.
    """
    check_shape(quats, "quats", ("F", "V", 4))
    check_floating(quats, "quats")
    if quats.shape[0] < 2:
        return quats.sum() * 0.0
    a, b = quats[:-1], quats[1:]
    return torch.minimum((a - b).square().sum(-1), (a + b).square().sum(-1)).mean()


def canonical_vertices(vertices: torch.Tensor, global_rotation: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """Canonical alignment: undo the global (head + camera) rotation about the root joint.

    FLAME applies the global rotation ``R`` about the root joint ``j0``, so ``R^T (v - j0) + j0`` equals the
    mesh evaluated with the global rotation zeroed (the weak-perspective camera is not applied to vertices).

    Args:
        vertices: (B, N, 3) posed vertices (model space).
        global_rotation: (B, 3, 3) rotation matrices of the global pose.
        root: (B, 3) root joint positions.
    Returns:
        (B, N, 3) canonical vertices.
    """
    sizes = check_shape(vertices, "vertices", ("B", "N", 3))
    check_shape(global_rotation, "global_rotation", ("B", 3, 3), sizes)
    check_shape(root, "root", ("B", 3), sizes)
    return (vertices - root[:, None]) @ global_rotation + root[:, None]


def multiview_target(canonical: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """E-step multi-view target: confidence-weighted per-vertex mean of the views' canonical meshes.

    Args:
        canonical: (F, V, N, 3) canonical vertices of every view.
        confidence: (F, V, N) non-negative per-vertex weights (visibility).
    Returns:
        (F, N, 3) target vertices (no gradient); the plain mean over views where the total weight is 0.
    """
    sizes = check_shape(canonical, "canonical", ("F", "V", "N", 3))
    check_shape(confidence, "confidence", ("F", "V", "N"), sizes)
    check_floating(canonical, "canonical")
    with torch.no_grad():
        c = canonical.detach()
        w = confidence.detach().to(c.dtype)
        total = w.sum(dim=1)  # (F, N)
        weighted = (c * w[..., None]).sum(dim=1) / total.clamp(min=1e-12)[..., None]
        return torch.where((total > 0)[..., None], weighted, c.mean(dim=1))


def softmax_view_confidence(cos: torch.Tensor, visible: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Graded multi-view confidence (the official code's): softmax over the views of ``cos / temperature``.

    Args:
        cos: (F, V, N) cosine between each vertex normal and its view's ray to the camera.
        visible: (F, V, N) bool visibility; an invisible vertex gets weight 0 and is left out of the softmax.
        temperature: softmax temperature (official: 0.1; smaller → the most frontal view takes all).
    Returns:
        (F, V, N) weights, summing to 1 over the views where any view sees the vertex, 0 where none does.
    """
    sizes = check_shape(cos, "cos", ("F", "V", "N"))
    check_shape(visible, "visible", ("F", "V", "N"), sizes)
    check_floating(cos, "cos")
    if not temperature > 0:
        raise ShapeError(f"temperature must be > 0, got {temperature}")
    logits = torch.where(visible.to(torch.bool), cos / temperature, torch.full_like(cos, float("-inf")))
    return torch.nan_to_num(torch.softmax(logits, dim=1), nan=0.0)


def multiview_loss(canonical: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-view consistency loss (Eq. 4): mean absolute difference to the (detached) E-step target.

    Args:
        canonical: (F, V, N, 3) canonical vertices.
        target: (F, N, 3) from :func:`multiview_target`.
    Returns:
        () loss.
    """
    sizes = check_shape(canonical, "canonical", ("F", "V", "N", 3))
    check_shape(target, "target", ("F", "N", 3), sizes)
    check_floating(canonical, "canonical")
    t = target.detach().to(canonical.dtype)[:, None].expand_as(canonical)
    return F.l1_loss(canonical, t)


def multiview_loss_naive(canonical: torch.Tensor) -> torch.Tensor:
    """Appendix B's pairwise multi-view loss: L1 between the canonical meshes of every view pair of a frame.

    Args:
        canonical: (F, V, N, 3).
    Returns:
        () mean over frames, pairs ``i < j``, vertices and xyz of ``|M_i - M_j|`` (0 for one view).
    """
    sizes = check_shape(canonical, "canonical", ("F", "V", "N", 3))
    check_floating(canonical, "canonical")
    n_v = sizes["V"]
    if n_v < 2:
        return canonical.sum() * 0.0
    i, j = torch.triu_indices(n_v, n_v, offset=1, device=canonical.device)
    return (canonical[:, i] - canonical[:, j]).abs().mean()
