"""NeuFace losses and E-step targets vs naive float64 loops, gradchecks, and target properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuface.errors import ShapeError
from neuface.fitting import losses as L
from neuface.flame import FlameLayer
from neuface.flame.model import FlameModel, LandmarkEmbedding
from neuface.geometry.rotations import axis_angle_to_matrix, axis_angle_to_quaternion

D = torch.float64


def rand_quats(n_f: int, n_v: int, seed: int = 0, step: float = 0.15) -> torch.Tensor:
    """A smooth random rotation path per view, with random sign flips (as q and -q are the same rotation)."""
    g = torch.Generator().manual_seed(seed)
    rotvec = torch.cumsum(step * torch.randn(n_f, n_v, 3, generator=g, dtype=D), dim=0)
    q = axis_angle_to_quaternion(rotvec)
    flips = torch.where(torch.rand(n_f, n_v, 1, generator=g) < 0.4, -1.0, 1.0).to(D)
    return q * flips


# ----------------------------------------------------------------------------- naive references
def naive_landmark(pred, target, valid):
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for k in range(pred.shape[1]):
            if valid[b, k]:
                for c in range(2):
                    total += abs(float(pred[b, k, c]) - float(target[b, k, c]))
                    count += 1
    return total / max(count, 1)


def naive_temporal_target(q: np.ndarray, window: int, reduce: str) -> np.ndarray:
    n_f, n_v = q.shape[:2]
    out = np.zeros_like(q)
    for v in range(n_v):
        seq = q[:, v].copy()
        if seq[0, 3] < 0:
            seq[0] *= -1
        for t in range(1, n_f):
            if np.dot(seq[t], seq[t - 1]) < 0:
                seq[t] *= -1
        for t in range(n_f):
            h = min(window // 2, t, n_f - 1 - t)
            block = seq[t - h: t + h + 1]
            m = block.mean(0) if reduce == "mean" else np.median(block, axis=0)
            m = m / np.linalg.norm(m)
            if np.dot(m, q[t, v]) < 0:
                m = -m
            out[t, v] = m
    return out


def naive_mv_target(c: np.ndarray, w: np.ndarray) -> np.ndarray:
    n_f, n_v, n = c.shape[:3]
    out = np.zeros((n_f, n, 3))
    for f in range(n_f):
        for i in range(n):
            tot = sum(w[f, v, i] for v in range(n_v))
            if tot > 0:
                out[f, i] = sum(w[f, v, i] * c[f, v, i] for v in range(n_v)) / tot
            else:
                out[f, i] = c[f, :, i].mean(0)
    return out


# ----------------------------------------------------------------------------- L2D
def test_landmark_loss_matches_naive_and_ignores_nan_targets():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 68, 2, generator=g, dtype=D)
    target = torch.randn(3, 68, 2, generator=g, dtype=D)
    valid = torch.rand(3, 68, generator=g) > 0.3
    target[~valid] = float("nan")
    got = L.landmark_loss(pred, target, valid)
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(naive_landmark(pred, target, valid), rel=1e-12)
    pred.requires_grad_(True)
    L.landmark_loss(pred, target, valid).backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~valid] == 0).all()


def test_landmark_loss_gradcheck_and_all_invalid_is_zero():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 5, 2, generator=g, dtype=D, requires_grad=True)
    target = torch.randn(2, 5, 2, generator=g, dtype=D)
    valid = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 1, 0, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda p: L.landmark_loss(p, target, valid), (pred,))
    assert float(L.landmark_loss(pred.detach(), target, torch.zeros_like(valid))) == 0.0
    with pytest.raises(ShapeError):
        L.landmark_loss(pred, target[:, :4], valid)


# ----------------------------------------------------------------------------- temporal
@pytest.mark.parametrize("reduce", ["mean", "median"])
@pytest.mark.parametrize("window", [1, 3, 5, 9])
def test_temporal_target_matches_naive(reduce, window):
    q = rand_quats(11, 3, seed=window)
    got = L.temporal_target(q, window, reduce)
    want = naive_temporal_target(q.numpy(), window, reduce)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    np.testing.assert_allclose(got.norm(dim=-1).numpy(), 1.0, atol=1e-12)


def test_temporal_target_is_local_centred_and_sign_invariant():
    q = rand_quats(20, 2, seed=3)
    t = L.temporal_target(q, 5, "mean")
    # centred window: frame 10 depends on frames 8..12 only
    q2 = q.clone()
    q2[0] = axis_angle_to_quaternion(torch.tensor([0.5, -0.3, 0.2], dtype=D))
    q2[19] = q2[0]
    t2 = L.temporal_target(q2, 5, "mean")
    torch.testing.assert_close(t[3:17], t2[3:17])
    # flipping input signs flips the (input-aligned) target with them
    sign = torch.where(torch.arange(20) % 3 == 0, -1.0, 1.0).to(D)[:, None, None]
    torch.testing.assert_close(L.temporal_target(q * sign, 5, "mean"), t * sign)
    # a constant rotation is its own target at every frame, ends included
    const = q[:1].expand(20, -1, -1)
    torch.testing.assert_close(L.temporal_target(const, 7, "median"), const)
    with pytest.raises(ShapeError):
        L.temporal_target(q, 4)


def test_temporal_target_slices_equal_full_sequence_targets():
    """Targets over the full sequence are continuous: a window's slice does not depend on the window size."""
    q = rand_quats(30, 2, seed=5)
    full = L.temporal_target(q, 5)
    for size in (4, 7, 30):
        parts = [full[s:s + size] for s in range(0, 30, size)]
        torch.testing.assert_close(torch.cat(parts), full)
    # per-window targets (the official code's defect) differ at window edges
    cut = torch.cat([L.temporal_target(q[s:s + 7], 5) for s in range(0, 30, 7)])
    assert not torch.allclose(cut, full)


