"""All fidelity metrics of one fitted sequence (one fit file, optionally its ground truth).

Meshes come from a :class:`~neuface.flame.layer.FlameLayer` evaluated once per frame and view with the global
rotation zeroed (the canonical mesh ``C``). The posed mesh used by MSI is derived exactly from it: FLAME's
root joint rotates the whole mesh about the root joint ``J0`` and pose correctives ignore the root, so
``posed = R(r) (C - J0) + J0`` (the 68 "3D" landmarks are barycentric, so the same holds for them). Frames are
processed in chunks; MSI accumulates shifted first/second moments of the accelerations in float64, so memory
does not grow with the sequence length.

A fit of several shots (:mod:`neuface.shots`) is evaluated with each frame's own β
(:func:`neuface.shots.frame_shapes`), and MSI pools only the accelerations whose three frames lie in one shot:
nothing is differenced across a cut.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuface.errors import NeufaceError
from neuface.geometry.rotations import axis_angle_to_matrix
from neuface.metrics.core import (
    MM_PER_M,
    MSI_EPS,
    cvd_matrix,
    mpve_aligned_per_sample,
    msi_from_variance,
    nme_per_sample,
)
from neuface.metrics.fitfile import read_fit_arrays
from neuface.shots import frame_shapes, within_shot

log = logging.getLogger(__name__)

__all__ = ["METRICS_FORMAT", "METRICS_VERSION", "UNITS", "sequence_metrics", "match_views", "load_ground_truth"]

METRICS_FORMAT = "neuface.metrics"
#: 2: ``nme`` / ``nme_gt`` are bounding-box normalised (v1: eye-corner, now ``nme_eye`` / ``nme_gt_eye``) and
#: ``mpve_aligned`` (similarity-aligned) is the headline MPVE; ``mpve`` (canonical, unaligned) is unchanged.
METRICS_VERSION = 2
#: metric key → unit and definition (docs/metrics.md); also the keys of ``metrics`` in a metrics JSON.
UNITS = {
    "msi3d_l": "1/mm^2 (accelerations in mm/frame^2)",
    "msi3d_v": "1/mm^2 (accelerations in mm/frame^2)",
    "cvd": "mm (mean per-vertex L1)",
    "nme": "% of sqrt(w*h) of the detections' landmark bounding box",
    "nme_eye": "% of the detections' outer-eye-corner distance",
    "nme_gt": "% of sqrt(w*h) of the ground-truth landmark bounding box",
    "nme_gt_eye": "% of the ground-truth outer-eye-corner distance",
    "mpve_aligned": "mm (mean per-vertex Euclidean after per-frame similarity Procrustes on all vertices)",
    "mpve": "mm (mean per-vertex Euclidean, canonical meshes, not aligned)",
}
#: NME keys: (target, normalisation).
_NME_KEYS = {"nme": ("detections", "bbox"), "nme_eye": ("detections", "eye"), "nme_gt": ("gt", "bbox"),
             "nme_gt_eye": ("gt", "eye")}


class _Moments:
    """Running shifted sums of acceleration samples per (view, point, axis), float64."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def add(self, acc: torch.Tensor) -> None:  # acc: (T, V, K, 3) float64
        if acc.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = acc[0].clone()
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = torch.zeros_like(self.shift)
        d = acc - self.shift
        self.s1 += d.sum(dim=0)
        self.s2 += d.square().sum(dim=0)
        self.n += acc.shape[0]

    def variance(self) -> torch.Tensor:  # (V, K) summed over axes
        mean = self.s1 / self.n
        return (self.s2 / self.n - mean.square()).clamp(min=0.0).sum(dim=-1)


