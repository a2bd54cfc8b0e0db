"""Reading fit files (``neuface.fit`` v1, docs/formats.md) for metrics, and writing minimal ones.

:func:`read_fit_arrays` reads exactly what the metrics need with ``h5py`` (it does not depend on the fitting
package). :func:`write_fit_file` writes a file in the documented layout from given arrays; tests and the
metrics benchmark use it to make fits with known properties (it is not the fitting stage's writer).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path
from neuface.status import StageStatus, read_status_attrs, write_status_attrs
from neuface.video.store import read_str_list_attr, str_list_attr

__all__ = ["FIT_FORMAT", "read_fit_arrays", "write_fit_file"]

FIT_FORMAT = "neuface.fit"
_ARRAYS = ("shape", "expression", "global_pose", "pose", "cam", "crop_transforms", "landmarks", "detected",
           "landmarks_pred", "shots", "shape_shots")
_ATTRS = ("annotator", "fps", "encoder_id", "config_hash", "wall_time_s", "peak_memory_bytes", "device",
          "crop_size", "flame_sha256", "n_frames")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_fit_arrays(path: str | os.PathLike) -> dict[str, Any]:
    """Status, attributes, arrays and loss curves of a fit file.

    Returns:
        dict with ``status`` (:class:`~neuface.status.StageStatus`), ``views`` (list), ``attrs`` (dict of the
        documented root attributes present), ``losses`` (name → (T,) array) and, for an ok fit, every array
        of :data:`_ARRAYS` present in the file (numpy; ``shots`` / ``shape_shots`` only in fits of several
        shots: :func:`neuface.shots.frame_shapes` gives the β of every frame either way).
    Raises:
        NeufaceError: missing file, wrong format, or an ok fit without its parameter arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise NeufaceError(f"fit file {path} does not exist")
    with h5py.File(path, "r") as f:
        if _plain(f.attrs.get("format")) != FIT_FORMAT:
            raise NeufaceError(f"{path} is not a neuface fit file (format={_plain(f.attrs.get('format'))!r})")
        out: dict[str, Any] = {"status": read_status_attrs(f.attrs)}
        out["views"] = read_str_list_attr(f.attrs["views"]) if "views" in f.attrs else []
        out["attrs"] = {k: _plain(f.attrs[k]) for k in _ATTRS if k in f.attrs}
        out["losses"] = {k: f["losses"][k][()] for k in f["losses"]} if "losses" in f else {}
        if out["status"].ok:
            missing = [k for k in ("shape", "expression", "global_pose", "pose") if k not in f]
            if missing:
                raise NeufaceError(f"{path}: ok fit lacks dataset(s) {', '.join(missing)}")
            for key in _ARRAYS:
                if key in f:
                    out[key] = f[key][()]
    return out


def write_fit_file(path: str | os.PathLike, *, sequence: str, annotator: str, views: list[str],
                   shape: np.ndarray, expression: np.ndarray, global_pose: np.ndarray, pose: np.ndarray,
                   cam: np.ndarray | None = None, crop_transforms: np.ndarray | None = None,
                   landmarks: np.ndarray | None = None, detected: np.ndarray | None = None,
                   landmarks_pred: np.ndarray | None = None, losses: dict[str, np.ndarray] | None = None,
                   fps: float = 25.0, status: StageStatus | None = None, crop_size: int = 224,
                   shots: np.ndarray | None = None, shape_shots: np.ndarray | None = None) -> Path:
    """Write a ``neuface.fit`` v1 file (layout of docs/formats.md) from arrays; a failed status writes no data.

    Shapes: shape (n_shape,), expression (F, V, n_exp), global_pose (F, V, 3), pose (F, V, 12), cam (F, V, 3),
    crop_transforms (F, V, 3, 3), landmarks / landmarks_pred (F, V, 68, 2), detected (F, V); several shots:
    shots (S, 2) int ``[start, stop)`` and shape_shots (S, n_shape) (their reasons are written as ``cut``).
    """
    n_f, n_v = expression.shape[:2]
    if len(views) != n_v:
        raise NeufaceError(f"{len(views)} view names for {n_v} views")
    status = status or StageStatus(sequence, "fit")
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        write_status_attrs(f.attrs, status)
        config = json.dumps({"annotator": annotator}, sort_keys=True)
        f.attrs.update({"format": FIT_FORMAT, "format_version": 1, "annotator": annotator, "n_frames": int(n_f),
                        "fps": float(fps), "encoder_id": "none", "config": config,
                        "config_hash": "0" * 64, "flame_sha256": "", "n_shape": int(shape.shape[-1]),
                        "n_exp": int(expression.shape[-1]), "crop_size": int(crop_size), "wall_time_s": 0.0,
                        "peak_memory_bytes": 0, "device": "cpu"})
        f.attrs["views"] = str_list_attr(list(views))
        if not status.ok:
            return Path(path)
        data = {"shape": shape, "expression": expression, "global_pose": global_pose, "pose": pose, "cam": cam,
                "landmarks": landmarks, "landmarks_pred": landmarks_pred}
        for key, value in data.items():
            if value is not None:
                f.create_dataset(key, data=np.asarray(value, dtype=np.float32))
        if crop_transforms is not None:
            f.create_dataset("crop_transforms", data=np.asarray(crop_transforms, dtype=np.float64))
        if detected is not None:
            f.create_dataset("detected", data=np.asarray(detected, dtype=bool))
        if shots is not None:
            f.create_dataset("shots", data=np.asarray(shots, dtype=np.int64))
            f.create_dataset("shape_shots", data=np.asarray(shape_shots, dtype=np.float32))
            f.attrs["shot_reasons"] = str_list_attr(["start"] + ["cut"] * (len(shots) - 1))
            f.attrs["shot_identities"] = np.arange(len(shots), dtype=np.int64)
        for name, curve in (losses or {}).items():
            f.create_dataset(f"losses/{name}", data=np.asarray(curve, dtype=np.float32))
    return Path(path)
