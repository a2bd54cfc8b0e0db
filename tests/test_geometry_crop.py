"""Tests for neuface.geometry.crop: DECA crop boxes, crop transforms, warping and NDC <-> pixel mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuface.errors import ShapeError
from neuface.geometry.camera import ndc_to_pixels, weak_perspective_project
from neuface.geometry.crop import (
    apply_transform,
    crop_ndc_to_pixels,
    crop_to_pixels,
    crop_transform,
    estimate_crop_box,
    invert_transform,
    pixels_to_crop,
    pixels_to_crop_ndc,
    smooth_boxes,
    warp_images,
)

F64 = torch.float64


def _naive_box(lmk: np.ndarray, valid: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    pts = [p for p, ok in zip(lmk, valid, strict=True) if ok and np.isfinite(p).all()]
    if not pts:
        return np.array([np.nan, np.nan]), float("nan")
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    left, right, top, bottom = min(xs), max(xs), min(ys), max(ys)
    old_size = (right - left + bottom - top) / 2 * 1.1
    center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
    return center, old_size * scale


def test_estimate_crop_box_hand_example():
    lmk = torch.tensor([[[100.0, 50.0], [200.0, 250.0], [150.0, 100.0]]], dtype=F64)
    center, size = estimate_crop_box(lmk)
    torch.testing.assert_close(center, torch.tensor([[150.0, 150.0]], dtype=F64))
    torch.testing.assert_close(size, torch.tensor([(100 + 200) / 2 * 1.1 * 1.25], dtype=F64))
    _, size1 = estimate_crop_box(lmk, scale=1.0)
    torch.testing.assert_close(size1, torch.tensor([165.0], dtype=F64))


def test_estimate_crop_box_matches_naive_with_mask_and_nans():
    rng = np.random.default_rng(0)
    lmk = rng.uniform(0, 500, size=(6, 68, 2))
    valid = rng.uniform(size=(6, 68)) > 0.3
    lmk[1, 5] = np.nan  # non-finite points are ignored even when marked valid
    valid[1, 5] = True
    valid[4] = False  # no valid point -> NaN row
    center, size = estimate_crop_box(torch.from_numpy(lmk), torch.from_numpy(valid), scale=1.25)
    for b in range(6):
        c, s = _naive_box(lmk[b], valid[b], 1.25)
        np.testing.assert_allclose(center[b].numpy(), c, rtol=0, atol=1e-12)
        np.testing.assert_allclose(size[b].item(), s, rtol=0, atol=1e-12)
    assert torch.isnan(center[4]).all() and torch.isnan(size[4])
    # without a mask every finite point counts
    c_all, s_all = estimate_crop_box(torch.from_numpy(lmk))
    c0, s0 = _naive_box(lmk[0], np.ones(68, bool), 1.25)
    np.testing.assert_allclose(c_all[0].numpy(), c0, atol=1e-12)
    np.testing.assert_allclose(s_all[0].item(), s0, atol=1e-12)


def test_estimate_crop_box_errors():
    with pytest.raises(ShapeError):
        estimate_crop_box(torch.zeros(2, 68, 3))
    with pytest.raises(ShapeError):
        estimate_crop_box(torch.zeros(2, 68, 2), torch.ones(2, 67, dtype=torch.bool))
    with pytest.raises(ShapeError):
        estimate_crop_box(torch.zeros(2, 68, 2, dtype=torch.int64))


def test_crop_transform_hand_computed():
    center = torch.tensor([[100.0, 50.0]], dtype=F64)
    T = crop_transform(center, torch.tensor([200.0], dtype=F64), out_size=224)
    k = 224 / 200
    want = torch.tensor([[k, 0, -k * 100 + 111.5], [0, k, -k * 50 + 111.5], [0, 0, 1]], dtype=F64)
    torch.testing.assert_close(T[0], want)
    # box edges land on the crop edges, the centre on the crop centre
    corners = torch.tensor([[[0.0, -50.0], [200.0, 150.0], [100.0, 50.0]]], dtype=F64)
    want_c = torch.tensor([[[-0.5, -0.5], [223.5, 223.5], [111.5, 111.5]]], dtype=F64)
    torch.testing.assert_close(pixels_to_crop(corners, T), want_c)


def test_crop_transform_deca_compat_matches_skimage():
    skt = pytest.importorskip("skimage.transform")
    center = np.array([130.3, 90.7])
    size = 151.0
    out = 224
    x0, y0 = center - size / 2
    src = np.array([[x0, y0], [x0, y0 + size], [x0 + size, y0]])
    dst = np.array([[0, 0], [0, out - 1], [out - 1, 0]])
    want = skt.estimate_transform("similarity", src, dst).params
    size_t = torch.tensor([size], dtype=F64)
    got = crop_transform(torch.from_numpy(center)[None], size_t, out, deca_compat=True)
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-9)


def test_round_trips_and_inverse():
    g = torch.Generator().manual_seed(0)
    center = torch.rand(4, 2, generator=g, dtype=F64) * 300
    size = 50 + torch.rand(4, generator=g, dtype=F64) * 200
    T = crop_transform(center, size, out_size=224)
    torch.testing.assert_close(invert_transform(T), torch.linalg.inv(T))
    pts = torch.rand(4, 30, 2, generator=g, dtype=F64) * 400
    torch.testing.assert_close(crop_to_pixels(pixels_to_crop(pts, T), T), pts)
    # apply_transform vs homogeneous matrix product
    homo = torch.cat([pts, torch.ones(4, 30, 1, dtype=F64)], dim=-1)
    torch.testing.assert_close(apply_transform(pts, T), (homo @ T.transpose(1, 2))[..., :2])
    # NDC round trip
    torch.testing.assert_close(crop_ndc_to_pixels(pixels_to_crop_ndc(pts, T, 224), T, 224), pts)


def test_crop_ndc_to_pixels_is_camera_composition():
    g = torch.Generator().manual_seed(1)
    pts3d = torch.randn(2, 10, 3, generator=g, dtype=F64) * 0.1
    cam = torch.tensor([[8.0, 0.01, -0.02], [6.5, -0.03, 0.0]], dtype=F64)
    ndc = weak_perspective_project(pts3d, cam)[..., :2]
    center = torch.tensor([[320.0, 240.0], [100.0, 80.0]], dtype=F64)
    size = torch.tensor([250.0, 90.0], dtype=F64)
    T = crop_transform(center, size, 224)
    got = crop_ndc_to_pixels(ndc, T, 224)
    want = crop_to_pixels(ndc_to_pixels(ndc, (224, 224)), T)
    torch.testing.assert_close(got, want)
    # the crop's NDC corners are the box corners in the original frame; NDC (0, 0) is the box centre
    corners = torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]], dtype=F64).expand(2, -1, -1)
    out = crop_ndc_to_pixels(corners, T, 224)
    torch.testing.assert_close(out[:, 0], center - size[:, None] / 2)
    torch.testing.assert_close(out[:, 1], center + size[:, None] / 2)
    torch.testing.assert_close(out[:, 2], center)


def test_crop_chain_gradcheck():
    center = torch.tensor([[120.0, 90.0]], dtype=F64, requires_grad=True)
    size = torch.tensor([140.0], dtype=F64, requires_grad=True)
    ndc = torch.rand(1, 5, 2, dtype=F64, requires_grad=True)

    def fn(c, s, x):
        return crop_ndc_to_pixels(x, crop_transform(c, s, 224), 224)

    assert torch.autograd.gradcheck(fn, (center, size, ndc))


def test_warp_images_identity():
    img = torch.rand(2, 3, 32, 32, dtype=F64)
    T = crop_transform(torch.full((2, 2), 15.5, dtype=F64), torch.full((2,), 32.0, dtype=F64), out_size=32)
    torch.testing.assert_close(T, torch.eye(3, dtype=F64).expand(2, 3, 3))
    torch.testing.assert_close(warp_images(img, T, 32), img)


def test_warp_images_linear_ramp_is_exact():
    """Bilinear sampling of a linear image is exact: the crop's values are the original coordinates."""
    h, w = 90, 120
    ys, xs = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    img = torch.stack([xs, ys])[None]  # channel 0 = x, channel 1 = y (pixel-centre coordinates)
    center = torch.tensor([[61.3, 44.8]], dtype=F64)
    size = torch.tensor([57.0], dtype=F64)  # box well inside the frame
    T = crop_transform(center, size, out_size=40)
    crop = warp_images(img, T, out_size=40)
    r = torch.arange(40, dtype=F64)
    gy, gx = torch.meshgrid(r, r, indexing="ij")
    crop_pts = torch.stack([gx, gy], dim=-1).reshape(1, -1, 2)
    want = crop_to_pixels(crop_pts, T).reshape(40, 40, 2).permute(2, 0, 1)
    torch.testing.assert_close(crop[0], want, atol=1e-9, rtol=0)


