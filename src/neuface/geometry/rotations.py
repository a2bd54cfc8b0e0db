"""Rotation conversions (axis-angle, matrices, XYZW quaternions, 6D) built on :mod:`roma`.

Conventions (see :mod:`neuface.geometry`): matrices act on column vectors (``x' = R x``), axis-angle vectors
are in radians, quaternions are **XYZW** and unit norm. Every function takes any number of leading batch
dims, is device/dtype agnostic and differentiable (sign choices in the quaternion helpers are piecewise
constant).

Numerics: axis-angle → matrix goes through the quaternion (``sinc``-based, smooth at zero and exactly
orthonormal for any angle); matrix → quaternion uses Markley's variant of Shepperd's method (accurate near π).
"""

from __future__ import annotations

import roma
import torch

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "axis_angle_to_quaternion",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "canonicalize_quaternions",
    "quaternion_hemisphere",
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
    "compose_axis_angle",
]


def _normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=eps)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (rotation vector) → rotation matrix.

    Args:
        axis_angle: (..., 3) rotation vectors (radians; direction = axis, norm = angle).
    Returns:
        (..., 3, 3) rotation matrices.
    """
    check_shape(axis_angle, "axis_angle", ("...", 3))
    check_floating(axis_angle, "axis_angle")
    return roma.unitquat_to_rotmat(roma.rotvec_to_unitquat(axis_angle))


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix → axis-angle with angle in ``[0, π]``.

    Args:
        matrix: (..., 3, 3) rotation matrices.
    Returns:
        (..., 3) rotation vectors.
    """
    check_shape(matrix, "matrix", ("...", 3, 3))
    check_floating(matrix, "matrix")
    return roma.unitquat_to_rotvec(roma.rotmat_to_unitquat(matrix), shortest_arc=True)


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle → unit quaternion (XYZW). For angles ≤ π the result has ``w >= 0``.

    Args:
        axis_angle: (..., 3).
    Returns:
        (..., 4) unit quaternions, XYZW.
    """
    check_shape(axis_angle, "axis_angle", ("...", 3))
    check_floating(axis_angle, "axis_angle")
    return roma.rotvec_to_unitquat(axis_angle)


def quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """Quaternion (XYZW, normalized here) → axis-angle with angle in ``[0, π]`` (``q`` and ``-q`` agree).

    Args:
        quaternion: (..., 4) non-zero quaternions, XYZW.
    Returns:
        (..., 3) rotation vectors.
    """
    check_shape(quaternion, "quaternion", ("...", 4))
    check_floating(quaternion, "quaternion")
    return roma.unitquat_to_rotvec(_normalize(quaternion), shortest_arc=True)


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Quaternion (XYZW, normalized here) → rotation matrix.

    Args:
        quaternion: (..., 4) non-zero quaternions, XYZW.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    check_shape(quaternion, "quaternion", ("...", 4))
    check_floating(quaternion, "quaternion")
    return roma.unitquat_to_rotmat(_normalize(quaternion))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix → unit quaternion (XYZW). The sign is arbitrary; see :func:`quaternion_hemisphere`.

    Args:
        matrix: (..., 3, 3) rotation matrices.
    Returns:
        (..., 4) unit quaternions, XYZW.
    """
    check_shape(matrix, "matrix", ("...", 3, 3))
    check_floating(matrix, "matrix")
    return roma.rotmat_to_unitquat(matrix)


def quaternion_hemisphere(quaternion: torch.Tensor) -> torch.Tensor:
    """Flip the sign of quaternions with ``w < 0`` so that every output has ``w >= 0`` (same rotation).

    Args:
        quaternion: (..., 4) XYZW.
    Returns:
        (..., 4) XYZW with ``w >= 0``.
    """
    check_shape(quaternion, "quaternion", ("...", 4))
    check_floating(quaternion, "quaternion")
    sign = torch.where(quaternion[..., 3:4] < 0, -1.0, 1.0).to(quaternion.dtype)
    return quaternion * sign