def match_views(fit_views: list[str], gt_views: list[str]) -> list[int]:
    """Index into ``gt_views`` of each fit view: by name, or by order when both have exactly one view.

    A monocular ground truth names its view ``front`` while the sample sheet may call it ``mono``.
    """
    if all(v in gt_views for v in fit_views):
        return [gt_views.index(v) for v in fit_views]
    if len(fit_views) == 1 and len(gt_views) == 1:
        return [0]
    raise NeufaceError(f"views {fit_views} do not match the ground-truth views {gt_views}")


def gt_pixel_scale(gt_path: str | os.PathLike, frames_path: str | os.PathLike) -> tuple[float, float]:
    """(sx, sy): frame pixels per ground-truth pixel (the frames may be resized from the rendered size)."""
    from neuface.video.store import frames_info

    with np.load(gt_path, allow_pickle=False) as z:
        size = float(z["image_size"])
    info = frames_info(frames_path)
    h, w = info["view_attrs"][info["views"][0]]["shape"][1:3]
    return w / size, h / size


def gt_pixel_scale_of_crops(gt_path: str | os.PathLike, crops_path: str | os.PathLike) -> tuple[float, float] | None:
    """:func:`gt_pixel_scale` with the frames file a crops file names (its ``frames_file`` attribute); None when
    that file is not readable here or the ground truth records no ``image_size``."""
    import h5py

    with h5py.File(crops_path, "r") as f:
        frames_file = str(f.attrs.get("frames_file", "") or "")
    if not frames_file or not Path(frames_file).is_file():
        return None
    with np.load(gt_path, allow_pickle=False) as z:
        if "image_size" not in z.files:
            return None
    return gt_pixel_scale(gt_path, frames_file)