def test_warp_images_bright_dot_lands_at_transformed_location():
    h, w = 120, 160
    x0, y0 = 93.37, 51.62
    ys, xs = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    img = torch.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * 3.0**2))[None, None]
    center = torch.tensor([[85.0, 60.0]], dtype=F64)
    size = torch.tensor([70.0], dtype=F64)
    T = crop_transform(center, size, out_size=112)
    crop = warp_images(img, T, out_size=112)[0, 0]
    r = torch.arange(112, dtype=F64)
    gy, gx = torch.meshgrid(r, r, indexing="ij")
    cx = (crop * gx).sum() / crop.sum()
    cy = (crop * gy).sum() / crop.sum()
    want = pixels_to_crop(torch.tensor([[[x0, y0]]], dtype=F64), T)[0, 0]
    assert abs(cx - want[0]) < 0.05 and abs(cy - want[1]) < 0.05
    back = crop_to_pixels(torch.stack([cx, cy])[None, None], T)[0, 0]
    assert abs(back[0] - x0) < 0.05 and abs(back[1] - y0) < 0.05


def test_warp_images_outside_is_zero_and_dtypes():
    img = torch.ones(1, 1, 20, 20)
    T = crop_transform(torch.tensor([[10.0, 10.0]]), torch.tensor([100.0]), out_size=50)  # box [-40, 60]^2
    crop = warp_images(img, T, out_size=50)
    assert crop.dtype == torch.float32 and crop.shape == (1, 1, 50, 50)
    assert crop[0, 0, 0, 0] == 0 and crop[0, 0, -1, -1] == 0 and crop[0, 0, 25, 25] == 1
    assert crop[0, 0].sum().item() == pytest.approx(100.0, abs=6.0)  # the 20 x 20 frame shrunk 2x
    with pytest.raises(ShapeError):
        warp_images(torch.ones(1, 1, 20, 20, dtype=torch.uint8), T)
    with pytest.raises(ShapeError):
        warp_images(img, T.expand(2, 3, 3))


