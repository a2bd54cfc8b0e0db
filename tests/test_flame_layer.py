"""FLAME LBS, landmarks and FlameLayer against naive float64 loops; gradients; dtype/device behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuface.errors import ShapeError
from neuface.flame import (
    FlameLayer,
    FlameModel,
    LandmarkEmbedding,
    batch_rigid_transform,
    batch_rodrigues,
    dynamic_contour,
    lbs,
    vertices2landmarks,
)
from neuface.flame.landmarks import contour_rows, head_yaw_degrees

PARENTS = (-1, 0, 1, 1, 1)
N_SHAPE_TOTAL, N_EXP_TOTAL = 10, 6


def make_model(n_verts: int = 60, n_faces: int = 100, seed: int = 0) -> FlameModel:
    rng = np.random.default_rng(seed)
    faces = np.stack([rng.choice(n_verts, 3, replace=False) for _ in range(n_faces)])
    j_reg = rng.random((5, n_verts)) * (rng.random((5, n_verts)) < 0.3)
    j_reg[:, 0] += 0.1  # no empty row
    logits = 3.0 * rng.normal(size=(n_verts, 5))
    weights = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return FlameModel(
        v_template=rng.uniform(-0.1, 0.1, (n_verts, 3)),
        faces=faces.astype(np.int64),
        shapedirs=0.01 * rng.normal(size=(n_verts, 3, N_SHAPE_TOTAL + N_EXP_TOTAL)),
        posedirs=0.01 * rng.normal(size=(n_verts, 3, 36)),
        J_regressor=j_reg / j_reg.sum(1, keepdims=True),
        weights=weights,
        parents=np.array(PARENTS, dtype=np.int64),
        num_shape_total=N_SHAPE_TOTAL,
    ).validate()


def make_embedding(n_faces: int = 100, seed: int = 1) -> LandmarkEmbedding:
    rng = np.random.default_rng(seed)

    def bary(*shape: int) -> np.ndarray:
        return rng.dirichlet(np.ones(3), size=shape)

    return LandmarkEmbedding(
        static_lmk_faces_idx=rng.integers(0, n_faces, 51),
        static_lmk_bary_coords=bary(51),
        dynamic_lmk_faces_idx=rng.integers(0, n_faces, (79, 17)),
        dynamic_lmk_bary_coords=bary(79, 17),
        full_lmk_faces_idx=rng.integers(0, n_faces, 68),
        full_lmk_bary_coords=bary(68),
    ).validate(n_faces)


# ----------------------------------------------------------------------------- naive references (float64)


def naive_rodrigues(r: np.ndarray) -> np.ndarray:
    theta = math.sqrt(float(r @ r))
    if theta == 0.0:
        return np.eye(3)
    k = r / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx


def naive_flame(model: FlameModel, betas: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sample, explicit loops: betas (K,) over all shapedirs columns, pose (J, 3)."""
    n_v, n_j = model.num_vertices, model.num_joints
    v_shaped = np.zeros((n_v, 3))
    for v in range(n_v):
        v_shaped[v] = model.v_template[v]
        for k in range(betas.shape[0]):
            v_shaped[v] += model.shapedirs[v, :, k] * betas[k]
    joints = [sum(model.J_regressor[j, v] * v_shaped[v] for v in range(n_v)) for j in range(n_j)]
    rots = [naive_rodrigues(pose[j]) for j in range(n_j)]
    feature = np.concatenate([(rots[j] - np.eye(3)).reshape(-1) for j in range(1, n_j)])
    v_posed = v_shaped.copy()
    for v in range(n_v):
        for p in range(feature.shape[0]):
            v_posed[v] += model.posedirs[v, :, p] * feature[p]
    world = []
    for j in range(n_j):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        parent = model.parents[j]
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0.0)
        world.append(local if parent < 0 else world[parent] @ local)
    skin = []
    for j in range(n_j):
        unpose = np.eye(4)
        unpose[:3, 3] = -joints[j]
        skin.append(world[j] @ unpose)
    out = np.zeros((n_v, 3))
    for v in range(n_v):
        hom = np.append(v_posed[v], 1.0)
        for j in range(n_j):
            out[v] += model.weights[v, j] * (skin[j] @ hom)[:3]
    return out, np.stack([w[:3, 3] for w in world])


