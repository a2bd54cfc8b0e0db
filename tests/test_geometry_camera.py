"""Tests for neuface.geometry.camera: weak perspective, NDC <-> pixels, pinhole projection, camera classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuface.errors import ShapeError
from neuface.geometry.camera import (
    PinholeCamera,
    WeakPerspectiveCamera,
    ndc_to_pixels,
    pinhole_project,
    pixels_to_ndc,
    weak_perspective_project,
)
from neuface.geometry.rotations import axis_angle_to_matrix

F64 = torch.float64


def test_weak_perspective_hand_computed():
    pts = torch.tensor([[[0.1, 0.2, 0.3], [0.0, 0.0, -0.5]]], dtype=F64)
    cam = torch.tensor([[2.0, 0.05, -0.1]], dtype=F64)
    out = weak_perspective_project(pts, cam)
    # x = s (X + tx); y = -s (Y + ty) (image y down); depth = -s Z (points towards the camera are closer)
    want = torch.tensor([[[0.3, -0.2, -0.6], [0.1, 0.2, 1.0]]], dtype=F64)
    torch.testing.assert_close(out, want)


def test_weak_perspective_up_is_up_on_screen():
    pts = torch.tensor([[[0.0, 0.1, 0.0], [0.0, -0.1, 0.0], [0.1, 0.0, 0.0]]], dtype=F64)
    cam = torch.tensor([[5.0, 0.0, 0.0]], dtype=F64)
    pix = WeakPerspectiveCamera(cam).to_screen(pts, (224, 224))
    assert pix[0, 0, 1] < pix[0, 1, 1]  # the higher point has the smaller image row
    assert pix[0, 2, 0] > 111.5  # +x is to the image right


def test_weak_perspective_errors():
    with pytest.raises(ShapeError):
        weak_perspective_project(torch.zeros(2, 5, 2), torch.zeros(2, 3))
    with pytest.raises(ShapeError):
        weak_perspective_project(torch.zeros(2, 5, 3), torch.zeros(3, 3))
    with pytest.raises(ShapeError):
        weak_perspective_project(torch.zeros(2, 5, 3, dtype=torch.int64), torch.zeros(2, 3))


def test_ndc_pixels_corners_and_round_trip():
    h, w = 100, 200
    ndc = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], dtype=F64)
    pix = ndc_to_pixels(ndc, (h, w))
    want = torch.tensor([[-0.5, -0.5], [w - 0.5, h - 0.5], [(w - 1) / 2, (h - 1) / 2]], dtype=F64)
    torch.testing.assert_close(pix, want)
    # the centres of the first and last pixels
    first_last = pixels_to_ndc(torch.tensor([[0.0, 0.0], [w - 1.0, h - 1.0]], dtype=F64), (h, w))
    torch.testing.assert_close(
        first_last, torch.tensor([[-1 + 1 / w, -1 + 1 / h], [1 - 1 / w, 1 - 1 / h]], dtype=F64)
    )
    x = torch.rand(3, 7, 2, dtype=F64) * 4 - 2
    torch.testing.assert_close(pixels_to_ndc(ndc_to_pixels(x, (h, w)), (h, w)), x)
    with pytest.raises(ShapeError):
        ndc_to_pixels(torch.zeros(3, 3), (h, w))
    with pytest.raises(ShapeError):
        pixels_to_ndc(torch.zeros(3, 2, dtype=torch.int64), (h, w))


def test_ndc_to_pixels_matches_grid_sample():
    """The convention is grid_sample's align_corners=False: sampling at ndc_to_pixels(p) ⇔ sampling at p."""
    img = torch.arange(12, dtype=F64).reshape(1, 1, 3, 4)
    ndc = torch.tensor([[[-0.75, -2 / 3], [0.25, 0.0], [0.75, 2 / 3]]], dtype=F64)  # pixel centres
    pix = ndc_to_pixels(ndc, (3, 4))
    sampled = torch.nn.functional.grid_sample(img, ndc[:, None], align_corners=False)[0, 0, 0]
    want = img[0, 0, pix[0, :, 1].round().long(), pix[0, :, 0].round().long()]
    torch.testing.assert_close(pix[0], torch.tensor([[0.0, 0.0], [2.0, 1.0], [3.0, 2.0]], dtype=F64))
    torch.testing.assert_close(sampled, want)


