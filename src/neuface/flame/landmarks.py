"""Mesh landmarks: barycentric interpolation and DECA's yaw-dependent face contour.

The 68 iBUG landmarks of the 2D (image) loss are ``[17 contour, 51 static]``: the 51 inner points (iBUG
17..67) have fixed faces; the 17 jaw-line points come from a look-up table with one row per integer head yaw
in degrees, so the contour follows the silhouette as the head turns. The "3D" 68 landmarks use fixed faces
(``full_lmk_*``).

Contour rule (DECA ``decalib/models/FLAME.py``, ``FLAME._find_dynamic_lmk_idx_and_bcoords``, the method DECA's
forward pass uses; verified against the source):

* ``R = R_global · R_neck`` (the neck's kinematic chain, root last: ``rel = R_k · rel`` for ``k`` in
  ``[neck, global]``);
* ``yaw = atan2(-R[2, 0], sqrt(R[0, 0]² + R[1, 0]²))`` in degrees — **not negated** (the module-level
  ``find_dynamic_lmk_idx_and_bcoords`` in DECA's ``lbs.py``, inherited from smplx and unused by DECA's
  FLAME, negates it; we follow the method DECA actually runs);
* ``y = round(min(yaw, 39))`` (``torch.round``: half to even);
* row ``y`` for ``y ≥ 0``; row ``39 - y`` (= 39 + |y|, i.e. 40..78) for ``-39 ≤ y < 0``; row 78 for
  ``y < -39``.

So positive yaw (a rotation about +y: the face turns towards +x, the subject's left) uses rows 0..39 and
negative yaw rows 40..78.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError
from neuface.flame.lbs import batch_rodrigues

__all__ = [
    "vertices2landmarks",
    "neck_chain",
    "head_yaw_degrees",
    "contour_rows",
    "dynamic_contour",
    "MAX_YAW_BIN",
]

#: Rows 0..39 (yaw 0..39°) and 40..78 (yaw -1..-39°) of the contour look-up table.
MAX_YAW_BIN = 39


def vertices2landmarks(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    lmk_faces_idx: torch.Tensor,
    lmk_bary_coords: torch.Tensor,
) -> torch.Tensor:
    """Barycentric landmarks: ``L_bl = Σ_i bary[b, l, i] · vertices[b, faces[idx[b, l], i]]``.

    Args:
        vertices: (B, V, 3).
        faces: (F, 3) long.
        lmk_faces_idx: (L,) shared or (B, L) per-sample face indices.
        lmk_bary_coords: (L, 3) shared or (B, L, 3) per-sample barycentric coordinates.
    Returns:
        (B, L, 3) landmarks.
    """
    sizes = check_shape(vertices, "vertices", ("B", "V", 3))
    check_floating(vertices, "vertices")
    check_shape(faces, "faces", ("F", 3))
    if lmk_faces_idx.dim() == 1:
        check_shape(lmk_faces_idx, "lmk_faces_idx", ("L",), sizes)
    else:
        check_shape(lmk_faces_idx, "lmk_faces_idx", ("B", "L"), sizes)
    if lmk_bary_coords.dim() == 2:
        check_shape(lmk_bary_coords, "lmk_bary_coords", ("L", 3), sizes)
    else:
        check_shape(lmk_bary_coords, "lmk_bary_coords", ("B", "L", 3), sizes)
    lmk_faces = faces[lmk_faces_idx]  # (L, 3) or (B, L, 3) vertex ids
    if lmk_faces.dim() == 2:
        corners = vertices[:, lmk_faces]  # (B, L, 3 corners, 3 xyz)
    else:
        batch = torch.arange(sizes["B"], device=vertices.device)[:, None, None]
        corners = vertices[batch, lmk_faces]
    bary = lmk_bary_coords.to(vertices.dtype)
    return (corners * bary[..., None]).sum(dim=-2)


def neck_chain(parents: Sequence[int] | torch.Tensor, neck_index: int = 1) -> list[int]:
    """Joint indices from ``neck_index`` up to the root (FLAME: ``[1, 0]``)."""
    plist = parents.tolist() if isinstance(parents, torch.Tensor) else [int(p) for p in parents]
    if not 0 <= neck_index < len(plist):
        raise ShapeError(f"neck_index {neck_index} out of range for {len(plist)} joints")
    chain = [neck_index]
    while plist[chain[-1]] != -1:
        chain.append(plist[chain[-1]])
        if len(chain) > len(plist):
            raise ShapeError(f"parents {plist} contain a cycle")
    return chain


def head_yaw_degrees(rot_mats: torch.Tensor) -> torch.Tensor:
    """DECA's yaw of a rotation matrix: ``atan2(-R[2,0], sqrt(R[0,0]² + R[1,0]²))`` in degrees.

    Args:
        rot_mats: (..., 3, 3).
    Returns:
        (...) angles in degrees.
    """
    check_shape(rot_mats, "rot_mats", ("...", 3, 3))
    cos_part = torch.sqrt(rot_mats[..., 0, 0] ** 2 + rot_mats[..., 1, 0] ** 2)
    return torch.atan2(-rot_mats[..., 2, 0], cos_part) * (180.0 / math.pi)


def contour_rows(yaw_degrees: torch.Tensor) -> torch.Tensor:
    """Row of the (79, 17) contour table for each yaw (degrees), following DECA exactly (module docstring).

    Args:
        yaw_degrees: (...) yaw angles.
    Returns:
        (...) long row indices in ``[0, 78]``.
    """
    y = torch.round(yaw_degrees.clamp(max=MAX_YAW_BIN)).clamp(min=-MAX_YAW_BIN).long()
    return torch.where(y < 0, MAX_YAW_BIN - y, y)


def dynamic_contour(
    full_pose: torch.Tensor,
    dynamic_faces_idx: torch.Tensor,
    dynamic_bary_coords: torch.Tensor,
    parents: Sequence[int] | torch.Tensor = (-1, 0, 1, 1, 1),
    neck_index: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select the 17 contour landmarks' faces and barycentric coordinates from the head yaw.

    Args:
        full_pose: (B, J, 3) axis-angle or (B, J, 3, 3) rotation matrices of all joints (FLAME: global, neck,
            jaw, eyes).
        dynamic_faces_idx: (N, C) table (DECA: (79, 17)).
        dynamic_bary_coords: (N, C, 3).
        parents: kinematic parents (default FLAME's).
        neck_index: joint whose chain to the root defines the head rotation (FLAME: 1).
    Returns:
        faces_idx: (B, C) long.
        bary_coords: (B, C, 3).
    """
    if full_pose.dim() == 4:
        check_shape(full_pose, "full_pose", ("B", "J", 3, 3))
        rot_mats = full_pose
    else:
        check_shape(full_pose, "full_pose", ("B", "J", 3))
        rot_mats = None
    sizes = check_shape(dynamic_faces_idx, "dynamic_faces_idx", ("N", "C"))
    check_shape(dynamic_bary_coords, "dynamic_bary_coords", ("N", "C", 3), sizes)
    if sizes["N"] != 2 * MAX_YAW_BIN + 1:
        raise ShapeError(f"dynamic_faces_idx must have {2 * MAX_YAW_BIN + 1} rows, got {sizes['N']}")
    chain = neck_chain(parents, neck_index)
    if rot_mats is None:
        rots = batch_rodrigues(full_pose[:, chain])  # only the chain's joints
    else:
        rots = rot_mats[:, chain]
    rel = rots[:, 0]
    for k in range(1, len(chain)):  # rel = R_root ... R_neck
        rel = rots[:, k] @ rel
    rows = contour_rows(head_yaw_degrees(rel.detach()))
    return dynamic_faces_idx[rows], dynamic_bary_coords[rows]