def naive_landmarks(verts: np.ndarray, faces: np.ndarray, idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    out = np.zeros((len(idx), 3))
    for lmk in range(len(idx)):
        for corner in range(3):
            out[lmk] += bary[lmk, corner] * verts[faces[idx[lmk], corner]]
    return out


def naive_contour_row(pose: np.ndarray) -> int:
    rel = naive_rodrigues(pose[0]) @ naive_rodrigues(pose[1])  # global ∘ neck
    yaw = math.degrees(math.atan2(-rel[2, 0], math.hypot(rel[0, 0], rel[1, 0])))
    y = int(np.round(min(yaw, 39.0)))  # numpy rounds half to even, like torch.round
    if y < 0:
        return 78 if y < -39 else 39 - y
    return y


def full_betas(shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
    betas = np.zeros(N_SHAPE_TOTAL + N_EXP_TOTAL)
    betas[: shape.shape[0]] = shape
    betas[N_SHAPE_TOTAL : N_SHAPE_TOTAL + expression.shape[0]] = expression
    return betas


def random_inputs(batch: int, n_shape: int, n_exp: int, seed: int, dtype=torch.float64) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "shape": torch.randn(batch, n_shape, generator=g, dtype=dtype),
        "expression": torch.randn(batch, n_exp, generator=g, dtype=dtype),
        "global_pose": 0.5 * torch.randn(batch, 3, generator=g, dtype=dtype),
        "pose": 0.3 * torch.randn(batch, 12, generator=g, dtype=dtype),
    }


# ----------------------------------------------------------------------------- tests


def test_rodrigues_matches_closed_form_and_is_finite_at_zero():
    r = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = batch_rodrigues(r)
    for i in range(20):
        np.testing.assert_allclose(got[i].numpy(), naive_rodrigues(r[i].numpy()), atol=1e-12)
    tiny = torch.tensor([[0.0, 0.0, 0.0], [1e-9, -2e-9, 0.0], [1e-4, 0.0, 0.0]], requires_grad=True)
    rot = batch_rodrigues(tiny)
    rot.sum().backward()
    assert torch.isfinite(rot).all() and torch.isfinite(tiny.grad).all()
    assert torch.equal(rot[0].detach(), torch.eye(3))
    ortho = rot.detach() @ rot.detach().transpose(-1, -2)
    assert torch.allclose(ortho, torch.eye(3).expand(3, 3, 3), atol=1e-6)


def test_batch_rigid_transform_identity_pose():
    joints = torch.randn(2, 5, 3, dtype=torch.float64)
    rots = torch.eye(3, dtype=torch.float64).expand(2, 5, 3, 3)
    posed, rel = batch_rigid_transform(rots, joints, torch.tensor(PARENTS))
    assert torch.allclose(posed, joints, atol=1e-12)
    assert torch.allclose(rel, torch.eye(4, dtype=torch.float64).expand(2, 5, 4, 4), atol=1e-12)
    with pytest.raises(ShapeError, match="parents"):
        batch_rigid_transform(rots, joints, (-1, 0, 3, 1, 1))


def test_flame_matches_naive_loops_float64():
    model, emb = make_model(), make_embedding()
    layer = FlameLayer(model, emb, n_shape=7, n_exp=5, dtype=torch.float64)
    inputs = random_inputs(3, 7, 5, seed=3)
    inputs["global_pose"][0] = torch.tensor([0.1, 0.45, 0.0], dtype=torch.float64)  # clear +yaw
    inputs["global_pose"][1] = torch.tensor([-0.1, -0.45, 0.05], dtype=torch.float64)  # clear -yaw
    out = layer(**inputs)
    assert out.vertices.shape == (3, 60, 3) and out.joints.shape == (3, 5, 3)
    assert out.landmarks2d.shape == (3, 68, 3) and out.landmarks3d.shape == (3, 68, 3)
    rows = []
    for b in range(3):
        betas = full_betas(inputs["shape"][b].numpy(), inputs["expression"][b].numpy())
        pose = torch.cat([inputs["global_pose"][b], inputs["pose"][b]]).reshape(5, 3).numpy()
        verts, joints = naive_flame(model, betas, pose)
        assert np.abs(out.vertices[b].numpy() - verts).max() <= 1e-6
        assert np.abs(out.joints[b].numpy() - joints).max() <= 1e-6
        row = naive_contour_row(pose)
        rows.append(row)
        idx = np.concatenate([emb.dynamic_lmk_faces_idx[row], emb.static_lmk_faces_idx])
        bary = np.concatenate([emb.dynamic_lmk_bary_coords[row], emb.static_lmk_bary_coords])
        lmk2d = naive_landmarks(verts, model.faces, idx, bary)
        lmk3d = naive_landmarks(verts, model.faces, emb.full_lmk_faces_idx, emb.full_lmk_bary_coords)
        assert np.abs(out.landmarks2d[b].numpy() - lmk2d).max() <= 1e-6
        assert np.abs(out.landmarks3d[b].numpy() - lmk3d).max() <= 1e-6
    assert rows[0] < 40 <= rows[1]  # both halves of the table exercised


def test_none_inputs_are_zeros_and_no_embedding_gives_no_landmarks():
    layer = FlameLayer(make_model(), None, n_shape=4, n_exp=3, dtype=torch.float64)
    zero = layer(batch_size=2)
    explicit = layer(
        torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64),
        torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 12, dtype=torch.float64),
    )
    assert torch.equal(zero.vertices, explicit.vertices)
    assert zero.landmarks2d is None and zero.landmarks3d is None
    assert torch.allclose(zero.vertices[0], layer.v_template, atol=1e-12)  # rest pose = template
    partial = layer(expression=torch.ones(3, 3, dtype=torch.float64))
    assert partial.vertices.shape == (3, 60, 3)


