"""``neuface h5 export``: one packed sequence as the official NeuFace ``params.npz`` or as OBJ/PLY meshes.

``params.npz`` follows the layout the official NeuFace code writes per video (``flame_params/params.npz``,
``np.savez_compressed``), for ONE view, S = frames:

=============== ============ ===========================================================================
key             shape        meaning
=============== ============ ===========================================================================
``cam``         (S, 3)       weak perspective ``(s, tx, ty)`` in crop NDC (DECA)
``pose``        (S, 6)       global rotation (3) + jaw (3), axis-angle (DECA's ``pose``)
``expr``        (S, 50)      expression ψ
``shapes``      (S, 100)     identity β of each frame (one per sequence, or per shot of a cut sequence)
``landmarks2d`` (S, 68, 2)   the detector's landmarks, in crop NDC ([-1, 1] of the 224 crop; NaN where none)
=============== ============ ===========================================================================

The official file keeps only these keys (neck and eye rotations, and the crop transform, are dropped); use the
HDF5 file itself when you need them. Meshes: FLAME vertices (model space, metres) of the chosen frames,
``<sequence>_<view>_<frame:05d>.obj|ply``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from neuface.dataset.schema import DATASET_FORMAT, attr_str, attr_str_list
from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path
from neuface.shots import frame_shapes

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("npz", "obj", "ply")
#: Official ``params.npz`` keys and per-frame widths (after the frame axis).
NPZ_KEYS = {"cam": (3,), "pose": (6,), "expr": (50,), "shapes": (100,), "landmarks2d": (68, 2)}


def _open_sequence(f: h5py.File, path: Path, sequence: str) -> h5py.Group:
    fmt = attr_str(f.attrs.get("format", ""))
    if fmt != DATASET_FORMAT:
        raise NeufaceError(f"{path} is not a {DATASET_FORMAT} file (format={fmt!r})")
    if sequence not in f["sequences"]:
        names = list(f["sequences"].keys())
        raise NeufaceError(f"{path} has no sequence {sequence!r} ({len(names)} sequences, e.g. {names[:5]})")
    return f["sequences"][sequence]


def _pick_view(g: h5py.Group, view: str | None) -> tuple[int, str]:
    views = attr_str_list(g.attrs["views"])
    if view is None:
        view = "front" if "front" in views else views[0]
    if view not in views:
        raise NeufaceError(f"view {view!r} not in {views}")
    return views.index(view), view


def _pick_frames(n_frames: int, frames: list[int] | None) -> np.ndarray:
    if frames is None:
        return np.arange(n_frames)
    idx = np.asarray(frames, dtype=np.int64)
    bad = idx[(idx < 0) | (idx >= n_frames)]
    if bad.size:
        raise NeufaceError(f"frame(s) {bad.tolist()} out of range [0, {n_frames})")
    return idx


def sequence_params(g: h5py.Group, vi: int, frames: np.ndarray, crop_size: int = 224) -> dict[str, np.ndarray]:
    """The official ``params.npz`` arrays of one view of a packed sequence (see module docstring)."""
    from neuface.geometry.crop import pixels_to_crop_ndc

    def take(name: str) -> np.ndarray:
        return g[name][()][frames, vi]

    n = len(frames)
    pose = np.concatenate([take("global_pose"), take("pose")[:, 3:6]], axis=-1)
    lmk = torch.from_numpy(take("landmarks").astype(np.float64))
    tf = torch.from_numpy(take("crop_transforms").astype(np.float64))
    lmk_ndc = pixels_to_crop_ndc(lmk, tf, crop_size).numpy() if n else np.zeros((0, 68, 2))
    return {
        "cam": take("cam").astype(np.float32),
        "pose": pose.astype(np.float32),
        "expr": take("expression").astype(np.float32),
        "shapes": frame_shapes(g)[frames].astype(np.float32),
        "landmarks2d": lmk_ndc.astype(np.float32),
    }


def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Wavefront OBJ: ``v x y z`` lines then ``f a b c`` (1-based) lines; written atomically."""
    path = Path(path)
    text = "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices)
    text += "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)
    with atomic_path(path, suffix=".obj") as tmp:
        tmp.write_text(text)
    return path


