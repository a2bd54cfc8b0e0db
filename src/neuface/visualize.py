"""Pictures of meshes: framing cameras, landmark overlays and the head-model contact sheet.

Built on :mod:`neuface.render` (rasterizer) and :class:`~neuface.flame.layer.FlameLayer`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from neuface.checks import check_shape
from neuface.geometry.camera import WeakPerspectiveCamera

log = logging.getLogger(__name__)

#: The contact-sheet panels: (title, yaw in degrees, jaw opening in radians, expression coefficients 0..2).
PREVIEW_POSES = (
    ("neutral", 0.0, 0.0, (0.0, 0.0, 0.0)),
    ("turned", 35.0, 0.0, (0.0, 0.0, 0.0)),
    ("talking", -20.0, 0.22, (1.5, 1.0, 0.0)),
)


def framing_camera(vertices: torch.Tensor, margin: float = 1.15) -> WeakPerspectiveCamera:
    """A weak-perspective camera per mesh that fits its x/y extent into the image.

    Args:
        vertices: (B, V, 3) model-space vertices.
        margin: extent multiplier (> 1 leaves a border).
    Returns:
        WeakPerspectiveCamera with cam (B, 3).
    """
    check_shape(vertices, "vertices", ("B", "V", 3))
    lo = vertices[..., :2].amin(dim=1)
    hi = vertices[..., :2].amax(dim=1)
    extent = (hi - lo).amax(dim=-1).clamp(min=1e-6) * margin
    scale = 2.0 / extent
    return WeakPerspectiveCamera(torch.cat([scale[:, None], -(lo + hi) / 2.0], dim=-1))


def render_preview(flame, size: int = 384, device: str | torch.device = "cpu") -> torch.Tensor:
    """Render the contact sheet of :data:`PREVIEW_POSES` for a FlameLayer.

    Args:
        flame: a :class:`~neuface.flame.layer.FlameLayer` (with landmark embedding for the overlay).
        size: side of each square panel in pixels.
    Returns:
        (3, size, size * len(PREVIEW_POSES)) RGB image in [0, 1].
    """
    from neuface.render import draw_landmarks, render_mesh

    n = len(PREVIEW_POSES)
    dtype = flame.v_template.dtype
    global_pose = torch.zeros(n, 3, dtype=dtype, device=device)
    pose = torch.zeros(n, 12, dtype=dtype, device=device)
    expression = torch.zeros(n, flame.n_exp, dtype=dtype, device=device)
    for i, (_, yaw, jaw, exp) in enumerate(PREVIEW_POSES):
        global_pose[i, 1] = math.radians(yaw)
        pose[i, 3] = jaw
        expression[i, : len(exp)] = torch.tensor(exp[: flame.n_exp], dtype=dtype)
    with torch.no_grad():
        out = flame(expression=expression, global_pose=global_pose, pose=pose)
        camera = framing_camera(out.vertices)
        images = render_mesh(out.vertices, flame.faces, camera, (size, size)).images
        if out.landmarks2d is not None:
            points = camera.to_screen(out.landmarks2d, (size, size))[..., :2]
            images = draw_landmarks(images, points, color=(0.9, 0.1, 0.1), radius=max(1.0, size / 160))
    return torch.cat(list(images), dim=-1)


def write_preview(model_path: str | Path, embedding_path: str | Path | None, out: str | Path, size: int) -> Path:
    """Load a FLAME-format model (+ embedding), render the contact sheet and save it as PNG at ``out``."""
    from neuface.flame import FlameLayer
    from neuface.render import save_png

    flame = FlameLayer.from_files(model_path, embedding_path, n_shape=100, n_exp=50)
    image = render_preview(flame, size=size)
    save_png(image, out)
    log.info("wrote %s (%dx%d, panels: %s)", out, image.shape[2], image.shape[1],
             ", ".join(p[0] for p in PREVIEW_POSES))
    return Path(out)
