"""Synthetic motion sequences and camera rigs."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from neuface.errors import NeufaceError
from neuface.synthetic.motion import sample_motion, smooth_noise
from neuface.synthetic.rig import MEAD_VIEWS, make_rig


def test_smooth_noise_is_unit_variance_and_smooth():
    rng = np.random.default_rng(0)
    x = smooth_noise(rng, 4000, 2, fps=25.0, cutoff_hz=0.5)
    assert x.shape == (4000, 2)
    assert np.allclose(x.std(axis=0), 1.0, atol=0.25)
    white = np.random.default_rng(1).standard_normal((4000, 2))
    # band-limited: second differences are far smaller than for white noise of the same variance
    assert np.abs(np.diff(x, 2, axis=0)).mean() < 0.05 * np.abs(np.diff(white, 2, axis=0)).mean()


def test_sample_motion_shapes_ranges_and_determinism():
    m = sample_motion(60, fps=25, n_shape=100, n_exp=50, seed=3, jaw_max=0.2)
    assert m.shape.shape == (100,) and m.expression.shape == (60, 50)
    assert m.global_pose.shape == (60, 3) and m.pose.shape == (60, 12)
    jaw = m.pose[:, 3]
    assert jaw.min() >= 0 and jaw.max() <= 0.2 and jaw.max() > 0.02  # the jaw talks
    assert np.all(m.pose[:, 4:] == 0)
    again = sample_motion(60, fps=25, n_shape=100, n_exp=50, seed=3, jaw_max=0.2)
    assert np.array_equal(m.expression, again.expression) and np.array_equal(m.shape, again.shape)
    other = sample_motion(60, fps=25, n_shape=100, n_exp=50, seed=4)
    assert not np.allclose(m.expression, other.expression)
    # leading expression coefficients carry more energy than trailing ones
    assert m.expression[:, :5].std() > m.expression[:, -10:].std()


def test_sample_motion_rejects_bad_arguments():
    with pytest.raises(NeufaceError, match="n_frames"):
        sample_motion(0)
    with pytest.raises(NeufaceError, match="fps"):
        sample_motion(10, fps=0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(NeufaceError, match="neck_deg"):
            sample_motion(10, neck_deg=bad)


def test_neck_motion_is_opt_in_and_leaves_the_rest_unchanged():
    still = sample_motion(400, fps=25, seed=5)
    assert np.all(still.pose[:, 0:3] == 0)  # default: no neck rotation, like the fits
    neck = sample_motion(400, fps=25, seed=5, neck_deg=2.0)
    std_deg = np.rad2deg(neck.pose[:, 0:3].std(axis=0))
    assert np.all((std_deg > 0.8) & (std_deg < 3.5)), std_deg  # band-limited noise of ~2 deg per axis
    assert np.all(np.abs(np.diff(neck.pose[:, 0:3], 2, axis=0)).max() < np.deg2rad(0.1))  # smooth
    for name in ("shape", "expression", "global_pose"):
        assert np.array_equal(getattr(still, name), getattr(neck, name)), name
    assert np.array_equal(still.pose[:, 3:], neck.pose[:, 3:])  # jaw and eyes
    twice = sample_motion(400, fps=25, seed=5, neck_deg=4.0)
    np.testing.assert_allclose(twice.pose[:, 0:3], 2.0 * neck.pose[:, 0:3], rtol=1e-12)


def test_mead_rig_views_and_orientation():
    rig = make_rig("mead", seed=0)
    assert rig.names == list(MEAD_VIEWS) and len(rig.names) == 7
    assert rig.rotations.shape == (7, 3, 3) and rig.cams.shape == (7, 3)
    left = rig.rotations[rig.names.index("left_30")]
    # a camera on the subject's left (+x) sees the left cheek: +x turns towards +z (the camera)
    assert (left @ np.array([1.0, 0, 0]))[2] > 0.4
    top = rig.rotations[rig.names.index("top")]
    assert (top @ np.array([0, 1.0, 0]))[2] > 0.3  # the crown turns towards a camera above
    assert np.allclose(rig.rotations[rig.names.index("front")], np.eye(3))


def test_view_global_pose_composes_view_then_head():
    rig = make_rig("mead", seed=0)
    head = np.array([[0.0, 0.2, 0.0], [0.1, 0.0, 0.05]])
    per_view = rig.view_global_pose(head)
    assert per_view.shape == (2, 7, 3)
    for f in range(2):
        for v in range(7):
            expect = rig.rotations[v] @ Rotation.from_rotvec(head[f]).as_matrix()
            assert np.allclose(Rotation.from_rotvec(per_view[f, v]).as_matrix(), expect, atol=1e-12)


def test_mono_rig_and_unknown_kind():
    assert make_rig("mono").names == ["front"]
    with pytest.raises(ValueError, match="unknown rig"):
        make_rig("stereo")


def test_synth_cli_neck_deg(tmp_path):
    """``neuface synth --neck-deg`` reaches the ground truth; the default renders no neck motion."""
    from test_metrics import tiny_flame_files

    from neuface import cli

    flame_args = [str(a) for a in tiny_flame_files(tmp_path / "model")]
    poses = {}
    for neck in (None, 3.0):
        out = tmp_path / f"neck_{neck}"
        argv = ["synth", *flame_args, "--rig", "mono", "--video", str(out / "v.mp4"), "--gt", str(out / "gt.npz"),
                "--frames", "6", "--size", "32", "--seed", "2"]
        assert cli.main(argv + ([] if neck is None else ["--neck-deg", str(neck)])) == 0
        with np.load(out / "gt.npz") as z:
            poses[neck] = z["pose"]
    assert np.all(poses[None][:, 0:3] == 0) and np.abs(poses[3.0][:, 0:3]).max() > 1e-3
    np.testing.assert_array_equal(poses[None][:, 3:], poses[3.0][:, 3:])
    assert cli.main(["synth", *flame_args, "--video", str(tmp_path / "x.mp4"), "--gt", str(tmp_path / "x.npz"),
                     "--neck-deg", "-1"]) != 0
