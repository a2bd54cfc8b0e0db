"""A landmark-detector noise model applied to ground-truth landmarks (``neuface landmarks-from-gt``).

For the synthetic ground-truth benchmark the landmarks stage is replaced by the projected ground-truth 68
landmarks of ``neuface synth`` plus noise, written in exactly the ``neuface.landmarks`` format, so crops and
fits run unchanged. The noise, per view ``v``, frame ``f`` and point ``k`` (pixels of the stored frames):

* per-view constant bias ``b_v ~ N(0, bias² I₂)`` (one 2D offset for all points and frames of a view);
* Gaussian jitter ``N(0, sigma² I₂)`` per point;
* outliers: with probability ``outlier_prob`` a point is displaced by a vector of uniform direction and
  length uniform in ``[0, outlier_max]``;
* missed frames: with probability ``miss_prob`` a (frame, view) is not detected (``detected = False``, NaN).

Scores are 1.0 for every detected point (the model gives the fitting no hint of which points are outliers).

View mapping: frames-file views are matched to ground-truth views by name; when both have a single view they
are matched by order (a monocular ground truth calls its view ``front``; the sheet may call it ``mono``).
Frame ``i`` of a view takes the ground-truth frame ``round(timestamp_i · fps_gt)``, so frame-rate resampling
and ``max_frames`` of the frames stage are honoured; GT pixels are rescaled to the stored frame size.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import h5py
import numpy as np

from neuface import __version__
from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path
from neuface.landmarks.extract import FORMAT, write_stage_attrs, write_upstream_failure
from neuface.status import StageStatus, read_status
from neuface.video.store import frames_info

log = logging.getLogger(__name__)

__all__ = ["LandmarkNoise", "NoisyLandmarks", "apply_noise", "landmarks_from_gt", "DETECTOR"]

DETECTOR = "ground-truth+noise"


@dataclass(frozen=True)
class LandmarkNoise:
    """Noise parameters (pixels and probabilities); all zero = exact ground truth."""

    sigma: float = 0.0
    outlier_prob: float = 0.0
    outlier_max: float = 0.0
    miss_prob: float = 0.0
    bias: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sigma", "outlier_max", "bias"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise NeufaceError(f"noise {name} must be a finite number >= 0, got {value!r}")
        for name in ("outlier_prob", "miss_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise NeufaceError(f"noise {name} must be a probability in [0, 1], got {value!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LandmarkNoise:
        d = dict(d or {})
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise NeufaceError(f"unknown noise key(s) {', '.join(unknown)}; known: "
                               f"{', '.join(f.name for f in fields(cls))}")
        try:
            return cls(**{k: float(v) for k, v in d.items()})
        except (TypeError, ValueError) as exc:
            raise NeufaceError(f"bad noise parameters {d}: {exc}") from None

    @classmethod
    def from_json(cls, text: str | None) -> LandmarkNoise:
        try:
            d = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise NeufaceError(f"--noise-json is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise NeufaceError("--noise-json must be a JSON object")
        return cls.from_dict(d)


@dataclass
class NoisyLandmarks:
    """Output of :func:`apply_noise`.

    Attributes:
        landmarks: (F, V, K, 2) noisy landmarks, NaN where not detected.
        detected: (F, V) bool.
        outliers: (F, V, K) bool, points that got an outlier displacement.
        bias: (V, 2) the per-view bias drawn.
    """

    landmarks: np.ndarray
    detected: np.ndarray
    outliers: np.ndarray
    bias: np.ndarray


def apply_noise(landmarks: np.ndarray, noise: LandmarkNoise, rng: np.random.Generator | int = 0) -> NoisyLandmarks:
    """Apply the noise model to (F, V, K, 2) ground-truth landmarks (pixels); deterministic for a seed."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 4 or lm.shape[-1] != 2:
        raise NeufaceError(f"landmarks must be (F, V, K, 2), got {lm.shape}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    n_f, n_v, n_k, _ = lm.shape
    bias = rng.normal(0.0, 1.0, size=(n_v, 2)) * noise.bias
    jitter = rng.normal(0.0, 1.0, size=lm.shape) * noise.sigma
    outliers = rng.random((n_f, n_v, n_k)) < noise.outlier_prob
    angle = rng.uniform(0.0, 2.0 * np.pi, size=(n_f, n_v, n_k))
    length = rng.uniform(0.0, 1.0, size=(n_f, n_v, n_k)) * noise.outlier_max
    jump = np.stack([np.cos(angle), np.sin(angle)], axis=-1) * (length * outliers)[..., None]
    detected = rng.random((n_f, n_v)) >= noise.miss_prob
    out = lm + bias[None, :, None, :] + jitter + jump
    out[~detected] = np.nan
    return NoisyLandmarks(landmarks=out, detected=detected, outliers=outliers & detected[..., None], bias=bias)


def _gt_view_index(frame_views: list[str], gt_views: list[str]) -> list[int]:
    if all(v in gt_views for v in frame_views):
        return [gt_views.index(v) for v in frame_views]
    if len(frame_views) == 1 and len(gt_views) == 1:
        return [0]
    raise NeufaceError(f"frames views {frame_views} do not match the ground-truth views {gt_views}")


def landmarks_from_gt(gt_path: str | os.PathLike, frames_path: str | os.PathLike, out: str | os.PathLike,
                      noise: LandmarkNoise | None = None, seed: int = 0) -> StageStatus:
    """Write a ``neuface.landmarks`` file for ``frames_path`` from the GT landmarks plus noise (atomic)."""
    noise = noise or LandmarkNoise()
    upstream = read_status(frames_path)
    with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({"format": FORMAT, "format_version": 1, "detector": DETECTOR,
                        "detector_version": __version__, "score_kind": "uniform: ground truth + noise (1.0)",
                        "frames_file": str(frames_path), "gt_file": str(gt_path),
                        "noise": json.dumps(asdict(noise), sort_keys=True), "seed": int(seed)})
        if not upstream.ok:
            return write_upstream_failure(f, upstream, "landmarks")
        with np.load(gt_path, allow_pickle=False) as z:
            gt_lmk, gt_views = z["landmarks"], [str(v) for v in np.atleast_1d(z["views"])]
            gt_fps, gt_size = float(z["fps"]), int(z["image_size"])
        info = frames_info(frames_path)
        views, n_frames = info["views"], int(info["n_frames"])
        idx = _gt_view_index(views, gt_views)
        gt_frames = np.zeros((n_frames, len(views), gt_lmk.shape[2], 2))
        with h5py.File(frames_path, "r") as src:
            for j, view in enumerate(views):
                stamps = src[f"views/{view}/timestamps"][:n_frames]
                rows = np.rint(np.asarray(stamps) * gt_fps).astype(int)
                if rows.size and (rows.min() < 0 or rows.max() >= gt_lmk.shape[0]):
                    raise NeufaceError(f"view {view}: frame times reach GT frame {rows.max()}, "
                                       f"the ground truth has {gt_lmk.shape[0]}")
                h, w = info["view_attrs"][view]["shape"][1:3]
                scale = np.array([w / gt_size, h / gt_size])
                gt_frames[:, j] = (gt_lmk[rows, idx[j]] + 0.5) * scale - 0.5
        noisy = apply_noise(gt_frames, noise, seed)
        per_view, warnings = {}, []
        for j, view in enumerate(views):
            det = noisy.detected[:, j]
            pts = noisy.landmarks[:, j].astype(np.float32)
            boxes = np.full((n_frames, 4), np.nan, np.float32)
            boxes[det] = np.concatenate([pts[det].min(axis=1), pts[det].max(axis=1)], axis=1)
            scores = np.where(det[:, None], 1.0, np.nan).repeat(pts.shape[1], axis=1).astype(np.float32)
            g = f.require_group("views").create_group(view)
            data = {"landmarks": pts, "scores": scores, "boxes": boxes.astype(np.float32),
                    "box_scores": np.where(det, 1.0, np.nan).astype(np.float32), "detected": det}
            for key, value in data.items():
                g.create_dataset(key, data=value, compression="gzip", compression_opts=1)
            h, w = info["view_attrs"][view]["shape"][1:3]
            n_det = int(det.sum())
            g.attrs.update({"detector": DETECTOR, "detector_version": __version__, "width": int(w),
                            "height": int(h), "n_detected": n_det, "max_faces": int(n_det > 0),
                            "gt_view": gt_views[idx[j]], "bias_px": json.dumps(noisy.bias[j].tolist())})
            per_view[view] = n_det
            if n_det < n_frames:
                warnings.append(f"view {view}: face found in {n_det}/{n_frames} frames")
        details = {"n_frames": n_frames, "n_detected": per_view, "detector": DETECTOR,
                   "detected_fraction": {v: (c / n_frames if n_frames else 0.0) for v, c in per_view.items()},
                   "detector_version": __version__, "noise": asdict(noise), "seed": int(seed)}
        if not any(per_view.values()):
            status = StageStatus.failed(upstream.sequence, "landmarks", "no face detected", **details)
        else:
            status = StageStatus(upstream.sequence, "landmarks", details=details, warnings=tuple(warnings))
        status = status.with_warnings(upstream.warnings)  # the frames stage's notes (partial inputs) go on
        write_stage_attrs(f, status, views, n_frames)
    log.info("%s", status.summary())
    return status


