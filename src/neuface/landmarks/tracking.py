"""Follow one face through a video: pick, in each frame, the detection that continues the tracked face.

Rule: on the first frame with any detection, take the largest face. Afterwards take the detection with the
highest IoU with the last tracked box if it reaches ``min_iou``; otherwise the detection whose centre is
nearest, if it lies within ``max_shift`` box diagonals (the tolerance grows with each frame the face has been
lost) and its size is within a factor ``max_scale_change``. If none qualifies, the face is lost in that frame
(no landmarks, ``detected=False``). After more than ``max_lost`` consecutive lost frames the track is dropped
and the largest face is acquired again. At a shot cut the caller resets the tracker (:meth:`FaceTracker.reset`):
no box is carried across a cut.

Boxes are ``(x0, y0, x1, y1[, score])`` in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neuface.errors import NeufaceError, ShapeError


def _as_boxes(boxes: np.ndarray | Sequence, name: str = "boxes") -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise ShapeError(f"{name} must have shape (N, 4) or (N, 5), got {arr.shape}")
    return arr[:, :4]


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(N, 4)`` boxes, ``(N,)`` (0 for degenerate boxes)."""
    b = _as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of ``(N, 4)`` and ``(M, 4)`` boxes, ``(N, M)``."""
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_centre(boxes: np.ndarray) -> np.ndarray:
    """Centres ``(N, 2)`` of ``(N, 4)`` boxes."""
    b = _as_boxes(boxes)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)


class FaceTracker:
    """Stateful single-face tracker; call :meth:`update` once per frame, in order."""

    def __init__(self, min_iou: float = 0.2, max_shift: float = 0.5, max_scale_change: float = 2.0,
                 max_lost: int = 15):
        if not 0.0 <= min_iou <= 1.0:
            raise NeufaceError(f"min_iou must be in [0, 1], got {min_iou}")
        if max_shift < 0 or max_scale_change < 1 or max_lost < 0:
            raise NeufaceError("need max_shift >= 0, max_scale_change >= 1 and max_lost >= 0")
        self.min_iou = min_iou
        self.max_shift = max_shift
        self.max_scale_change = max_scale_change
        self.max_lost = max_lost
        self.box: np.ndarray | None = None  # last tracked box (4,)
        self.lost = 0  # consecutive frames without the tracked face

    def reset(self) -> None:
        """Forget the tracked face (at a shot cut): the next frame with faces acquires the largest one."""
        self.box = None
        self.lost = 0

    def update(self, boxes: np.ndarray | Sequence) -> int | None:
        """Index (into ``boxes``) of the tracked face in this frame, or None if it is not there."""
        b = _as_boxes(boxes)
        if self.box is None:
            if len(b) == 0:
                return None
            return self._take(b, int(np.argmax(box_area(b))))
        idx = self._match(b)
        if idx is not None:
            return self._take(b, idx)
        self.lost += 1
        if self.lost > self.max_lost:
            self.box = None  # give up: the next frame with faces acquires the largest one
            if len(b):
                return self._take(b, int(np.argmax(box_area(b))))
        return None

    def _match(self, b: np.ndarray) -> int | None:
        if len(b) == 0:
            return None
        ref = self.box[None]  # type: ignore[index]
        iou = box_iou(ref, b)[0]
        best = int(np.argmax(iou))
        if iou[best] >= self.min_iou and iou[best] > 0:
            return best
        diag = float(np.hypot(ref[0, 2] - ref[0, 0], ref[0, 3] - ref[0, 1])) or 1.0
        dist = np.linalg.norm(box_centre(b) - box_centre(ref), axis=1) / diag
        ratio = np.sqrt(np.maximum(box_area(b), 1e-12) / max(float(box_area(ref)[0]), 1e-12))
        ok = (dist <= self.max_shift * (1 + self.lost)) & (ratio <= self.max_scale_change) & (
            ratio >= 1.0 / self.max_scale_change)
        if not ok.any():
            return None
        return int(np.argmin(np.where(ok, dist, np.inf)))

    def _take(self, b: np.ndarray, idx: int) -> int:
        self.box = b[idx].copy()
        self.lost = 0
        return idx


def track_faces(boxes_per_frame: Sequence[np.ndarray], resets: Sequence[int] = (),
                **tracker_kwargs: float) -> np.ndarray:
    """Index of the tracked face per frame, ``(F,)`` int64 with -1 where the face is not found; the tracker
    restarts at the frames ``resets`` (shot cuts)."""
    tracker = FaceTracker(**tracker_kwargs)  # type: ignore[arg-type]
    restart = {int(r) for r in resets}
    out = np.full(len(boxes_per_frame), -1, dtype=np.int64)
    for i, boxes in enumerate(boxes_per_frame):
        if i in restart:
            tracker.reset()
        idx = tracker.update(boxes)
        if idx is not None:
            out[i] = idx
    return out


__all__ = ["FaceTracker", "box_area", "box_centre", "box_iou", "track_faces"]
