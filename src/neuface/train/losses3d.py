"""The paper's auxiliary 3D losses for regressor fine-tuning (§5.2): L_M3D on mesh vertices, L_J3D on 3D landmarks.

Paper: ``L_M3D = (1/N_M) ‖M − M̂‖²`` and ``L_J3D = (1/N_J) ‖J − Ĵ‖²``, i.e. the squared Euclidean distance per
point averaged over the N points of one sample. Here both are also averaged over the batch (a weighted mean
with optional per-sample weights / validity mask). Pure tensor functions, any device and floating dtype, in
the units of the inputs (the trainer passes millimetres, :mod:`neuface.train.regressor`).

Frame of comparison (decided here, used by the trainer): the **posed** FLAME mesh in model space, global
rotation r applied (``FlameLayer`` output: rotation about the root joint, no camera, no translation). The
global rotation of a packed NeuFace annotation is the head orientation in that view's camera, so the 3D terms
supervise identity, expression, jaw *and* head pose, while the weak-perspective camera (scale, 2D shift) stays
supervised by the 2D landmark term only. The trainer's ``pose_3d="canonical"`` builds both meshes with r = 0
instead (:class:`~neuface.train.regressor_settings.RegressorSettings`).
"""

from __future__ import annotations

import torch

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError

__all__ = ["mesh_loss", "landmark3d_loss", "mean_squared_point_error"]


def mean_squared_point_error(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                             name: str = "pred") -> torch.Tensor:
    """Weighted batch mean of the per-sample mean squared point distance.

    Args:
        pred: (B, N, 3) predicted points.
        target: (B, N, 3) target points (no gradient is taken through it unless it requires one).
        weights: optional (B,) per-sample weights (bool mask or non-negative floats); default all 1.
        name: argument name used in error messages.
    Returns:
        () ``Σ_b w_b · (1/N) Σ_n ‖pred_bn − target_bn‖² / Σ_b w_b`` (0 when every weight is 0). Samples with
        weight 0 contribute neither value nor gradient, even when their target is not finite.
    Raises:
        ShapeError: mismatched shapes, non-floating input or negative weights.
    """
    sizes = check_shape(pred, name, ("B", "N", 3))
    check_shape(target, "target", ("B", "N", 3), sizes)
    check_floating(pred, name)
    check_floating(target, "target")
    if weights is None:
        w = pred.new_ones(sizes["B"])
    else:
        check_shape(weights, "weights", ("B",), sizes)
        w = weights.to(device=pred.device, dtype=pred.dtype)
        if bool((w < 0).any()):
            raise ShapeError("weights must be >= 0")
    keep = w > 0
    safe = torch.where(keep[:, None, None], target.to(pred.dtype), pred.detach())  # NaN-free where excluded
    per_sample = (pred - safe).square().sum(dim=-1).mean(dim=-1)  # (B,)
    return (per_sample * w).sum() / w.sum().clamp(min=torch.finfo(pred.dtype).tiny)


def mesh_loss(pred_vertices: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_M3D: (B, V, 3) predicted vs (B, V, 3) target vertices → () weighted batch mean of (1/V) Σ ‖M − M̂‖²."""
    return mean_squared_point_error(pred_vertices, target, weights, "pred_vertices")


def landmark3d_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_J3D: (B, 68, 3) predicted vs (B, 68, 3) target 3D landmarks → () weighted batch mean of (1/J) Σ ‖J − Ĵ‖²."""
    return mean_squared_point_error(pred, target, weights, "pred")
