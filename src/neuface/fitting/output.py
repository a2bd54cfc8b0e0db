"""The fit file (``neuface.fit`` version 1, see docs/formats.md): writer and reader.

A fit of several shots (:mod:`neuface.shots`) also holds ``shots`` (S, 2) and ``shape_shots`` (S, n_shape) and the
root attributes ``shot_reasons`` / ``shot_identities``; :func:`frame_shapes` gives the β of every frame of any fit.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path
from neuface.shots import check_shots, frame_shapes
from neuface.status import StageStatus, read_status_attrs, write_status_attrs
from neuface.video.store import read_str_list_attr, str_list_attr

__all__ = ["FORMAT", "FORMAT_VERSION", "STAGE", "FitMeta", "write_fit", "read_fit", "frame_shapes", "DATASETS",
           "SHOT_DATASETS"]

STAGE = "fit"
FORMAT = "neuface.fit"
FORMAT_VERSION = 1
#: Datasets of an ok fit, in the order of docs/formats.md.
DATASETS = ("shape", "expression", "global_pose", "pose", "cam", "crop_transforms", "landmarks", "detected",
            "landmarks_pred")
#: Datasets of an ok fit of more than one shot (absent: one shot of every frame).
SHOT_DATASETS = ("shots", "shape_shots")


@dataclass
class FitMeta:
    """Root attributes besides the status (see docs/formats.md)."""

    annotator: str
    views: list[str]
    n_frames: int
    fps: float
    encoder_id: str
    config_hash: str
    config: str
    flame_sha256: str
    n_shape: int = 100
    n_exp: int = 50
    crop_size: int = 224
    wall_time_s: float = math.nan
    peak_memory_bytes: int = 0
    device: str = "cpu"
    #: Several shots only: why each shot starts (start | cut | identity) and its identity label.
    shot_reasons: list[str] | None = None
    shot_identity: np.ndarray | None = None


def write_fit(path: str | os.PathLike, status: StageStatus, meta: FitMeta,
              arrays: dict[str, np.ndarray] | None = None, losses: dict[str, list[float]] | None = None) -> None:
    """Write a fit file atomically. A failed ``status`` writes attributes only (``arrays`` must be None).

    Args:
        arrays: ``shape`` (n_shape,), ``expression`` (F, V, n_exp), ``global_pose`` (F, V, 3), ``pose``
            (F, V, 12), ``cam`` (F, V, 3), ``crop_transforms`` (F, V, 3, 3), ``landmarks`` (F, V, 68, 2),
            ``detected`` (F, V), ``landmarks_pred`` (F, V, 68, 2); for more than one shot also ``shots`` (S, 2)
            ``[start, stop)`` and ``shape_shots`` (S, n_shape) (``shape`` is then the longest shot's β).
        losses: loss curves ``name -> values`` (one value per optimisation step).
    """
    if status.ok:
        if arrays is None:
            raise NeufaceError("an ok fit needs its arrays")
        missing = [k for k in DATASETS if k not in arrays]
        if missing:
            raise NeufaceError(f"fit arrays missing: {', '.join(missing)}")
        _check_shapes(arrays, meta)
    elif arrays:
        raise NeufaceError("a failed fit has no datasets")
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        write_status_attrs(f.attrs, status)
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["annotator"] = str(meta.annotator)
        f.attrs["views"] = str_list_attr(meta.views)
        f.attrs["n_frames"] = int(meta.n_frames)
        f.attrs["fps"] = float(meta.fps)
        f.attrs["encoder_id"] = str(meta.encoder_id)
        f.attrs["config_hash"] = str(meta.config_hash)
        f.attrs["config"] = str(meta.config)
        f.attrs["flame_sha256"] = str(meta.flame_sha256)
        f.attrs["n_shape"] = int(meta.n_shape)
        f.attrs["n_exp"] = int(meta.n_exp)
        f.attrs["crop_size"] = int(meta.crop_size)
        f.attrs["wall_time_s"] = float(meta.wall_time_s)
        f.attrs["peak_memory_bytes"] = int(meta.peak_memory_bytes)
        f.attrs["device"] = str(meta.device)
        if not status.ok:
            return
        for key in DATASETS + tuple(k for k in SHOT_DATASETS if k in arrays):
            dtype = {"crop_transforms": np.float64, "detected": bool, "shots": np.int64}.get(key, np.float32)
            f.create_dataset(key, data=np.asarray(arrays[key], dtype=dtype))
        if "shots" in arrays:
            n_shots = len(arrays["shots"])
            f.attrs["shot_reasons"] = str_list_attr(list(meta.shot_reasons or ["start"] + ["cut"] * (n_shots - 1)))
            ids = meta.shot_identity if meta.shot_identity is not None else np.arange(n_shots)
            f.attrs["shot_identities"] = np.asarray(ids, dtype=np.int64)
        group = f.create_group("losses")
        for name, values in (losses or {}).items():
            group.create_dataset(name, data=np.asarray(values, dtype=np.float32))


def _check_shapes(arrays: dict[str, np.ndarray], meta: FitMeta) -> None:
    n_f, n_v = int(meta.n_frames), len(meta.views)
    want = {"shape": (meta.n_shape,), "expression": (n_f, n_v, meta.n_exp), "global_pose": (n_f, n_v, 3),
            "pose": (n_f, n_v, 12), "cam": (n_f, n_v, 3), "crop_transforms": (n_f, n_v, 3, 3),
            "landmarks": (n_f, n_v, 68, 2), "detected": (n_f, n_v), "landmarks_pred": (n_f, n_v, 68, 2)}
    if ("shots" in arrays) != ("shape_shots" in arrays):
        raise NeufaceError("a fit of several shots needs both 'shots' and 'shape_shots'")
    if "shots" in arrays:
        bounds = check_shots(arrays["shots"], n_f)
        want["shape_shots"] = (len(bounds), meta.n_shape)
        if meta.shot_reasons is not None and len(meta.shot_reasons) != len(bounds):
            raise NeufaceError(f"{len(meta.shot_reasons)} shot reasons for {len(bounds)} shots")
    for key, shape in want.items():
        got = tuple(np.shape(arrays[key]))
        if got != shape:
            raise NeufaceError(f"fit dataset {key} has shape {got}, expected {shape}")


def read_fit(path: str | os.PathLike) -> dict[str, Any]:
    """Everything in a fit file: root attributes, datasets, ``losses`` (dict), ``settings`` (the parsed
    ``config``) and ``status`` (a :class:`StageStatus`; its fields are also there as attributes). A fit of
    several shots also has ``shots``, ``shape_shots``, ``shot_reasons`` and ``shot_identities``; the β of every
    frame is ``frame_shapes(read_fit(path))``."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise NeufaceError(f"{path} is not a neuface fit file")
        out: dict[str, Any] = {}
        for key, value in f.attrs.items():
            if key in ("views", "shot_reasons"):
                out[key] = read_str_list_attr(value)
            elif key == "shot_identities":
                out[key] = np.asarray(value, dtype=np.int64)
            elif isinstance(value, np.generic):
                out[key] = value.item()
            else:
                out[key] = value.decode() if isinstance(value, bytes) else value
        out["status"] = read_status_attrs(f.attrs)
        out["settings"] = json.loads(out["config"]) if out.get("config") else {}
        for key in DATASETS + SHOT_DATASETS:
            if key in f:
                out[key] = f[key][()]
        out["losses"] = {k: v[()] for k, v in f["losses"].items()} if "losses" in f else {}
    return out
