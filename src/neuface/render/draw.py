"""Overlays and image output: landmark discs drawn on image batches, PNG writing."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from neuface.checks import check_shape
from neuface.errors import ShapeError
from neuface.io_utils import atomic_path


def draw_landmarks(
    images: torch.Tensor,
    points: torch.Tensor,
    color: torch.Tensor | tuple[float, float, float] = (0.0, 1.0, 0.0),
    radius: float = 2.0,
) -> torch.Tensor:
    """Draw filled discs at 2D points (vectorized splatting; no loop over points).

    A pixel ``(x, y)`` (centres at integers) is painted when ``(x - px)^2 + (y - py)^2 <= radius^2``.

    Args:
        images: (B, C, H, W) images (C is 3 for RGB; any C matching ``color``).
        points: (B, N, 2) pixel coordinates ``(x, y)``; non-finite points are skipped (use NaN to hide one).
        color: (C,) colour for all points or (N, C) one per point.
        radius: disc radius in pixels (>= 0; 0 paints the pixel whose centre is the point, if any).

    Returns:
        (B, C, H, W) a new tensor with the discs drawn (``images`` is not modified).
    """
    sizes = check_shape(images, "images", ("B", "C", "H", "W"))
    check_shape(points, "points", ("B", "N", 2), sizes)
    if radius < 0 or not math.isfinite(radius):
        raise ShapeError(f"radius must be finite and >= 0, got {radius}")
    bsz, ch, h, w, n = sizes["B"], sizes["C"], sizes["H"], sizes["W"], sizes["N"]
    color = torch.as_tensor(color, dtype=images.dtype, device=images.device)
    if color.dim() == 1:
        check_shape(color, "color", (ch,))
        color = color.expand(n, ch)
    check_shape(color, "color", (n, ch))

    r = int(math.ceil(radius))
    offs = torch.arange(-r, r + 1, device=images.device)
    oy, ox = torch.meshgrid(offs, offs, indexing="ij")
    pts = points.detach().to(images.dtype)
    finite = torch.isfinite(pts).all(-1)
    centre = torch.where(finite[..., None], pts, torch.zeros_like(pts)).round().long()
    x = centre[..., 0, None, None] + ox  # (B, N, K, K)
    y = centre[..., 1, None, None] + oy
    dist2 = (x - pts[..., 0, None, None]) ** 2 + (y - pts[..., 1, None, None]) ** 2
    keep = finite[..., None, None] & (dist2 <= radius**2) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    batch = torch.arange(bsz, device=images.device).view(bsz, 1, 1, 1).expand_as(x)
    flat = ((batch * h + y) * w + x)[keep]
    colors = color[None, :, None, None, :].expand(bsz, n, 2 * r + 1, 2 * r + 1, ch)[keep]
    out = images.permute(0, 2, 3, 1).reshape(bsz * h * w, ch).clone()
    out[flat] = colors
    return out.view(bsz, h, w, ch).permute(0, 3, 1, 2).contiguous()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float image in [0, 1] (or uint8) → (H, W, C) uint8 numpy array (clamped, rounded)."""
    check_shape(image, "image", ("C", "H", "W"))
    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return image.permute(1, 2, 0).cpu().numpy()


def save_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write a (C, H, W) image (C = 1, 3 or 4; float in [0, 1] or uint8) to a PNG file, atomically."""
    from PIL import Image

    check_shape(image, "image", ("C", "H", "W"))
    if image.shape[0] not in (1, 3, 4):
        raise ShapeError(f"image must have 1, 3 or 4 channels, got {image.shape[0]}")
    arr = to_uint8(image)
    if arr.shape[2] == 1:
        arr = arr[..., 0]
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
