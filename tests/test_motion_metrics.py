"""Motion metrics (Table 4): Fréchet distance against analytic Gaussians, APD against naive pair loops, and the
per-window motion features on motions whose statistics are known in closed form."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from neuface.errors import NeufaceError
from neuface.geometry.rotations import axis_angle_to_matrix
from neuface.metrics.motion import FEATURE_NAMES, apd, frechet_distance, motion_features


def _orthogonal_design(n_rows: int, n_cols: int) -> np.ndarray:
    """Zero-mean ±1 columns that are exactly orthogonal (Sylvester-Hadamard without its constant column): their
    sample covariance is exactly diagonal."""
    h = np.array([[1.0]])
    while h.shape[0] < n_rows:
        h = np.block([[h, h], [h, -h]])
    return h[:, 1:n_cols + 1]


def test_fd_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(200, 12)) @ np.random.default_rng(1).normal(size=(12, 12))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(torch.as_tensor(feats), feats) == pytest.approx(0.0, abs=1e-6)


def test_fd_one_dimensional_analytic():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 2.0, (500, 1)), rng.normal(-0.5, 0.7, (300, 1))
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    expected = (a.mean() - b.mean()) ** 2 + (sa - sb) ** 2  # W2² of two 1-D Gaussians
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_fd_diagonal_analytic_and_monotonic_in_the_shift():
    sig_a, sig_b = np.array([1.0, 2.0, 0.5]), np.array([0.3, 2.5, 1.0])
    design = _orthogonal_design(16, 3)
    scale = np.sqrt(16 / 15)  # unbiased covariance of ±1 columns is 16/15: rescale to exactly σ²
    a = design / scale * sig_a
    b = design / scale * sig_b
    base = float(((sig_a - sig_b) ** 2).sum())
    assert frechet_distance(a, b) == pytest.approx(base, rel=1e-9)
    previous = -1.0
    for shift in (0.0, 0.1, 0.5, 1.0, 3.0):
        fd = frechet_distance(a + shift, b)
        assert fd == pytest.approx(base + 3 * shift ** 2, rel=1e-9)
        assert fd > previous
        previous = fd


def test_fd_singular_covariances_are_regularised():
    a = np.random.default_rng(3).normal(size=(3, 8))  # 3 samples in 8 dims: rank-2 covariances
    fd = frechet_distance(a, a + 1.0)
    assert math.isfinite(fd) and fd == pytest.approx(8.0, rel=1e-3)


@pytest.mark.parametrize("bad", [np.zeros((1, 3)), np.zeros((5,)), np.full((4, 3), np.nan)])
def test_fd_rejects_bad_inputs(bad):
    with pytest.raises(NeufaceError):
        frechet_distance(bad, np.zeros((4, 3)))
    with pytest.raises(NeufaceError, match="dimensions"):
        frechet_distance(np.zeros((4, 2)), np.zeros((4, 3)))


def test_apd_analytic_offsets():
    x = torch.randn(7, 68, 3, dtype=torch.float64) * 0.05
    d = 0.02  # metres
    offset = torch.tensor([d / math.sqrt(3)] * 3, dtype=torch.float64)
    assert apd(torch.stack([x, x + offset])) == pytest.approx(d * 100, rel=1e-12)  # cm
    three = torch.stack([x, x + offset, x + 2 * offset])
    assert apd(three) == pytest.approx((d + 2 * d + d) / 3 * 100, rel=1e-12)
    assert apd(torch.stack([x, x, x])) == 0.0


def test_apd_against_a_naive_pair_loop():
    s = torch.randn(5, 9, 68, 3, dtype=torch.float64)
    pairs = list(itertools.combinations(range(5), 2))
    naive = sum(float(np.mean([[np.linalg.norm((s[i, t, k] - s[j, t, k]).numpy()) for k in range(68)]
                               for t in range(9)])) for i, j in pairs) / len(pairs)
    assert apd(s) == pytest.approx(naive * 100, rel=1e-10)
    with pytest.raises(NeufaceError):
        apd(s[:1])


def test_motion_features_of_known_motions():
    fps, t = 25.0, 50  # two 1-s windows
    rng = torch.Generator().manual_seed(0)
    rest = torch.randn(68, 3, generator=rng, dtype=torch.float64) * 0.05
    v = torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64)  # 1 cm/s translation of every landmark
    times = torch.arange(t, dtype=torch.float64)[:, None, None] / fps
    lmk = rest + v * times
    omega = 0.2  # rad/s about y
    zeros = torch.zeros(t, dtype=torch.float64)
    rot = axis_angle_to_matrix(torch.stack([zeros, torch.arange(t, dtype=torch.float64) * omega / fps, zeros], 1))
    feats = motion_features(lmk, rot, fps, window_s=1.0)
    assert feats.shape == (2, len(FEATURE_NAMES))
    named = dict(zip(FEATURE_NAMES, feats[0].tolist(), strict=True))
    n = 25
    times_w = torch.arange(n, dtype=torch.float64) / fps
    rms = float(((times_w - times_w.mean()) ** 2).mean().sqrt()) * 1.0  # cm (v = 1 cm/s)
    for region in ("contour", "brows", "nose", "eyes", "mouth"):
        assert named[f"{region}_speed_mean_cms"] == pytest.approx(1.0, rel=1e-9)
        assert named[f"{region}_speed_std_cms"] == pytest.approx(0.0, abs=1e-9)
        assert named[f"{region}_accel_mean_cms2"] == pytest.approx(0.0, abs=1e-7)
        assert named[f"{region}_disp_cm"] == pytest.approx(rms, rel=1e-9)
    opening = float((rest[62] - rest[66]).norm()) * 100
    assert named["mouth_open_mean_cm"] == pytest.approx(opening, rel=1e-9)
    assert named["head_speed_mean_degs"] == pytest.approx(math.degrees(omega), rel=1e-6)
    assert named["head_speed_std_degs"] == pytest.approx(0.0, abs=1e-6)
    angles = (times_w - times_w.mean()) * omega
    assert named["head_angle_rms_deg"] == pytest.approx(math.degrees(float(angles.pow(2).mean().sqrt())), rel=1e-4)
    # batched input = the rows of each sample, in order; a sequence shorter than a window gives no row
    both = motion_features(torch.stack([lmk, lmk + 1.0]), torch.stack([rot, rot]), fps)
    assert both.shape == (4, len(FEATURE_NAMES)) and torch.allclose(both[:2], feats)
    assert motion_features(lmk[:10], rot[:10], fps).shape == (0, len(FEATURE_NAMES))
