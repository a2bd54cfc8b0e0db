"""Lambert-shaded mesh rendering with vertex colours, on top of :mod:`neuface.render.rasterizer`.

Shading is per pixel: vertex normals (area-weighted, unit) and colours are interpolated with the
perspective-correct barycentrics, the normal is re-normalised, and the intensity is
``ambient + diffuse * max(0, n · l)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError
from neuface.geometry.camera import PinholeCamera
from neuface.geometry.mesh import vertex_normals
from neuface.render.rasterizer import (
    Fragments,
    _check_faces,
    _check_image_size,
    _interpolate_pixels,
    rasterize,
)

DEFAULT_COLOR = 0.8  # light grey


class Camera(Protocol):
    """What :func:`render_mesh` needs from a camera (both camera classes of neuface.geometry.camera)."""

    def to_screen(self, points: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor: ...

    def directions_to_camera(self, points: torch.Tensor) -> torch.Tensor: ...


@dataclass
class RenderResult:
    """Output of :func:`render_mesh`.

    Attributes:
        images: (B, 3, H, W) RGB in [0, 1], composited over the background.
        alpha: (B, 1, H, W) 1 where the mesh covers the pixel, else 0.
        fragments: the rasterizer output (face index, barycentrics, depth).
    """

    images: torch.Tensor
    alpha: torch.Tensor
    fragments: Fragments


def lambert(normals: torch.Tensor, light_dirs: torch.Tensor, ambient: float = 0.3,
            diffuse: float = 0.7) -> torch.Tensor:
    """Lambert intensity ``ambient + diffuse * max(0, n · l)``.

    Args:
        normals: (..., 3) unit surface normals.
        light_dirs: (..., 3) unit directions from the surface towards the light (broadcastable).
    Returns:
        (...,) intensities.
    """
    return ambient + diffuse * (normals * light_dirs).sum(-1).clamp(min=0.0)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _per_batch(x: torch.Tensor | float | tuple, name: str, bsz: int, ref: torch.Tensor) -> torch.Tensor:
    """(3,) / (B, 3) / scalar → (B, 3) tensor on ref's device and dtype."""
    x = torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
    if x.dim() == 0:
        x = x.expand(3)
    if x.dim() == 1:
        check_shape(x, name, (3,))
        x = x.expand(bsz, 3)
    check_shape(x, name, (bsz, 3))
    return x


def render_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    image_size: tuple[int, int],
    vertex_colors: torch.Tensor | None = None,
    light_dir: torch.Tensor | tuple[float, float, float] | None = None,
    ambient: float = 0.3,
    diffuse: float = 0.7,
    background: torch.Tensor | float | tuple[float, float, float] = 0.0,
    two_sided: bool = False,
    cull_backfaces: bool = False,
    max_candidates: int = 1 << 20,
) -> RenderResult:
    """Render Lambert-shaded, vertex-coloured meshes.

    Args:
        vertices: (B, V, 3) model/world-space vertices.
        faces: (F, 3) vertex indices, counter-clockwise seen from outside.
        camera: a :class:`~neuface.geometry.camera.WeakPerspectiveCamera` or
            :class:`~neuface.geometry.camera.PinholeCamera` (batch B); pinhole cameras get perspective-correct
            interpolation and skip faces behind the camera.
        image_size: ``(H, W)``.
        vertex_colors: (B, V, 3) or (V, 3) RGB in [0, 1]; default light grey.
        light_dir: (3,) or (B, 3) direction from the surface towards a distant light, in model/world space;
            ``None`` = headlight (light from the camera, per pixel).
        ambient, diffuse: Lambert coefficients (intensity ``ambient + diffuse * max(0, n·l)``).
        background: (3,) colour / scalar grey, or a (B, 3, H, W) image to composite over.
        two_sided: light the back side of faces too (normals flipped to face the camera).
        cull_backfaces: do not rasterize faces turned away from the camera.
        max_candidates: memory bound of the rasterizer (see :func:`rasterize`).

    Returns:
        :class:`RenderResult`; differentiable w.r.t. vertices (through barycentrics and normals), vertex
        colours, light direction and background.
    """
    sizes = check_shape(vertices, "vertices", ("B", "V", 3))
    check_floating(vertices, "vertices")
    bsz, num_v = sizes["B"], sizes["V"]
    h, w = _check_image_size(image_size)
    faces = _check_faces(faces, num_v, vertices.device)
    if vertex_colors is None:
        vertex_colors = vertices.new_full((bsz, num_v, 3), DEFAULT_COLOR)
    elif isinstance(vertex_colors, torch.Tensor) and vertex_colors.dim() == 2:
        vertex_colors = vertex_colors.expand(bsz, -1, -1)
    check_shape(vertex_colors, "vertex_colors", (bsz, num_v, 3))
    light = None if light_dir is None else _normalize(_per_batch(light_dir, "light_dir", bsz, vertices))
    if isinstance(background, torch.Tensor) and background.dim() == 4:
        check_shape(background, "background", (bsz, 3, h, w))
        bg = background.to(vertices.dtype)
    else:
        try:
            bg = _per_batch(background, "background", bsz, vertices)[:, :, None, None]
        except (ShapeError, RuntimeError, TypeError, ValueError) as exc:
            raise ShapeError(f"background must be a scalar, (3,), (B, 3) or (B, 3, H, W): {exc}") from exc

    screen = camera.to_screen(vertices, (h, w))
    check_shape(screen, "camera.to_screen(vertices)", (bsz, num_v, 3))
    perspective = isinstance(camera, PinholeCamera)
    fragments = rasterize(screen, faces, (h, w), cull_backfaces, perspective_correct=perspective,
                          max_candidates=max_candidates)

    # Shade only the covered pixels (P of them), then scatter into the image.
    mask = fragments.mask
    pix = mask.reshape(-1).nonzero().squeeze(1)
    attrs = [vertex_colors.to(vertices.dtype), vertex_normals(vertices, faces)]
    need_view = light_dir is None or two_sided
    if need_view:
        attrs.append(camera.directions_to_camera(vertices))
    pixel = _interpolate_pixels(fragments, torch.cat(attrs, dim=-1), faces, pix)  # (P, 6 or 9)
    color, normal = pixel[:, 0:3], _normalize(pixel[:, 3:6])
    view = _normalize(pixel[:, 6:9]) if need_view else None
    if two_sided:
        facing = (normal * view).sum(-1, keepdim=True) >= 0
        normal = torch.where(facing, normal, -normal)
    if light is None:
        light = view
    else:
        light = light.index_select(0, torch.div(pix, h * w, rounding_mode="floor"))
    shaded = (color * lambert(normal, light, ambient, diffuse)[:, None]).clamp(0.0, 1.0)
    rgb = shaded.new_zeros(bsz * h * w, 3).index_put((pix,), shaded).view(bsz, h, w, 3).permute(0, 3, 1, 2)

    images = torch.where(mask[:, None], rgb, bg)
    alpha = mask[:, None].to(vertices.dtype)
    return RenderResult(images=images, alpha=alpha, fragments=fragments)
