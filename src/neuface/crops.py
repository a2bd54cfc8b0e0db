"""The ``crops`` stage: DECA-style 224×224 face crops and their transforms, per frame and view.

The box comes from the tracked landmarks (:func:`neuface.geometry.crop.estimate_crop_box`), is smoothed over
time so that crop jitter does not become landmark jitter, and frames without a detection take the box
interpolated from their neighbours (they stay marked ``detected = False``). Smoothing and interpolation stay
inside each shot of the landmarks file (:mod:`neuface.landmarks.shots`): no box is averaged across a cut; only
a shot without any detection in a view takes its boxes from the neighbouring shots. The landmarks file's
``/shots`` group is copied unchanged (so the fit finds the shots in either file). The transforms are kept, so every
crop-space quantity maps back to frame pixels (:func:`neuface.geometry.crop.crop_to_pixels`). A view without
any detection gets no crops and leaves the sequence (coded warning ``dropped_view:<view>:no face detected``,
:mod:`neuface.input_warnings`); the upstream stages' warnings are carried into the status.

Output layout (``FORMAT = "neuface.crops"``, version 1)::

    /                          attrs: format, format_version, status attrs (neuface.status), views, n_frames,
                                      crop_size, scale, smooth_window, frames_file, landmarks_file
    /views/<view>/crops        (F, S, S, 3) uint8 RGB, one chunk per frame
    /views/<view>/transforms   (F, 3, 3) float64, original pixels → crop pixels
    /views/<view>/center       (F, 2) float64 box centre (pixels, after smoothing)
    /views/<view>/size         (F,) float64 box side (pixels, after smoothing)
    /views/<view>/detected     (F,) bool, copied from the landmarks stage
    /shots/...                 copied from the landmarks file when it has shots (bounds, reason, identity)
"""

from __future__ import annotations

import logging
import os
from typing import Any

import h5py
import numpy as np
import torch

from neuface.errors import NeufaceError
from neuface.geometry.crop import crop_transform, estimate_crop_box, smooth_boxes, warp_images
from neuface.input_warnings import dropped_view
from neuface.io_utils import atomic_path
from neuface.landmarks.extract import landmarks_info, read_landmarks, write_stage_attrs, write_upstream_failure
from neuface.landmarks.shots import copy_shots, read_shots
from neuface.status import StageStatus, read_status, read_status_attrs
from neuface.video.store import read_str_list_attr

log = logging.getLogger(__name__)

STAGE = "crops"
FORMAT = "neuface.crops"
FORMAT_VERSION = 1


