"""Fidelity metrics: analytic cases, naive float64 references, sequence_metrics on fit files, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neuface.errors import NeufaceError, ShapeError
from neuface.metrics import (
    MSI_EPS,
    cvd,
    cvd_per_view,
    landmark_normaliser,
    mpve,
    mpve_aligned,
    mpve_aligned_per_sample,
    msi_3d,
    msi_3d_batch,
    nme,
    nme_bbox_per_sample,
    nme_per_sample,
    sequence_metrics,
    similarity_align,
    write_fit_file,
)
from neuface.status import StageStatus


# ----------------------------------------------------------------------------------------------- MSI_3D
def test_msi_constant_velocity_hits_the_floor_exactly():
    t = torch.arange(20, dtype=torch.float64)[:, None, None]
    start = torch.randn(5, 3, dtype=torch.float64)
    vel = torch.randn(5, 3, dtype=torch.float64) * 1e-3
    points = start + t * vel  # zero acceleration
    assert msi_3d(points) == pytest.approx(1.0 / MSI_EPS, rel=1e-12)
    assert msi_3d(points, eps=0.5) == pytest.approx(2.0)


def test_msi_known_jitter():
    n = 10  # 8 accelerations: whole periods of both signals below
    t = torch.arange(n, dtype=torch.float64)
    points = torch.zeros(n, 2, 3, dtype=torch.float64)
    a = 1e-3  # 1 mm
    points[:, 0, 0] = a * (-1.0) ** t  # acceleration -4a(-1)^t: variance 16 mm^2
    points[:, 1, 1] = 2 * a * torch.sin(math.pi * t / 2)  # acceleration -2A sin: variance 2 A^2 = 8 mm^2
    expected = (1 / 16 + 1 / 8) / 2
    assert msi_3d(points) == pytest.approx(expected, rel=1e-10)
    # scale: coordinates x2 -> variances x4 -> MSI / 4; metres vs millimetres -> 1e6
    assert msi_3d(2 * points) == pytest.approx(expected / 4, rel=1e-10)
    assert msi_3d(points, scale=1.0) == pytest.approx(expected * 1e6, rel=1e-10)


def _naive_msi(points: np.ndarray, scale: float = 1000.0, eps: float = MSI_EPS) -> float:
    n_f, n_k, _ = points.shape
    total = 0.0
    for k in range(n_k):
        acc = [(points[f + 1, k] - 2 * points[f, k] + points[f - 1, k]) * scale for f in range(1, n_f - 1)]
        acc = np.array(acc)
        var = sum(float(np.var(acc[:, axis])) for axis in range(3))
        total += 1.0 / max(var, eps)
    return total / n_k


def test_msi_matches_naive_loop_and_batches():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(3, 12, 7, 3)) * 1e-3
    batch = msi_3d_batch(torch.as_tensor(pts, dtype=torch.float32))
    for i in range(3):
        ref = _naive_msi(pts[i])
        assert msi_3d(torch.as_tensor(pts[i])) == pytest.approx(ref, rel=1e-10)
        assert float(batch[i]) == pytest.approx(ref, rel=1e-4)
    with pytest.raises(ShapeError, match="at least 4 frames"):
        msi_3d(torch.zeros(3, 5, 3))
    with pytest.raises(ShapeError):
        msi_3d(torch.zeros(10, 5, 2))


# ----------------------------------------------------------------------------------------------- CVD
def test_cvd_identical_views_and_known_offset():
    verts = torch.randn(4, 1, 50, 3, dtype=torch.float64).expand(-1, 2, -1, -1).clone()
    assert torch.allclose(cvd(verts), torch.zeros(4, dtype=torch.float64))
    d = 0.002  # 2 mm along x in view 1
    verts[:, 1, :, 0] += d
    assert torch.allclose(cvd(verts), torch.full((4,), 2.0, dtype=torch.float64))
    # L1, not L2: an offset (1, 1, 1) mm has L1 3 mm
    v3 = verts[:, :1].expand(-1, 3, -1, -1).clone()
    v3[:, 2] += 0.001
    assert torch.allclose(cvd(v3), torch.full((4,), 2 * 3.0 / 3, dtype=torch.float64))
    assert torch.allclose(cvd_per_view(v3), torch.tensor([1.5, 1.5, 3.0], dtype=torch.float64))
    with pytest.raises(ShapeError, match="at least 2 views"):
        cvd(verts[:, :1])


def test_cvd_matches_naive_loop():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(3, 4, 30, 3)) * 1e-2
    per_frame = cvd(torch.as_tensor(v)).numpy()
    per_view = cvd_per_view(torch.as_tensor(v)).numpy()
    ref_f, ref_v = np.zeros(3), np.zeros(4)
    for f in range(3):
        pairs = []
        for i in range(4):
            for j in range(4):
                if i != j:
                    d = np.abs(v[f, i] - v[f, j]).sum(axis=1).mean() * 1000
                    ref_v[i] += d / 3 / 3
                    if i < j:
                        pairs.append(d)
        ref_f[f] = np.mean(pairs)
    np.testing.assert_allclose(per_frame, ref_f, rtol=1e-10)
    np.testing.assert_allclose(per_view, ref_v, rtol=1e-10)


# ----------------------------------------------------------------------------------------------- NME, MPVE
def _face_target(n: int) -> torch.Tensor:
    target = torch.rand(n, 68, 2, dtype=torch.float64) * 100 + 50
    target[:, 36] = torch.tensor([100.0, 100.0])
    target[:, 45] = torch.tensor([200.0, 100.0])  # eye corners 100 px apart
    return target


def test_nme_known_offsets_and_validity():
    target = _face_target(4)
    pred = target + torch.tensor([3.0, 4.0], dtype=torch.float64)  # 5 px on every point
    assert nme(pred, target, norm="eye") == pytest.approx(5.0)
    pred[1] += torch.tensor([6.0, 8.0], dtype=torch.float64)  # 15 px on frame 1
    valid = torch.tensor([True, False, True, True])
    assert nme(pred, target, valid, norm="eye") == pytest.approx(5.0)
    assert nme(pred, target, norm="eye") == pytest.approx((5 * 3 + 15) / 4)
    target[2, 0] = float("nan")  # a missing detection is not counted
    for norm in ("eye", "bbox"):
        per = nme_per_sample(pred, target, norm=norm)
        assert math.isnan(float(per[2])) and math.isfinite(float(per[0]))
        assert math.isnan(nme(pred, target, torch.zeros(4, dtype=torch.bool), norm=norm))
    assert float(nme_per_sample(pred, target, norm="eye")[0]) == pytest.approx(5.0)
    with pytest.raises(ShapeError, match="norm must be one of"):
        nme(pred, target, norm="iod")


def _square_landmarks(side_x: float, side_y: float, corner=(40.0, 70.0)) -> torch.Tensor:
    """68 points on the border of an axis-aligned ``side_x`` × ``side_y`` box (all four corners included)."""
    u = torch.linspace(0.0, 1.0, 17, dtype=torch.float64)[:-1]  # 16 per side, 4 sides = 64, + 4 inside
    x0, y0 = corner
    sides = [torch.stack([x0 + side_x * u, torch.full_like(u, y0)], -1),
             torch.stack([torch.full_like(u, x0 + side_x), y0 + side_y * u], -1),
             torch.stack([x0 + side_x * (1 - u), torch.full_like(u, y0 + side_y)], -1),
             torch.stack([torch.full_like(u, x0), y0 + side_y * (1 - u)], -1)]
    inside = torch.tensor([[x0 + 0.3 * side_x, y0 + 0.4 * side_y], [x0 + 0.7 * side_x, y0 + 0.4 * side_y],
                           [x0 + 0.5 * side_x, y0 + 0.6 * side_y], [x0 + 0.5 * side_x, y0 + 0.8 * side_y]],
                          dtype=torch.float64)
    pts = torch.cat(sides + [inside])
    # outer eye corners (36, 45) on the top edge at 20 % and 80 % of the width: 0.6 * side_x apart
    pts[36] = torch.tensor([x0 + 0.2 * side_x, y0 + 0.1 * side_y], dtype=torch.float64)
    pts[45] = torch.tensor([x0 + 0.8 * side_x, y0 + 0.1 * side_y], dtype=torch.float64)
    return pts


def test_bbox_nme_analytic_square_and_rectangle():
    square = _square_landmarks(100.0, 100.0)
    assert float(landmark_normaliser(square)) == pytest.approx(100.0, rel=1e-12)  # sqrt(w h)
    assert float(landmark_normaliser(square, "eye")) == pytest.approx(60.0, rel=1e-12)
    shifted = square + torch.tensor([3.0, 4.0], dtype=torch.float64)  # every point 5 px off
    assert nme(shifted, square) == pytest.approx(5.0, rel=1e-12)  # 5 px / 100 px
    assert nme(shifted, square, norm="bbox") == pytest.approx(5.0, rel=1e-12)
    assert nme(shifted, square, norm="eye") == pytest.approx(100 * 5.0 / 60.0, rel=1e-12)
    # a 200 x 50 box has sqrt(w h) = 100 too; the prediction's own box does not matter (target only)
    rect = _square_landmarks(200.0, 50.0)
    pred = rect + torch.tensor([0.0, -5.0], dtype=torch.float64)
    assert float(nme_bbox_per_sample(pred, rect)) == pytest.approx(5.0, rel=1e-12)
    assert nme(rect, pred) == pytest.approx(5.0, rel=1e-12)  # box of the (shifted) target: same size
    big = rect * 2.0  # scale both: NME unchanged
    assert nme(big + torch.tensor([0.0, -10.0], dtype=torch.float64), big) == pytest.approx(5.0, rel=1e-12)
    # batched with a degenerate target (all points equal: zero box) -> NaN, the others unaffected
    target = torch.stack([square, torch.full_like(square, 7.0)])
    per = nme_per_sample(torch.stack([shifted, shifted]), target)
    assert float(per[0]) == pytest.approx(5.0) and math.isnan(float(per[1]))


def test_bbox_nme_matches_naive_loop():
    rng = np.random.default_rng(5)
    target = rng.uniform(0, 200, size=(3, 2, 68, 2))
    pred = target + rng.normal(scale=4.0, size=target.shape)
    per = nme_per_sample(torch.as_tensor(pred), torch.as_tensor(target), norm="bbox").numpy()
    for i in range(3):
        for j in range(2):
            t, p = target[i, j], pred[i, j]
            w, h = t[:, 0].max() - t[:, 0].min(), t[:, 1].max() - t[:, 1].min()
            ref = 100 * np.mean([math.dist(p[k], t[k]) for k in range(68)]) / math.sqrt(w * h)
            assert per[i, j] == pytest.approx(ref, rel=1e-12)


def test_mpve_known_offset():
    gt = torch.randn(5, 40, 3, dtype=torch.float64)
    pred = gt + torch.tensor([0.003, 0.004, 0.0], dtype=torch.float64)
    assert mpve(pred, gt) == pytest.approx(5.0)
    pred_views = torch.stack([gt, pred], dim=1)  # (F, V, N, 3) against (F, 1, N, 3)
    assert mpve(pred_views, gt[:, None]) == pytest.approx(2.5)


def _random_rotation(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 3) proper rotations (det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


def _naive_umeyama(p: np.ndarray, g: np.ndarray, allow_reflection: bool = False):
    """Textbook Umeyama for one (N, 3) pair with numpy: (s, R, t, aligned)."""
    mp, mg = p.mean(0), g.mean(0)
    cov = sum(np.outer(g[n] - mg, p[n] - mp) for n in range(len(p))) / len(p)
    u, sv, vt = np.linalg.svd(cov)
    d = np.eye(3)
    if not allow_reflection and np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2, 2] = -1.0
    rot = u @ d @ vt
    s = np.trace(np.diag(sv) @ d) / np.mean(np.sum((p - mp) ** 2, axis=1))
    t = mg - s * rot @ mp
    return s, rot, t, np.array([s * rot @ p[n] + t for n in range(len(p))])


def test_mpve_aligned_zero_for_a_similar_copy():
    rng = np.random.default_rng(8)
    gt = rng.normal(size=(4, 2, 300, 3)) * 0.08  # metres, head-sized
    rot = _random_rotation(rng, 8).reshape(4, 2, 3, 3)
    s = rng.uniform(0.5, 2.0, size=(4, 2))
    t = rng.normal(size=(4, 2, 1, 3))
    pred = s[..., None, None] * gt @ np.swapaxes(rot, -1, -2) + t
    p, g = torch.as_tensor(pred), torch.as_tensor(gt)
    assert mpve(p, g) > 10.0  # far apart before alignment
    assert mpve_aligned(p, g) == pytest.approx(0.0, abs=1e-9)  # mm
    assert float(mpve_aligned_per_sample(p, g).abs().max()) < 1e-9
    aligned, (s_hat, r_hat, t_hat) = similarity_align(p, g, return_transform=True)
    np.testing.assert_allclose(aligned.numpy(), gt, atol=1e-12)
    np.testing.assert_allclose(s_hat.numpy(), 1.0 / s, rtol=1e-10)  # the inverse similarity
    np.testing.assert_allclose(r_hat.numpy(), np.swapaxes(rot, -1, -2), atol=1e-10)
    np.testing.assert_allclose((s_hat[..., None, None] * p @ r_hat.transpose(-1, -2) + t_hat[..., None, :]).numpy(),
                               aligned.numpy(), atol=1e-12)
    # float32 input is promoted (mm scale: float32 rounding of metres is ~1e-5 mm)
    assert mpve_aligned(p.float(), g.float()) < 1e-3


def test_mpve_aligned_matches_naive_loop():
    rng = np.random.default_rng(9)
    n_f, n_v, n = 3, 2, 50
    gt = rng.normal(size=(n_f, n, 3)) * 0.1
    pred = gt[:, None] @ np.swapaxes(_random_rotation(rng, n_f * n_v).reshape(n_f, n_v, 3, 3), -1, -2) * 1.3
    pred += rng.normal(size=pred.shape) * 0.01 + rng.normal(size=(n_f, n_v, 1, 3))
    per = mpve_aligned_per_sample(torch.as_tensor(pred), torch.as_tensor(gt)[:, None]).numpy()  # broadcast
    aligned, (s, r, t) = similarity_align(torch.as_tensor(pred), torch.as_tensor(gt)[:, None], return_transform=True)
    for f in range(n_f):
        for v in range(n_v):
            s_ref, r_ref, t_ref, al_ref = _naive_umeyama(pred[f, v], gt[f])
            err = np.mean([np.linalg.norm(al_ref[k] - gt[f, k]) for k in range(n)]) * 1000.0
            assert per[f, v] == pytest.approx(err, rel=1e-9)
            assert float(s[f, v]) == pytest.approx(s_ref, rel=1e-9)
            np.testing.assert_allclose(r[f, v].numpy(), r_ref, atol=1e-9)
            np.testing.assert_allclose(t[f, v].numpy(), t_ref, atol=1e-9)
            np.testing.assert_allclose(aligned[f, v].numpy(), al_ref, atol=1e-12)
    assert mpve_aligned(torch.as_tensor(pred), torch.as_tensor(gt)[:, None]) == pytest.approx(per.mean(), rel=1e-12)
    # these poses differ by random rotations: far below the unaligned MPVE
    assert per.mean() < 0.5 * mpve(torch.as_tensor(pred), torch.as_tensor(gt)[:, None])


def test_similarity_align_never_reflects():
    rng = np.random.default_rng(10)
    gt = rng.normal(size=(200, 3)) * np.array([0.08, 0.1, 0.06])
    mirrored = gt * np.array([-1.0, 1.0, 1.0]) @ _random_rotation(rng, 1)[0].T + 0.05  # reflection + motion
    s_ref, r_ref, _, al_ref = _naive_umeyama(mirrored, gt, allow_reflection=True)
    assert np.linalg.det(r_ref) < 0 and np.abs(al_ref - gt).max() < 1e-12  # a reflection would fit exactly
    aligned, (s, r, _) = similarity_align(torch.as_tensor(mirrored), torch.as_tensor(gt), return_transform=True)
    assert float(torch.linalg.det(r)) == pytest.approx(1.0, abs=1e-12)
    err = mpve_aligned(torch.as_tensor(mirrored), torch.as_tensor(gt))
    assert err > 10.0  # mm: a mirror image is not a similar copy
    _, r_fix, _, al_fix = _naive_umeyama(mirrored, gt)
    np.testing.assert_allclose(r.numpy(), r_fix, atol=1e-9)
    assert err == pytest.approx(np.linalg.norm(al_fix - gt, axis=1).mean() * 1000.0, rel=1e-9)


def test_similarity_align_errors_and_non_finite():
    p = torch.randn(2, 10, 3, dtype=torch.float64)
    with pytest.raises(ShapeError):
        similarity_align(p, p[:, :9])
    with pytest.raises(ShapeError):
        mpve_aligned(p[..., :2], p[..., :2])
    with pytest.raises(ShapeError, match="floating"):
        mpve_aligned(p.long(), p)
    bad = p.clone()
    bad[1, 3, 0] = float("nan")
    with pytest.raises(ShapeError, match="finite"):
        similarity_align(bad, p)
    per = mpve_aligned_per_sample(bad, p)
    assert float(per[0]) == pytest.approx(0.0, abs=1e-9) and math.isnan(float(per[1]))
    # all points of pred coincide: scale 0, aligned onto the gt centroid
    flat = similarity_align(torch.zeros(10, 3, dtype=torch.float64), p[0])
    torch.testing.assert_close(flat, p[0].mean(0).expand(10, 3))


# ----------------------------------------------------------------------------------------------- sequences
def tiny_flame(seed: int = 0):
    """A small random FLAME-format model (72 vertices) + landmark embedding: fast, same code paths."""
    from neuface.flame.model import FLAME_PARENTS, FlameModel, LandmarkEmbedding
    from neuface.render import uv_sphere

    rng = np.random.default_rng(seed)
    verts, faces = uv_sphere(8, 10)
    v = verts.numpy().astype(np.float64) * np.array([0.075, 0.1, 0.085])
    n_v, n_faces = v.shape[0], faces.shape[0]
    reg = rng.random((5, n_v)) * (rng.random((5, n_v)) < 0.2)
    reg[:, 0] += 1e-3
    weights = np.exp(rng.normal(size=(n_v, 5)))
    weights[:, 0] += 3.0
    model = FlameModel(v_template=v, faces=faces.numpy().astype(np.int64),
                       shapedirs=rng.normal(size=(n_v, 3, 400)) * 1e-3, posedirs=rng.normal(size=(n_v, 3, 36)) * 1e-3,
                       J_regressor=reg / reg.sum(1, keepdims=True), weights=weights / weights.sum(1, keepdims=True),
                       parents=np.array(FLAME_PARENTS, dtype=np.int64), num_shape_total=300)
    emb = LandmarkEmbedding(
        static_lmk_faces_idx=rng.integers(0, n_faces, 51), static_lmk_bary_coords=rng.dirichlet([1, 1, 1], 51),
        dynamic_lmk_faces_idx=rng.integers(0, n_faces, (79, 17)),
        dynamic_lmk_bary_coords=rng.dirichlet([1, 1, 1], (79, 17)),
        full_lmk_faces_idx=rng.integers(0, n_faces, 68), full_lmk_bary_coords=rng.dirichlet([1, 1, 1], 68))
    return model, emb


def tiny_flame_files(directory) -> list:
    """Write :func:`tiny_flame` as FLAME .pkl + embedding .npy; returns the CLI arguments --flame/--embedding."""
    from neuface.flame.io import write_flame_pickle, write_landmark_embedding

    model, emb = tiny_flame()
    directory.mkdir(parents=True, exist_ok=True)
    write_flame_pickle(model, directory / "model.pkl")
    write_landmark_embedding(emb, directory / "emb.npy")
    return ["--flame", directory / "model.pkl", "--embedding", directory / "emb.npy"]


@pytest.fixture(scope="module")
def flame():
    from neuface.flame import FlameLayer

    model, emb = tiny_flame()
    return FlameLayer(model, emb, n_shape=100, n_exp=50, dtype=torch.float64)


def _random_fit(rng: np.random.Generator, n_f: int, n_v: int) -> dict[str, np.ndarray]:
    return {
        "shape": rng.normal(size=100) * 0.5,
        "expression": rng.normal(size=(n_f, n_v, 50)) * 0.5,
        "global_pose": rng.normal(size=(n_f, n_v, 3)) * 0.2,
        "pose": np.concatenate([rng.normal(size=(n_f, n_v, 3)) * 0.05, np.abs(rng.normal(size=(n_f, n_v, 3))) * 0.1,
                                np.zeros((n_f, n_v, 6))], axis=-1),
        "landmarks": rng.uniform(50, 150, size=(n_f, n_v, 68, 2)),
        "landmarks_pred": rng.uniform(50, 150, size=(n_f, n_v, 68, 2)),
        "detected": rng.random((n_f, n_v)) > 0.2,
    }


def test_sequence_metrics_match_direct_flame(tmp_path, flame):
    rng = np.random.default_rng(2)
    n_f, n_v = 7, 3
    p = _random_fit(rng, n_f, n_v)
    path = write_fit_file(tmp_path / "s.h5", sequence="s", annotator="ann", views=["a", "b", "c"], **p)
    gt_path = tmp_path / "gt.npz"
    gt = {"shape": rng.normal(size=100) * 0.5, "expression": rng.normal(size=(n_f + 2, 50)) * 0.5,
          "pose": np.zeros((n_f + 2, 12)), "global_pose": np.zeros((n_f + 2, 3, 3)),
          "landmarks": rng.uniform(50, 150, size=(n_f + 2, 3, 68, 2)), "views": np.array(["c", "a", "b"])}
    np.savez(gt_path, **gt)
    res = sequence_metrics(path, flame, gt_path=gt_path, chunk=2)  # chunk 2: moments cross chunk borders
    assert res["status"] == "ok" and res["n_frames"] == n_f

    f32 = {k: torch.as_tensor(v.astype(np.float32), dtype=torch.float64) for k, v in p.items() if k != "detected"}
    b = n_f * n_v

    def run(global_pose):
        return flame(shape=f32["shape"].expand(b, -1), expression=f32["expression"].reshape(b, -1),
                     pose=f32["pose"].reshape(b, -1), global_pose=global_pose)

    posed = run(f32["global_pose"].reshape(b, 3))
    canon = run(None).vertices.reshape(n_f, n_v, -1, 3)
    lm = posed.landmarks3d.reshape(n_f, n_v, 68, 3)
    vs = posed.vertices.reshape(n_f, n_v, -1, 3)
    ref_l = np.mean([_naive_msi(lm[:, v].numpy()) for v in range(n_v)])
    ref_v = np.mean([msi_3d(vs[:, v]) for v in range(n_v)])
    m = res["metrics"]
    assert m["msi3d_l"] == pytest.approx(ref_l, rel=1e-6)
    assert m["msi3d_v"] == pytest.approx(ref_v, rel=1e-6)
    assert m["cvd"] == pytest.approx(float(cvd(canon).mean()), rel=1e-9)
    assert list(res["per_view"]["cvd"].values()) == pytest.approx(cvd_per_view(canon).tolist(), rel=1e-9)
    assert len(res["per_frame"]["cvd"]) == n_f
    assert res["format_version"] == 2 and set(m) == set(res["units"])
    det = torch.as_tensor(p["detected"])
    lp, ld = torch.as_tensor(p["landmarks_pred"]), torch.as_tensor(p["landmarks"])
    gl = torch.as_tensor(gt["landmarks"][:n_f][:, [1, 2, 0]])  # GT views matched by name
    for key, target, valid, norm in (("nme", ld, det, "bbox"), ("nme_eye", ld, det, "eye"),
                                     ("nme_gt", gl, None, "bbox"), ("nme_gt_eye", gl, None, "eye")):
        assert m[key] == pytest.approx(nme(lp, target, valid, norm=norm), rel=1e-5), key
        for v, name in enumerate(["a", "b", "c"]):
            ref = nme(lp[:, v], target[:, v], None if valid is None else valid[:, v], norm=norm)
            assert res["per_view"][key][name] == pytest.approx(ref, rel=1e-5), (key, name)
    assert m["nme"] != pytest.approx(m["nme_eye"], rel=1e-3)  # the two normalisations differ
    g = torch.as_tensor(gt["expression"][:n_f])
    gv = flame(shape=torch.as_tensor(gt["shape"])[None].expand(n_f, -1), expression=g,
               pose=torch.zeros(n_f, 12, dtype=torch.float64)).vertices
    assert m["mpve"] == pytest.approx(mpve(canon, gv[:, None]), rel=1e-9)
    # aligned MPVE: a per-(frame, view) numpy Umeyama loop on all vertices
    naive = np.array([[np.linalg.norm(_naive_umeyama(canon[f, v].numpy(), gv[f].numpy())[3] - gv[f].numpy(),
                                      axis=1).mean() * 1000.0 for v in range(n_v)] for f in range(n_f)])
    assert m["mpve_aligned"] == pytest.approx(naive.mean(), rel=1e-9)
    assert list(res["per_view"]["mpve_aligned"].values()) == pytest.approx(naive.mean(axis=0).tolist(), rel=1e-9)
    assert list(res["per_view"]["mpve"].values()) == pytest.approx(
        [mpve(canon[:, v], gv) for v in range(n_v)], rel=1e-9)
    assert m["mpve_aligned"] < m["mpve"]


def test_per_sample_error_parts_match_a_naive_loop_and_vanish_when_that_part_is_true(tmp_path, flame):
    rng = np.random.default_rng(5)
    n_f, n_v = 5, 2
    gt = {"shape": rng.normal(size=100) * 0.5, "expression": rng.normal(size=(n_f, 50)) * 0.5,
          "pose": np.concatenate([np.zeros((n_f, 3)), np.abs(rng.normal(size=(n_f, 3))) * 0.1, np.zeros((n_f, 6))], 1),
          "global_pose": np.zeros((n_f, n_v, 3)), "landmarks": rng.uniform(50, 150, size=(n_f, n_v, 68, 2)),
          "views": np.array(["a", "b"])}
    np.savez(tmp_path / "gt.npz", **gt)
    p = _random_fit(rng, n_f, n_v)

    def parts(fit, name):
        path = write_fit_file(tmp_path / f"{name}.h5", sequence=name, annotator="ann", views=["a", "b"], **fit)
        per: dict[str, np.ndarray] = {}
        sequence_metrics(path, flame, gt_path=tmp_path / "gt.npz", chunk=2, per_sample=per)
        return per

    per = parts(p, "rand")
    assert {k: v.shape for k, v in per.items()} == {k: (n_f, n_v) for k in
                                                    ("mpve_aligned", "mpve_identity", "mpve_expression")}
    f64 = {k: torch.as_tensor(np.asarray(v, dtype=np.float32), dtype=torch.float64) for k, v in p.items()}
    g64 = {k: torch.as_tensor(np.asarray(gt[k], dtype=np.float32), dtype=torch.float64) for k in
           ("shape", "expression", "pose")}
    g_neutral = flame(shape=g64["shape"][None]).vertices[0].numpy()
    p_neutral = flame(shape=f64["shape"][None]).vertices[0].numpy()
    for f in range(n_f):
        g_true = flame(shape=g64["shape"][None], expression=g64["expression"][f:f + 1],
                       pose=g64["pose"][f:f + 1]).vertices[0].numpy()
        for v in range(n_v):
            on_true = flame(shape=g64["shape"][None], expression=f64["expression"][f, v][None],
                            pose=f64["pose"][f, v][None]).vertices[0].numpy()
            for key, pred, ref in (("mpve_identity", p_neutral, g_neutral), ("mpve_expression", on_true, g_true)):
                naive = np.linalg.norm(_naive_umeyama(pred, ref)[3] - ref, axis=1).mean() * 1000.0
                assert per[key][f, v] == pytest.approx(naive, rel=1e-6), (key, f, v)
    assert (per["mpve_identity"] > 0).all() and (per["mpve_expression"] > 0).all()
    true_shape = parts({**p, "shape": gt["shape"]}, "true_shape")
    assert true_shape["mpve_identity"].max() < 1e-6 and true_shape["mpve_expression"] == pytest.approx(
        per["mpve_expression"], rel=1e-9)
    true_motion = parts({**p, "expression": np.repeat(gt["expression"][:, None], n_v, 1),
                         "pose": np.repeat(gt["pose"][:, None], n_v, 1)}, "true_motion")
    assert true_motion["mpve_expression"].max() < 1e-6
    assert true_motion["mpve_identity"] == pytest.approx(per["mpve_identity"], rel=1e-9)


def test_sequence_metrics_monocular_and_failed(tmp_path, flame):
    rng = np.random.default_rng(3)
    p = _random_fit(rng, 5, 1)
    path = write_fit_file(tmp_path / "m.h5", sequence="m", annotator="regress", views=["mono"], **p)
    gt_path = tmp_path / "gt.npz"
    np.savez(gt_path, shape=p["shape"], expression=p["expression"][:, 0], pose=p["pose"][:, 0],
             global_pose=p["global_pose"], landmarks=p["landmarks_pred"], views=np.array(["front"]))
    res = sequence_metrics(path, flame, gt_path=gt_path)
    m = res["metrics"]
    assert m["cvd"] is None and "cvd" not in res["per_view"]
    assert m["mpve"] == pytest.approx(0.0, abs=1e-3)  # GT = fit (float32 rounding only); view mono -> front
    assert m["mpve_aligned"] == pytest.approx(0.0, abs=1e-3)
    assert m["nme_gt"] == pytest.approx(0.0, abs=1e-4) and m["nme_gt_eye"] == pytest.approx(0.0, abs=1e-4)
    assert set(res["per_view"]["nme_gt"]) == {"mono"} and set(res["per_view"]["mpve_aligned"]) == {"mono"}
    np.savez(gt_path, shape=p["shape"], expression=p["expression"][:, 0], pose=p["pose"][:, 0],
             global_pose=np.zeros((5, 2, 3)), landmarks=np.zeros((5, 2, 68, 2)), views=np.array(["x", "y"]))
    with pytest.raises(NeufaceError, match="do not match"):
        sequence_metrics(path, flame, gt_path=gt_path)
    failed = StageStatus.failed("bad", "fit", "non-finite loss")
    fpath = write_fit_file(tmp_path / "f.h5", sequence="bad", annotator="neuface", views=["mono"], status=failed,
                           **{k: v for k, v in p.items()})
    res = sequence_metrics(fpath, flame)
    assert res["status"] == "failed" and "metrics" not in res and res["reason"] == "non-finite loss"


def _cli(name: str, *argv) -> int:
    """Run a subcommand through neuface.cli.main when registered there, else through its own module."""
    import argparse
    import importlib

    from neuface import cli

    module = {"metrics": "metrics", "report": "report", "landmarks-from-gt": "gtlandmarks"}[name]
    argv = [str(a) for a in argv]
    if module in cli.COMMAND_MODULES:
        return cli.main([name, *argv])
    parser = argparse.ArgumentParser()
    importlib.import_module(f"neuface.cli.{module}").register(parser.add_subparsers())
    args = parser.parse_args([name, *argv])
    return args.func(args)


def test_metrics_cli(tmp_path):
    run_cli = _cli
    flame_args = tiny_flame_files(tmp_path / "model")
    rng = np.random.default_rng(4)
    ok = write_fit_file(tmp_path / "ok.h5", sequence="s1", annotator="neuface", views=["a", "b"],
                        **_random_fit(rng, 6, 2))
    out = tmp_path / "metrics" / "neuface" / "s1.json"
    assert run_cli("metrics", "--fit", ok, *flame_args, "--out", out) == 0
    data = json.loads(out.read_text())
    assert data["status"] == "ok" and data["annotator"] == "neuface" and data["metrics"]["cvd"] > 0
    assert data["metrics"]["mpve"] is None and data["metrics"]["mpve_aligned"] is None
    assert data["metrics"]["nme_gt"] is None and data["metrics"]["nme_eye"] > 0 and data["metrics"]["nme"] > 0
    bad = write_fit_file(tmp_path / "bad.h5", sequence="s2", annotator="neuface", views=["a"],
                         status=StageStatus.failed("s2", "fit", "diverged"), **_random_fit(rng, 6, 1))
    out2 = tmp_path / "metrics" / "neuface" / "s2.json"
    assert run_cli("metrics", "--fit", bad, *flame_args, "--out", out2) == 0
    data = json.loads(out2.read_text())
    assert data["status"] == "failed" and "metrics" not in data


def test_reads_files_of_the_fitting_stage_writer(tmp_path, flame):
    output = pytest.importorskip("neuface.fitting.output")
    rng = np.random.default_rng(6)
    p = _random_fit(rng, 5, 2)
    p.update(cam=np.tile([8.0, 0, 0], (5, 2, 1)), crop_transforms=np.tile(np.eye(3), (5, 2, 1, 1)))
    meta = output.FitMeta(annotator="neuface", views=["a", "b"], n_frames=5, fps=25.0, encoder_id="x",
                          config_hash="0" * 64, config="{}", flame_sha256="")
    output.write_fit(tmp_path / "w.h5", StageStatus("w", "fit"), meta, p, losses={"total": [2.0, 1.0]})
    ours = write_fit_file(tmp_path / "o.h5", sequence="w", annotator="neuface", views=["a", "b"], **p)
    a, b = sequence_metrics(tmp_path / "w.h5", flame), sequence_metrics(ours, flame)
    assert a["metrics"] == b["metrics"] and a["fit"]["losses_final"] == {"total": 1.0}


@pytest.mark.cuda
def test_sequence_metrics_on_cuda_match_cpu(tmp_path, flame):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    p = _random_fit(np.random.default_rng(7), 6, 3)
    path = write_fit_file(tmp_path / "c.h5", sequence="c", annotator="a", views=["a", "b", "c"], **p)
    cpu = sequence_metrics(path, flame)["metrics"]
    gpu = sequence_metrics(path, flame.to("cuda"))["metrics"]
    flame.to("cpu")
    for key, value in cpu.items():
        assert (value is None and gpu[key] is None) or gpu[key] == pytest.approx(value, rel=1e-6)
