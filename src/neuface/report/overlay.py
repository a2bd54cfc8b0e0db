"""Overlay videos: the fitted mesh rendered over the input frames with landmarks, all views tiled, as MP4.

Camera composition. A fit stores per frame and view a DECA weak-perspective camera ``(s, tx, ty)`` in crop
NDC and the crop transform ``T`` (frame pixels → crop pixels, ``x_c = k x + c``). For a model point ``X``:

* crop NDC: ``n = s (X_xy + t)`` (y flipped), crop pixels ``x_c = (n + 1) S / 2 - 0.5`` (S = crop size);
* frame pixels ``p = T⁻¹ x_c = (x_c - c) / k``, i.e. ``p = (s S / 2k) X_xy + const``: still a weak
  perspective, with scale ``s S / (2k)`` pixels per metre;
* output (tile) pixels ``q = g (p + 0.5) - 0.5`` for a tile downscaled by ``g`` (pixel centres at integers).

:class:`FrameCamera` applies this chain (weak perspective → crop pixels → the affine ``A = G T⁻¹``), so the
mesh is rasterized directly in tile pixels (no warping of rendered crops). Depth stays ``-s Z`` (only its order
matters to the z-buffer; ``A`` has a positive determinant so triangle winding is kept). Each frame's mesh uses
its shot's identity β (:func:`neuface.shots.frame_shapes`).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from neuface.errors import NeufaceError
from neuface.geometry.camera import ndc_to_pixels, weak_perspective_project
from neuface.geometry.crop import apply_transform, invert_transform
from neuface.metrics.fitfile import read_fit_arrays
from neuface.shots import frame_shapes

log = logging.getLogger(__name__)

__all__ = ["FrameCamera", "mark_frames", "tile_transform", "render_overlay", "write_overlay_video"]

MESH_COLOR = (0.55, 0.75, 0.95)
DETECTED_COLOR = (0.1, 0.95, 0.1)
PREDICTED_COLOR = (0.95, 0.15, 0.1)
#: Border of a tile whose frame had no detection (the mesh there is interpolated / unconstrained by landmarks).
NO_DETECTION_COLOR = (1.0, 0.0, 1.0)


@dataclass
class FrameCamera:
    """Weak-perspective camera of a crop, seen in another image through an affine map of crop pixels.

    Attributes:
        cam: (B, 3) ``(s, tx, ty)`` in crop NDC.
        crop_to_out: (B, 3, 3) affine map crop pixels → output pixels (e.g. ``G T⁻¹``).
        crop_size: side S of the crop the camera refers to.
    """

    cam: torch.Tensor
    crop_to_out: torch.Tensor
    crop_size: int = 224

    def to_screen(self, points: torch.Tensor, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, N, 3) model points → (B, N, 3) ``(x_out, y_out, depth)``; ``image_size`` is unused."""
        proj = weak_perspective_project(points, self.cam)
        crop_px = ndc_to_pixels(proj[..., :2], (self.crop_size, self.crop_size))
        return torch.cat([apply_transform(crop_px, self.crop_to_out.to(points.dtype)), proj[..., 2:]], dim=-1)

    def directions_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        d = torch.zeros_like(points)
        d[..., 2] = 1.0
        return d


