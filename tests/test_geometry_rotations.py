"""Tests for neuface.geometry.rotations (references: scipy's Rotation and naive loops, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from neuface.errors import ShapeError
from neuface.geometry.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    canonicalize_quaternions,
    compose_axis_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_hemisphere,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
)

F64 = torch.float64


def _axis_angles(angles: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    axes = torch.randn(len(angles), 3, generator=g, dtype=F64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    return axes * torch.tensor(angles, dtype=F64)[:, None]


def _random_axis_angles(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    angles = torch.rand(n, generator=g, dtype=F64) * (math.pi - 1e-3)
    return _axis_angles(angles.tolist(), seed + 1)


NEAR_ZERO = [0.0, 1e-14, 1e-10, 1e-7, 1e-5, 1e-3]
NEAR_PI = [math.pi - 1e-3, math.pi - 1e-6, math.pi - 1e-9]


@pytest.mark.parametrize("angles", [None, NEAR_ZERO, NEAR_PI], ids=["random", "near_zero", "near_pi"])
def test_axis_angle_to_matrix_matches_scipy(angles):
    aa = _random_axis_angles(64) if angles is None else _axis_angles(angles)
    want = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix())
    got = axis_angle_to_matrix(aa)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    eye = torch.eye(3, dtype=F64).expand_as(got)
    torch.testing.assert_close(got @ got.transpose(-1, -2), eye, atol=1e-12, rtol=0)
    assert torch.allclose(torch.linalg.det(got), torch.ones(len(aa), dtype=F64), atol=1e-12)


@pytest.mark.parametrize("angles", [None, NEAR_ZERO, NEAR_PI], ids=["random", "near_zero", "near_pi"])
def test_round_trips(angles):
    aa = _random_axis_angles(64) if angles is None else _axis_angles(angles)
    R = axis_angle_to_matrix(aa)
    q = axis_angle_to_quaternion(aa)
    # axis-angle -> matrix -> axis-angle (angle < pi, so unique)
    torch.testing.assert_close(matrix_to_axis_angle(R), aa, atol=1e-9, rtol=0)
    # axis-angle -> quaternion -> axis-angle
    torch.testing.assert_close(quaternion_to_axis_angle(q), aa, atol=1e-12, rtol=0)
    # quaternion <-> matrix (quaternion up to sign)
    torch.testing.assert_close(quaternion_to_matrix(q), R, atol=1e-12, rtol=0)
    q2 = matrix_to_quaternion(R)
    torch.testing.assert_close(quaternion_hemisphere(q2), quaternion_hemisphere(q), atol=1e-9, rtol=0)
    # scipy quaternion is XYZW as well
    want_q = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_quat())
    torch.testing.assert_close(quaternion_hemisphere(q), quaternion_hemisphere(want_q), atol=1e-12, rtol=0)


def test_angle_pi_exactly_round_trips_up_to_sign():
    aa = _axis_angles([math.pi] * 8, seed=3)
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    err = torch.minimum((back - aa).norm(dim=-1), (back + aa).norm(dim=-1))
    assert err.max() < 1e-7
    torch.testing.assert_close(axis_angle_to_matrix(back), axis_angle_to_matrix(aa), atol=1e-12, rtol=0)


def test_matrix_to_axis_angle_matches_scipy_for_random_rotations():
    R = Rotation.random(50, random_state=1)
    got = matrix_to_axis_angle(torch.from_numpy(R.as_matrix()))
    torch.testing.assert_close(got, torch.from_numpy(R.as_rotvec()), atol=1e-10, rtol=0)


def test_quaternion_sign_and_normalization_do_not_matter():
    q = torch.from_numpy(Rotation.random(20, random_state=2).as_quat())
    aa = quaternion_to_axis_angle(q)
    torch.testing.assert_close(quaternion_to_axis_angle(-q), aa, atol=1e-12, rtol=0)
    torch.testing.assert_close(quaternion_to_axis_angle(3.0 * q), aa, atol=1e-12, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(-2.0 * q), quaternion_to_matrix(q), atol=1e-12, rtol=0)


def test_batch_dims_and_float32():
    aa = _random_axis_angles(24).reshape(2, 3, 4, 3)
    R = axis_angle_to_matrix(aa)
    assert R.shape == (2, 3, 4, 3, 3)
    assert matrix_to_quaternion(R).shape == (2, 3, 4, 4)
    R32 = axis_angle_to_matrix(aa.float())
    assert R32.dtype == torch.float32
    torch.testing.assert_close(R32.double(), R, atol=1e-6, rtol=0)
    torch.testing.assert_close(matrix_to_axis_angle(R32).double(), aa, atol=1e-5, rtol=0)


def test_axis_angle_to_matrix_gradcheck_including_zero():
    aa = torch.cat([_random_axis_angles(4), torch.zeros(1, 3, dtype=F64), _axis_angles([1e-9])])
    aa.requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,), eps=1e-6, atol=1e-6)
    # derivative at zero is the skew-symmetric generator: dR/d(aa_x) = [[0,0,0],[0,0,-1],[0,1,0]]
    zero = torch.zeros(3, dtype=F64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(axis_angle_to_matrix, zero)
    want = torch.tensor([[0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=F64)
    torch.testing.assert_close(jac[..., 0], want)


def test_matrix_to_axis_angle_gradcheck():
    R = axis_angle_to_matrix(_random_axis_angles(3, seed=5)).requires_grad_(True)
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (R,), eps=1e-6, atol=1e-6)


def _naive_canonicalize(q: np.ndarray, anchor: bool) -> np.ndarray:
    """q: (B, T, 4); loop over batch and time."""
    out = q.copy()
    for b in range(q.shape[0]):
        if anchor and out[b, 0, 3] < 0:
            out[b, 0] = -out[b, 0]
        for t in range(1, q.shape[1]):
            if np.dot(out[b, t], out[b, t - 1]) < 0:
                out[b, t] = -out[b, t]
    return out


@pytest.mark.parametrize("anchor", [True, False])
def test_canonicalize_quaternions_matches_naive_loop(anchor):
    rng = np.random.default_rng(0)
    # a slowly varying rotation sequence with random sign flips
    aa = np.cumsum(rng.normal(scale=0.3, size=(3, 40, 3)), axis=1)
    q = Rotation.from_rotvec(aa.reshape(-1, 3)).as_quat().reshape(3, 40, 4)
    q *= rng.choice([-1.0, 1.0], size=(3, 40, 1))
    got = canonicalize_quaternions(torch.from_numpy(q), anchor=anchor)
    want = _naive_canonicalize(q, anchor)
    np.testing.assert_array_equal(got.numpy(), want)
    dots = (got[:, 1:] * got[:, :-1]).sum(-1)
    assert (dots >= 0).all()
    if anchor:
        assert (got[:, 0, 3] >= 0).all()
    # same rotations
    torch.testing.assert_close(quaternion_to_matrix(got), quaternion_to_matrix(torch.from_numpy(q)))
    # idempotent
    torch.testing.assert_close(canonicalize_quaternions(got, anchor=anchor), got, atol=0, rtol=0)


def test_canonicalize_quaternions_time_dim_and_errors():
    q = torch.from_numpy(Rotation.random(30, random_state=4).as_quat()).reshape(5, 6, 4)
    by_dim0 = canonicalize_quaternions(q.transpose(0, 1), dim=0)  # (T=6, B=5, 4)
    torch.testing.assert_close(by_dim0.transpose(0, 1), canonicalize_quaternions(q, dim=1))
    torch.testing.assert_close(canonicalize_quaternions(q, dim=-2), canonicalize_quaternions(q, dim=1))
    assert canonicalize_quaternions(q[:, :0]).shape == (5, 0, 4)
    with pytest.raises(ShapeError):
        canonicalize_quaternions(q, dim=-1)
    with pytest.raises(ShapeError):
        canonicalize_quaternions(q, dim=3)
    with pytest.raises(ShapeError):
        canonicalize_quaternions(q[..., :3])
    with pytest.raises(ShapeError):
        canonicalize_quaternions(q[0, 0])


def test_canonicalize_quaternions_gradient_flows():
    q = torch.from_numpy(Rotation.random(8, random_state=6).as_quat()).reshape(2, 4, 4).requires_grad_(True)
    out = canonicalize_quaternions(q)
    out.sum().backward()
    signs = (out / q).detach()
    torch.testing.assert_close(q.grad, signs)
    assert set(torch.unique(signs).tolist()) <= {-1.0, 1.0}


def test_quaternion_hemisphere():
    q = torch.tensor([[0.0, 0.6, 0.0, -0.8], [0.6, 0.0, 0.0, 0.8], [1.0, 0.0, 0.0, 0.0]], dtype=F64)
    out = quaternion_hemisphere(q)
    want = torch.tensor([[0.0, -0.6, 0.0, 0.8], [0.6, 0.0, 0.0, 0.8], [1.0, 0, 0, 0]], dtype=F64)
    torch.testing.assert_close(out, want)


def test_rotation_6d_round_trip_and_gram_schmidt():
    R = axis_angle_to_matrix(_random_axis_angles(32, seed=7))
    d6 = matrix_to_rotation_6d(R)
    assert d6.shape == (32, 6)
    torch.testing.assert_close(d6[:, :3], R[:, :, 0])
    torch.testing.assert_close(rotation_6d_to_matrix(d6), R, atol=1e-12, rtol=0)
    # arbitrary 6D input -> proper rotation whose first column is the normalized first vector
    g = torch.Generator().manual_seed(8)
    x = torch.randn(16, 6, generator=g, dtype=F64)
    M = rotation_6d_to_matrix(x)
    eye = torch.eye(3, dtype=F64).expand_as(M)
    torch.testing.assert_close(M.transpose(-1, -2) @ M, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(M), torch.ones(16, dtype=F64))
    torch.testing.assert_close(M[:, :, 0], x[:, :3] / x[:, :3].norm(dim=-1, keepdim=True))
    # the second column lies in the plane of the two input vectors, on the side of the second one
    assert ((M[:, :, 1] * x[:, 3:]).sum(-1) > 0).all()
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (x[:3].detach().requires_grad_(True),))


def test_compose_axis_angle_matches_matrix_product():
    a = _random_axis_angles(20, seed=9)
    b = _random_axis_angles(20, seed=11)
    got = compose_axis_angle(a, b)
    want = axis_angle_to_matrix(a) @ axis_angle_to_matrix(b)
    torch.testing.assert_close(axis_angle_to_matrix(got), want, atol=1e-12, rtol=0)
    assert (got.norm(dim=-1) <= math.pi + 1e-12).all()
    # broadcasting: one rotation composed with a batch
    got_b = compose_axis_angle(a[:1], b)
    want_b = axis_angle_to_matrix(a[:1]) @ axis_angle_to_matrix(b)
    torch.testing.assert_close(axis_angle_to_matrix(got_b), want_b, atol=1e-12, rtol=0)
    with pytest.raises(ShapeError):
        compose_axis_angle(a[:3], b[:4])


@pytest.mark.parametrize(
    ("fn", "bad"),
    [
        (axis_angle_to_matrix, torch.zeros(4, 4)),
        (matrix_to_axis_angle, torch.zeros(4, 3, 4)),
        (axis_angle_to_quaternion, torch.zeros(2)),
        (quaternion_to_axis_angle, torch.zeros(3, 3)),
        (quaternion_to_matrix, torch.zeros(5)),
        (matrix_to_quaternion, torch.zeros(3)),
        (rotation_6d_to_matrix, torch.zeros(2, 5)),
        (matrix_to_rotation_6d, torch.zeros(2, 2, 3)),
        (quaternion_hemisphere, torch.zeros(2, 3)),
        (axis_angle_to_matrix, torch.zeros(4, 3, dtype=torch.int64)),
        (axis_angle_to_matrix, np.zeros((4, 3))),
    ],
)
def test_shape_errors(fn, bad):
    with pytest.raises(ShapeError):
        fn(bad)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    aa = _random_axis_angles(16)
    got = axis_angle_to_matrix(aa.cuda()).cpu()
    torch.testing.assert_close(got, axis_angle_to_matrix(aa))
    q = axis_angle_to_quaternion(aa).reshape(4, 4, 4)
    torch.testing.assert_close(canonicalize_quaternions(q.cuda()).cpu(), canonicalize_quaternions(q))
