"""Load one sequence (crops file + landmarks file) into a :class:`SequenceBatch` for the annotators."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from neuface.crops import read_crops
from neuface.errors import NeufaceError
from neuface.geometry.crop import pixels_to_crop_ndc
from neuface.landmarks.extract import read_landmarks
from neuface.landmarks.shots import read_shots
from neuface.status import StageStatus, read_status
from neuface.video.store import read_str_list_attr

log = logging.getLogger(__name__)

__all__ = ["SequenceBatch", "load_sequence", "upstream_status", "images_to_input"]


@dataclass
class SequenceBatch:
    """One sequence, every view that has crops.

    Attributes:
        sequence: sequence name (from the status attributes).
        views: view names (V,).
        images: (F, V, 3, S, S) uint8 RGB crops (CPU; moved to the device per window).
        landmarks: (F, V, 68, 2) float32 detections in crop NDC (NaN where not valid).
        landmarks_px: (F, V, 68, 2) float32 detections in original pixels (NaN where not detected).
        valid: (F, V, 68) bool per-point validity (detected and finite).
        detected: (F, V) bool.
        transforms: (F, V, 3, 3) float64 crop transforms (original pixels → crop pixels).
        crop_size: S.
        fps: frame rate (NaN if unknown).
        shots: (S, 2) int64 ``[start, stop)`` shot bounds when the sequence has more than one shot, else None
            (:mod:`neuface.shots`).
        shot_reasons: why each shot starts (``start | cut | identity``), empty for one shot.
        shot_identity: (S,) int64 identity labels of the shots, None for one shot.
    """

    sequence: str
    views: list[str]
    images: torch.Tensor
    landmarks: torch.Tensor
    landmarks_px: torch.Tensor
    valid: torch.Tensor
    detected: torch.Tensor
    transforms: torch.Tensor
    crop_size: int
    fps: float
    shots: np.ndarray | None = None
    shot_reasons: tuple[str, ...] = ()
    shot_identity: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_shots(self) -> int:
        return 1 if self.shots is None else int(self.shots.shape[0])

    def frames(self, start: int, stop: int) -> SequenceBatch:
        """Frames ``[start, stop)`` as a sequence of their own (one shot; tensors are views, not copies)."""
        if not 0 <= start < stop <= self.n_frames:
            raise NeufaceError(f"frames [{start}, {stop}) are not a non-empty range of {self.n_frames} frames")
        return SequenceBatch(
            sequence=self.sequence, views=list(self.views), images=self.images[start:stop],
            landmarks=self.landmarks[start:stop], landmarks_px=self.landmarks_px[start:stop],
            valid=self.valid[start:stop], detected=self.detected[start:stop], transforms=self.transforms[start:stop],
            crop_size=self.crop_size, fps=self.fps)

    @property
    def n_views(self) -> int:
        return int(self.images.shape[1])


def upstream_status(crops_path: str | os.PathLike, landmarks_path: str | os.PathLike) -> StageStatus:
    """The first failed status of (landmarks, crops), else the crops status."""
    lmk = read_status(landmarks_path)
    if not lmk.ok:
        return lmk
    return read_status(crops_path)


def _fps(*paths: str | os.PathLike) -> float:
    for path in paths:
        with h5py.File(path, "r") as f:
            if "fps" in f.attrs:
                return float(f.attrs["fps"])
            frames_file = f.attrs.get("frames_file")
        if frames_file and Path(str(frames_file)).is_file():
            try:
                with h5py.File(str(frames_file), "r") as g:
                    if "fps" in g.attrs:
                        return float(g.attrs["fps"])
            except OSError:  # pragma: no cover - unreadable frames file
                pass
    return math.nan


def load_sequence(crops_path: str | os.PathLike, landmarks_path: str | os.PathLike) -> SequenceBatch:
    """Read the crops and landmarks of every view present in the crops file.

    Raises:
        NeufaceError: missing files, inconsistent frame counts, or no view.
    """
    for p in (crops_path, landmarks_path):
        if not Path(p).is_file():
            raise NeufaceError(f"input file {p} does not exist")
    status = read_status(crops_path)
    with h5py.File(crops_path, "r") as f:
        views = read_str_list_attr(f.attrs["views"])
        crop_size = int(f.attrs["crop_size"])
    if not views:
        raise NeufaceError(f"{crops_path} has no view with crops")
    images, lmk_ndc, lmk_px, valid, detected, transforms = [], [], [], [], [], []
    n_frames = None
    for view in views:
        c = read_crops(crops_path, view)
        lm = read_landmarks(landmarks_path, view)
        n = c["crops"].shape[0]
        if lm["landmarks"].shape[0] != n or (n_frames is not None and n != n_frames):
            raise NeufaceError(f"view {view}: {n} crops but {lm['landmarks'].shape[0]} landmark frames "
                               f"(expected {n_frames if n_frames is not None else n})")
        n_frames = n
        det = np.asarray(lm["detected"], bool) & np.asarray(c["detected"], bool)
        px = torch.as_tensor(lm["landmarks"], dtype=torch.float64)
        tr = torch.as_tensor(c["transforms"], dtype=torch.float64)
        ndc = pixels_to_crop_ndc(px, tr, crop_size)
        ok = torch.isfinite(ndc).all(dim=-1) & torch.as_tensor(det)[:, None]
        images.append(torch.from_numpy(np.ascontiguousarray(c["crops"])).permute(0, 3, 1, 2))
        lmk_ndc.append(torch.where(ok[..., None], ndc, torch.full_like(ndc, math.nan)).float())
        lmk_px.append(torch.where(torch.as_tensor(det)[:, None, None], px, torch.full_like(px, math.nan)).float())
        valid.append(ok)
        detected.append(torch.as_tensor(det))
        transforms.append(tr)
    shots = _shots(crops_path, landmarks_path)
    multi = len(shots["bounds"]) > 1
    return SequenceBatch(
        sequence=status.sequence, views=list(views), images=torch.stack(images, 1).contiguous(),
        landmarks=torch.stack(lmk_ndc, 1), landmarks_px=torch.stack(lmk_px, 1), valid=torch.stack(valid, 1),
        detected=torch.stack(detected, 1), transforms=torch.stack(transforms, 1), crop_size=crop_size,
        fps=_fps(crops_path, landmarks_path), shots=shots["bounds"] if multi else None,
        shot_reasons=tuple(shots["reasons"]) if multi else (), shot_identity=shots["identity"] if multi else None,
    )


def _shots(crops_path: str | os.PathLike, landmarks_path: str | os.PathLike) -> dict:
    """The shots of the crops file (it copies the landmarks file's), else of the landmarks file."""
    with h5py.File(crops_path, "r") as f:
        in_crops = "shots" in f
    return read_shots(crops_path if in_crops else landmarks_path)


def images_to_input(images: torch.Tensor, size: int, device: torch.device | str,
                    channels_last: bool = False) -> torch.Tensor:
    """(B, 3, S, S) uint8 → (B, 3, size, size) float32 in [0, 1] on ``device`` (resized if S != size)."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