def test_temporal_losses_match_naive_and_gradcheck():
    q = rand_quats(6, 2, seed=7).requires_grad_(True)
    target = L.temporal_target(q, 3)
    want = np.mean([np.sum((q[f, v].detach().numpy() - target[f, v].numpy()) ** 2)
                    for f in range(6) for v in range(2)])
    assert float(L.temporal_loss(q, target).detach()) == pytest.approx(want, rel=1e-12)
    naive = []
    for v in range(2):
        for f in range(5):
            a, b = q[f, v].detach().numpy(), q[f + 1, v].detach().numpy()
            naive.append(min(np.sum((a - b) ** 2), np.sum((a + b) ** 2)))
    assert float(L.temporal_loss_naive(q).detach()) == pytest.approx(np.mean(naive), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: L.temporal_loss(x, target), (q,))
    assert torch.autograd.gradcheck(L.temporal_loss_naive, (q,))
    # the target is detached: no gradient flows into it
    tgt = target.clone().requires_grad_(True)
    L.temporal_loss(q, tgt).backward()
    assert tgt.grad is None
    assert float(L.temporal_loss_naive(q[:1].detach())) == 0.0


@pytest.mark.parametrize("naive", [False, True])
def test_em_temporal_steps_smooth_a_jittery_rotation_sequence(naive):
    """Gradient steps on the temporal loss (targets re-estimated each iteration, EM) reduce rotation jitter."""
    g = torch.Generator().manual_seed(0)
    smooth = torch.linspace(-0.4, 0.4, 30, dtype=D)[:, None, None] * torch.tensor([0.2, 1.0, 0.1], dtype=D)
    rotvec = (smooth + 0.05 * torch.randn(30, 1, 3, generator=g, dtype=D)).requires_grad_(True)

    def accel_norm(r):
        return float((r[2:] - 2 * r[1:-1] + r[:-2]).norm(dim=-1).mean())

    before = accel_norm(rotvec.detach())
    opt = torch.optim.SGD([rotvec], lr=2.0)
    for _ in range(40):
        q = axis_angle_to_quaternion(rotvec)
        loss = L.temporal_loss_naive(q) if naive else L.temporal_loss(q, L.temporal_target(q, 5))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert accel_norm(rotvec.detach()) < 0.5 * before
    assert (rotvec.detach() - smooth).norm(dim=-1).mean() < 0.05