def test_shape_errors_name_the_argument():
    model = make_model()
    with pytest.raises(ShapeError, match="n_shape"):
        FlameLayer(model, n_shape=N_SHAPE_TOTAL + 1, n_exp=2)
    with pytest.raises(ShapeError, match="n_exp"):
        FlameLayer(model, n_shape=2, n_exp=N_EXP_TOTAL + 1)
    layer = FlameLayer(model, n_shape=4, n_exp=3)
    with pytest.raises(ShapeError, match="pose"):
        layer(pose=torch.zeros(2, 9))
    with pytest.raises(ShapeError, match="expression"):
        layer(shape=torch.zeros(2, 4), expression=torch.zeros(3, 3))


def test_dynamic_contour_switches_halves_with_yaw_sign():
    emb = make_embedding()
    table = torch.as_tensor(emb.dynamic_lmk_faces_idx)
    bary = torch.as_tensor(emb.dynamic_lmk_bary_coords)
    degrees = [20.0, -20.0, 60.0, -60.0, 0.2, -0.7, 10.0]
    pose = torch.zeros(len(degrees), 5, 3, dtype=torch.float64)
    pose[:, 0, 1] = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))  # rotation about +y
    pose[-1, 0, 1] = math.radians(12.0)  # global 12° + neck 10° → 22°
    pose[-1, 1, 1] = math.radians(10.0)
    faces_idx, bary_sel = dynamic_contour(pose, table, bary)
    expected_rows = [20, 59, 39, 78, 0, 40, 22]  # y ≥ 0 → y; y < 0 → 39 - y (= 39 + |y|); clamped at ±39
    for b, row in enumerate(expected_rows):
        assert torch.equal(faces_idx[b], table[row]), (degrees[b], row)
        assert torch.equal(bary_sel[b], bary[row])
        assert naive_contour_row(pose[b].numpy()) == row


