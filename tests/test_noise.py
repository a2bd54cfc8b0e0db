"""Landmark noise model statistics and ``landmarks-from-gt`` files accepted by the rest of the DAG."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from neuface.errors import NeufaceError
from neuface.status import StageStatus, read_status
from neuface.synthetic.noise import LandmarkNoise, apply_noise, landmarks_from_gt
from neuface.video.store import ViewWriter, write_root_attrs


def test_noise_statistics():
    gt = np.random.default_rng(0).uniform(50, 200, size=(400, 5, 68, 2))
    noise = LandmarkNoise(sigma=2.0, outlier_prob=0.05, outlier_max=30.0, miss_prob=0.1, bias=3.0)
    res = apply_noise(gt, noise, 1)
    det = res.detected
    assert abs(1 - det.mean() - 0.1) < 0.015  # missed-frame rate
    assert np.isnan(res.landmarks[~det]).all() and np.isfinite(res.landmarks[det]).all()
    offset = res.landmarks - gt
    inlier = det[..., None] & ~res.outliers
    assert abs(res.outliers[det].mean() - 0.05) < 0.005  # outlier rate among detected points
    for v in range(5):  # per-view bias: the mean inlier offset is the drawn bias
        np.testing.assert_allclose(offset[:, v][inlier[:, v]].mean(axis=0), res.bias[v], atol=0.05)
    centred = offset - res.bias[None, :, None, :]
    assert abs(centred[inlier].std() - 2.0) < 0.03  # jitter std per axis
    out_len = np.linalg.norm(centred[res.outliers], axis=-1)
    assert out_len.max() < 30.0 + 5 * 2.0 and out_len.mean() > 10.0  # uniform length in [0, 30] + jitter
    again = apply_noise(gt, noise, 1)
    np.testing.assert_array_equal(np.nan_to_num(again.landmarks), np.nan_to_num(res.landmarks))
    exact = apply_noise(gt, LandmarkNoise(), 3)
    np.testing.assert_array_equal(exact.landmarks, gt)
    assert exact.detected.all()


def test_noise_parameters_are_validated():
    assert LandmarkNoise.from_json('{"sigma": 1.5, "miss_prob": 0.1}') == LandmarkNoise(sigma=1.5, miss_prob=0.1)
    with pytest.raises(NeufaceError, match="unknown noise key"):
        LandmarkNoise.from_json('{"sigmaa": 1}')
    with pytest.raises(NeufaceError, match="probability"):
        LandmarkNoise(outlier_prob=1.5)
    with pytest.raises(NeufaceError, match=">= 0"):
        LandmarkNoise(sigma=-1)
    with pytest.raises(NeufaceError, match="JSON"):
        LandmarkNoise.from_json("{sigma: 1}")


def make_frames(path, views: list[str], n: int = 8, size: tuple[int, int] = (96, 128), fps: float = 25.0,
                sequence: str = "seq", status: StageStatus | None = None):
    """A tiny frames file (neuface.frames layout) with gradient images."""
    h, w = size
    with h5py.File(path, "w") as f:
        status = status or StageStatus(sequence, "frames")
        if status.ok:
            for v in views:
                writer = ViewWriter(f, v, h, w)
                for i in range(n):
                    img = np.zeros((h, w, 3), np.uint8)
                    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
                    img[..., 1] = (i * 20) % 255
                    writer.append(i / fps, img)
                writer.flush()
                writer.group.attrs.update({"fps": fps, "width": w, "height": h})
        write_root_attrs(f, status, views if status.ok else [], n if status.ok else 0, fps, {})
    return path


def make_gt(path, views: list[str], n: int = 10, image_size: int = 64, fps: float = 25.0):
    rng = np.random.default_rng(5)
    base = rng.uniform(16, 48, size=(68, 2))
    lm = base[None, None] + rng.normal(0, 1, size=(n, len(views), 1, 2))
    np.savez(path, landmarks=lm.astype(np.float32), views=np.array(views), fps=np.float64(fps),
             image_size=np.int64(image_size), shape=np.zeros(100), expression=np.zeros((n, 50)),
             pose=np.zeros((n, 12)), global_pose=np.zeros((n, len(views), 3)))
    return lm


def test_landmarks_from_gt_file_feeds_crops(tmp_path):
    from neuface.crops import crop_sequence, read_crops
    from neuface.landmarks.extract import landmarks_info, read_landmarks

    frames = make_frames(tmp_path / "f.h5", ["front", "left_30"], n=8, size=(128, 128))
    lm = make_gt(tmp_path / "gt.npz", ["left_30", "front", "top"], n=10, image_size=64)
    out = tmp_path / "l.h5"
    status = landmarks_from_gt(tmp_path / "gt.npz", frames, out, LandmarkNoise(), seed=0)
    assert status.ok
    info = landmarks_info(out)
    assert info["views"] == ["front", "left_30"] and info["n_frames"] == 8
    assert info["detector"] == "ground-truth+noise"
    r = read_landmarks(out, "front")
    assert r["landmarks"].shape == (8, 68, 2) and r["landmarks"].dtype == np.float32
    assert r["detected"].all() and r["scores"].shape == (8, 68) and r["boxes"].shape == (8, 4)
    # GT view 'front' is index 1; 64 px GT -> 128 px frames: x' = 2 (x + 0.5) - 0.5
    np.testing.assert_allclose(r["landmarks"], 2 * (lm[:8, 1] + 0.5) - 0.5, atol=1e-4)
    np.testing.assert_allclose(r["boxes"][:, :2], r["landmarks"].min(axis=1), atol=1e-5)
    crops = tmp_path / "c.h5"
    assert crop_sequence(frames, out, crops, crop_size=32).ok
    assert read_crops(crops, "left_30")["crops"].shape == (8, 32, 32, 3)


def test_landmarks_from_gt_cli_mono_mapping_and_failures(tmp_path):
    from test_metrics import _cli

    from neuface.landmarks.extract import read_landmarks

    frames = make_frames(tmp_path / "f.h5", ["mono"], n=6, size=(64, 64))
    make_gt(tmp_path / "gt.npz", ["front"], n=6, image_size=64)
    out = tmp_path / "l.h5"
    noise = json.dumps({"sigma": 1.0, "miss_prob": 0.5})
    assert _cli("landmarks-from-gt", "--gt", tmp_path / "gt.npz", "--frames", frames, "--out", out,
                "--noise-json", noise, "--seed", 3) == 0
    r = read_landmarks(out, "mono")  # monocular: 'mono' <- 'front' by order
    assert 0 < r["detected"].sum() < 6 and np.isnan(r["landmarks"][~r["detected"]]).all()
    with h5py.File(out) as f:
        assert json.loads(f.attrs["noise"])["sigma"] == 1.0 and f.attrs["seed"] == 3
    make_gt(tmp_path / "gt2.npz", ["a", "b"], n=6)
    with pytest.raises(NeufaceError, match="do not match"):
        landmarks_from_gt(tmp_path / "gt2.npz", frames, tmp_path / "x.h5")
    make_gt(tmp_path / "short.npz", ["front"], n=3)
    with pytest.raises(NeufaceError, match="ground truth has 3"):
        landmarks_from_gt(tmp_path / "short.npz", frames, tmp_path / "y.h5")
    failed = make_frames(tmp_path / "bad.h5", ["mono"], status=StageStatus.failed("seq", "frames", "no video"))
    status = landmarks_from_gt(tmp_path / "gt.npz", failed, tmp_path / "z.h5")
    assert not status.ok and "upstream frames" in read_status(tmp_path / "z.h5").reason
    status = landmarks_from_gt(tmp_path / "gt.npz", frames, tmp_path / "w.h5", LandmarkNoise(miss_prob=1.0))
    assert not status.ok and status.reason == "no face detected"