def canonicalize_quaternions(quaternion: torch.Tensor, dim: int = -2, anchor: bool = True) -> torch.Tensor:
    """Remove sign flips along a time axis: consecutive outputs have non-negative dot products.

    ``q`` and ``-q`` are the same rotation, so averaging/differencing quaternions over time (temporal losses,
    median targets) needs them on one continuous branch. With ``s_t = sign(q_t · q_{t-1})`` (``+1`` for 0) the
    output is ``q_t · prod_{k<=t} s_k``, computed with a cumulative product (no loop over time).

    Args:
        quaternion: (..., T, 4) XYZW quaternions (or any layout with the time axis at ``dim`` and 4 last).
        dim: the time dim (default -2, i.e. shape ``(..., T, 4)``); must not be the last dim.
        anchor: if True, the first quaternion of each sequence is first put in the ``w >= 0`` hemisphere, so
            the output depends only on the rotations, not on the input signs (up to ``w == 0`` ties).
    Returns:
        Tensor of the same shape; the same rotations as the input.
    """
    check_shape(quaternion, "quaternion", ("...", 4))
    check_floating(quaternion, "quaternion")
    ndim = quaternion.dim()
    if ndim < 2 or not (-ndim <= dim < ndim) or dim % ndim == ndim - 1:
        raise ShapeError(
            f"dim={dim} must index a time dim other than the last (quaternion) dim of a tensor of shape "
            f"{tuple(quaternion.shape)}"
        )
    q = quaternion.movedim(dim, -2)
    if q.shape[-2] == 0:
        return quaternion
    dots = (q[..., 1:, :] * q[..., :-1, :]).sum(dim=-1)
    steps = torch.where(dots < 0, -1.0, 1.0).to(q.dtype)
    if anchor:
        first = torch.where(q[..., :1, 3] < 0, -1.0, 1.0).to(q.dtype)
    else:
        first = torch.ones_like(q[..., :1, 3])
    signs = torch.cumprod(torch.cat([first, steps], dim=-1), dim=-1)
    return (q * signs[..., None]).movedim(-2, dim)


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Continuous 6D representation (Zhou et al., CVPR 2019) → rotation matrix by Gram-Schmidt.

    The 6 numbers are the first two **columns** of the matrix, concatenated: ``(R[:, 0], R[:, 1])``.

    Args:
        d6: (..., 6).
    Returns:
        (..., 3, 3) rotation matrices (columns ``b1, b2, b1 × b2``).
    """
    check_shape(d6, "d6", ("...", 6))
    check_floating(d6, "d6")
    b1 = _normalize(d6[..., 0:3])
    a2 = d6[..., 3:6]
    b2 = _normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix → 6D representation (first two columns); inverse of :func:`rotation_6d_to_matrix`.

    Args:
        matrix: (..., 3, 3).
    Returns:
        (..., 6).
    """
    check_shape(matrix, "matrix", ("...", 3, 3))
    check_floating(matrix, "matrix")
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def compose_axis_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Axis-angle of ``R(a) @ R(b)`` (apply ``b`` first, then ``a``), angle in ``[0, π]``.

    Args:
        a: (..., 3) rotation vectors.
        b: (..., 3) rotation vectors; leading dims broadcast with ``a``'s.
    Returns:
        (..., 3) rotation vectors.
    """
    check_shape(a, "a", ("...", 3))
    check_shape(b, "b", ("...", 3))
    check_floating(a, "a")
    check_floating(b, "b")
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError as exc:
        raise ShapeError(f"a {tuple(a.shape)} and b {tuple(b.shape)} do not broadcast") from exc
    q = roma.quat_product(roma.rotvec_to_unitquat(a), roma.rotvec_to_unitquat(b))
    return roma.unitquat_to_rotvec(q, shortest_arc=True)
