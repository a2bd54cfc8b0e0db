"""Tests for neuface.geometry.mesh: normals (vs naive loops, known shapes, gradcheck) and visibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuface.errors import ShapeError
from neuface.geometry.camera import PinholeCamera
from neuface.geometry.mesh import face_normals, vertex_normals, vertex_visibility, visibility_confidence

F64 = torch.float64


def icosphere(subdivisions: int = 2, radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit icosphere (V, 3) float64, faces (F, 3) int64 wound counter-clockwise seen from outside."""
    p = (1 + 5**0.5) / 2
    verts = [
        (-1, p, 0),
        (1, p, 0),
        (-1, -p, 0),
        (1, -p, 0),
        (0, -1, p),
        (0, 1, p),
        (0, -1, -p),
        (0, 1, -p),
        (p, 0, -1),
        (p, 0, 1),
        (-p, 0, -1),
        (-p, 0, 1),
    ]
    verts = [np.array(v, float) / np.linalg.norm(v) for v in verts]
    faces = [
        (0, 11, 5),
        (0, 5, 1),
        (0, 1, 7),
        (0, 7, 10),
        (0, 10, 11),
        (1, 5, 9),
        (5, 11, 4),
        (11, 10, 2),
        (10, 7, 6),
        (7, 1, 8),
        (3, 9, 4),
        (3, 4, 2),
        (3, 2, 6),
        (3, 6, 8),
        (3, 8, 9),
        (4, 9, 5),
        (2, 4, 11),
        (6, 2, 10),
        (8, 6, 7),
        (9, 8, 1),
    ]

    def mid(cache: dict[tuple[int, int], int], a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = verts[a] + verts[b]
            verts.append(m / np.linalg.norm(m))
            cache[key] = len(verts) - 1
        return cache[key]

    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}
        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(cache, a, b), mid(cache, b, c), mid(cache, c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    v = np.stack(verts) * radius
    f = np.array(faces, dtype=np.int64)
    # orient every face outwards (independent of the code under test: numpy cross product)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    flip = (n * v[f].mean(axis=1)).sum(-1) < 0
    f[flip] = f[flip][:, [0, 2, 1]]
    return torch.from_numpy(v), torch.from_numpy(f)


def cube() -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=F64)
    # index = 4*ix + 2*iy + iz; quads listed counter-clockwise seen from outside
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    return v, torch.tensor(f)


def _naive_vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    out = np.zeros_like(v)
    for b in range(v.shape[0]):
        for i0, i1, i2 in f:
            n = np.cross(v[b, i1] - v[b, i0], v[b, i2] - v[b, i0])
            for i in (i0, i1, i2):
                out[b, i] += n
    norm = np.linalg.norm(out, axis=-1, keepdims=True)
    return out / np.maximum(norm, 1e-12)


def test_cube_face_normals_are_axes():
    v, f = cube()
    n = face_normals(v[None], f)[0]
    centroids = v[f].mean(dim=1)
    want = torch.zeros_like(centroids)
    axis = centroids.abs().argmax(dim=-1)
    want[torch.arange(len(f)), axis] = centroids[torch.arange(len(f)), axis].sign()
    torch.testing.assert_close(n, want)
    # cube corners: normals point into the corner's octant
    vn = vertex_normals(v[None], f)[0]
    assert (torch.sign(vn) == torch.sign(v)).all()
    torch.testing.assert_close(vn.norm(dim=-1), torch.ones(8, dtype=F64))


def test_icosphere_normals_are_radial():
    v, f = icosphere(2, radius=0.3)
    center = torch.tensor([0.1, -0.2, 0.05], dtype=F64)
    verts = (v + center)[None]
    fn = face_normals(verts, f)[0]
    centroid_dirs = v[f].mean(1) / v[f].mean(1).norm(dim=-1, keepdim=True)
    assert ((fn * centroid_dirs).sum(-1) > 0.99).all()
    vn = vertex_normals(verts, f)[0]
    radial = v / v.norm(dim=-1, keepdim=True)
    assert ((vn * radial).sum(-1) > 0.999).all()


def test_vertex_normals_match_naive_loop():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 40, 3, generator=g, dtype=F64)
    f = torch.randint(0, 40, (70, 3), generator=g)
    got = vertex_normals(v, f)
    want = _naive_vertex_normals(v.numpy(), f.numpy())
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    # unused vertices get a zero normal, not NaN
    unused = torch.ones(40, dtype=torch.bool)
    unused[f.reshape(-1)] = False
    assert torch.isfinite(got).all()
    assert (got[:, unused] == 0).all()
    # int32 faces and float32 vertices work
    got32 = vertex_normals(v.float(), f.int())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), got, atol=1e-4, rtol=0)


def test_vertex_normals_gradcheck():
    v, f = icosphere(0)
    g = torch.Generator().manual_seed(1)
    verts = (v[None] + 0.05 * torch.randn(2, 12, 3, generator=g, dtype=F64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, f), (verts,))
    assert torch.autograd.gradcheck(lambda x: face_normals(x, f), (verts,))


def test_mesh_errors():
    v, f = cube()
    with pytest.raises(ShapeError):
        vertex_normals(v, f)  # missing batch dim
    with pytest.raises(ShapeError):
        vertex_normals(v[None], f.double())
    with pytest.raises(ShapeError):
        vertex_normals(v[None], f + 8)
    with pytest.raises(ShapeError):
        face_normals(v[None], f[:, :2])


