"""68-point landmark detectors behind one interface: face boxes per frame, then landmarks for chosen boxes.

Splitting detection from landmarking lets the stage track one face (:mod:`neuface.landmarks.tracking`) and
compute landmarks only for it. Both steps take batches of frames ``(B, H, W, 3)`` uint8 RGB; coordinates are
pixels of those frames (integer values at pixel centres, see :mod:`neuface.geometry`).

* ``fan``: face-alignment 1.5.0 — S3FD detector + 2D-FAN-4 (heatmap-max scores per point); batched, GPU-able.
* ``dlib``: HOG frontal-face detector + the 68-point ERT shape predictor; CPU, per image, no per-point scores
  (scores are 1.0; ``score_kind`` says so).
"""

from __future__ import annotations

import logging
import os
import urllib.error
from typing import Protocol

import numpy as np

from neuface.errors import AssetMissingError, NeufaceError, ShapeError
from neuface.landmarks.assets import fan_available, fan_missing_message, find_dlib_predictor

log = logging.getLogger(__name__)

BACKENDS = ("fan", "dlib", "auto")
N_POINTS = 68


class LandmarkBackend(Protocol):
    name: str
    version: str
    score_kind: str

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """Face boxes per frame: a list of ``(N_i, 5)`` float arrays ``x0, y0, x1, y1, score``."""

    def landmarks(self, frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks ``(B, 68, 2)`` and scores ``(B, 68)`` for one box ``(B, 4)`` per frame."""


def _check_frames(frames: np.ndarray) -> None:
    if (not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3
            or frames.dtype != np.uint8):
        raise ShapeError(f"frames must be a (B, H, W, 3) uint8 array, got "
                         f"{getattr(frames, 'shape', type(frames))} {getattr(frames, 'dtype', '')}")


class DlibBackend:
    """dlib HOG detector + 68-point shape predictor.

    Args:
        predictor_path: the ``.dat`` file (default: found by :func:`find_dlib_predictor`).
        min_score: detection threshold on the HOG SVM score (dlib's default 0.0; higher = stricter).
        det_size: detection runs on frames resized so that the shorter side is ``det_size`` pixels (HOG finds
            faces of about 80 px and larger); landmarks are computed on the full-resolution frame.
    """

    name = "dlib"
    score_kind = "uniform: dlib gives no per-point confidence (1.0)"

    def __init__(self, predictor_path: str | os.PathLike | None = None, min_score: float | None = None,
                 det_size: int = 320):
        try:
            import dlib
        except ImportError:
            raise NeufaceError("backend 'dlib' needs the dlib package: pip install dlib-bin") from None
        path = find_dlib_predictor(predictor_path)
        if det_size < 32:
            raise NeufaceError(f"det_size must be at least 32 pixels, got {det_size}")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))
        self.min_score = 0.0 if min_score is None else float(min_score)
        self.det_size = int(det_size)
        self.version = f"dlib {dlib.__version__} HOG frontal_face_detector + {path.name}"

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        _check_frames(frames)
        from PIL import Image

        out = []
        for img in frames:
            h, w = img.shape[:2]
            s = self.det_size / min(h, w)
            small = img
            if abs(s - 1.0) > 1e-3:
                size = (max(1, round(w * s)), max(1, round(h * s)))
                small = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))
            rects, scores, _ = self._detector.run(small, 0, self.min_score)
            boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], dtype=np.float64)
            boxes = boxes.reshape(-1, 4) / s
            out.append(np.concatenate([boxes, np.asarray(scores, dtype=np.float64).reshape(-1, 1)], axis=1))
        return out

    def landmarks(self, frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _check_frames(frames)
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (len(frames), 4) and boxes.shape != (len(frames), 5):
            raise ShapeError(f"boxes must have shape ({len(frames)}, 4), got {boxes.shape}")
        pts = np.empty((len(frames), N_POINTS, 2), dtype=np.float32)
        for i, (img, b) in enumerate(zip(frames, boxes, strict=True)):
            rect = self._dlib.rectangle(*(round(float(v)) for v in b[:4]))
            shape = self._predictor(img, rect)
            pts[i] = [(p.x, p.y) for p in shape.parts()]
        return pts, np.ones((len(frames), N_POINTS), dtype=np.float32)


class FanBackend:
    """face-alignment 1.5.0: S3FD detector + 2D-FAN-4, landmark network batched over frames.

    Args:
        device: ``'cpu'`` or ``'cuda'`` (``'cuda:1'``…).
        min_score: S3FD face probability threshold (face-alignment's default 0.5).
        batch_size: crops per FAN forward pass.
        fa: an already built ``face_alignment.FaceAlignment`` (tests); otherwise one is built, which loads
            (or downloads) the weights from ``$TORCH_HOME/hub/checkpoints``.

    Raises:
        AssetMissingError: the weights are not there and cannot be downloaded (the message says which file
            goes where, and its URL).
    """

    name = "fan"
    score_kind = "heatmap maximum per point, in [0, 1]"

    def __init__(self, device: str = "cpu", min_score: float | None = None, batch_size: int = 16,
                 fa: object | None = None):
        try:
            import face_alignment
        except ImportError:
            raise NeufaceError("backend 'fan' needs face-alignment: pip install --no-deps "
                               "face-alignment==1.5.0 opencv-python-headless numba "
                               "(plus scikit-image, scipy, tqdm)") from None
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise NeufaceError(f"device {device!r} requested but CUDA is not available")
        if fa is None:
            try:
                fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device,
                                                  compile=False, flip_input=False, face_detector="sfd")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                raise AssetMissingError(fan_missing_message(exc)) from None
        self.fa = fa
        self.device = device
        self.min_score = 0.5 if min_score is None else float(min_score)
        self.batch_size = int(batch_size)
        self.version = f"face-alignment {getattr(face_alignment, '__version__', '?')} 2DFAN-4 + S3FD"

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        _check_frames(frames)
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float()
        per_frame = self.fa.face_detector.detect_from_batch(batch)  # type: ignore[attr-defined]
        out = []
        for dets in per_frame:
            arr = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
            out.append(arr[arr[:, 4] >= self.min_score])
        return out

    def landmarks(self, frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _check_frames(frames)
        import torch
        from face_alignment.utils import CENTER_Y_OFFSET, crop

        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[0] != len(frames) or boxes.shape[1] < 4:
            raise ShapeError(f"boxes must have shape ({len(frames)}, 4), got {boxes.shape}")
        ref = self.fa.face_detector.reference_scale  # type: ignore[attr-defined]
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        centres = np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2 - h * CENTER_Y_OFFSET], axis=1)
        scales = (w + h) / ref
        pts = np.empty((len(frames), N_POINTS, 2), dtype=np.float32)
        scores = np.empty((len(frames), N_POINTS), dtype=np.float32)
        net = self.fa.face_alignment_net  # type: ignore[attr-defined]
        dtype = getattr(self.fa, "dtype", torch.float32)
        for start in range(0, len(frames), self.batch_size):
            idx = range(start, min(start + self.batch_size, len(frames)))
            crops = np.stack([crop(frames[i], centres[i], scales[i]).transpose(2, 0, 1) for i in idx])
            inp = torch.from_numpy(crops.astype(np.float32) / 255.0).to(self.device, dtype=dtype)
            with torch.no_grad():
                hm = net(inp)
            if isinstance(hm, list):
                hm = hm[-1]
            sl = slice(idx.start, idx.stop)
            hm_np = hm.to("cpu", torch.float32).numpy()
            pts[sl], scores[sl] = heatmaps_to_points(hm_np, centres[sl], scales[sl])
        return pts, scores


def heatmaps_to_points(hm: np.ndarray, centres: np.ndarray,
                       scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAN heatmaps ``(B, 68, R, R)`` → image points ``(B, 68, 2)`` and scores ``(B, 68)`` (heatmap maxima).

    The decoding of face-alignment 1.5.0 (arg-max, a quarter-pixel step towards the larger neighbour, the
    inverse of its crop transform with ``h = 200 * scale``), vectorized over the batch and without its final
    truncation to integer pixels (so results are its values plus a fraction in [0, 1) for positive
    coordinates). Needs no numba compilation.
    """
    b, c, hgt, wid = hm.shape
    flat = hm.reshape(b, c, hgt * wid)
    idx = flat.argmax(axis=-1)
    scores = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    px, py = idx % wid, idx // wid
    bi, ci = np.meshgrid(np.arange(b), np.arange(c), indexing="ij")

    def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return hm[bi, ci, np.clip(y, 0, hgt - 1), np.clip(x, 0, wid - 1)]

    inner = (px > 0) & (px < wid - 1) & (py > 0) & (py < hgt - 1)
    step = np.stack([np.sign(at(py, px + 1) - at(py, px - 1)), np.sign(at(py + 1, px) - at(py - 1, px))], -1)
    preds = np.stack([px, py], axis=-1).astype(np.float64) + 1.0 + 0.25 * step * inner[..., None] - 0.5
    size = 200.0 * np.asarray(scales, dtype=np.float64)[:, None, None]
    pts = (preds / hgt - 0.5) * size + np.asarray(centres, dtype=np.float64)[:, None, :]
    return pts.astype(np.float32), scores.astype(np.float32)


def make_backend(name: str, device: str = "cpu", min_score: float | None = None, batch_size: int = 16,
                 det_size: int = 320, predictor_path: str | os.PathLike | None = None) -> LandmarkBackend:
    """Build a backend by name; ``auto`` = ``fan`` if its weights are in place, else ``dlib`` (warning)."""
    if name not in BACKENDS:
        raise NeufaceError(f"unknown landmark backend {name!r}; choose from {', '.join(BACKENDS)}")
    if name == "auto":
        if fan_available():
            name = "fan"
        else:
            log.warning("FAN weights or face-alignment not available; falling back to dlib "
                        "(less accurate; `neuface landmarks --backend fan` explains what is missing)")
            name = "dlib"
    if name == "fan":
        return FanBackend(device=device, min_score=min_score, batch_size=batch_size)
    if device != "cpu":
        log.info("dlib runs on the CPU; --device %s ignored", device)
    return DlibBackend(predictor_path=predictor_path, min_score=min_score, det_size=det_size)


__all__ = [
    "BACKENDS",
    "N_POINTS",
    "DlibBackend",
    "FanBackend",
    "LandmarkBackend",
    "heatmaps_to_points",
    "make_backend",
]
