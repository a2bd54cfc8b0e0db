"""Pure-torch mesh rendering: z-buffer rasterizer, vertex-colour Lambert shading, overlays, PNG output.

pytorch3d does not install everywhere, so neuface ships its own small renderer (CPU and CUDA, batched,
differentiable w.r.t. vertex positions through barycentrics and w.r.t. colours). Screen-space conventions are
those of :mod:`neuface.geometry.camera`.
"""

from neuface.render.draw import draw_landmarks, save_png, to_uint8
from neuface.render.primitives import grid_plane, uv_sphere
from neuface.render.rasterizer import Fragments, interpolate, rasterize
from neuface.render.shading import RenderResult, lambert, render_mesh

__all__ = [
    "Fragments",
    "RenderResult",
    "draw_landmarks",
    "grid_plane",
    "interpolate",
    "lambert",
    "rasterize",
    "render_mesh",
    "save_png",
    "to_uint8",
    "uv_sphere",
]
