"""Camera projections: DECA weak perspective and OpenCV-style pinhole (conventions: :mod:`neuface.geometry`).

Screen space, shared by projection and the rasterizer, is ``(x_pix, y_pix, depth)``: pixel coordinates with
integer values at pixel centres (``align_corners=False`` convention) and a depth that grows away from the
camera (smaller = closer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuface.checks import check_floating, check_shape


def weak_perspective_project(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """DECA weak perspective: ``ndc = s * (X[..., :2] + t)`` with the y axis flipped (image y points down).

    Args:
        points: (B, N, 3) model-space points (metres; +y up, +z towards the camera).
        cam: (B, 3) camera ``(s, tx, ty)``.

    Returns:
        (B, N, 3): ``(x_ndc, y_ndc, depth)`` where x/y are in crop NDC ([-1, 1] spans the crop, y down) and
        ``depth = -s * Z`` (smaller = closer to the camera).
    """
    sizes = check_shape(points, "points", ("B", "N", 3))
    check_shape(cam, "cam", ("B", 3), sizes)
    check_floating(points, "points")
    s = cam[:, None, 0:1]
    xy = s * (points[..., :2] + cam[:, None, 1:3])
    return torch.cat([xy[..., 0:1], -xy[..., 1:2], -s * points[..., 2:3]], dim=-1)


def ndc_to_pixels(xy: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Map NDC ``[-1, 1]`` (edges of the image) to pixel coordinates (centres at integers).

    Args:
        xy: (..., 2) NDC coordinates (x right, y down).
        image_size: ``(H, W)``.
    Returns:
        (..., 2) pixel coordinates ``(x, y)``.
    """
    check_shape(xy, "xy", ("...", 2))
    check_floating(xy, "xy")
    h, w = image_size
    scale = xy.new_tensor([w / 2.0, h / 2.0])
    return (xy + 1.0) * scale - 0.5


def pixels_to_ndc(xy: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`ndc_to_pixels`."""
    check_shape(xy, "xy", ("...", 2))
    check_floating(xy, "xy")
    h, w = image_size
    scale = xy.new_tensor([w / 2.0, h / 2.0])
    return (xy + 0.5) / scale - 1.0


def pinhole_project(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """OpenCV pinhole projection ``x_cam = R X + t``, ``x_pix = K x_cam / z_cam``.

    Args:
        points: (B, N, 3) world points.
        K: (B, 3, 3) intrinsics (pixels, centres at integers).
        R: (B, 3, 3) world→camera rotation (camera looks along +z_cam, y_cam down).
        t: (B, 3) world→camera translation.

    Returns:
        (B, N, 3): ``(x_pix, y_pix, z_cam)``; ``z_cam`` is the depth (smaller = closer).
    """
    sizes = check_shape(points, "points", ("B", "N", 3))
    check_shape(K, "K", ("B", 3, 3), sizes)
    check_shape(R, "R", ("B", 3, 3), sizes)
    check_shape(t, "t", ("B", 3), sizes)
    check_floating(points, "points")
    cam_pts = points @ R.transpose(1, 2) + t[:, None, :]
    z = cam_pts[..., 2:3]
    uvw = cam_pts @ K.transpose(1, 2)
    return torch.cat([uvw[..., :2] / z.clamp(min=1e-8), z], dim=-1)


@dataclass
class WeakPerspectiveCamera:
    """A batch of DECA weak-perspective cameras rendering into ``image_size`` (the crop).

    Attributes:
        cam: (B, 3) ``(s, tx, ty)``.
    """

    cam: torch.Tensor

    def to_screen(self, points: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 3) model points → (B, N, 3) screen ``(x_pix, y_pix, depth)``."""
        proj = weak_perspective_project(points, self.cam)
        return torch.cat([ndc_to_pixels(proj[..., :2], image_size), proj[..., 2:]], dim=-1)

    def directions_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) unit vectors from each point towards the camera (model space): always +z."""
        d = torch.zeros_like(points)
        d[..., 2] = 1.0
        return d


@dataclass
class PinholeCamera:
    """A batch of OpenCV pinhole cameras (see :func:`pinhole_project`).

    Attributes:
        K: (B, 3, 3) intrinsics.
        R: (B, 3, 3) world→camera rotations.
        t: (B, 3) world→camera translations.
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor

    def to_screen(self, points: torch.Tensor, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, N, 3) world points → (B, N, 3) screen ``(x_pix, y_pix, depth)``; image_size is unused."""
        return pinhole_project(points, self.K, self.R, self.t)

    def centers(self) -> torch.Tensor:
        """(B, 3) camera centres in world coordinates, ``-R^T t``."""
        return -(self.R.transpose(1, 2) @ self.t[..., None])[..., 0]

    def directions_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) unit vectors from each world point towards its camera centre."""
        d = self.centers()[:, None, :] - points
        return d / d.norm(dim=-1, keepdim=True).clamp(min=1e-12)
