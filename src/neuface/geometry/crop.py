"""DECA-style square face crops kept as explicit transforms, so every crop-space output maps back to pixels.

A crop is a similarity transform ``T`` (B, 3, 3) that maps **original-frame pixel coordinates to crop pixel
coordinates** (both with integer values at pixel centres, see :mod:`neuface.geometry`). The square box of side
``size`` centred at ``center`` is mapped onto the whole crop: its edges go to the crop edges ``-0.5`` and
``out_size - 0.5``, so ``x_crop = k (x - cx) + (out_size - 1) / 2`` with ``k = out_size / size``.

DECA (``decalib/datasets/datasets.py``, ``bbox2point(type='kpt68')``, checked): box from the landmarks'
min/max, ``old_size = (w + h) / 2 * 1.1``, centre = box centre (no vertical shift for landmark boxes; the
+0.12·size shift is only for detector boxes), ``size = int(old_size * scale)`` with ``scale = 1.25``, then a
similarity warp mapping the box corners to the crop's corner *pixel centres* ``0`` and ``out_size - 1``. We
keep the size continuous (no ``int``, which only makes crops jitter) and map box edges to crop edges by
default; pass ``deca_compat=True`` to :func:`crop_transform` for DECA's exact ``(out_size - 1) / size``
scale (0.45 % apart at 224).

Chain for the encoder output: weak-perspective NDC of the crop → :func:`crop_ndc_to_pixels` → original pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError
from neuface.geometry.camera import ndc_to_pixels, pixels_to_ndc

__all__ = [
    "KPT_BOX_EXPAND",
    "estimate_crop_box",
    "crop_transform",
    "invert_transform",
    "apply_transform",
    "pixels_to_crop",
    "crop_to_pixels",
    "warp_images",
    "crop_ndc_to_pixels",
    "pixels_to_crop_ndc",
    "smooth_boxes",
]

#: DECA's enlargement of a 68-landmark box (``bbox2point(type='kpt68')``).
KPT_BOX_EXPAND = 1.1


def estimate_crop_box(
    landmarks: torch.Tensor,
    valid: torch.Tensor | None = None,
    scale: float = 1.25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crop box from 2D landmarks, as DECA does for 68-point landmarks.

    ``center`` is the centre of the landmarks' min/max box and ``size = (w + h) / 2 * 1.1 * scale``.

    Args:
        landmarks: (B, N, 2) pixel coordinates ``(x, y)`` in the original frame.
        valid: optional (B, N) bool mask of points to use; non-finite points are always ignored.
        scale: extra enlargement (DECA: 1.25).
    Returns:
        ``center`` (B, 2) and ``size`` (B,), in pixels. Rows with no valid point are NaN.
    """
    sizes = check_shape(landmarks, "landmarks", ("B", "N", 2))
    check_floating(landmarks, "landmarks")
    ok = torch.isfinite(landmarks).all(dim=-1)
    if valid is not None:
        check_shape(valid, "valid", ("B", "N"), sizes)
        ok = ok & valid.to(torch.bool)
    inf = torch.full_like(landmarks, float("inf"))
    lo = torch.where(ok[..., None], landmarks, inf).amin(dim=1)
    hi = torch.where(ok[..., None], landmarks, -inf).amax(dim=1)
    any_ok = ok.any(dim=1)
    nan = torch.full_like(lo, float("nan"))
    lo = torch.where(any_ok[:, None], lo, nan)
    hi = torch.where(any_ok[:, None], hi, nan)
    center = (lo + hi) / 2.0
    wh = hi - lo
    size = (wh[:, 0] + wh[:, 1]) / 2.0 * KPT_BOX_EXPAND * scale
    return center, size