def test_visibility_front_hemisphere_of_sphere():
    v, f = icosphere(3, radius=0.1)
    verts = v[None]
    n = vertex_normals(verts, f)
    vis = vertex_visibility(verts, n)[0]
    cos_a = math.cos(math.radians(72.0))
    # cos(72°) = (√5 - 1) / 4 is a coordinate of the icosahedron: a ring of vertices has its normal at exactly
    # 72° from +z, so their visibility is decided by float rounding (and differs between builds). They are
    # excluded explicitly; every other vertex is at least BAND away from the threshold and checked exactly.
    BAND = 1e-3  # > the far camera's parallax (radius / distance = 1e-4 in cos), < the next vertex's gap (7.7e-3)
    cos_z = n[0, :, 2] / n[0].norm(dim=-1)
    boundary = (cos_z - cos_a).abs() < BAND
    assert int(boundary.sum()) == 4 and (cos_z[boundary] - cos_a).abs().max() < 1e-12
    assert ((cos_z[~boundary] - cos_a).abs() > 5 * BAND).all()
    assert torch.equal(vis[~boundary], cos_z[~boundary] > cos_a)  # exact away from the boundary ring
    radial_z = (v / v.norm(dim=-1, keepdim=True))[:, 2]
    # normals are ~radial: clear cases away from the cone boundary
    assert vis[radial_z > cos_a + 0.01].all()
    assert not vis[radial_z < cos_a - 0.01].any()
    assert not vis[v[:, 2] < 0].any()  # the back is never visible
    # weak-perspective default == explicit +z directions == a far pinhole camera on +z
    plus_z = torch.zeros_like(verts)
    plus_z[..., 2] = 1.0
    assert torch.equal(vertex_visibility(verts, n, plus_z), vis[None])  # the same arithmetic: exact everywhere
    flip_yz = torch.diag(torch.tensor([1.0, -1, -1], dtype=F64))[None]  # camera on +z looking down -z
    t_far = torch.tensor([[0.0, 0.0, 1000.0]], dtype=F64)
    cam = PinholeCamera(K=torch.eye(3, dtype=F64)[None], R=flip_yz, t=t_far)
    torch.testing.assert_close(cam.centers(), torch.tensor([[0.0, 0.0, 1000.0]], dtype=F64))
    far = vertex_visibility(verts, n, cam.directions_to_camera(verts))
    assert torch.equal(far[0, ~boundary], vis[~boundary])  # the same everywhere off the boundary ring
    # a close camera sees less than a hemisphere-cone
    cam.t = torch.tensor([[0.0, 0.0, 0.3]], dtype=F64)
    near = vertex_visibility(verts, n, cam.directions_to_camera(verts))
    assert near.sum() < vis.sum() and not (near & ~vis[None]).any()


def test_visibility_tau_z_threshold():
    v, f = icosphere(2, radius=0.1)
    verts = v[None]
    n = vertex_normals(verts, f)
    vis = vertex_visibility(verts, n, tau_a_deg=180.0, tau_z=-0.03)[0]
    assert torch.equal(vis, v[:, 2] >= -0.03)
    vis2 = vertex_visibility(verts, n, tau_a_deg=180.0, tau_z=0.05)[0]
    assert torch.equal(vis2, v[:, 2] >= 0.05)


def _naive_visibility(v, n, d, tau_a_deg, tau_z):
    out = np.zeros(v.shape[:2], bool)
    for b in range(v.shape[0]):
        for i in range(v.shape[1]):
            nn = n[b, i] / np.linalg.norm(n[b, i])
            dd = np.array([0.0, 0.0, 1.0]) if d is None else d[b, i] / np.linalg.norm(d[b, i])
            angle = math.degrees(math.acos(np.clip(nn @ dd, -1, 1)))
            out[b, i] = angle <= tau_a_deg and v[b, i, 2] >= tau_z
    return out


@pytest.mark.parametrize("with_dirs", [False, True])
def test_visibility_matches_naive_loop(with_dirs):
    g = torch.Generator().manual_seed(2)
    v = torch.randn(2, 300, 3, generator=g, dtype=F64) * 0.1
    n = torch.randn(2, 300, 3, generator=g, dtype=F64)
    d = torch.randn(2, 300, 3, generator=g, dtype=F64) if with_dirs else None
    got = vertex_visibility(v, n, d)
    want = _naive_visibility(v.numpy(), n.numpy(), None if d is None else d.numpy(), 72.0, -0.08)
    np.testing.assert_array_equal(got.numpy(), want)
    assert 0 < got.sum() < got.numel()
    conf = visibility_confidence(v, n, d)
    assert conf.dtype == F64
    np.testing.assert_array_equal(conf.numpy(), want.astype(float))


def test_soft_visibility_confidence():
    # unit normals at angles 0..90 degrees from +z, all at z = 0
    angles = torch.linspace(0, 90, 91, dtype=F64)
    rad = torch.deg2rad(angles)
    n = torch.stack([torch.sin(rad), torch.zeros_like(rad), torch.cos(rad)], dim=-1)[None]
    v = torch.zeros_like(n)
    hard = visibility_confidence(v, n)
    soft = visibility_confidence(v, n, soft_deg=20.0)
    assert torch.equal(hard[0], (angles <= 72.0 + 1e-9).to(F64))
    assert ((soft >= 0) & (soft <= hard)).all()
    assert (soft[0, angles <= 52.0] == 1).all()
    assert (soft[0, angles >= 72.0] == 0).all()
    mid = soft[0, (angles > 52) & (angles < 72)]
    assert ((mid > 0) & (mid < 1)).all() and (mid.diff() < 0).all()
    torch.testing.assert_close(soft[0, 62], torch.tensor(0.5, dtype=F64))
    # the depth cut stays hard
    v_back = v.clone()
    v_back[..., 2] = -0.1
    assert (visibility_confidence(v_back, n, soft_deg=20.0) == 0).all()
    with pytest.raises(ShapeError):
        visibility_confidence(v, n, soft_deg=-1.0)
    with pytest.raises(ShapeError):
        vertex_visibility(v, n[:, :5])