def test_pinhole_identity_pose_hand_computed():
    K = torch.tensor([[[500.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]]], dtype=F64)
    R = torch.eye(3, dtype=F64)[None]
    t = torch.tensor([[0.0, 0.0, 2.0]], dtype=F64)
    pts = torch.tensor([[[0.1, -0.2, 0.0], [0.0, 0.0, 2.0]]], dtype=F64)
    out = pinhole_project(pts, K, R, t)
    want = torch.tensor([[[320 + 500 * 0.05, 240 - 400 * 0.1, 2.0], [320.0, 240.0, 4.0]]], dtype=F64)
    torch.testing.assert_close(out, want)


def test_pinhole_rotated_camera_matches_manual():
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[800.0, 0.0, 300.0], [0.0, 820.0, 200.0], [0.0, 0.0, 1.0]], dtype=F64).expand(2, 3, 3)
    R = axis_angle_to_matrix(torch.randn(2, 3, generator=g, dtype=F64) * 0.3)
    t = torch.tensor([[0.1, -0.05, 3.0], [0.0, 0.2, 2.5]], dtype=F64)
    pts = torch.randn(2, 6, 3, generator=g, dtype=F64) * 0.2
    out = pinhole_project(pts, K, R, t).numpy()
    for b in range(2):
        for i in range(6):
            xc = R[b].numpy() @ pts[b, i].numpy() + t[b].numpy()
            uvw = K[b].numpy() @ xc
            np.testing.assert_allclose(out[b, i], [uvw[0] / uvw[2], uvw[1] / uvw[2], xc[2]], atol=1e-10)


def test_pinhole_camera_centers_and_directions():
    g = torch.Generator().manual_seed(1)
    R = axis_angle_to_matrix(torch.randn(3, 3, generator=g, dtype=F64))
    c = torch.randn(3, 3, generator=g, dtype=F64)
    t = -(R @ c[..., None])[..., 0]
    cam = PinholeCamera(K=torch.eye(3, dtype=F64).expand(3, 3, 3), R=R, t=t)
    torch.testing.assert_close(cam.centers(), c)
    # the centre projects to camera coordinates 0
    pts = torch.randn(3, 5, 3, generator=g, dtype=F64)
    d = cam.directions_to_camera(pts)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(3, 5, dtype=F64))
    dist = (c[:, None] - pts).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(pts + d * dist, c[:, None].expand(3, 5, 3))
    torch.testing.assert_close(cam.to_screen(pts), pinhole_project(pts, cam.K, cam.R, cam.t))


def test_pinhole_depth_orders_points():
    K = torch.eye(3, dtype=F64)[None]
    R = torch.eye(3, dtype=F64)[None]
    t = torch.zeros(1, 3, dtype=F64)
    pts = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]]], dtype=F64)
    out = pinhole_project(pts, K, R, t)
    assert out[0, 0, 2] < out[0, 1, 2]
    with pytest.raises(ShapeError):
        pinhole_project(pts, K[0], R, t)
    with pytest.raises(ShapeError):
        pinhole_project(pts.long(), K, R, t)


def test_weak_perspective_camera_class():
    g = torch.Generator().manual_seed(2)
    cam = torch.tensor([[7.0, 0.01, 0.02], [9.0, -0.02, 0.0]], dtype=F64)
    pts = torch.randn(2, 4, 3, generator=g, dtype=F64) * 0.1
    wp = WeakPerspectiveCamera(cam)
    screen = wp.to_screen(pts, (224, 224))
    proj = weak_perspective_project(pts, cam)
    torch.testing.assert_close(screen[..., :2], ndc_to_pixels(proj[..., :2], (224, 224)))
    torch.testing.assert_close(screen[..., 2], proj[..., 2])
    d = wp.directions_to_camera(pts)
    torch.testing.assert_close(d, torch.tensor([0.0, 0.0, 1.0], dtype=F64).expand(2, 4, 3))
    # a crop pixel scale check: s = 1 maps X = 1 to the right crop edge
    edge = weak_perspective_project(
        torch.tensor([[[1.0, 1.0, 0.0]]], dtype=F64), torch.tensor([[1.0, 0.0, 0.0]], dtype=F64)
    )
    torch.testing.assert_close(
        ndc_to_pixels(edge[..., :2], (224, 224)), torch.tensor([[[223.5, -0.5]]], dtype=F64)
    )
    assert math.isclose(float(screen[0, 0, 0]), float((proj[0, 0, 0] + 1) * 112 - 0.5))