def crop_transform(
    center: torch.Tensor, size: torch.Tensor, out_size: int = 224, deca_compat: bool = False
) -> torch.Tensor:
    """Similarity matrices mapping original pixel coordinates to the pixels of an ``out_size`` square crop.

    Args:
        center: (B, 2) box centres ``(x, y)`` in original pixels.
        size: (B,) box sides in original pixels (> 0).
        out_size: side of the crop in pixels.
        deca_compat: map the box edges to crop pixel *centres* ``0`` / ``out_size - 1`` like DECA's
            ``estimate_transform`` (default: to crop edges ``-0.5`` / ``out_size - 0.5``).
    Returns:
        (B, 3, 3) homogeneous matrices ``T`` with ``[x_crop, y_crop, 1]^T = T [x, y, 1]^T``.
    """
    sizes = check_shape(center, "center", ("B", 2))
    check_shape(size, "size", ("B",), sizes)
    check_floating(center, "center")
    check_floating(size, "size")
    if out_size < 1:
        raise ShapeError(f"out_size must be a positive number of pixels, got {out_size}")
    if deca_compat:
        k = (out_size - 1) / size
        tx, ty = (-k[:, None] * (center - size[:, None] / 2.0)).unbind(-1)
    else:
        k = out_size / size
        tx, ty = (-k[:, None] * center + (out_size - 1) / 2.0).unbind(-1)
    zero = torch.zeros_like(k)
    one = torch.ones_like(k)
    rows = [torch.stack([k, zero, tx], -1), torch.stack([zero, k, ty], -1)]
    rows.append(torch.stack([zero, zero, one], -1))
    return torch.stack(rows, dim=-2)