def tile_transform(crop_transforms: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 3, 3) crop transforms ``T`` → ``G T⁻¹`` mapping crop pixels to a frame resized by ``scale``."""
    g = crop_transforms.new_tensor([[scale, 0.0, (scale - 1.0) / 2.0], [0.0, scale, (scale - 1.0) / 2.0],
                                    [0.0, 0.0, 1.0]])
    return g @ invert_transform(crop_transforms)


def _resize(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def mark_frames(images: torch.Tensor, which: torch.Tensor, color: tuple[float, float, float] = NO_DETECTION_COLOR,
                width: int = 3) -> torch.Tensor:
    """(B, 3, H, W) images with a ``width``-pixel border of ``color`` on the frames where ``which`` (B,) is True."""
    out = images.clone()
    if not bool(which.any()):
        return out
    h, w = images.shape[-2:]
    width = max(1, min(width, h // 2, w // 2))
    border = torch.zeros((h, w), dtype=torch.bool, device=images.device)
    border[:width], border[-width:], border[:, :width], border[:, -width:] = True, True, True, True
    paint = torch.as_tensor(color, dtype=images.dtype, device=images.device)[:, None, None]
    sel = which.to(images.device)
    out[sel] = torch.where(border, paint, out[sel])
    return out


def _render_chunk(fit: dict, flame, j: int, start: int, stop: int, bg: torch.Tensor, gv: float, crop_size: int,
                  alpha: float, tile: int) -> torch.Tensor:
    """(B, 3, h, w) background frames of view ``j`` → the same with mesh and landmarks drawn."""
    from neuface.render import draw_landmarks, render_mesh

    dtype = flame.v_template.dtype
    b = stop - start

    def param(key: str, width: int | None = None) -> torch.Tensor:
        return torch.as_tensor(fit[key][start:stop, j, :width], dtype=dtype)

    shape = torch.as_tensor(fit["frame_shapes"][start:stop, : flame.n_shape], dtype=dtype)  # each frame's shot β
    with torch.no_grad():
        out = flame(shape=shape, expression=param("expression", flame.n_exp), global_pose=param("global_pose"),
                    pose=param("pose"))
        T = torch.as_tensor(fit["crop_transforms"][start:stop, j], dtype=torch.float64)
        camera = FrameCamera(param("cam"), tile_transform(T, gv).to(dtype), crop_size)
        colors = torch.tensor(MESH_COLOR, dtype=dtype).expand(flame.num_vertices, 3)
        res = render_mesh(out.vertices, flame.faces, camera, tuple(bg.shape[-2:]), vertex_colors=colors)
        img = bg * (1 - alpha * res.alpha) + res.images * alpha * res.alpha
        gmat = tile_transform(torch.eye(3, dtype=torch.float64).expand(b, 3, 3), gv)
        for key, color in (("landmarks", DETECTED_COLOR), ("landmarks_pred", PREDICTED_COLOR)):
            if key in fit:
                pts = torch.as_tensor(fit[key][start:stop, j], dtype=torch.float64)
                img = draw_landmarks(img, apply_transform(pts, gmat).to(dtype), color=color,
                                     radius=max(1.0, tile / 160))
        if "detected" in fit:  # no face found in this frame: the mesh is not anchored by its landmarks
            missing = torch.from_numpy(~np.asarray(fit["detected"][start:stop, j], dtype=bool))
            img = mark_frames(img, missing, width=max(2, round(tile / 64)))
    return img


def render_overlay(fit_path: str | os.PathLike, frames_path: str | os.PathLike, flame, tile: int = 256,
                   alpha: float = 0.6, max_frames: int | None = None, chunk: int = 16) -> np.ndarray:
    """Tiled overlay frames of a fit: per view the frame with the mesh blended in, detections (green) and the
    fit's projected landmarks (red); a tile whose frame had no detection gets a magenta border.

    Args:
        fit_path: ok fit file (needs ``cam`` and ``crop_transforms``).
        frames_path: its frames file.
        flame: :class:`~neuface.flame.layer.FlameLayer` (the fit's model).
        tile: longer side of each view's tile in pixels.
        alpha: mesh opacity.
        max_frames: render only the first frames.
    Returns:
        (F, H, W, 3) uint8, H and W even (H.264 / yuv420p).
    """
    from neuface.video.store import read_frames

    fit = read_fit_arrays(fit_path)
    if not fit["status"].ok:
        raise NeufaceError(f"{fit_path}: fit failed ({fit['status'].reason}); nothing to overlay")
    for key in ("cam", "crop_transforms"):
        if key not in fit:
            raise NeufaceError(f"{fit_path} has no {key!r}: cannot place the mesh in the frames")
    fit["frame_shapes"] = frame_shapes(fit)  # (F, n_shape): one β per shot of a cut sequence
    views = fit["views"]
    crop_size = int(fit["attrs"].get("crop_size", 224))
    dtype = flame.v_template.dtype
    with h5py.File(frames_path, "r") as src:
        n_f = min(fit["expression"].shape[0], *(src[f"views/{v}/frames"].shape[0] for v in views))
        if max_frames is not None:
            n_f = min(n_f, max_frames)
        h0, w0 = src[f"views/{views[0]}/frames"].shape[1:3]
        g = tile / max(h0, w0)
        th, tw = max(2, round(h0 * g)), max(2, round(w0 * g))
        cols = math.ceil(math.sqrt(len(views)))
        rows = math.ceil(len(views) / cols)
        height, width = rows * th + (rows * th) % 2, cols * tw + (cols * tw) % 2
        video = np.zeros((n_f, height, width, 3), dtype=np.uint8)
        for j, view in enumerate(views):
            r, c = divmod(j, cols)
            hv, wv = src[f"views/{view}/frames"].shape[1:3]
            gv = min(th / hv, tw / wv)  # views may differ in size: fit each in the tile
            size = (max(1, round(hv * gv)), max(1, round(wv * gv)))
            for start in range(0, n_f, chunk):
                stop = min(n_f, start + chunk)
                bg = _resize(read_frames(src, view, start, stop), size).to(dtype)
                img = _render_chunk(fit, flame, j, start, stop, bg, gv, crop_size, alpha, tile)
                tile_img = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                video[start:stop, r * th: r * th + size[0], c * tw: c * tw + size[1]] = tile_img
    return video


def write_overlay_video(fit_path: str | os.PathLike, frames_path: str | os.PathLike, flame,
                        out: str | os.PathLike, tile: int = 256, max_frames: int | None = None,
                        fps: float | None = None) -> Path:
    """Render :func:`render_overlay` and encode it as H.264 MP4 at ``out`` (atomic); returns the path."""
    from neuface.synthetic.capture import write_mp4

    video = render_overlay(fit_path, frames_path, flame, tile=tile, max_frames=max_frames)
    if fps is None:
        fps = float(read_fit_arrays(fit_path)["attrs"].get("fps", 25.0))
        fps = fps if math.isfinite(fps) and fps > 0 else 25.0
    path = write_mp4(video, out, fps=fps)
    log.info("wrote overlay %s (%d frames)", path, video.shape[0])
    return path
