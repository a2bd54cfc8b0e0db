"""The per-frame state of a facial motion, ``x = [φ, φ̇, θ, J, J̇]`` (paper appendix, "Facial motion prior").

Layout of one state vector (D = 12 + E + 408, E expression coefficients; :class:`StateLayout`):

============  =====  =========================================================================================
part          size   meaning
============  =====  =========================================================================================
``rot6d``     6      φ: head root orientation, continuous 6D representation (first two matrix columns,
                     :func:`neuface.geometry.rotations.rotation_6d_to_matrix`); the packed ``global_pose`` of
                     the chosen view (camera orientation folded in, so it is the head as that camera sees it)
``rot_vel``   3      φ̇: angular velocity (rad/s), axis-angle of ``R_t R_{t-1}^T`` times fps (left / world frame)
``jaw``       3      θ: jaw pose (axis-angle). Neck and eye rotations are not part of the state: the annotators
                     keep the neck at 0 and eye rotations do not move the 68 landmarks; both are 0 in
                     generated motion, and J below is computed with them at 0
``expression`` E     θ (cont.): FLAME expression ψ
``landmarks`` 204    J: the 68 FLAME 3D landmarks (``landmarks3d``, metres) **head-local**: FLAME with the
                     sequence β, the jaw and ψ above and the global rotation at 0
``landmark_vel`` 204 J̇: landmark velocity (m/s)
============  =====  =========================================================================================

Velocities are backward differences, ``v_t = (x_t - x_{t-1}) · fps``, so a state depends on the past only and
the constant-velocity step ``x_{t+1} ≈ x_t + v_t / fps`` is consistent with them; the first frame of a segment
has no past and takes the velocity of the second frame. A segment needs 2 frames; shots of a cut sequence are
separate segments (a velocity never spans a cut).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuface.checks import check_shape
from neuface.errors import NeufaceError
from neuface.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)

log = logging.getLogger(__name__)

N_LANDMARKS = 68
#: Floor of the per-dimension standard deviation of the normalisation (state units: 6D, rad, rad/s, ψ, m, m/s).
STD_FLOOR = 1e-3
#: ``views`` choices of :func:`states_from_packed` besides an explicit list of view names.
VIEW_CHOICES = ("front", "all")


@dataclass(frozen=True)
class StateLayout:
    """Slices of the parts of a state vector with ``n_exp`` expression coefficients."""

    n_exp: int

    @property
    def parts(self) -> dict[str, slice]:
        sizes = {"rot6d": 6, "rot_vel": 3, "jaw": 3, "expression": self.n_exp,
                 "landmarks": 3 * N_LANDMARKS, "landmark_vel": 3 * N_LANDMARKS}
        out, start = {}, 0
        for name, size in sizes.items():
            out[name] = slice(start, start + size)
            start += size
        return out

    @property
    def dim(self) -> int:
        return 12 + self.n_exp + 6 * N_LANDMARKS

    def to_dict(self) -> dict[str, Any]:
        return {"n_exp": self.n_exp, "dim": self.dim,
                "parts": {k: [s.start, s.stop] for k, s in self.parts.items()}}


def backward_velocity(x: torch.Tensor, fps: float) -> torch.Tensor:
    """``(x_t - x_{t-1}) · fps`` along dim 0; the first frame copies the second's. ``x``: (T, ...), T ≥ 2."""
    if x.shape[0] < 2:
        raise NeufaceError(f"a velocity needs at least 2 frames, got {x.shape[0]}")
    v = (x[1:] - x[:-1]) * fps
    return torch.cat([v[:1], v], dim=0)


def angular_velocity(rotations: torch.Tensor, fps: float) -> torch.Tensor:
    """Backward angular velocity (rad/s), axis-angle of ``R_t R_{t-1}^T`` · fps. ``rotations``: (T, 3, 3) -> (T, 3)."""
    if rotations.shape[0] < 2:
        raise NeufaceError(f"a velocity needs at least 2 frames, got {rotations.shape[0]}")
    rel = rotations[1:] @ rotations[:-1].transpose(-1, -2)
    w = matrix_to_axis_angle(rel) * fps
    return torch.cat([w[:1], w], dim=0)


@torch.no_grad()
def head_local_landmarks(flame, shape: torch.Tensor, jaw: torch.Tensor, expression: torch.Tensor,
                         chunk: int = 4096) -> torch.Tensor:
    """FLAME 3D landmarks with zero global, neck and eye rotation.

    Args:
        flame: a :class:`~neuface.flame.FlameLayer` with a landmark embedding.
        shape: (T, S) or (S,) β.
        jaw: (T, 3) jaw axis-angle.
        expression: (T, E) ψ.
    Returns:
        (T, 68, 3) landmarks (metres), dtype/device of ``jaw``.
    """
    if not getattr(flame, "has_landmarks", False):
        raise NeufaceError("the motion state needs 3D landmarks: give the FLAME layer a landmark embedding")
    n = jaw.shape[0]
    if shape.dim() == 1:
        shape = shape.expand(n, -1)
    layer_dtype = flame.v_template.dtype
    device = flame.v_template.device
    out = []
    for s in range(0, n, chunk):
        pose = jaw.new_zeros(min(chunk, n - s), 12)
        pose[:, 3:6] = jaw[s:s + chunk]
        res = flame(shape=shape[s:s + chunk].to(device, layer_dtype),
                    expression=expression[s:s + chunk].to(device, layer_dtype),
                    pose=pose.to(device, layer_dtype))
        out.append(res.landmarks3d.to(jaw.device, jaw.dtype))
    return torch.cat(out, dim=0)