def fill_missing_boxes(center: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate NaN boxes from valid neighbours (constant beyond the ends).

    Args:
        center: (F, 2); size: (F,). At least one frame must be valid.
    Returns:
        Copies with every frame finite.
    """
    valid = np.isfinite(size) & np.isfinite(center).all(axis=1)
    if not valid.any():
        raise NeufaceError("no valid crop box in any frame")
    frames = np.arange(size.shape[0])
    known = frames[valid]
    filled_center = np.stack([np.interp(frames, known, center[valid, k]) for k in range(2)], axis=1)
    return filled_center, np.interp(frames, known, size[valid])


def crop_boxes(landmarks: np.ndarray, detected: np.ndarray, scale: float, smooth_window: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame crop boxes of one view: estimate from landmarks, smooth over time, fill gaps.

    Args:
        landmarks: (F, 68, 2) pixels (NaN where not detected); detected: (F,) bool.
    Returns:
        center (F, 2), size (F,) as float64.
    """
    lmk = torch.as_tensor(landmarks, dtype=torch.float64)
    center, size = estimate_crop_box(lmk, valid=torch.as_tensor(detected)[:, None].expand(-1, lmk.shape[1]),
                                     scale=scale)
    if smooth_window > 1:
        center, size = smooth_boxes(center, size, window=smooth_window)
    return fill_missing_boxes(center.numpy(), size.numpy())


def crop_boxes_by_shot(landmarks: np.ndarray, detected: np.ndarray, scale: float, smooth_window: int,
                       shots: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`crop_boxes` shot by shot: smoothing and gap filling never cross a shot boundary.

    Args:
        landmarks: (F, 68, 2); detected: (F,) bool; shots: (S, 2) ``[start, stop)`` bounds (None or S = 1: the
            whole view, exactly :func:`crop_boxes`).
    Returns:
        center (F, 2), size (F,) float64; a shot without any detection gets boxes interpolated from the others.
    """
    if shots is None or len(shots) <= 1:
        return crop_boxes(landmarks, detected, scale, smooth_window)
    n = detected.shape[0]
    center, size = np.full((n, 2), np.nan), np.full((n,), np.nan)
    for start, stop in np.asarray(shots, dtype=np.int64):
        if detected[start:stop].any():
            center[start:stop], size[start:stop] = crop_boxes(landmarks[start:stop], detected[start:stop], scale,
                                                              smooth_window)
    return fill_missing_boxes(center, size)


def crop_view(frames: h5py.Dataset, center: np.ndarray, size: np.ndarray, crop_size: int, out: h5py.Group,
              batch_size: int = 32) -> np.ndarray:
    """Warp all frames of one view into ``out['crops']``; returns the (F, 3, 3) transforms."""
    n = frames.shape[0]
    transforms = crop_transform(torch.as_tensor(center), torch.as_tensor(size), out_size=crop_size)
    ds = out.create_dataset("crops", shape=(n, crop_size, crop_size, 3), dtype=np.uint8,
                            chunks=(1, crop_size, crop_size, 3), compression="lzf")
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        images = torch.from_numpy(frames[start:stop]).permute(0, 3, 1, 2).float() / 255.0
        crops = warp_images(images, transforms[start:stop].float(), out_size=crop_size)
        ds[start:stop] = (crops.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return transforms.numpy()


def crop_sequence(frames_path: str | os.PathLike, landmarks_path: str | os.PathLike, out: str | os.PathLike,
                  crop_size: int = 224, scale: float = 1.25, smooth_window: int = 5) -> StageStatus:
    """Run the crops stage for one sequence; always writes ``out`` (atomically) and returns its status."""
    if crop_size < 16:
        raise NeufaceError(f"crop size must be at least 16, got {crop_size}")
    if smooth_window < 1 or smooth_window % 2 == 0:
        raise NeufaceError(f"smooth window must be a positive odd number, got {smooth_window}")
    upstream = read_status(landmarks_path)
    with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "crop_size": crop_size,
                        "scale": scale, "smooth_window": smooth_window, "frames_file": str(frames_path),
                        "landmarks_file": str(landmarks_path)})
        if not upstream.ok:
            return write_upstream_failure(f, upstream, STAGE)
        info = landmarks_info(landmarks_path)
        shots = read_shots(landmarks_path)["bounds"]
        copy_shots(landmarks_path, f)
        views, warnings = [], []
        with h5py.File(frames_path, "r") as src:
            for view in info["views"]:
                lmk = read_landmarks(landmarks_path, view)
                if not lmk["detected"].any():  # the view leaves the sequence: a partial input from here on
                    log.warning("%s: view %s has no detected face: no crops, dropped", upstream.sequence, view)
                    warnings.append(dropped_view(view, "no face detected").code)
                    continue
                center, size = crop_boxes_by_shot(lmk["landmarks"], lmk["detected"], scale, smooth_window, shots)
                group = f.require_group("views").create_group(view)
                transforms = crop_view(src[f"views/{view}/frames"], center, size, crop_size, group)
                for key, value in (("transforms", transforms), ("center", center), ("size", size),
                                   ("detected", lmk["detected"])):
                    group.create_dataset(key, data=value)
                views.append(view)
        details: dict[str, Any] = {"n_frames": info["n_frames"], "views": views, "crop_size": crop_size,
                                   "n_shots": int(len(shots))}
        if views:
            status = StageStatus(upstream.sequence, STAGE, details=details, warnings=tuple(warnings))
        else:
            status = StageStatus.failed(upstream.sequence, STAGE, "no view has a detected face", **details)
        status = status.with_warnings(upstream.warnings)  # frames' and landmarks' notes go on to the fit
        write_stage_attrs(f, status, views, info["n_frames"])
    log.log(logging.INFO if status.ok and not status.warnings else logging.WARNING, "%s", status.summary())
    return status


def read_crops(path: str | os.PathLike, view: str, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """Crops ``[start, stop)`` of ``view`` with their transforms, centres, sizes and detection flags."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise NeufaceError(f"{path} is not a neuface crops file")
        if f"views/{view}" not in f:
            status = read_status_attrs(f.attrs)
            raise NeufaceError(f"{path} has no view {view!r} (views: {read_str_list_attr(f.attrs['views'])}; "
                               f"{status.summary()})")
        g = f[f"views/{view}"]
        return {k: g[k][start:stop] for k in ("crops", "transforms", "center", "size", "detected")}
