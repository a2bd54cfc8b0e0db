"""Synthetic fit files (``neuface.fit`` v1, ``docs/formats.md``) for tests and benchmarks of the dataset stage.

The arrays are random but plausible: a face-sized landmark template in pixels, predictions a little off the
detections (NME of a few percent), small poses, β with a chosen norm. Files are written with
``neuface.fitting.output.write_fit`` (or, for deliberately malformed files, directly with h5py in the same
layout).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from neuface.dataset.schema import FIT_FORMAT, str_list
from neuface.io_utils import atomic_path
from neuface.status import StageStatus, write_status_attrs

if TYPE_CHECKING:  # neuface.flame imports torch; keep `neuface pack` light
    from neuface.flame.model import LandmarkEmbedding

DEFAULT_VIEWS = ("front",)


def synthetic_fit_arrays(n_frames: int, n_views: int = 1, seed: int = 0, shape_norm: float = 0.5,
                         pixel_noise: float = 1.0, n_shape: int = 100, n_exp: int = 50) -> dict[str, np.ndarray]:
    """Arrays of one fit (``docs/formats.md``): F = ``n_frames``, V = ``n_views``; all detected."""
    rng = np.random.default_rng(seed)
    f, v = n_frames, n_views
    shape = rng.normal(size=n_shape)
    shape *= shape_norm / max(np.linalg.norm(shape), 1e-12)
    # a face-ish 68-point template: x in [-1, 1], eye corners 36 / 45 at x = -0.7 / +0.7
    t = np.linspace(0.0, 2.0 * np.pi, 68, endpoint=False)
    template = np.stack([np.cos(t), np.sin(t)], axis=1)
    template[36], template[45] = (-0.7, -0.3), (0.7, -0.3)
    centre = np.array([320.0, 240.0]) + rng.normal(scale=5.0, size=(f, v, 1, 2))
    landmarks = centre + 60.0 * template + rng.normal(scale=0.5, size=(f, v, 68, 2))
    pred = landmarks + rng.normal(scale=pixel_noise, size=landmarks.shape)
    crop = np.tile(np.eye(3), (f, v, 1, 1))
    crop[..., 0, 0] = crop[..., 1, 1] = 224.0 / 200.0
    crop[..., 0, 2] = -(centre[..., 0, 0] - 100.0) * 224.0 / 200.0
    crop[..., 1, 2] = -(centre[..., 0, 1] - 100.0) * 224.0 / 200.0
    return {
        "shape": shape.astype(np.float32),
        "expression": rng.normal(scale=0.5, size=(f, v, n_exp)).astype(np.float32),
        "global_pose": rng.normal(scale=0.1, size=(f, v, 3)).astype(np.float32),
        "pose": rng.normal(scale=0.05, size=(f, v, 12)).astype(np.float32),
        "cam": np.concatenate([rng.uniform(7.0, 10.0, (f, v, 1)), rng.normal(scale=0.01, size=(f, v, 2))],
                              axis=-1).astype(np.float32),
        "crop_transforms": crop.astype(np.float64),
        "landmarks": landmarks.astype(np.float32),
        "detected": np.ones((f, v), dtype=bool),
        "landmarks_pred": pred.astype(np.float32),
    }


def write_fit_file(path: str | os.PathLike, sequence: str, arrays: dict[str, np.ndarray] | None,
                   annotator: str = "neuface", views: list[str] | tuple[str, ...] | None = None,
                   status: StageStatus | None = None, fps: float = 25.0, flame_sha256: str = "0" * 64,
                   encoder_id: str = "deca-synthetic", config: dict[str, Any] | None = None,
                   strict: bool = True) -> Path:
    """Write one fit file exactly as ``docs/formats.md`` describes (atomically).

    ``arrays=None`` (or a failed ``status``) writes a failed fit: status attributes, no datasets. With
    ``strict`` the file is written by ``neuface.fitting.output.write_fit`` (which checks shapes); without it,
    by plain h5py in the same layout, so that malformed files can be made for tests.
    """
    path = Path(path)
    status = status or StageStatus(sequence, "fit")
    if arrays is None and status.ok:
        status = StageStatus.failed(sequence, "fit", "no arrays")
    if not status.ok:
        arrays = None
    n_views = arrays["expression"].shape[1] if arrays is not None else len(views or DEFAULT_VIEWS)
    if views is None:
        views = list(DEFAULT_VIEWS) if n_views == 1 else [f"view{i}" for i in range(n_views)]
    config_json = json.dumps(config or {"annotator": annotator}, sort_keys=True, separators=(",", ":"))
    meta = {
        "annotator": annotator, "views": list(views),
        "n_frames": int(arrays["expression"].shape[0]) if arrays is not None else 0, "fps": float(fps),
        "encoder_id": encoder_id, "config_hash": hashlib.sha256(config_json.encode()).hexdigest(),
        "config": config_json, "flame_sha256": flame_sha256,
        "n_shape": int(arrays["shape"].shape[0]) if arrays is not None else 100,
        "n_exp": int(arrays["expression"].shape[-1]) if arrays is not None else 50,
        "crop_size": 224, "wall_time_s": 1.0, "peak_memory_bytes": 0, "device": "cpu",
    }
    losses = {"total": np.linspace(1.0, 0.1, 5).tolist()}
    if strict:
        try:
            from neuface.fitting.output import FitMeta, write_fit
        except ImportError:
            pass
        else:
            write_fit(path, status, FitMeta(**meta), arrays, losses if arrays is not None else None)
            return path
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        write_status_attrs(f.attrs, status)
        f.attrs["format"] = FIT_FORMAT
        f.attrs["format_version"] = 1
        for key, value in meta.items():
            f.attrs[key] = str_list(value) if key == "views" else value
        if arrays is not None:
            for name, arr in arrays.items():
                f.create_dataset(name, data=arr)
            f.create_dataset("losses/total", data=np.asarray(losses["total"], dtype=np.float32))
    return path


def random_landmark_embedding(n_faces: int, rng: np.random.Generator) -> LandmarkEmbedding:
    """A valid DECA-format embedding with random faces and barycentric coordinates (tests, benchmarks)."""
    from neuface.flame.model import LandmarkEmbedding

    return LandmarkEmbedding(
        static_lmk_faces_idx=rng.integers(0, n_faces, 51),
        static_lmk_bary_coords=rng.dirichlet(np.ones(3), 51),
        dynamic_lmk_faces_idx=rng.integers(0, n_faces, (79, 17)),
        dynamic_lmk_bary_coords=rng.dirichlet(np.ones(3), (79, 17)),
        full_lmk_faces_idx=rng.integers(0, n_faces, 68),
        full_lmk_bary_coords=rng.dirichlet(np.ones(3), 68),
    ).validate(n_faces)


def random_flame_model(n_verts: int = 80, n_faces: int = 120, n_shape: int = 100, n_exp: int = 50,
                       seed: int = 0):
    """A small random FLAME-format model (``FlameModel``) with ``n_shape`` identity and ``n_exp`` expression
    columns, and a matching random DECA-layout ``LandmarkEmbedding``; for tests and benchmarks."""
    from neuface.flame.model import FLAME_PARENTS, FlameModel

    rng = np.random.default_rng(seed)
    faces = np.stack([rng.choice(n_verts, 3, replace=False) for _ in range(n_faces)]).astype(np.int64)
    j_reg = rng.random((5, n_verts)) * (rng.random((5, n_verts)) < 0.3)
    j_reg[:, 0] += 0.1
    logits = 3.0 * rng.normal(size=(n_verts, 5))
    model = FlameModel(
        v_template=rng.uniform(-0.1, 0.1, (n_verts, 3)),
        faces=faces,
        shapedirs=0.01 * rng.normal(size=(n_verts, 3, n_shape + n_exp)),
        posedirs=0.01 * rng.normal(size=(n_verts, 3, 36)),
        J_regressor=j_reg / j_reg.sum(1, keepdims=True),
        weights=np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
        parents=np.array(FLAME_PARENTS, dtype=np.int64),
        num_shape_total=n_shape,
    ).validate()
    return model, random_landmark_embedding(n_faces, rng)
