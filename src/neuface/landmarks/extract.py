"""The ``landmarks`` stage for one sequence: 68 2D landmarks of one tracked face per frame and view.

Output layout (``FORMAT = "neuface.landmarks"``, version 1)::

    /                        attrs: format, format_version, status attrs (neuface.status), views, n_frames,
                                    detector, detector_version, score_kind, frames_file
    /views/<view>/landmarks  (F, 68, 2) float32 pixels of the stored frames (NaN where not detected)
    /views/<view>/scores     (F, 68) float32 per-point confidence (NaN where not detected)
    /views/<view>/boxes      (F, 4) float32 face box x0, y0, x1, y1 (NaN where not detected)
    /views/<view>/box_scores (F,) float32 detector confidence of the box
    /views/<view>/detected   (F,) bool
        attrs: detector, detector_version, width, height, n_detected, max_faces (most faces in one frame)

With shot segmentation on (:mod:`neuface.landmarks.shots`; ``shots`` argument) the file also holds::

    /shots/bounds            (S, 2) int64 [start, stop) of each shot
    /shots/reason            (S,) str why each shot starts: start | cut | identity
    /shots/identity          (S,) int64 identity label (shots of one person share it; -1 unknown)
        attrs: settings (JSON), merged (JSON list of notes on merged short shots), descriptor (model version)
    /views/<view>/cut_score        (F,) float32 histogram distance to the previous frame (NaN at frame 0)
    /views/<view>/identity_frames  (K,) int64 frames whose face descriptor was computed
    /views/<view>/descriptors      (K, 128) float32 dlib face descriptors of the tracked face there

and the tracker restarts at every cut. Without ``/shots`` the sequence is one shot.

A failed upstream frames file gives a failed landmarks file without any work; a sequence with no face in any
frame of any view fails with ``'no face detected'``. The frames stage's warnings are carried into the status.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path
from neuface.landmarks.backends import N_POINTS, LandmarkBackend
from neuface.landmarks.identity import FaceDescriber
from neuface.landmarks.shots import ShotSettings, detect_cuts, segment_shots, view_cut_scores, write_shots
from neuface.landmarks.tracking import FaceTracker
from neuface.status import StageStatus, read_status, read_status_attrs, write_status_attrs
from neuface.video.store import frames_info, read_str_list_attr, str_list_attr

log = logging.getLogger(__name__)

STAGE = "landmarks"
FORMAT = "neuface.landmarks"
FORMAT_VERSION = 1
_ARRAYS = ("landmarks", "scores", "boxes", "box_scores", "detected")


def landmarks_for_view(frames: h5py.Dataset | np.ndarray, backend: LandmarkBackend, batch_size: int = 16,
                       tracker: FaceTracker | None = None, resets: Sequence[int] = ()) -> dict[str, Any]:
    """Detect, track and landmark one face through ``frames`` ``(F, H, W, 3)`` uint8 (read in batches); the
    tracker restarts at the frames ``resets`` (shot cuts: no box is carried across a cut).

    Returns a dict with ``landmarks (F, 68, 2)``, ``scores (F, 68)``, ``boxes (F, 4)``, ``box_scores (F,)``,
    ``detected (F,)`` and ``max_faces``.
    """
    if batch_size < 1:
        raise NeufaceError(f"batch_size must be at least 1, got {batch_size}")
    tracker = tracker or FaceTracker()
    restart = {int(r) for r in resets}
    n = frames.shape[0]
    out: dict[str, Any] = {
        "landmarks": np.full((n, N_POINTS, 2), np.nan, dtype=np.float32),
        "scores": np.full((n, N_POINTS), np.nan, dtype=np.float32),
        "boxes": np.full((n, 4), np.nan, dtype=np.float32),
        "box_scores": np.full((n,), np.nan, dtype=np.float32),
        "detected": np.zeros((n,), dtype=bool),
        "max_faces": 0,
    }
    for start in range(0, n, batch_size):
        batch = np.asarray(frames[start:start + batch_size])
        dets = backend.detect(batch)
        chosen, rows = [], []
        for j, boxes in enumerate(dets):
            if start + j in restart:
                tracker.reset()
            out["max_faces"] = max(out["max_faces"], len(boxes))
            idx = tracker.update(boxes)
            if idx is not None:
                chosen.append(j)
                rows.append(boxes[idx])
        if not chosen:
            continue
        picked = np.asarray(rows, dtype=np.float64)
        pts, sc = backend.landmarks(batch[chosen], picked[:, :4])
        where = np.asarray(chosen) + start
        out["landmarks"][where] = pts
        out["scores"][where] = sc
        out["boxes"][where] = picked[:, :4]
        out["box_scores"][where] = picked[:, 4]
        out["detected"][where] = True
    return out


def detect_sequence(frames_path: str | os.PathLike, out: str | os.PathLike, backend: LandmarkBackend,
                    batch_size: int = 16, tracker_kwargs: dict[str, float] | None = None,
                    shots: ShotSettings | None = None, describer: FaceDescriber | None = None) -> StageStatus:
    """Run the landmarks stage on one frames file; always writes ``out`` (atomically); returns its status.

    Args:
        shots: shot segmentation settings; None or ``enabled=False``: one shot, no ``/shots`` (as before).
        describer: the face descriptor model for the identity check (default: dlib's, loaded once per process).
    Raises:
        AssetMissingError: the identity check is on and dlib's face recognition model is not installed.
    """
    upstream = read_status(frames_path)
    sequence = upstream.sequence
    segment = shots is not None and shots.enabled
    with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        _root_attrs(f, backend, frames_path)
        if not upstream.ok:
            return write_upstream_failure(f, upstream, STAGE)
        info = frames_info(frames_path)
        per_view: dict[str, int] = {}
        warnings: list[str] = []
        results: dict[str, tuple[Any, dict[str, Any]]] = {}
        with h5py.File(frames_path, "r") as src:
            cut_scores: dict[str, np.ndarray] = {}
            cuts: np.ndarray = np.zeros((0,), np.int64)
            if segment:
                cut_scores = {v: view_cut_scores(src[f"views/{v}/frames"]) for v in info["views"]}
                cuts = np.unique(np.concatenate([np.zeros((0,), np.int64)] + [
                    detect_cuts(s, shots.cut_threshold, shots.cut_ratio) for s in cut_scores.values()]))
            for view in info["views"]:
                ds = src[f"views/{view}/frames"]
                res = landmarks_for_view(ds, backend, batch_size, FaceTracker(**(tracker_kwargs or {})), resets=cuts)
                results[view] = (ds, res)
                g = f.require_group("views").create_group(view)
                for key in _ARRAYS:
                    g.create_dataset(key, data=res[key], compression="gzip", compression_opts=1)
                n_det = int(res["detected"].sum())
                per_view[view] = n_det
                g.attrs.update({"detector": backend.name, "detector_version": backend.version,
                                "width": int(ds.shape[2]), "height": int(ds.shape[1]), "n_detected": n_det,
                                "max_faces": int(res["max_faces"])})
                n = int(ds.shape[0])
                if n_det == 0:
                    warnings.append(f"view {view}: no face detected in {n} frame(s)")
                elif n_det < n:
                    warnings.append(f"view {view}: face found in {n_det}/{n} frames")
                if res["max_faces"] > 1:
                    warnings.append(f"view {view}: up to {res['max_faces']} faces in a frame; tracked one")
            n_frames = int(info["n_frames"])
            shot_details = None
            if segment and n_frames > 0 and any(per_view.values()):
                if describer is None and shots.identity_threshold is not None:
                    describer = default_describer()
                result = segment_shots(n_frames, cuts, results, shots, describer, cut_scores)
                write_shots(f, result, shots, getattr(describer, "version", ""))
                shot_details = result.details()
                warnings += result.merged
                if result.n_shots > 1:
                    log.info("%s: %d shots %s", sequence, result.n_shots, result.details()["bounds"])
        details = {"n_frames": n_frames, "n_detected": per_view,
                   "detected_fraction": {v: (c / n_frames if n_frames else 0.0) for v, c in per_view.items()},
                   "detector": backend.name, "detector_version": backend.version}
        if shot_details is not None:
            details["shots"] = shot_details
        if not per_view or not any(per_view.values()):
            status = StageStatus.failed(sequence, STAGE, "no face detected", **details)
        else:
            status = StageStatus(sequence, STAGE, details=details, warnings=tuple(warnings))
        status = status.with_warnings(upstream.warnings)  # the frames stage's notes (partial inputs) go on
        write_stage_attrs(f, status, list(per_view), n_frames)
    log.log(logging.INFO if status.ok and not status.warnings else logging.WARNING, "%s", status.summary())
    return status


@functools.lru_cache(maxsize=1)
def default_describer() -> FaceDescriber:
    """dlib's face descriptor model, loaded once per process (``neuface shard`` runs many sequences in one)."""
    return FaceDescriber()


def _root_attrs(f: h5py.File, backend: LandmarkBackend, frames_path: str | os.PathLike) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["detector"] = backend.name
    f.attrs["detector_version"] = backend.version
    f.attrs["score_kind"] = backend.score_kind
    f.attrs["frames_file"] = str(frames_path)


def write_upstream_failure(f: h5py.File, upstream: StageStatus, stage: str) -> StageStatus:
    """Close a stage file whose input failed: the propagated failure, no views; logged once. Returns it."""
    status = upstream.propagate(stage)
    write_stage_attrs(f, status, [], 0)
    log.warning("%s", status.summary())
    return status


def write_stage_attrs(f: h5py.File, status: StageStatus, views: list[str], n_frames: int) -> None:
    """Root attributes every per-sequence stage file ends with: status, views, frame count."""
    write_status_attrs(f.attrs, status)
    f.attrs["views"] = str_list_attr(views)
    f.attrs["n_frames"] = int(n_frames)


def read_landmarks(h5: str | os.PathLike, view: str) -> dict[str, np.ndarray]:
    """All arrays of one view (``landmarks, scores, boxes, box_scores, detected``) as numpy arrays."""
    path = Path(h5)
    if not path.is_file():
        raise NeufaceError(f"landmarks file {path} does not exist")
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise NeufaceError(f"{path} is not a neuface landmarks file")
        if f"views/{view}" not in f:
            views = read_str_list_attr(f.attrs["views"])
            raise NeufaceError(f"{path} has no view {view!r} (views: {', '.join(views) or 'none'}; "
                               f"status {f.attrs['status']}: {f.attrs['reason']})")
        return {k: f[f"views/{view}/{k}"][()] for k in _ARRAYS}


def landmarks_info(h5: str | os.PathLike) -> dict[str, Any]:
    """Root metadata: status, views, n_frames, detector, detector_version."""
    with h5py.File(h5, "r") as f:
        return {"status": read_status_attrs(f.attrs), "views": read_str_list_attr(f.attrs["views"]),
                "n_frames": int(f.attrs["n_frames"]), "detector": str(f.attrs["detector"]),
                "detector_version": str(f.attrs["detector_version"]),
                "details": json.loads(f.attrs["details"])}


__all__ = ["FORMAT", "STAGE", "default_describer", "detect_sequence", "landmarks_for_view", "landmarks_info",
           "read_landmarks", "write_stage_attrs", "write_upstream_failure"]
