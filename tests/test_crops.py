"""Crops stage: boxes from tracked landmarks, smoothing, gap filling, transforms that map back to pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neuface.crops import crop_boxes, crop_sequence, fill_missing_boxes, read_crops
from neuface.errors import NeufaceError
from neuface.geometry.crop import crop_to_pixels, pixels_to_crop
from neuface.landmarks import DlibBackend, detect_sequence, read_landmarks
from neuface.status import read_status
from neuface.video import extract_sequence, read_frames


@pytest.fixture(scope="module")
def carphone_stages(tmp_path_factory, carphone_path):
    pytest.importorskip("dlib")
    root = tmp_path_factory.mktemp("crops")
    frames, lmk = root / "f.h5", root / "l.h5"
    rows = pd.DataFrame({"sequence": ["car"], "view": ["mono"], "path": [str(carphone_path)]})
    assert extract_sequence(rows, frames, max_frames=24).ok
    assert detect_sequence(frames, lmk, DlibBackend()).ok
    return frames, lmk


def test_fill_missing_boxes_interpolates_and_holds_ends():
    center = np.array([[np.nan, np.nan], [10.0, 20.0], [np.nan, np.nan], [30.0, 40.0], [np.nan, np.nan]])
    size = np.array([np.nan, 100.0, np.nan, 200.0, np.nan])
    c, s = fill_missing_boxes(center, size)
    assert np.allclose(s, [100, 100, 150, 200, 200])
    assert np.allclose(c[2], [20, 30]) and np.allclose(c[0], [10, 20]) and np.allclose(c[4], [30, 40])
    with pytest.raises(NeufaceError, match="no valid crop box"):
        fill_missing_boxes(np.full((3, 2), np.nan), np.full(3, np.nan))


def test_crop_boxes_smoothing_reduces_jitter():
    rng = np.random.default_rng(0)
    base = rng.uniform(40, 120, size=(68, 2))
    lmk = base[None] + rng.normal(0, 2.0, size=(40, 1, 2))  # whole-face jitter of 2 px per frame
    det = np.ones(40, dtype=bool)
    raw_c, _ = crop_boxes(lmk, det, scale=1.25, smooth_window=1)
    smooth_c, _ = crop_boxes(lmk, det, scale=1.25, smooth_window=7)
    assert np.abs(np.diff(smooth_c, axis=0)).mean() < 0.5 * np.abs(np.diff(raw_c, axis=0)).mean()


def test_crops_on_carphone_map_back_to_pixels(tmp_path, carphone_stages, run_cli):
    frames, lmk = carphone_stages
    out = tmp_path / "c.h5"
    assert run_cli("crops", "--frames", frames, "--landmarks", lmk, "--out", out, "--size", 224) == 0
    assert read_status(out).ok
    c = read_crops(out, "mono")
    assert c["crops"].shape == (24, 224, 224, 3) and c["crops"].dtype == np.uint8
    assert c["transforms"].shape == (24, 3, 3) and np.isfinite(c["transforms"]).all()
    r = read_landmarks(lmk, "mono")
    det = r["detected"]
    pts = torch.as_tensor(np.nan_to_num(r["landmarks"]), dtype=torch.float64)
    T = torch.as_tensor(c["transforms"])
    in_crop = pixels_to_crop(pts, T)[torch.as_tensor(det)]
    # DECA's box (1.1 * 1.25 of the landmark extent) keeps every landmark well inside the crop
    assert in_crop.min() > 0 and in_crop.max() < 224
    assert torch.allclose(crop_to_pixels(pixels_to_crop(pts, T), T), pts, atol=1e-6)
    # the crop really shows the frame content: the pixel at the crop centre equals the frame pixel it maps to
    frame = read_frames(frames, "mono", 0, 1)[0].astype(float)
    centre = crop_to_pixels(torch.tensor([[[111.5, 111.5]]], dtype=torch.float64), T[:1])[0, 0].round().long()
    assert np.abs(c["crops"][0, 111:113, 111:113].mean(axis=(0, 1)) - frame[centre[1], centre[0]]).max() < 40


def test_failed_landmarks_propagate(tmp_path, run_cli):
    frames, lmk = tmp_path / "f.h5", tmp_path / "l.h5"
    rows = pd.DataFrame({"sequence": ["gone"], "view": ["mono"], "path": [str(tmp_path / "gone.mp4")]})
    assert not extract_sequence(rows, frames).ok
    assert run_cli("landmarks", "--frames", frames, "--out", lmk, "--backend", "dlib") == 0
    out = tmp_path / "c.h5"
    status = crop_sequence(frames, lmk, out)
    assert not status.ok and status.stage == "crops" and status.reason.startswith("upstream frames:")
    assert read_status(out) == status


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(NeufaceError, match="odd"):
        crop_sequence(tmp_path / "f", tmp_path / "l", tmp_path / "o", smooth_window=4)
