"""``groundtruth`` annotator: the true FLAME parameters of a synthetic sequence written as a fit.

The synthetic benchmark (``neuface synth``) knows every parameter. Written as a fit file, the ground truth goes
through the same filter, pack, metrics and training stages as any annotator: its packed dataset is the real
motion a motion prior's generations are compared with, and the oracle row of the training tables (a model trained
on perfect labels). β, ψ, θ and the global pose (camera orientation folded in, per view) are copied; the crop
camera ``(s, tx, ty)`` of each (frame, view) is the least-squares weak-perspective fit of the projected FLAME
landmarks to the true 2D landmarks in crop NDC (exact when the renderer's camera is weak perspective, as
``neuface synth``'s is).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from neuface.fitting.data import SequenceBatch
from neuface.fitting.forward import FitFailure, FitParams
from neuface.geometry.crop import pixels_to_crop_ndc

log = logging.getLogger(__name__)

__all__ = ["ground_truth_fit", "weak_perspective_lstsq"]


def weak_perspective_lstsq(points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares camera ``(s, tx, ty)`` with ``weak_perspective_project(points, cam)[..., :2] ≈ target``.

    Args:
        points: (B, N, 3) model-space points.  target: (B, N, 2) crop NDC (y down).
    Returns:
        (B, 3) cameras. Closed form: with q = (x, -y) of the target, ``q = s p + s t`` is linear in (s, s t).
    """
    p = points[..., :2]
    q = torch.stack([target[..., 0], -target[..., 1]], dim=-1)
    pc, qc = p - p.mean(1, keepdim=True), q - q.mean(1, keepdim=True)
    s = (pc * qc).sum((1, 2)) / (pc * pc).sum((1, 2)).clamp_min(1e-12)
    t = q.mean(1) / s[:, None] - p.mean(1)
    return torch.cat([s[:, None], t], dim=1)


def ground_truth_fit(seq: SequenceBatch, flame, gt_path: str | os.PathLike, crops_path: str | os.PathLike
                     ) -> FitParams:
    """The ground truth of ``seq`` as :class:`FitParams` (β, ψ, θ, global pose; camera fitted per image).

    Raises:
        FitFailure: the ground truth has other views, or fewer frames than the sequence.
    """
    from neuface.metrics.sequence import gt_pixel_scale_of_crops, load_ground_truth, match_views

    try:
        gt = load_ground_truth(gt_path)
        idx = match_views(seq.views, gt["views"])
    except Exception as exc:  # noqa: BLE001 - recorded as this sequence's failure
        raise FitFailure(f"ground truth {gt_path}: {exc}") from None
    n_f, n_v = seq.n_frames, seq.n_views
    if gt["expression"].shape[0] < n_f:
        raise FitFailure(f"ground truth {gt_path} has {gt['expression'].shape[0]} frames, the sequence {n_f}")
    scale = gt_pixel_scale_of_crops(gt_path, crops_path)
    if scale is None:
        scale = (1.0, 1.0)
        log.warning("frames file of %s not found: ground-truth pixels taken as frame pixels", crops_path)
    sx, sy = scale

    def fv(a: np.ndarray, per_view: bool) -> np.ndarray:
        a = np.asarray(a[:n_f], np.float32)
        return a[:, idx] if per_view else np.broadcast_to(a[:, None], (n_f, n_v, a.shape[-1])).copy()

    shape = np.asarray(gt["shape"], np.float32)
    expression, pose = fv(gt["expression"], False), fv(gt["pose"], False)
    global_pose = fv(gt["global_pose"], True)
    lmk_px = torch.as_tensor(np.asarray(gt["landmarks"][:n_f], np.float64)[:, idx])
    lmk_px = lmk_px * torch.tensor([sx, sy], dtype=torch.float64)
    target = pixels_to_crop_ndc(lmk_px.reshape(n_f * n_v, -1, 2), seq.transforms.reshape(n_f * n_v, 3, 3).double(),
                                seq.crop_size)  # (F V, 68, 2)
    dev, dtype = flame.v_template.device, flame.v_template.dtype

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype, device=dev).reshape(n_f * n_v, -1)

    beta = torch.as_tensor(shape, dtype=dtype, device=dev)[None, : flame.n_shape].expand(n_f * n_v, -1)
    with torch.no_grad():
        out = flame(shape=beta,
                    expression=t(expression)[:, : flame.n_exp], global_pose=t(global_pose), pose=t(pose))
        cam = weak_perspective_lstsq(out.landmarks2d.double(), target.to(dev))
    if not torch.isfinite(cam).all():
        raise FitFailure("ground-truth landmarks give a non-finite camera (degenerate landmarks)")
    return FitParams(shape=shape, expression=expression, global_pose=global_pose, pose=pose,
                     cam=cam.float().cpu().reshape(n_f, n_v, 3).numpy())