def invert_transform(transform: torch.Tensor) -> torch.Tensor:
    """Inverse of affine (B, 3, 3) transforms with last row ``[0, 0, 1]`` (closed form, differentiable)."""
    check_shape(transform, "transform", ("B", 3, 3))
    check_floating(transform, "transform")
    a, b, c = transform[:, 0, 0], transform[:, 0, 1], transform[:, 0, 2]
    d, e, f = transform[:, 1, 0], transform[:, 1, 1], transform[:, 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    ic = -(ia * c + ib * f)
    if_ = -(id_ * c + ie * f)
    zero = torch.zeros_like(a)
    one = torch.ones_like(a)
    rows = [torch.stack([ia, ib, ic], -1), torch.stack([id_, ie, if_], -1)]
    rows.append(torch.stack([zero, zero, one], -1))
    return torch.stack(rows, dim=-2)


def apply_transform(points: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """Apply affine (B, 3, 3) transforms to 2D points.

    Args:
        points: (B, N, 2).
        transform: (B, 3, 3), last row ``[0, 0, 1]`` (the projective row is ignored).
    Returns:
        (B, N, 2) transformed points.
    """
    sizes = check_shape(points, "points", ("B", "N", 2))
    check_shape(transform, "transform", ("B", 3, 3), sizes)
    check_floating(points, "points")
    check_floating(transform, "transform")
    return points @ transform[:, :2, :2].transpose(1, 2) + transform[:, None, :2, 2]


def pixels_to_crop(points: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) original-frame pixels → crop pixels with the crop transform ``T`` (B, 3, 3)."""
    return apply_transform(points, transform)


def crop_to_pixels(points: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) crop pixels → original-frame pixels (inverse of :func:`pixels_to_crop`)."""
    return apply_transform(points, invert_transform(transform))


def warp_images(
    images: torch.Tensor, transform: torch.Tensor, out_size: int = 224, mode: str = "bilinear"
) -> torch.Tensor:
    """Resample the crops: output pixel ``p`` takes the input value at ``T^-1 p`` (zeros outside the frame).

    Consistent with :func:`crop_to_pixels`: a feature at crop pixel ``p`` of the output is at
    ``crop_to_pixels(p, T)`` in ``images``. No anti-aliasing (like DECA's ``skimage`` warp).

    Args:
        images: (B, C, H, W) float images.
        transform: (B, 3, 3) crop transforms from :func:`crop_transform`.
        out_size: side of the output crop.
        mode: ``grid_sample`` interpolation (``"bilinear"``, ``"nearest"`` or ``"bicubic"``).
    Returns:
        (B, C, out_size, out_size).
    """
    sizes = check_shape(images, "images", ("B", "C", "H", "W"))
    check_shape(transform, "transform", ("B", 3, 3), sizes)
    check_floating(images, "images")
    check_floating(transform, "transform")
    if out_size < 1:
        raise ShapeError(f"out_size must be a positive number of pixels, got {out_size}")
    b, h, w = sizes["B"], sizes["H"], sizes["W"]
    dtype = transform.dtype
    r = torch.arange(out_size, device=transform.device, dtype=dtype)
    gy, gx = torch.meshgrid(r, r, indexing="ij")
    pts = torch.stack([gx, gy], dim=-1).reshape(1, -1, 2).expand(b, -1, -1)
    src = crop_to_pixels(pts, transform)
    grid = pixels_to_ndc(src, (h, w)).reshape(b, out_size, out_size, 2)
    return F.grid_sample(
        images,
        grid.to(device=images.device, dtype=images.dtype),
        mode=mode,
        padding_mode="zeros",
        align_corners=False,
    )


def crop_ndc_to_pixels(ndc: torch.Tensor, transform: torch.Tensor, crop_size: int = 224) -> torch.Tensor:
    """Crop NDC (weak-perspective output, y already flipped down) → original-frame pixels.

    Args:
        ndc: (B, N, 2) ``(x, y)`` in ``[-1, 1]`` of the crop (edges), y down.
        transform: (B, 3, 3) the crop's transform (original pixels → crop pixels).
        crop_size: side of the crop the NDC refers to.
    Returns:
        (B, N, 2) pixel coordinates in the original frame.
    """
    check_shape(ndc, "ndc", ("B", "N", 2))
    return crop_to_pixels(ndc_to_pixels(ndc, (crop_size, crop_size)), transform)


def pixels_to_crop_ndc(points: torch.Tensor, transform: torch.Tensor, crop_size: int = 224) -> torch.Tensor:
    """(B, N, 2) original-frame pixels → crop NDC (inverse of :func:`crop_ndc_to_pixels`)."""
    return pixels_to_ndc(pixels_to_crop(points, transform), (crop_size, crop_size))


def smooth_boxes(
    center: torch.Tensor, size: torch.Tensor, window: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal centred moving average of crop boxes, to reduce crop jitter along a video.

    Frame ``t`` averages frames ``[t - h_t, t + h_t]`` with ``h_t = min(window // 2, t, T - 1 - t)``: the
    window shrinks symmetrically at the ends (stays centred, so a moving face is not lagged; the first and
    last frames are kept as they are) and no frame is dropped. Non-finite boxes (frames without a face) are
    left out of the averages and are filled from their neighbours where the window has any finite box;
    otherwise they stay NaN. Sums are accumulated in float64 (long videos).

    Args:
        center: (..., T, 2) box centres.
        size: (..., T) box sizes.
        window: odd window length in frames (1 = no smoothing).
    Returns:
        Smoothed ``center`` (..., T, 2) and ``size`` (..., T), same dtype.
    """
    sizes = check_shape(center, "center", ("...", "T", 2))
    check_shape(size, "size", ("...", "T"), sizes)
    check_floating(center, "center")
    check_floating(size, "size")
    if center.shape[:-1] != size.shape:
        raise ShapeError(f"center {tuple(center.shape)} and size {tuple(size.shape)} must share leading dims")
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ShapeError(f"window must be a positive odd number of frames, got {window!r}")
    n = sizes["T"]
    if n == 0 or window == 1:
        return center, size
    x = torch.cat([center, size[..., None]], dim=-1).to(torch.float64)
    ok = torch.isfinite(x).all(dim=-1, keepdim=True)
    x = torch.where(ok, x, torch.zeros_like(x))
    okf = ok.to(torch.float64)
    pad = [0, 0, 1, 0]  # one leading zero row along T: csum[..., i, :] = sum of the first i frames
    csum = F.pad(torch.cumsum(x, dim=-2), pad)
    ccnt = F.pad(torch.cumsum(okf, dim=-2), pad)
    t = torch.arange(n, device=center.device)
    half = torch.minimum(torch.minimum(t, n - 1 - t), torch.full_like(t, window // 2))
    lo, hi = t - half, t + half + 1
    total = csum.index_select(-2, hi) - csum.index_select(-2, lo)
    count = ccnt.index_select(-2, hi) - ccnt.index_select(-2, lo)
    mean = torch.where(count > 0, total / count.clamp(min=1.0), torch.full_like(total, float("nan")))
    mean = mean.to(center.dtype)
    return mean[..., :2], mean[..., 2]
