"""Linear blend skinning for SMPL-family models (FLAME), as pure batched tensor functions.

Standard SMPL/FLAME LBS (same math as smplx / DECA):

1. shaped template ``v_shaped = v_template + shapedirs · betas``;
2. rest joints ``J = J_regressor · v_shaped``;
3. pose correctives ``v_posed = v_shaped + posedirs · vec(R_j - I, j = 1..J-1)`` (the root is excluded; each
   ``R_j - I`` is flattened row-major, so the feature is (B, 9 (J-1)));
4. world transforms ``G_j = G_parent(j) · [R_j | J_j - J_parent(j)]``, and the skinning transforms
   ``A_j = G_j · [I | -J_j]`` (rest pose → posed);
5. ``v = Σ_j w_vj A_j · [v_posed; 1]``.

Blend-shape tensors keep the FLAME file layout: ``shapedirs`` (V, 3, K) and ``posedirs`` (V, 3, P) (smplx
reshapes posedirs to (P, V·3); here that reshape is a view taken inside :func:`pose_correctives`). Every
function is device/dtype agnostic (float32/float64, CPU/CUDA) and differentiable; the only Python loop is over
joints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError

__all__ = [
    "batch_rodrigues",
    "blend_shapes",
    "pose_correctives",
    "vertices2joints",
    "batch_rigid_transform",
    "skinning",
    "lbs",
]

Parents = torch.Tensor | Sequence[int]

# Below this squared angle sin(θ)/θ and (1-cos θ)/θ² are evaluated at a clamped θ (error < 1e-13).
_MIN_ANGLE_SQ = 1e-12


def batch_rodrigues(rot_vecs: torch.Tensor) -> torch.Tensor:
    """Axis-angle → rotation matrix, ``R = I + sinc(θ) K + ½ sinc²(θ/2) K²`` with ``K = [r]×`` (unnormalised).

    Finite (and with finite gradients) everywhere, including at and near zero angle.

    Args:
        rot_vecs: (..., 3) rotation vectors (radians).
    Returns:
        (..., 3, 3) rotation matrices (``x' = R x``).
    """
    check_shape(rot_vecs, "rot_vecs", ("...", 3))
    check_floating(rot_vecs, "rot_vecs")
    angle_sq = (rot_vecs * rot_vecs).sum(-1, keepdim=True)
    angle = angle_sq.clamp_min(_MIN_ANGLE_SQ).sqrt()
    a = torch.sinc(angle / torch.pi)  # sin θ / θ
    b = 0.5 * torch.sinc(angle / (2 * torch.pi)) ** 2  # (1 - cos θ) / θ²
    rx, ry, rz = rot_vecs.unbind(-1)
    zeros = torch.zeros_like(rx)
    skew = torch.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=-1)
    skew = skew.reshape(*rot_vecs.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)
    return eye + a[..., None] * skew + b[..., None] * (skew @ skew)


def blend_shapes(betas: torch.Tensor, shapedirs: torch.Tensor) -> torch.Tensor:
    """Per-vertex displacement ``Σ_k betas[b, k] shapedirs[v, :, k]``.

    Args:
        betas: (B, K) coefficients.
        shapedirs: (V, 3, K) blend shapes.
    Returns:
        (B, V, 3) displacements.
    """
    sizes = check_shape(betas, "betas", ("B", "K"))
    check_shape(shapedirs, "shapedirs", ("V", 3, "K"), sizes)
    flat = shapedirs.reshape(-1, sizes["K"])  # (V*3, K), a view
    return torch.nn.functional.linear(betas, flat).reshape(sizes["B"], sizes["V"], 3)


def pose_correctives(rot_mats: torch.Tensor, posedirs: torch.Tensor) -> torch.Tensor:
    """Pose-corrective displacements from the non-root joint rotations.

    Args:
        rot_mats: (B, J, 3, 3) joint rotations (joint 0 = root, ignored).
        posedirs: (V, 3, 9 (J-1)) pose blend shapes (FLAME file layout).
    Returns:
        (B, V, 3): ``posedirs · vec(R_j - I, j ≥ 1)``.
    """
    sizes = check_shape(rot_mats, "rot_mats", ("B", "J", 3, 3))
    n_feat = 9 * (sizes["J"] - 1)
    check_shape(posedirs, "posedirs", ("V", 3, n_feat), sizes)
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    feature = (rot_mats[:, 1:] - eye).reshape(sizes["B"], n_feat)
    flat = posedirs.reshape(-1, n_feat)  # (V*3, P) view; smplx stores its transpose (P, V*3)
    return torch.nn.functional.linear(feature, flat).reshape(sizes["B"], sizes["V"], 3)


def vertices2joints(J_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Regress joints from vertices.

    Args:
        J_regressor: (J, V) regressor.
        vertices: (B, V, 3).
    Returns:
        (B, J, 3) joint locations.
    """
    sizes = check_shape(J_regressor, "J_regressor", ("J", "V"))
    check_shape(vertices, "vertices", ("B", "V", 3), sizes)
    return torch.matmul(J_regressor, vertices)


def _parents_list(parents: Parents, n_joints: int) -> list[int]:
    values = parents.tolist() if isinstance(parents, torch.Tensor) else [int(p) for p in parents]
    if len(values) != n_joints:
        raise ShapeError(f"parents has {len(values)} entries but there are {n_joints} joints")
    if values[0] != -1 or any(not 0 <= p < i for i, p in enumerate(values[1:], start=1)):
        raise ShapeError(f"parents must be -1 for the root and list joints after their parents, got {values}")
    return values


def batch_rigid_transform(
    rot_mats: torch.Tensor, joints: torch.Tensor, parents: Parents
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose a kinematic tree.

    Args:
        rot_mats: (B, J, 3, 3) local joint rotations.
        joints: (B, J, 3) rest-pose joint locations.
        parents: (J,) parent indices (``-1`` for the root; each joint after its parent), tensor or ints.
    Returns:
        posed_joints: (B, J, 3) joint locations after posing.
        rel_transforms: (B, J, 4, 4) skinning transforms ``A_j`` mapping rest-pose points to posed points.
    """
    sizes = check_shape(rot_mats, "rot_mats", ("B", "J", 3, 3))
    check_shape(joints, "joints", ("B", "J", 3), sizes)
    plist = _parents_list(parents, sizes["J"])
    rel_joints = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, plist[1:]]], dim=1)
    bottom = joints.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(sizes["B"], sizes["J"], 1, 4)
    local = torch.cat([torch.cat([rot_mats, rel_joints[..., None]], dim=-1), bottom], dim=-2)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for i in range(1, sizes["J"]):
        chain.append(chain[plist[i]] @ local[:, i])
    world = torch.stack(chain, dim=1)
    posed_joints = world[..., :3, 3]
    # A_j = G_j [I | -J_j]: translation becomes t_j - R_j J_j.
    offset = (world[..., :3, :3] @ joints[..., None])[..., 0]
    rel = torch.cat([world[..., :3, :3], (posed_joints - offset)[..., None]], dim=-1)
    return posed_joints, torch.cat([rel, bottom], dim=-2)


def skinning(points: torch.Tensor, transforms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Blend per-joint rigid transforms: ``v = Σ_j w_vj A_j [p_v; 1]``.

    Args:
        points: (B, V, 3) rest-pose points (with blend shapes applied).
        transforms: (B, J, 4, 4) skinning transforms (see :func:`batch_rigid_transform`).
        weights: (V, J) skinning weights.
    Returns:
        (B, V, 3) skinned points.
    """
    sizes = check_shape(points, "points", ("B", "V", 3))
    check_shape(transforms, "transforms", ("B", "J", 4, 4), sizes)
    check_shape(weights, "weights", ("V", "J"), sizes)
    top = transforms[:, :, :3, :].reshape(sizes["B"], sizes["J"], 12)
    blended = torch.matmul(weights, top).reshape(sizes["B"], sizes["V"], 3, 4)  # per-vertex [R | t]
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    # einsum beats per-vertex 3x3 matmuls (and slicing `blended`) by ~4x forward+backward on CPU
    return torch.einsum("bvck,bvk->bvc", blended, homogeneous)


def lbs(
    betas: torch.Tensor,
    pose: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    J_regressor: torch.Tensor,
    parents: Parents,
    lbs_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape, pose and skin a SMPL-family model.

    Args:
        betas: (B, K) shape(+expression) coefficients.
        pose: (B, J, 3) or (B, 3 J) axis-angle per joint, or (B, J, 3, 3) rotation matrices.
        v_template: (V, 3) or (B, V, 3) template.
        shapedirs: (V, 3, K).
        posedirs: (V, 3, 9 (J-1)) (FLAME file layout).
        J_regressor: (J, V).
        parents: (J,) kinematic parents.
        lbs_weights: (V, J).
    Returns:
        vertices: (B, V, 3) posed mesh.
        joints: (B, J, 3) posed joints.
    """
    sizes = check_shape(betas, "betas", ("B", "K"))
    check_shape(J_regressor, "J_regressor", ("J", "V"), sizes)
    n_b, n_j = sizes["B"], sizes["J"]
    if pose.dim() == 4:
        check_shape(pose, "pose", (n_b, n_j, 3, 3))
        rot_mats = pose
    else:
        if pose.dim() == 2:
            check_shape(pose, "pose", (n_b, 3 * n_j))
        else:
            check_shape(pose, "pose", (n_b, n_j, 3))
        rot_mats = batch_rodrigues(pose.reshape(n_b, n_j, 3))
    if v_template.dim() == 2:
        check_shape(v_template, "v_template", ("V", 3), sizes)
    else:
        check_shape(v_template, "v_template", ("B", "V", 3), sizes)
    v_shaped = v_template + blend_shapes(betas, shapedirs)
    joints = vertices2joints(J_regressor, v_shaped)
    v_posed = v_shaped + pose_correctives(rot_mats, posedirs)
    posed_joints, transforms = batch_rigid_transform(rot_mats, joints, parents)
    return skinning(v_posed, transforms, lbs_weights), posed_joints