def test_dynamic_contour_matches_naive_on_random_poses():
    emb = make_embedding()
    table = torch.as_tensor(emb.dynamic_lmk_faces_idx)
    bary = torch.as_tensor(emb.dynamic_lmk_bary_coords)
    pose = 0.6 * torch.randn(300, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    faces_idx, _ = dynamic_contour(pose, table, bary)
    rows = [naive_contour_row(p.numpy()) for p in pose]
    assert torch.equal(faces_idx, table[torch.tensor(rows)])
    assert min(rows) < 39 < max(rows)  # both halves hit
    # rotation-matrix input gives the same selection
    faces_rm, _ = dynamic_contour(batch_rodrigues(pose), table, bary)
    assert torch.equal(faces_rm, faces_idx)


def test_contour_rows_rule():
    yaw = torch.tensor([0.0, 0.4, 0.5, 1.5, 38.6, 39.4, 45.0, -0.4, -0.6, -1.0, -39.0, -39.6, -50.0])
    expected = [0, 0, 0, 2, 39, 39, 39, 0, 40, 40, 78, 78, 78]
    assert contour_rows(yaw).tolist() == expected
    ry = batch_rodrigues(torch.tensor([[0.0, math.radians(25.0), 0.0]], dtype=torch.float64))
    assert head_yaw_degrees(ry).item() == pytest.approx(25.0)


def test_vertices2landmarks_shared_and_batched_indices_agree():
    verts = torch.randn(2, 60, 3, dtype=torch.float64)
    faces = torch.as_tensor(make_model().faces)
    idx = torch.randint(0, 100, (7,))
    bary = torch.rand(7, 3, dtype=torch.float64)
    shared = vertices2landmarks(verts, faces, idx, bary)
    batched = vertices2landmarks(verts, faces, idx.expand(2, -1), bary.expand(2, -1, -1))
    assert torch.equal(shared, batched)
    ref = naive_landmarks(verts[1].numpy(), faces.numpy(), idx.numpy(), bary.numpy())
    np.testing.assert_allclose(shared[1].numpy(), ref, atol=1e-12)
    with pytest.raises(ShapeError, match="lmk_bary_coords"):
        vertices2landmarks(verts, faces, idx, bary[:5])


def test_lbs_gradcheck():
    model = make_model(n_verts=12, n_faces=10, seed=7)
    names = ("v_template", "shapedirs", "posedirs", "J_regressor")
    t = {k: torch.as_tensor(getattr(model, k)) for k in names}
    weights = torch.as_tensor(model.weights)
    g = torch.Generator().manual_seed(0)
    betas = torch.randn(2, 16, dtype=torch.float64, generator=g, requires_grad=True)
    pose = (0.4 * torch.randn(2, 5, 3, dtype=torch.float64, generator=g)).requires_grad_()

    def fn(b: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lbs(b, p, t["v_template"], t["shapedirs"], t["posedirs"], t["J_regressor"], PARENTS, weights)

    assert torch.autograd.gradcheck(fn, (betas, pose), eps=1e-6, atol=1e-7, fast_mode=True)


def test_landmarks_gradcheck_through_layer():
    layer = FlameLayer(make_model(n_verts=20, n_faces=30, seed=2), make_embedding(30), 4, 3, torch.float64)
    inputs = random_inputs(2, 4, 3, seed=11)
    rel = batch_rodrigues(inputs["global_pose"]) @ batch_rodrigues(inputs["pose"][:, :3])
    frac = head_yaw_degrees(rel).abs() % 1.0
    assert ((frac - 0.5).abs() > 0.01).all()  # away from a contour switch, so the selection is constant
    args = tuple(v.requires_grad_() for v in inputs.values())

    def fn(*a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = layer(*a)
        return out.landmarks2d, out.landmarks3d

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, fast_mode=True)


def test_float32_agrees_with_float64():
    model, emb = make_model(), make_embedding()
    l32 = FlameLayer(model, emb, 7, 5, dtype=torch.float32)
    l64 = FlameLayer(model, emb, 7, 5, dtype=torch.float64)
    inputs = random_inputs(4, 7, 5, seed=9)
    out64 = l64(**inputs)
    out32 = l32(**{k: v.float() for k, v in inputs.items()})
    assert out32.vertices.dtype == torch.float32
    for a, b in zip(out32, out64, strict=True):
        assert torch.allclose(a.double(), b, atol=1e-5)
    # .to(dtype) converts the float buffers and leaves the index buffers alone
    moved = l32.to(torch.float64)
    assert moved.shapedirs.dtype == torch.float64 and moved.faces.dtype == torch.long


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model, emb = make_model(), make_embedding()
    cpu = FlameLayer(model, emb, 7, 5, dtype=torch.float64)
    gpu = FlameLayer(model, emb, 7, 5, dtype=torch.float64).cuda()
    inputs = random_inputs(5, 7, 5, seed=4)
    out_cpu = cpu(**inputs)
    out_gpu = gpu(**{k: v.cuda().requires_grad_() for k, v in inputs.items()})
    out_gpu.landmarks2d.sum().backward()
    for a, b in zip(out_gpu, out_cpu, strict=True):
        assert a.is_cuda and torch.allclose(a.cpu(), b, atol=1e-10)
    zero = gpu(batch_size=2)
    assert zero.vertices.is_cuda
