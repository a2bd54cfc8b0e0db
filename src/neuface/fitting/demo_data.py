"""Synthetic fitting inputs for tests and benchmarks: rendered crops + noisy landmark files of one sequence.

The head is rendered by :func:`neuface.synthetic.capture.render_capture` directly at crop size, so the crop of
each frame is the whole frame (identity crop transform); the landmark file holds the ground-truth projected
landmarks plus Gaussian pixel noise. Both files follow the stage formats (``neuface.landmarks``,
``neuface.crops``), so the fitting code reads them like real ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from neuface.flame import FlameLayer
from neuface.geometry.crop import crop_transform
from neuface.status import StageStatus, write_status_attrs
from neuface.video.store import str_list_attr

__all__ = ["SyntheticSequence", "write_synthetic_sequence"]


@dataclass
class SyntheticSequence:
    """Paths and ground truth: ``landmarks_gt`` (F, V, 68, 2) pixels; ``params`` FLAME parameters per (frame,
    view): ``shape`` (n_shape,), ``expression`` (F, V, n_exp), ``global_pose`` (F, V, 3), ``pose`` (F, V, 12),
    ``cam`` (F, V, 3) (crop NDC = frame NDC here)."""

    crops: Path
    landmarks: Path
    landmarks_gt: np.ndarray
    params: dict[str, np.ndarray]
    views: list[str]


def write_synthetic_sequence(out_dir: str | os.PathLike, flame: FlameLayer, n_frames: int = 6,
                             views: tuple[str, ...] = ("front", "left_30"), size: int = 64,
                             noise_px: float = 0.5, seed: int = 0, sequence: str = "synthetic",
                             fps: float = 25.0, image_noise: float = 0.0) -> SyntheticSequence:
    """Render ``n_frames`` × ``views`` (MEAD rig names) and write ``crops.h5`` + ``landmarks.h5``.

    ``noise_px``: std of the Gaussian landmark noise (pixels); ``image_noise``: std of i.i.d. Gaussian pixel
    noise added to every crop (grey levels; sensor noise that makes per-frame regressors jitter).
    """
    from neuface.synthetic.capture import render_capture
    from neuface.synthetic.motion import sample_motion
    from neuface.synthetic.rig import make_rig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    motion = sample_motion(n_frames, fps=fps, n_shape=flame.n_shape, n_exp=flame.n_exp, seed=seed)
    rig = make_rig("mead", seed=seed)
    idx = [rig.names.index(v) for v in views]
    rig.names, rig.rotations, rig.cams = list(views), rig.rotations[idx], rig.cams[idx]
    cap = render_capture(flame, motion, rig, size, seed=seed)
    rng = np.random.default_rng(seed + 1)
    noisy = cap.landmarks + rng.normal(0.0, noise_px, cap.landmarks.shape)
    frames = cap.frames
    if image_noise > 0:
        frames = np.clip(frames + rng.normal(0.0, image_noise, frames.shape), 0, 255).round().astype(np.uint8)
    centre = torch.full((n_frames, 2), (size - 1) / 2.0, dtype=torch.float64)
    side = torch.full((n_frames,), float(size), dtype=torch.float64)
    transforms = crop_transform(centre, side, out_size=size).numpy()
    lmk_path, crops_path = out_dir / "landmarks.h5", out_dir / "crops.h5"
    with h5py.File(lmk_path, "w") as f:
        write_status_attrs(f.attrs, StageStatus(sequence, "landmarks"))
        f.attrs.update({"format": "neuface.landmarks", "format_version": 1, "n_frames": n_frames,
                        "detector": "synthetic", "detector_version": "0", "score_kind": "none",
                        "frames_file": "", "fps": fps})
        f.attrs["views"] = str_list_attr(list(views))
        for v, view in enumerate(views):
            g = f.create_group(f"views/{view}")
            g["landmarks"] = noisy[:, v].astype(np.float32)
            g["scores"] = np.ones((n_frames, 68), np.float32)
            lo, hi = noisy[:, v].min(1), noisy[:, v].max(1)
            g["boxes"] = np.concatenate([lo, hi], 1).astype(np.float32)
            g["box_scores"] = np.ones(n_frames, np.float32)
            g["detected"] = np.ones(n_frames, bool)
    with h5py.File(crops_path, "w") as f:
        write_status_attrs(f.attrs, StageStatus(sequence, "crops", details={"views": list(views)}))
        f.attrs.update({"format": "neuface.crops", "format_version": 1, "n_frames": n_frames, "crop_size": size,
                        "scale": 1.25, "smooth_window": 1, "frames_file": "", "landmarks_file": str(lmk_path),
                        "fps": fps})
        f.attrs["views"] = str_list_attr(list(views))
        for v, view in enumerate(views):
            g = f.create_group(f"views/{view}")
            g["crops"] = frames[v]
            g["transforms"] = transforms
            g["center"] = centre.numpy()
            g["size"] = side.numpy()
            g["detected"] = np.ones(n_frames, bool)
    n_v = len(views)
    params = {"shape": motion.shape[: flame.n_shape].astype(np.float32),
              "expression": np.repeat(motion.expression[:, None, : flame.n_exp], n_v, 1).astype(np.float32),
              "global_pose": cap.global_pose.astype(np.float32),
              "pose": np.repeat(motion.pose[:, None], n_v, 1).astype(np.float32),
              "cam": cap.cams.astype(np.float32)}
    return SyntheticSequence(crops_path, lmk_path, cap.landmarks, params, list(views))