def load_ground_truth(path: str | os.PathLike) -> dict[str, Any]:
    """The arrays of a ``neuface synth`` ground-truth ``.npz`` (no pickles allowed)."""
    path = Path(path)
    if not path.is_file():
        raise NeufaceError(f"ground truth {path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        gt = {k: z[k] for k in z.files}
    missing = [k for k in ("shape", "expression", "pose", "global_pose", "landmarks", "views") if k not in gt]
    if missing:
        raise NeufaceError(f"ground truth {path} lacks {', '.join(missing)}")
    gt["views"] = [str(v) for v in np.atleast_1d(gt["views"])]
    return gt


def _canonical(flame, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor):
    """(B, ...) params → canonical vertices (B, N, 3), landmarks3d (B, 68, 3), root joint (B, 3)."""
    out = flame(shape=shape, expression=expression, pose=pose)
    return out.vertices, out.landmarks3d, out.joints[:, 0]


def _posed_mm(x: torch.Tensor, rot: torch.Tensor, root: torch.Tensor, n_v: int) -> torch.Tensor:
    """Canonical (B, K, 3) points → posed ``R (x - J0) + J0`` as (B / V, V, K, 3) float64 in mm."""
    y = (x - root[:, None]) @ rot.transpose(1, 2) + root[:, None]
    return y.to(torch.float64).reshape(-1, n_v, *x.shape[1:]) * MM_PER_M


def _fit_params(arr: np.ndarray, width: int, name: str) -> np.ndarray:
    if arr.shape[-1] < width:
        raise NeufaceError(f"fit {name} has {arr.shape[-1]} coefficients, the FLAME layer needs {width}")
    return arr[..., :width]


def _error_parts(flame_layer, frame_shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor,
                 gt_shape: torch.Tensor, gt_neutral: torch.Tensor, gt_verts: torch.Tensor,
                 into: dict[str, list[torch.Tensor]]) -> None:
    """Append the identity and expression parts of the aligned MPVE of one chunk of (nc · V) samples.

    Args:
        frame_shape: (nc, n_shape) fitted β per frame (every view of a frame has it: its neutral mesh is built
            once per frame).  expression / pose: (nc·V, ...) fitted parameters, frame-major.
        gt_shape: (n_shape,) true β.  gt_neutral: (1, 1, N, 3) its neutral mesh.
        gt_verts: (nc, 1, N, 3) float64 true canonical vertices.
        into: ``mpve_identity`` / ``mpve_expression`` lists receiving (nc, V) tensors (mm).
    """
    nc = gt_verts.shape[0]
    n_v = expression.shape[0] // nc
    neutral = flame_layer(shape=frame_shape).vertices[:, None]  # (nc, 1, N, 3)
    into["mpve_identity"].append(mpve_aligned_per_sample(neutral, gt_neutral).expand(nc, n_v).cpu())
    on_true = flame_layer(shape=gt_shape.expand(expression.shape[0], -1), expression=expression, pose=pose).vertices
    into["mpve_expression"].append(mpve_aligned_per_sample(on_true.reshape(nc, n_v, *on_true.shape[1:]),
                                                           gt_verts).cpu())


def sequence_metrics(fit_path: str | os.PathLike, flame_layer, gt_path: str | os.PathLike | None = None,
                     chunk: int = 32, msi_eps: float = MSI_EPS, gt_pixel_scale: tuple[float, float] | None = None,
                     per_sample: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Compute MSI_3D^L, MSI_3D^V, CVD (V > 1), NME and, with ground truth, MPVE and NME against GT landmarks.

    Metric keys (see :data:`UNITS`): ``nme`` / ``nme_eye`` against the fit's detections (bounding-box / eye-corner
    normalised), with ground truth ``nme_gt`` / ``nme_gt_eye`` against the GT landmarks, ``mpve_aligned``
    (headline: per (frame, view) similarity Procrustes of the fitted canonical mesh onto the GT mesh, all
    vertices) and ``mpve`` (canonical meshes as they are). Every NME and MPVE also has per-view values.

    Args:
        fit_path: a ``neuface.fit`` file.
        flame_layer: :class:`~neuface.flame.layer.FlameLayer` with a landmark embedding (its device/dtype is used).
        gt_path: optional ground-truth ``.npz`` of ``neuface synth`` (same FLAME model).
        chunk: frames per FLAME batch (× V views).
        msi_eps: variance floor of MSI (mm²).
        gt_pixel_scale: ``(sx, sy)`` from GT pixels to the fit's frame pixels (frames downscaled); default 1.
        per_sample: a dict that, with ground truth, receives ``mpve_aligned``: the (F, V) aligned MPVE (mm) of
            every (frame, view), whose mean is the metric (for pooled statistics over many sequences), and its
            two parts, also (F, V) aligned MPVE in mm: ``mpve_identity`` (the fitted β's neutral mesh against the
            true β's; zero expression and pose) and ``mpve_expression`` (the fitted ψ and pose on the *true* β
            against the true mesh).
    Returns:
        A JSON-able dict (see docs/metrics.md): ``status``, ``metrics`` (value or ``None`` when not
        applicable), ``per_view``, ``per_frame`` (CVD), fit attributes and final loss values.
    """
    fit = read_fit_arrays(fit_path)
    status = fit["status"]
    result: dict[str, Any] = {
        "format": METRICS_FORMAT, "format_version": METRICS_VERSION, "sequence": status.sequence,
        "annotator": fit["attrs"].get("annotator", ""), "status": status.status, "reason": status.reason,
        "fit_file": str(fit_path), "gt_file": None if gt_path is None else str(gt_path),
        "views": fit["views"], "units": UNITS, "msi_eps_mm2": msi_eps,
        "fit": {k: v for k, v in fit["attrs"].items() if k != "annotator"},
    }
    if not status.ok:
        return result
    if not flame_layer.has_landmarks:
        raise NeufaceError("metrics need a FLAME layer with a landmark embedding (MSI_3D^L)")
    dtype, device = flame_layer.v_template.dtype, flame_layer.v_template.device
    views = fit["views"]
    exp_all = fit["expression"]
    n_f, n_v = exp_all.shape[:2]
    result.update(n_frames=int(n_f), n_views=int(n_v))
    result["fit"]["losses_final"] = {k: float(v[-1]) for k, v in fit["losses"].items() if len(v)}

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    shapes = t(_fit_params(frame_shapes(fit), flame_layer.n_shape, "shape"))  # (F, n_shape): β per frame
    accel_ok = None  # (F - 2,) True where frames t .. t + 2 lie in one shot; None: one shot
    if "shots" in fit:
        accel_ok = torch.as_tensor(within_shot(fit["shots"], n_f, 3))
    expression = _fit_params(exp_all, flame_layer.n_exp, "expression")
    gt = None
    if gt_path is not None:
        gt = load_ground_truth(gt_path)
        match_views(views, gt["views"])  # fail early on mismatched views
        if gt["expression"].shape[0] < n_f:
            raise NeufaceError(f"ground truth has {gt['expression'].shape[0]} frames, the fit {n_f}")
        gt_shape = t(gt["shape"][: flame_layer.n_shape])

    mom_l, mom_v = _Moments(), _Moments()
    prev_l = prev_v = None
    cvd_frames: list[torch.Tensor] = []
    cvd_view_sum = torch.zeros(n_v, dtype=torch.float64)
    mpve_sum = torch.zeros(n_v, dtype=torch.float64)
    mpve_al_sum = torch.zeros(n_v, dtype=torch.float64)
    mpve_al_frames: list[torch.Tensor] = []
    parts: dict[str, list[torch.Tensor]] = {"mpve_identity": [], "mpve_expression": []}
    with torch.no_grad():
        gt_neutral = None  # the true β's neutral mesh (1, 1, N, 3), for the error parts of per_sample
        if gt is not None and per_sample is not None:
            gt_neutral = flame_layer(shape=gt_shape[None]).vertices.to(torch.float64)[:, None]
        for start in range(0, n_f, chunk):
            stop = min(n_f, start + chunk)
            b = (stop - start) * n_v
            exp_c = t(expression[start:stop]).reshape(b, -1)
            pose_c = t(fit["pose"][start:stop]).reshape(b, -1)
            shape_c = shapes[start:stop, None].expand(-1, n_v, -1).reshape(b, -1)  # frame-major, like exp_c
            verts, lmk3d, root = _canonical(flame_layer, shape_c, exp_c, pose_c)
            rot = axis_angle_to_matrix(t(fit["global_pose"][start:stop]).reshape(b, 3))

            pl = _posed_mm(lmk3d, rot, root, n_v)
            pv = _posed_mm(verts, rot, root, n_v)
            if prev_l is not None:
                pl, pv = torch.cat([prev_l, pl]), torch.cat([prev_v, pv])
            if pl.shape[0] >= 3:
                acc_l, acc_v = pl[2:] - 2.0 * pl[1:-1] + pl[:-2], pv[2:] - 2.0 * pv[1:-1] + pv[:-2]
                if accel_ok is not None:  # accelerations of frames first .. first + 2, first = stop - len(pl)
                    keep = accel_ok[stop - pl.shape[0]: stop - 2].to(acc_l.device)
                    acc_l, acc_v = acc_l[keep], acc_v[keep]
                mom_l.add(acc_l)
                mom_v.add(acc_v)
            prev_l, prev_v = pl[-2:], pv[-2:]
            canon = verts.reshape(stop - start, n_v, -1, 3)
            if n_v > 1:
                mat = cvd_matrix(canon)
                cvd_frames.append(mat.sum(dim=(-2, -1)).cpu() / (n_v * (n_v - 1)))
                cvd_view_sum += mat.sum(dim=-1).sum(dim=0).cpu() / (n_v - 1)
            if gt is not None:
                nc = stop - start
                g_out = flame_layer(shape=gt_shape.expand(nc, -1),
                                    expression=t(gt["expression"][start:stop, : flame_layer.n_exp]),
                                    pose=t(gt["pose"][start:stop]))
                g_verts = g_out.vertices.to(torch.float64)[:, None]  # (nc, 1, N, 3)
                diff = (canon.to(torch.float64) - g_verts) * MM_PER_M
                mpve_sum += diff.norm(dim=-1).mean(dim=-1).sum(dim=0).cpu()
                mpve_al_frames.append(mpve_aligned_per_sample(canon, g_verts).cpu())  # (nc, V)
                mpve_al_sum += mpve_al_frames[-1].sum(dim=0)
                if per_sample is not None:
                    _error_parts(flame_layer, shapes[start:stop], exp_c, pose_c, gt_shape, gt_neutral, g_verts,
                                 parts)

    metrics: dict[str, float | None] = {k: None for k in UNITS}
    per_view: dict[str, dict[str, float]] = {}
    if n_f >= 4 and mom_l.n > 0:
        for key, mom in (("msi3d_l", mom_l), ("msi3d_v", mom_v)):
            per = msi_from_variance(mom.variance(), msi_eps).cpu()
            per_view[key] = dict(zip(views, per.tolist(), strict=True))
            metrics[key] = float(per.mean())
    elif n_f >= 4:
        log.warning("%s: no shot has 3 frames, MSI needs accelerations within a shot", status.sequence)
    else:
        log.warning("%s: %d frame(s), MSI needs at least 4", status.sequence, n_f)
    if n_v > 1:
        frames_cvd = torch.cat(cvd_frames)
        metrics["cvd"] = float(frames_cvd.mean())
        per_view["cvd"] = dict(zip(views, (cvd_view_sum / n_f).tolist(), strict=True))
        result["per_frame"] = {"cvd": frames_cvd.tolist()}
    _nme_into(fit, views, metrics, per_view, gt, gt_pixel_scale)
    if gt is not None:
        for key, total in (("mpve_aligned", mpve_al_sum), ("mpve", mpve_sum)):
            per = total / n_f
            per_view[key] = dict(zip(views, per.tolist(), strict=True))
            metrics[key] = float(per.mean())
        if per_sample is not None:
            per_sample["mpve_aligned"] = torch.cat(mpve_al_frames).numpy()
            per_sample.update({k: torch.cat(v).numpy() for k, v in parts.items()})
    result["metrics"] = metrics
    result["per_view"] = per_view
    return result


def _nme_into(fit: dict[str, Any], views: list[str], metrics: dict, per_view: dict, gt: dict | None,
              gt_pixel_scale: tuple[float, float] | None) -> None:
    """NMEs (:data:`_NME_KEYS`) of the fit's projected landmarks against its detections (and the GT landmarks)."""
    if "landmarks_pred" not in fit:
        return
    pred = torch.as_tensor(fit["landmarks_pred"], dtype=torch.float64)  # (F, V, 68, 2)
    targets = {}
    if "landmarks" in fit:
        valid = torch.as_tensor(fit["detected"]) if "detected" in fit else None
        targets["detections"] = (torch.as_tensor(fit["landmarks"], dtype=torch.float64), valid)
    if gt is not None:
        idx = match_views(views, gt["views"])
        g = torch.as_tensor(gt["landmarks"][: pred.shape[0], idx], dtype=torch.float64)
        if gt_pixel_scale is not None:
            sx, sy = gt_pixel_scale
            g = (g + 0.5) * g.new_tensor([sx, sy]) - 0.5
        targets["gt"] = (g, None)
    for key, (which, norm) in _NME_KEYS.items():
        if which not in targets:
            continue
        target, valid = targets[which]
        per = nme_per_sample(pred, target, valid, norm=norm)  # (F, V)
        ok = torch.isfinite(per)
        per_v = [float(per[:, v][ok[:, v]].mean()) if bool(ok[:, v].any()) else float("nan")
                 for v in range(per.shape[1])]
        per_view[key] = {v: (x if math.isfinite(x) else None) for v, x in zip(views, per_v, strict=True)}
        metrics[key] = float(per[ok].mean()) if bool(ok.any()) else None
