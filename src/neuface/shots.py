"""Shots of a sequence as data: frame ranges, why each one starts, and the per-frame identity β of a fit.

A sequence of F frames is cut into S >= 1 **shots**, consecutive half-open frame ranges ``[start, stop)`` that
cover ``[0, F)`` without gaps (``bounds`` (S, 2) int64). Each shot starts for a reason (:data:`REASONS`):
``start`` (the first shot), ``cut`` (a visual cut: the image content changes abruptly) or ``identity`` (no
visual cut, but the tracked face becomes another person). Shots are found by the landmarks stage
(:mod:`neuface.landmarks.shots`) and carried by every later stage; each shot is fitted with its own identity β.

Files store shots only where there is more than one: a fit file or packed sequence **without** ``shots`` is one
shot covering every frame (and so is every file written before shots existed). :func:`frame_shapes` is the one
place that turns a fit's identities into one β per frame; every consumer that builds meshes from a fit uses it.

Pure numpy; no file access.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from neuface.errors import NeufaceError, ShapeError

__all__ = ["REASONS", "check_shots", "frame_shapes", "shot_of_frame", "single_shot", "within_shot",
           "shots_from_starts"]

#: Why a shot starts: the first shot, a visual cut, or another person without a visual cut.
REASONS = ("start", "cut", "identity")


def single_shot(n_frames: int) -> np.ndarray:
    """The one shot of an uncut sequence: ``[[0, n_frames]]`` (1, 2) int64."""
    return np.array([[0, int(n_frames)]], dtype=np.int64)


def shots_from_starts(starts: list[int] | np.ndarray, n_frames: int) -> np.ndarray:
    """Shot bounds (S, 2) int64 from the first frame of each shot (0 is added; duplicates are ignored).

    Raises:
        NeufaceError: a start outside ``[0, n_frames)``.
    """
    s = sorted({0, *(int(x) for x in np.asarray(starts, dtype=np.int64).ravel())})
    if n_frames < 1:
        raise NeufaceError(f"a sequence needs at least one frame for shots, got {n_frames}")
    if s[-1] >= n_frames or s[0] < 0:
        raise NeufaceError(f"shot starts {s} must lie in [0, {n_frames})")
    return np.array([[a, b] for a, b in zip(s, s[1:] + [int(n_frames)], strict=True)], dtype=np.int64)


def check_shots(bounds: Any, n_frames: int) -> np.ndarray:
    """Validate shot bounds: (S, 2) integers, non-empty, consecutive, covering ``[0, n_frames)``.

    Returns:
        The bounds as (S, 2) int64.
    Raises:
        ShapeError: not (S, 2) with S >= 1.  NeufaceError: gaps, overlaps, empty shots or the wrong extent.
    """
    arr = np.asarray(bounds)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
        raise ShapeError(f"shots must have shape (S, 2) with S >= 1, got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise NeufaceError(f"shots must be integer frame indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr[0, 0] != 0 or arr[-1, 1] != n_frames:
        raise NeufaceError(f"shots must cover frames [0, {n_frames}), got [{arr[0, 0]}, {arr[-1, 1]})")
    if (arr[:, 1] <= arr[:, 0]).any():
        raise NeufaceError(f"every shot needs at least one frame (stop > start): {arr.tolist()}")
    if (arr[1:, 0] != arr[:-1, 1]).any():
        raise NeufaceError(f"shots must be consecutive (each starts where the previous stops): {arr.tolist()}")
    return arr


def shot_of_frame(bounds: Any, n_frames: int) -> np.ndarray:
    """Index of the shot of every frame, (F,) int64, for valid ``bounds`` (S, 2)."""
    arr = check_shots(bounds, n_frames)
    return np.repeat(np.arange(arr.shape[0], dtype=np.int64), arr[:, 1] - arr[:, 0])


def within_shot(bounds: Any, n_frames: int, span: int) -> np.ndarray:
    """(F - span + 1,) bool: True where frames ``t .. t + span - 1`` all lie in one shot.

    ``span = 3`` masks the second differences (accelerations) ``x[t + 2] - 2 x[t + 1] + x[t]`` that do not
    straddle a shot boundary.
    """
    if span < 1:
        raise NeufaceError(f"span must be at least 1, got {span}")
    ids = shot_of_frame(bounds, n_frames)
    if n_frames < span:
        return np.zeros((0,), dtype=bool)
    return ids[span - 1:] == ids[: n_frames - span + 1]


def frame_shapes(fit: Mapping[str, Any]) -> np.ndarray:
    """The identity β of every frame of a fit, (F, n_shape) float32.

    ``fit`` is any mapping with ``shape`` (n_shape,) and ``expression`` (F, V, n_exp) — a dict of
    :func:`neuface.fitting.output.read_fit` / :func:`neuface.metrics.fitfile.read_fit_arrays`, or an open HDF5
    fit file or packed ``/sequences/<id>`` group — and, for a sequence of several shots, ``shots`` (S, 2) and
    ``shape_shots`` (S, n_shape). Without them every frame gets ``shape``.

    Raises:
        ShapeError / NeufaceError: ``shots`` without ``shape_shots`` (or the reverse), or inconsistent sizes.
    """
    shape = np.asarray(fit["shape"], dtype=np.float32)
    n_frames = int(np.shape(fit["expression"])[0])
    has_shots, has_shapes = "shots" in fit, "shape_shots" in fit
    if has_shots != has_shapes:
        raise NeufaceError("a fit with shots needs both 'shots' and 'shape_shots'")
    if not has_shots:
        return np.repeat(shape.reshape(1, -1), n_frames, axis=0)
    per_shot = np.asarray(fit["shape_shots"], dtype=np.float32)
    bounds = check_shots(np.asarray(fit["shots"]), n_frames)
    if per_shot.shape != (bounds.shape[0], shape.shape[-1]):
        raise ShapeError(f"shape_shots has shape {per_shot.shape}, expected ({bounds.shape[0]}, {shape.shape[-1]})")
    return per_shot[shot_of_frame(bounds, n_frames)]
