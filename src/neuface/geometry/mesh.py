"""Triangle-mesh utilities: normals and the per-vertex visibility used by NeuFace's multi-view merge.

Visibility (paper §3.2; official code): a vertex is *visible* in a view iff the angle between its normal and
the ray towards the camera is at most ``tau_a`` (72°) **and** its depth coordinate ``z >= tau_z`` (-0.08 m),
with ``z`` taken in the camera-aligned model frame (+z towards the camera, i.e. after the view's head
rotation). The paper's sentence ("invisible if the angle is larger than τa, and ... z < τz") is read the way
the official code implements it: ``visible = (n · d >= cos τa) & (z >= τz)``.
"""

from __future__ import annotations

import math

import torch

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError

__all__ = [
    "TAU_A_DEG",
    "TAU_Z",
    "face_normals",
    "vertex_normals",
    "vertex_visibility",
    "visibility_confidence",
]

#: NeuFace's visibility thresholds (paper §3.2).
TAU_A_DEG = 72.0
TAU_Z = -0.08


def _check_mesh(vertices: torch.Tensor, faces: torch.Tensor) -> dict[str, int]:
    sizes = check_shape(vertices, "vertices", ("B", "V", 3))
    check_shape(faces, "faces", ("F", 3))
    check_floating(vertices, "vertices")
    if faces.dtype not in (torch.int64, torch.int32):
        raise ShapeError(f"faces must be an int64/int32 tensor, got dtype {faces.dtype}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= sizes["V"]):
        raise ShapeError(f"faces index vertices outside [0, {sizes['V']})")
    return sizes


def _face_cross(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, F, 3) un-normalized face normals ``(v1 - v0) × (v2 - v0)`` (norm = twice the area)."""
    faces = faces.to(device=vertices.device, dtype=torch.long)
    v0 = vertices[:, faces[:, 0]]
    v1 = vertices[:, faces[:, 1]]
    v2 = vertices[:, faces[:, 2]]
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def _normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=eps)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit face normals, counter-clockwise winding (right-hand rule on ``v0, v1, v2``).

    Args:
        vertices: (B, V, 3).
        faces: (F, 3) integer vertex indices.
    Returns:
        (B, F, 3) unit normals (zero for degenerate faces).
    """
    _check_mesh(vertices, faces)
    return _normalize(_face_cross(vertices, faces))


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (sum of the incident faces' cross products, normalized).

    Args:
        vertices: (B, V, 3).
        faces: (F, 3) integer vertex indices.
    Returns:
        (B, V, 3) unit normals (zero for vertices without a non-degenerate face).
    """
    sizes = _check_mesh(vertices, faces)
    cross = _face_cross(vertices, faces)  # (B, F, 3)
    idx = faces.to(device=vertices.device, dtype=torch.long).reshape(-1)  # (3F,) corner order f0c0, f0c1, ...
    src = cross.repeat_interleave(3, dim=1)  # (B, 3F, 3) matching idx
    acc = vertices.new_zeros(sizes["B"], sizes["V"], 3).index_add(1, idx, src)
    return _normalize(acc)


def _cos_to_camera(
    vertices: torch.Tensor, normals: torch.Tensor, directions_to_camera: torch.Tensor | None
) -> torch.Tensor:
    sizes = check_shape(vertices, "vertices", ("B", "V", 3))
    check_shape(normals, "normals", ("B", "V", 3), sizes)
    check_floating(vertices, "vertices")
    check_floating(normals, "normals")
    n = _normalize(normals)
    if directions_to_camera is None:
        return n[..., 2]
    check_shape(directions_to_camera, "directions_to_camera", ("B", "V", 3), sizes)
    check_floating(directions_to_camera, "directions_to_camera")
    return (n * _normalize(directions_to_camera)).sum(dim=-1)


def vertex_visibility(
    vertices: torch.Tensor,
    normals: torch.Tensor,
    directions_to_camera: torch.Tensor | None = None,
    tau_a_deg: float = TAU_A_DEG,
    tau_z: float = TAU_Z,
) -> torch.Tensor:
    """NeuFace per-vertex visibility: ``angle(normal, ray to camera) <= tau_a`` and ``z >= tau_z``.

    Args:
        vertices: (B, V, 3) in the camera-aligned model frame (+z towards the camera), metres.
        normals: (B, V, 3) vertex normals (normalized here), e.g. :func:`vertex_normals`.
        directions_to_camera: (B, V, 3) vectors from each vertex towards its camera (normalized here), or None
            for an orthographic / weak-perspective camera looking down -z (ray ``+z``).
        tau_a_deg: maximum angle in degrees.
        tau_z: minimum ``z`` (metres).
    Returns:
        (B, V) bool.
    """
    cos = _cos_to_camera(vertices, normals, directions_to_camera)
    return (cos >= math.cos(math.radians(tau_a_deg))) & (vertices[..., 2] >= tau_z)


def visibility_confidence(
    vertices: torch.Tensor,
    normals: torch.Tensor,
    directions_to_camera: torch.Tensor | None = None,
    tau_a_deg: float = TAU_A_DEG,
    tau_z: float = TAU_Z,
    soft_deg: float = 0.0,
) -> torch.Tensor:
    """Per-vertex merge weight for the multi-view target: 1 where visible, 0 where not.

    With ``soft_deg > 0`` the angular cut is softened by a cosine ramp inside the visible cone: the weight
    is 1 for angles ``<= tau_a - soft_deg``, falls as ``(1 + cos(π (angle - tau_a + soft_deg) / soft_deg)) /
    2`` and reaches 0 at ``tau_a``. It is never positive where :func:`vertex_visibility` is False (the depth
    cut stays hard), so the soft weights only down-weight grazing vertices.

    Args:
        vertices, normals, directions_to_camera, tau_a_deg, tau_z: as in :func:`vertex_visibility`.
        soft_deg: width of the ramp in degrees (0 = hard 0/1 weights).
    Returns:
        (B, V) float weights in ``[0, 1]`` (dtype of ``vertices``).
    """
    if soft_deg < 0 or soft_deg > tau_a_deg:
        raise ShapeError(f"soft_deg must be in [0, tau_a_deg={tau_a_deg}], got {soft_deg}")
    cos = _cos_to_camera(vertices, normals, directions_to_camera)
    visible = (cos >= math.cos(math.radians(tau_a_deg))) & (vertices[..., 2] >= tau_z)
    if soft_deg == 0:
        return visible.to(vertices.dtype)
    angle = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
    u = ((angle - (tau_a_deg - soft_deg)) / soft_deg).clamp(0.0, 1.0)
    ramp = 0.5 * (1.0 + torch.cos(math.pi * u))
    return torch.where(visible, ramp, torch.zeros_like(ramp))