def write_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Binary little-endian PLY (float32 vertices, uint8-count int32 faces); written atomically."""
    path = Path(path)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment neuface FLAME mesh\n"
        f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    face_rec = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"], face_rec["idx"] = 3, faces
    with atomic_path(path, suffix=".ply") as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        fh.write(np.ascontiguousarray(vertices, dtype="<f4").tobytes())
        fh.write(face_rec.tobytes())
    return path


def export_sequence(path: str | os.PathLike, sequence: str, out_dir: str | os.PathLike, fmt: str = "npz",
                    frames: list[int] | None = None, view: str | None = None, flame: Any = None,
                    embedding: str | os.PathLike | None = None) -> list[Path]:
    """Export one sequence of a packed dataset; returns the written files.

    Args:
        path: ``neuface.dataset`` file.
        sequence: sequence id.
        out_dir: output directory (``params.npz`` or one mesh per frame).
        fmt: ``npz`` | ``obj`` | ``ply``.
        frames: frame positions to export (default: all frames).
        view: view name (default ``front`` if present, else the first view).
        flame: FLAME model path or :class:`~neuface.flame.FlameLayer` (meshes only).
        embedding: optional landmark embedding path; with it, the 68 3D landmarks of each frame are written
            next to each mesh as ``<stem>_landmarks3d.txt``.
    """
    if fmt not in EXPORT_FORMATS:
        raise NeufaceError(f"export format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    path, out_dir = Path(path), Path(out_dir)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise NeufaceError(f"cannot open {path}: {exc}") from None
    with f:
        g = _open_sequence(f, path, sequence)
        vi, view = _pick_view(g, view)
        idx = _pick_frames(int(g.attrs["n_frames"]), frames)
        if fmt == "npz":
            params = sequence_params(g, vi, idx)
            out = out_dir / "params.npz"
            with atomic_path(out, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, **params)
            log.info("wrote %s (%d frames of view %s)", out, len(idx), view)
            return [out]
        if flame is None:
            raise NeufaceError("mesh export needs --flame (a FLAME model)")
        return _export_meshes(g, vi, view, idx, sequence, out_dir, fmt, flame, embedding,
                              attr_str(f.attrs.get("flame_sha256", "")))


def _export_meshes(g: h5py.Group, vi: int, view: str, idx: np.ndarray, sequence: str, out_dir: Path, fmt: str,
                   flame: Any, embedding: Any, file_sha: str) -> list[Path]:
    from neuface.dataset.pack import sha256_file
    from neuface.flame import FlameLayer

    n_shape, n_exp = int(g["shape"].shape[0]), int(g["expression"].shape[-1])
    if not isinstance(flame, FlameLayer):
        if file_sha and sha256_file(flame) != file_sha:
            log.warning("FLAME model %s is not the one the fits were made with (sha256 differs)", flame)
        flame = FlameLayer.from_files(flame, embedding, n_shape=n_shape, n_exp=n_exp, dtype=torch.float64)

    def take(name: str) -> torch.Tensor:
        return torch.from_numpy(g[name][()][idx, vi].astype(np.float64))

    with torch.no_grad():
        out = flame(
            shape=torch.from_numpy(frame_shapes(g)[idx].astype(np.float64)),
            expression=take("expression"), global_pose=take("global_pose"), pose=take("pose"),
        )
    faces = flame.faces.cpu().numpy()
    writer = write_obj if fmt == "obj" else write_ply
    written = []
    for k, frame in enumerate(idx.tolist()):
        stem = f"{sequence}_{view}_{frame:05d}"
        written.append(writer(out_dir / f"{stem}.{fmt}", out.vertices[k].cpu().numpy(), faces))
        if out.landmarks3d is not None:
            lmk = out_dir / f"{stem}_landmarks3d.txt"
            with atomic_path(lmk, suffix=".txt") as tmp:
                np.savetxt(tmp, out.landmarks3d[k].cpu().numpy(), fmt="%.6f")
            written.append(lmk)
    log.info("wrote %d %s meshes of %s/%s to %s", len(idx), fmt, sequence, view, out_dir)
    return written


__all__ = ["EXPORT_FORMATS", "NPZ_KEYS", "export_sequence", "sequence_params", "write_obj", "write_ply"]