def motion_states(flame, shape: torch.Tensor, expression: torch.Tensor, global_pose: torch.Tensor,
                  jaw: torch.Tensor, fps: float) -> torch.Tensor:
    """States of one motion segment.

    Args:
        flame: FlameLayer with a landmark embedding.
        shape: (S,) or (T, S) β.
        expression: (T, E) ψ.
        global_pose: (T, 3) root axis-angle.
        jaw: (T, 3) jaw axis-angle.
        fps: frame rate (> 0).
    Returns:
        (T, D) states, D = :attr:`StateLayout.dim`, dtype of ``expression``.
    """
    sizes = check_shape(expression, "expression", ("T", "E"))
    check_shape(global_pose, "global_pose", ("T", 3), sizes)
    check_shape(jaw, "jaw", ("T", 3), sizes)
    if not fps > 0:
        raise NeufaceError(f"fps must be > 0, got {fps}")
    rot = axis_angle_to_matrix(global_pose)
    lmk = head_local_landmarks(flame, shape, jaw, expression).reshape(sizes["T"], -1)
    return torch.cat([matrix_to_rotation_6d(rot), angular_velocity(rot, fps), jaw, expression, lmk,
                      backward_velocity(lmk, fps)], dim=1)


def project_rotation(states: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """States with the 6D part replaced by the 6D of its nearest rotation (Gram-Schmidt). (..., D) -> (..., D)."""
    sl = layout.parts["rot6d"]
    out = states.clone()
    out[..., sl] = matrix_to_rotation_6d(rotation_6d_to_matrix(states[..., sl]))
    return out


def consistent_velocities(nxt: torch.Tensor, prev: torch.Tensor, fps: torch.Tensor | float,
                          layout: StateLayout) -> torch.Tensor:
    """Raw next states (B, D) with φ̇ and J̇ replaced by the finite differences from ``prev`` (B, D) (backward
    differences, as in the data) and the 6D rotation re-projected; differentiable. ``fps``: (B,) or a float."""
    p = layout.parts
    fps_t = torch.as_tensor(fps, dtype=nxt.dtype, device=nxt.device).reshape(-1, 1)
    rot = rotation_6d_to_matrix(nxt[:, p["rot6d"]])
    rel = rot @ rotation_6d_to_matrix(prev[:, p["rot6d"]]).transpose(-1, -2)
    return torch.cat([matrix_to_rotation_6d(rot), matrix_to_axis_angle(rel) * fps_t,
                      nxt[:, p["jaw"].start:p["landmarks"].stop],
                      (nxt[:, p["landmarks"]] - prev[:, p["landmarks"]]) * fps_t], dim=1)


def state_rotations(states: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """(..., D) -> (..., 3, 3) root rotations."""
    return rotation_6d_to_matrix(states[..., layout.parts["rot6d"]])


def state_landmarks(states: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """(..., D) -> (..., 68, 3) head-local landmarks."""
    return states[..., layout.parts["landmarks"]].unflatten(-1, (N_LANDMARKS, 3))


def flame_params_from_states(states: torch.Tensor, layout: StateLayout) -> dict[str, torch.Tensor]:
    """FLAME parameters of states (..., D): ``global_pose`` (..., 3), ``pose`` (..., 12) (jaw only),
    ``expression`` (..., E)."""
    parts = layout.parts
    pose = states.new_zeros(*states.shape[:-1], 12)
    pose[..., 3:6] = states[..., parts["jaw"]]
    return {"global_pose": matrix_to_axis_angle(state_rotations(states, layout)), "pose": pose,
            "expression": states[..., parts["expression"]]}


# ------------------------------------------------------------------------------------------- packed datasets
@dataclass
class Segment:
    """One motion segment read from a packed dataset: states (T, D) and where they came from."""

    states: torch.Tensor
    path: str
    sequence: str
    view: str
    start: int
    fps: float
    shape: torch.Tensor  # (S,) β of the segment (its shot's)


def _pick_views(names: list[str], views: str | Sequence[str]) -> list[str]:
    if views == "front":
        return ["front"] if "front" in names else names[:1]
    if views == "all":
        return list(names)
    if isinstance(views, str):
        raise NeufaceError(f"views must be one of {VIEW_CHOICES} or a list of view names, got {views!r}")
    return [v for v in names if v in set(views)]


def states_from_packed(paths: str | os.PathLike | Sequence[str | os.PathLike], flame,
                       views: str | Sequence[str] = "front", max_sequences: int | None = None, seed: int = 0,
                       dtype: torch.dtype = torch.float32) -> tuple[list[Segment], list[dict[str, Any]]]:
    """Motion segments of packed ``neuface.dataset`` files.

    Args:
        paths: one or more packed files.
        flame: FlameLayer with a landmark embedding (its ``n_shape`` / ``n_exp`` are the files').
        views: ``"front"`` (default: one view per sequence, ``front`` if present, else the first listed; the
            motion of a multi-view sequence is one motion, and ``global_pose`` holds that view's camera
            orientation), ``"all"`` (every view is its own sample: the same head-local motion seen with other
            root orientations) or a list of view names.
        max_sequences: keep at most this many sequences per file, drawn at random with ``seed`` (None: all).
        seed: subset seed.
    Returns:
        ``(segments, datasets)``: one :class:`Segment` per (sequence, view, shot) with ≥ 2 frames (shorter ones
        are skipped with a warning); per file ``{path, annotator, n_sequences, sequences}`` (the ids used).
    """
    import h5py
    from tqdm import tqdm

    from neuface.dataset.reader import NeuFaceH5
    from neuface.dataset.schema import attr_str, attr_str_list

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    segments: list[Segment] = []
    datasets: list[dict[str, Any]] = []
    for path in paths:
        ds = NeuFaceH5(path, clip_len=None, dtype=torch.float64)
        with h5py.File(path, "r") as f:
            annotator = attr_str(f.attrs.get("annotator", ""))
            groups = {name: (float(g.attrs["fps"]), attr_str_list(g.attrs["views"]))
                      for name, g in f["sequences"].items()}
        names = sorted(groups)
        if max_sequences is not None and max_sequences < len(names):
            rng = np.random.default_rng(seed)
            names = sorted(rng.choice(names, size=max_sequences, replace=False).tolist())
        chosen = {n: set(_pick_views(groups[n][1], views)) for n in names}
        skipped = 0
        used: set[str] = set()
        items = [i for i, (s, v, _) in enumerate(ds.clips()) if s in chosen and v in chosen[s]]
        for i in tqdm(items, desc=f"states {Path(path).name}", unit="segment", leave=False,
                      disable=len(items) < 50):
            item = ds[i]
            n = item["expression"].shape[0]
            if n < 2:
                skipped += 1
                continue
            fps = groups[item["sequence"]][0]
            states = motion_states(flame, item["shapes"], item["expression"], item["global_pose"],
                                   item["pose"][:, 3:6], fps).to(dtype)
            segments.append(Segment(states, str(path), item["sequence"], item["view"], int(item["start"]), fps,
                                    item["shape"].to(dtype)))
            used.add(item["sequence"])
        ds.close()
        if skipped:
            log.warning("%s: %d segment(s) shorter than 2 frames skipped", path, skipped)
        datasets.append({"path": str(path), "annotator": annotator, "n_sequences": len(used),
                         "sequences": sorted(used)})
    return segments, datasets


# ------------------------------------------------------------------------------------------- normalisation
def normalisation_stats(states: Sequence[torch.Tensor], std_floor: float = STD_FLOOR) -> dict[str, torch.Tensor]:
    """Per-dimension ``mean``, ``std`` (floored at ``std_floor``), ``min`` and ``max`` over all frames of
    ``states`` (a list of (T, D)), float32."""
    if not states:
        raise NeufaceError("no motion states to compute normalisation statistics from")
    x = torch.cat([s.to(torch.float64) for s in states], dim=0)
    return {"mean": x.mean(0).float(), "std": x.std(0, unbiased=False).clamp(min=std_floor).float(),
            "min": x.min(0).values.float(), "max": x.max(0).values.float()}


def transition_pairs(segments: Sequence[Segment]) -> dict[str, torch.Tensor]:
    """All (t, t+1) pairs of the segments: ``states`` (N, D) (the segments concatenated), ``src`` / ``dst``
    (P,) int64 row indices into it and ``fps`` (P,)."""
    rows, src, fps = [], [], []
    offset = 0
    for seg in segments:
        n = seg.states.shape[0]
        rows.append(seg.states)
        src.append(torch.arange(offset, offset + n - 1))
        fps.append(torch.full((n - 1,), float(seg.fps)))
        offset += n
    if not rows:
        raise NeufaceError("no motion segments (every sequence was shorter than 2 frames?)")
    src_t = torch.cat(src)
    return {"states": torch.cat(rows), "src": src_t, "dst": src_t + 1, "fps": torch.cat(fps)}


__all__ = ["N_LANDMARKS", "STD_FLOOR", "Segment", "StateLayout", "angular_velocity", "backward_velocity",
           "consistent_velocities", "flame_params_from_states", "head_local_landmarks", "motion_states",
           "normalisation_stats",
           "project_rotation", "state_landmarks", "state_rotations", "states_from_packed", "transition_pairs"]
