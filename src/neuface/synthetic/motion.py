"""Natural-looking FLAME parameter sequences for synthetic videos with known ground truth.

Head rotation drifts smoothly (band-limited noise), the jaw "talks" (syllable-rate opening modulated by a
speech/pause envelope), expressions change slowly with decreasing energy over the coefficients, and identity is
one shape vector per sequence. Everything is deterministic for a seed. Arrays are float64 numpy.

The neck joint does not move by default (``neck_deg = 0``): the annotators fit no neck rotation (they keep it
at 0), so a ground truth with neck motion holds an articulation no annotator can represent and its MPVE would
partly measure that, not the annotator. ``neck_deg > 0`` (``neuface synth --neck-deg``) keeps neck motion
available as a named robustness case. The random stream does not depend on ``neck_deg``: the same seed gives
the same identity, head motion, jaw and expressions with or without neck motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuface.errors import NeufaceError


@dataclass
class MotionParams:
    """FLAME parameters of one synthetic sequence (one head, before any camera/view rotation).

    Attributes:
        shape: (n_shape,) identity β.
        expression: (F, n_exp) ψ.
        global_pose: (F, 3) head rotation (axis-angle) as seen by the frontal camera.
        pose: (F, 12) θ = [neck, jaw, left eye, right eye] axis-angle.
        fps: frame rate.
    """

    shape: np.ndarray
    expression: np.ndarray
    global_pose: np.ndarray
    pose: np.ndarray
    fps: float

    @property
    def n_frames(self) -> int:
        return int(self.expression.shape[0])


def smooth_noise(rng: np.random.Generator, n_frames: int, n_channels: int, fps: float, cutoff_hz: float) -> np.ndarray:
    """Band-limited Gaussian noise with unit standard deviation per channel.

    White noise is low-pass filtered with a Gaussian kernel whose frequency response falls to ``1/e`` at
    ``cutoff_hz`` (sigma_t = 1 / (2π·cutoff)); the sequence is padded so the ends are as smooth as the middle.

    Returns:
        (n_frames, n_channels) array.
    """
    sigma = fps / (2.0 * np.pi * cutoff_hz)
    half = int(np.ceil(4 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= np.sqrt((kernel**2).sum())
    white = rng.standard_normal((n_frames + 2 * half, n_channels))
    out = np.stack([np.convolve(white[:, c], kernel, mode="valid") for c in range(n_channels)], axis=1)
    return out[:n_frames]


def sample_motion(
    n_frames: int,
    fps: float = 25.0,
    n_shape: int = 100,
    n_exp: int = 50,
    seed: int = 0,
    shape_std: float = 0.12,
    head_deg: tuple[float, float, float] = (5.0, 10.0, 3.0),
    jaw_max: float = 0.2,
    expression_std: float = 1.0,
    neck_deg: float = 0.0,
) -> MotionParams:
    """Sample a talking-head parameter sequence.

    Args:
        n_frames: number of frames F (≥ 1).
        fps: frame rate (sets the time scale of head motion and syllables).
        n_shape, n_exp: sizes of β and ψ.
        seed: random seed.
        shape_std: scale of β (decaying over components); the default gives ‖β‖₂ ≈ 0.6, inside the dataset
            filter's ‖β‖₂ ≤ 1 (paper appendix), so ground-truth identities are in distribution.
        head_deg: standard deviation of (pitch, yaw, roll) in degrees.
        jaw_max: maximal jaw opening (radians about the x axis).
        expression_std: scale of the leading expression coefficients.
        neck_deg: standard deviation in degrees of each axis-angle component of the neck joint (band-limited,
            0.2 Hz). Default 0: no neck motion, like the fits (see the module docstring); e.g. 2.0 for the
            neck-motion robustness case.
    """
    if n_frames < 1:
        raise NeufaceError(f"n_frames must be >= 1, got {n_frames}")
    if fps <= 0:
        raise NeufaceError(f"fps must be > 0, got {fps}")
    if not (np.isfinite(neck_deg) and neck_deg >= 0):
        raise NeufaceError(f"neck_deg must be a finite number >= 0, got {neck_deg}")
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps

    shape = rng.standard_normal(n_shape) * shape_std * (1.0 / np.sqrt(1.0 + np.arange(n_shape) / 10.0))

    head = smooth_noise(rng, n_frames, 3, fps, cutoff_hz=0.25) * np.deg2rad(np.asarray(head_deg))
    global_pose = head  # small angles: (pitch, yaw, roll) used directly as an axis-angle vector

    syllable_hz = rng.uniform(3.0, 4.5)
    phase = rng.uniform(0, 2 * np.pi)
    envelope = 1.0 / (1.0 + np.exp(-3.0 * smooth_noise(rng, n_frames, 1, fps, cutoff_hz=0.4)[:, 0]))
    opening = 0.5 * (1.0 - np.cos(2 * np.pi * syllable_hz * t + phase))
    pose = np.zeros((n_frames, 12))
    pose[:, 3] = jaw_max * envelope * opening
    neck = smooth_noise(rng, n_frames, 3, fps, cutoff_hz=0.2)  # drawn even when unused: same stream for a seed
    pose[:, 0:3] = neck * np.deg2rad(neck_deg)

    energy = expression_std / (1.0 + 0.35 * np.arange(n_exp))
    expression = smooth_noise(rng, n_frames, n_exp, fps, cutoff_hz=0.5) * energy
    return MotionParams(shape=shape, expression=expression, global_pose=global_pose, pose=pose, fps=float(fps))