# ----------------------------------------------------------------------------- multi-view
def test_multiview_target_matches_naive_with_zero_weight_fallback():
    g = torch.Generator().manual_seed(2)
    c = torch.randn(3, 4, 10, 3, generator=g, dtype=D)
    w = (torch.rand(3, 4, 10, generator=g, dtype=D) > 0.5).to(D) * torch.rand(3, 4, 10, generator=g, dtype=D)
    w[:, :, 0] = 0.0  # no view sees vertex 0: plain mean
    got = L.multiview_target(c, w)
    np.testing.assert_allclose(got.numpy(), naive_mv_target(c.numpy(), w.numpy()), atol=1e-12)
    torch.testing.assert_close(got[:, 0], c[:, :, 0].mean(1))


def test_multiview_losses_match_naive_and_gradcheck():
    g = torch.Generator().manual_seed(4)
    c = torch.randn(2, 3, 5, 3, generator=g, dtype=D, requires_grad=True)
    target = L.multiview_target(c, torch.ones(2, 3, 5, dtype=D))
    cn, tn = c.detach().numpy(), target.numpy()
    want = np.mean([abs(cn[f, v, i, k] - tn[f, i, k]) for f in range(2) for v in range(3) for i in range(5)
                    for k in range(3)])
    assert float(L.multiview_loss(c, target).detach()) == pytest.approx(want, rel=1e-12)
    pairs = [np.abs(cn[f, i] - cn[f, j]).mean() for f in range(2) for i in range(3) for j in range(i + 1, 3)]
    assert float(L.multiview_loss_naive(c).detach()) == pytest.approx(np.mean(pairs), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: L.multiview_loss(x, target), (c,))
    assert torch.autograd.gradcheck(L.multiview_loss_naive, (c,))
    assert float(L.multiview_loss_naive(c[:, :1].detach())) == 0.0


def _tiny_flame(seed: int = 0) -> FlameLayer:
    rng = np.random.default_rng(seed)
    n_v, n_faces = 40, 60
    faces = np.stack([rng.choice(n_v, 3, replace=False) for _ in range(n_faces)]).astype(np.int64)
    j_reg = rng.random((5, n_v)) + 0.05
    logits = 3.0 * rng.normal(size=(n_v, 5))
    model = FlameModel(
        v_template=rng.uniform(-0.1, 0.1, (n_v, 3)), faces=faces,
        shapedirs=0.01 * rng.normal(size=(n_v, 3, 20)), posedirs=0.01 * rng.normal(size=(n_v, 3, 36)),
        J_regressor=j_reg / j_reg.sum(1, keepdims=True), weights=np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
        parents=np.array([-1, 0, 1, 1, 1], dtype=np.int64), num_shape_total=10).validate()
    emb = LandmarkEmbedding(
        static_lmk_faces_idx=rng.integers(0, n_faces, 51), static_lmk_bary_coords=rng.dirichlet(np.ones(3), 51),
        dynamic_lmk_faces_idx=rng.integers(0, n_faces, (79, 17)),
        dynamic_lmk_bary_coords=rng.dirichlet(np.ones(3), (79, 17)),
        full_lmk_faces_idx=rng.integers(0, n_faces, 68), full_lmk_bary_coords=rng.dirichlet(np.ones(3), 68),
    ).validate(n_faces)
    return FlameLayer(model, emb, n_shape=10, n_exp=10, dtype=D)


def test_canonical_vertices_equal_flame_with_zero_global_rotation():
    flame = _tiny_flame()
    g = torch.Generator().manual_seed(0)
    shape, expr = 0.5 * torch.randn(4, 10, generator=g, dtype=D), 0.5 * torch.randn(4, 10, generator=g, dtype=D)
    r, pose = 0.6 * torch.randn(4, 3, generator=g, dtype=D), 0.2 * torch.randn(4, 12, generator=g, dtype=D)
    posed = flame(shape, expr, r, pose)
    zero = flame(shape, expr, torch.zeros_like(r), pose)
    canon = L.canonical_vertices(posed.vertices, axis_angle_to_matrix(r), posed.joints[:, 0])
    torch.testing.assert_close(canon, zero.vertices, atol=1e-12, rtol=0)
