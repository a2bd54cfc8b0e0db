"""The official-loop reference step of the benchmarks computes the official losses (analytic cases) and trains."""

import math

import torch

from benchmarks.official_step import official_spatial_loss, official_step, official_temporal_loss
from neuface.encoders import BuiltinEncoder
from neuface.fitting.neuface import optimisable_parameters
from neuface.flame import FlameLayer
from neuface.geometry.rotations import axis_angle_to_quaternion
from neuface.synthetic.kit import generate


def _plane(n_side: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat grid facing +z at z = 0 (every vertex visible): (N, 3) vertices and (T, 3) faces."""
    ys, xs = torch.meshgrid(torch.arange(n_side, dtype=torch.float64), torch.arange(n_side, dtype=torch.float64),
                            indexing="ij")
    verts = torch.stack([xs.flatten(), ys.flatten(), torch.zeros(n_side * n_side, dtype=torch.float64)], -1) * 0.01
    faces = []
    for r in range(n_side - 1):
        for c in range(n_side - 1):
            i = r * n_side + c
            faces += [[i, i + 1, i + n_side], [i + 1, i + n_side + 1, i + n_side]]
    return verts, torch.tensor(faces)


def test_spatial_loss_is_zero_for_agreeing_views_and_half_the_offset_for_two_equal_views():
    verts, faces = _plane()
    posed = verts.expand(2, -1, -1)  # one frame, two views, both seeing every vertex equally
    assert official_spatial_loss(posed.clone(), posed, faces, 2, torch.tensor([0])).item() == 0.0
    shifted = posed.clone()
    shifted[1, :, 0] += 0.3  # view 2 off by 0.3 in x: merged = mean; L1 over (view, vertex, xyz) = 0.15 · 2/6
    loss = official_spatial_loss(shifted, posed, faces, 2, torch.tensor([0]))
    assert math.isclose(loss.item(), 0.15 * 2 / 6, rel_tol=1e-9)


def test_spatial_loss_ignores_a_view_that_sees_nothing():
    verts, faces = _plane()
    posed = torch.stack([verts, verts]).clone()
    posed[1, :, 2] = -1.0  # the second view's vertices lie deeper than z = -0.08: confidence 0 there
    canonical = torch.stack([verts, verts]).clone()
    canonical[1, :, 0] += 0.3
    # merged mesh = the first view's (softmax of 1/T against -100/T): L1 = 0.3 on x of view 2 only
    loss = official_spatial_loss(canonical, posed, faces, 2, torch.tensor([0]))
    assert math.isclose(loss.item(), 0.3 / 6, rel_tol=1e-6)


def test_temporal_loss_matches_its_definition_and_is_zero_for_constant_rotation():
    const = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64).expand(8, 3)
    assert official_temporal_loss(const, 1).abs().item() < 1e-12
    g = torch.Generator().manual_seed(0)
    aa = (torch.rand(7 * 2, 3, generator=g, dtype=torch.float64) - 0.5) * 0.4  # 7 frames × 2 views
    q = axis_angle_to_quaternion(aa).reshape(7, 2, 4)
    expected = 0.0
    for v in range(2):
        err = 0.0
        for t in range(7):
            target = q[t, v]
            if 2 <= t < 5:
                m = q[t - 2:t + 2, v].mean(0)
                target = m / m.norm()
            err += (q[t, v] - target).square().sum().item()
        expected += err / (7 * 4)
    assert math.isclose(official_temporal_loss(aa, 2).item(), expected, rel_tol=1e-9)


def test_official_step_updates_the_weights_and_lowers_the_loss():
    model, emb = generate(0)
    flame = FlameLayer(model, emb)
    enc = BuiltinEncoder().reset_parameters(0).eval()
    opt = torch.optim.Adam(optimisable_parameters(enc), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * 3, 3, 64, 64), generator=g, dtype=torch.uint8)
    lmk = torch.rand(6, 68, 2, generator=g) * 0.8 - 0.4
    before = [p.detach().clone() for p in optimisable_parameters(enc)]
    losses = [official_step(enc, flame, images, lmk, 2, opt, enc.input_size, g, anomaly=a)
              for a in (True, False, False, False, False)]
    assert all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, optimisable_parameters(enc), strict=True))
    assert losses[-1] < losses[0]
