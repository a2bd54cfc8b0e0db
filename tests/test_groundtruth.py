"""The `gt` annotator (method groundtruth): the true parameters as a fit, its camera by least squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuface.errors import NeufaceError
from neuface.fitting.config import resolve_annotator
from neuface.fitting.groundtruth import weak_perspective_lstsq
from neuface.geometry.camera import weak_perspective_project


def test_weak_perspective_lstsq_recovers_the_camera_exactly():
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(5, 68, 3, generator=gen, dtype=torch.float64) * 0.1
    cam = torch.stack([torch.rand(5, generator=gen, dtype=torch.float64) * 8 + 2,
                       *(torch.randn(2, 5, generator=gen, dtype=torch.float64) * 0.05)], dim=1)
    target = weak_perspective_project(points, cam)[..., :2]
    assert torch.allclose(weak_perspective_lstsq(points, target), cam, atol=1e-10)


def test_weak_perspective_lstsq_matches_numpy_lstsq_on_noisy_targets():
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(3, 68, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(3, 68, 2, generator=gen, dtype=torch.float64)
    got = weak_perspective_lstsq(points, target)
    for b in range(3):  # unknowns (s, u_x, u_y) with q = s p + u, q = (x, -y); t = u / s
        p, q = points[b, :, :2].numpy(), np.stack([target[b, :, 0], -target[b, :, 1]], -1)
        a = np.zeros((136, 3))
        a[0::2, 0], a[1::2, 0], a[0::2, 1], a[1::2, 2] = p[:, 0], p[:, 1], 1.0, 1.0
        (s, ux, uy), *_ = np.linalg.lstsq(a, q.reshape(-1), rcond=None)
        assert np.allclose(got[b].numpy(), [s, ux / s, uy / s], atol=1e-9)


def test_gt_annotator_needs_the_ground_truth(tmp_path):
    from neuface.fitting.api import run_fit

    settings = resolve_annotator("gt", {"device": "cpu"})
    assert settings.method == "groundtruth"
    for name in ("m.pkl", "e.npy"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(NeufaceError, match="needs the sequence's ground truth"):
        run_fit(tmp_path / "c.h5", tmp_path / "l.h5", tmp_path / "m.pkl", tmp_path / "e.npy", "gt", settings,
                tmp_path / "out.h5")