def _naive_smooth(x: np.ndarray, window: int) -> np.ndarray:
    n = len(x)
    out = np.empty_like(x)
    for t in range(n):
        h = min(window // 2, t, n - 1 - t)
        seg = x[t - h : t + h + 1]
        ok = np.isfinite(seg).all(axis=1)
        out[t] = seg[ok].mean(axis=0) if ok.any() else np.nan
    return out


@pytest.mark.parametrize("window", [1, 3, 7])
def test_smooth_boxes_matches_naive(window):
    rng = np.random.default_rng(3)
    center = rng.normal(size=(25, 2)) * 5 + 200
    size = rng.normal(size=25) * 3 + 100
    center[10] = np.nan  # a frame without a face
    size[10] = np.nan
    c, s = smooth_boxes(torch.from_numpy(center), torch.from_numpy(size), window)
    want = _naive_smooth(np.concatenate([center, size[:, None]], axis=1), window)
    np.testing.assert_allclose(c.numpy(), want[:, :2], atol=1e-10)
    np.testing.assert_allclose(s.numpy(), want[:, 2], atol=1e-10)
    assert c.shape == (25, 2) and s.shape == (25,)
    if window > 1:
        assert np.isfinite(c[10].numpy()).all()  # filled from neighbours


def test_smooth_boxes_keeps_linear_motion_and_batches():
    t = torch.arange(30, dtype=torch.float32)
    center = torch.stack([1000 + 3.0 * t, 500 - 2.0 * t], dim=-1)
    size = 200 + 0.5 * t
    c, s = smooth_boxes(center, size, window=9)
    torch.testing.assert_close(c, center)  # centred window: no lag
    torch.testing.assert_close(s, size)
    assert c.dtype == torch.float32
    cb, sb = smooth_boxes(center.expand(3, 30, 2), size.expand(3, 30), window=9)
    assert cb.shape == (3, 30, 2) and sb.shape == (3, 30)
    torch.testing.assert_close(cb[1], center)
    jitter = torch.tensor([1.0, -1.0]).repeat(15)
    _, s_j = smooth_boxes(center, size + jitter, window=5)
    assert (s_j[2:-2] - size[2:-2]).abs().max() < 0.25


def test_smooth_boxes_errors():
    with pytest.raises(ShapeError):
        smooth_boxes(torch.zeros(10, 2), torch.zeros(10), window=4)
    with pytest.raises(ShapeError):
        smooth_boxes(torch.zeros(10, 2), torch.zeros(10), window=0)
    with pytest.raises(ShapeError):
        smooth_boxes(torch.zeros(10, 2), torch.zeros(9), window=3)
    with pytest.raises(ShapeError):
        smooth_boxes(torch.zeros(2, 10, 2), torch.zeros(3, 10), window=3)
