"""Shot and identity segmentation of a sequence in the landmarks stage: visual cuts, then identity switches.

**Cuts** (content-based, the idea of PySceneDetect's detectors): every frame gets colour histograms of its
hue, saturation and value (16, 8 and 8 bins, on a copy subsampled to at most :data:`HIST_SIDE` px); the score of
frame t is their distance to frame t - 1 (half the L1 distance per channel, averaged over the channels: 0 =
same colours, 1 = disjoint). Frame t starts a new shot when its score is at least ``cut_threshold`` **and** at
least ``cut_ratio`` times its running level (the median score of the :data:`CUT_WINDOW` frames on each side),
so steady motion or a pan (high scores everywhere) is not a cut. Measured: consecutive frames of the real
carphone clip and of rendered heads score ≤ 0.03, cuts between them and other faces 0.47-0.67. Gradual
transitions (fades, dissolves) are not detected. Views of a multi-view sequence share their shots: a cut in any
view cuts all. The face tracker restarts at every cut (:func:`neuface.landmarks.extract.landmarks_for_view`).

**Identity switches** (:mod:`neuface.landmarks.identity`): within each piece between cuts, dlib face descriptors
of the tracked face on every ``identity_stride``-th detected frame; where the mean descriptor changes by more
than ``identity_threshold`` (dlib's 0.6) a new shot starts (reason ``identity``), at the first frame that looks
like the new person. Each final shot gets an identity label: shots of the same person share it.

**Short shots**: a shot shorter than ``min_frames`` is merged into the previous shot (the first shot into the
next), and the merge is recorded (status warning and ``details``): its frames are annotated, but with the
neighbour's identity. A flash or a missed frame (two cuts one frame apart) so disappears; a person seen for
fewer frames is annotated as the neighbouring shot's person (a known limitation; raise ``min_frames`` less).

The result is stored in the landmarks file (:func:`write_shots`, layout in docs/formats.md) and carried by the
crops stage to the fit; the shots as data (bounds, reasons) are :mod:`neuface.shots`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import h5py
import numpy as np

from neuface.errors import NeufaceError, ShapeError
from neuface.landmarks.identity import (
    DESCRIPTOR_DIM,
    WINDOW,
    FaceDescriber,
    change_points,
    identity_labels,
    refine_switch,
    sample_frames,
)
from neuface.shots import REASONS, check_shots, shots_from_starts, single_shot
from neuface.video.store import read_str_list_attr, str_list_attr

log = logging.getLogger(__name__)

__all__ = ["CUT_WINDOW", "HIST_BINS", "ShotResult", "ShotSettings", "copy_shots", "detect_cuts", "frame_histograms",
           "histogram_distances", "merge_short_shots", "read_shots", "segment_shots", "view_cut_scores",
           "write_shots"]

#: Histogram bins of hue, saturation and value.
HIST_BINS = (16, 8, 8)
#: Frames are subsampled (by an integer step) to at most this many pixels on their longer side for histograms.
HIST_SIDE = 96
#: Frames on each side whose median score is the running level of a cut score.
CUT_WINDOW = 8
#: Descriptor samples each side of an identity switch needs.
MIN_IDENTITY_SAMPLES = 2


@dataclass(frozen=True)
class ShotSettings:
    """Settings of the segmentation (config ``landmarks.shots``; CLI ``neuface landmarks --shot-*``).

    ``identity_threshold = None`` switches the identity check off (cuts only).
    """

    enabled: bool = True
    min_frames: int = 10
    cut_threshold: float = 0.2
    cut_ratio: float = 3.0
    identity_threshold: float | None = 0.6
    identity_stride: int = 10

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise NeufaceError(f"shots min_frames must be at least 1, got {self.min_frames}")
        if not 0.0 < self.cut_threshold <= 1.0:
            raise NeufaceError(f"shots cut_threshold must be in (0, 1], got {self.cut_threshold}")
        if self.cut_ratio < 1.0:
            raise NeufaceError(f"shots cut_ratio must be at least 1, got {self.cut_ratio}")
        if self.identity_threshold is not None and self.identity_threshold <= 0:
            raise NeufaceError(f"shots identity_threshold must be positive (or None), got {self.identity_threshold}")
        if self.identity_stride < 1:
            raise NeufaceError(f"shots identity_stride must be at least 1, got {self.identity_stride}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class ShotResult:
    """Shots of one sequence.

    Attributes:
        bounds: (S, 2) int64 ``[start, stop)``.  reasons: (S,) why each shot starts (:data:`neuface.shots.REASONS`).
        identity: (S,) int64 identity label (-1: unknown, no descriptor).  merged: notes on merged short shots.
        cut_scores: view -> (F,) float32 histogram distance to the previous frame (NaN at frame 0).
        samples: view -> ((K,) int64 frames, (K, 128) float32 descriptors).
    """

    bounds: np.ndarray
    reasons: list[str]
    identity: np.ndarray
    merged: list[str] = field(default_factory=list)
    cut_scores: dict[str, np.ndarray] = field(default_factory=dict)
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_shots(self) -> int:
        return int(self.bounds.shape[0])

    def details(self) -> dict[str, Any]:
        """JSON-able summary for the stage status."""
        return {"n_shots": self.n_shots, "bounds": self.bounds.tolist(), "reasons": list(self.reasons),
                "identity": self.identity.tolist(), "merged": list(self.merged)}


# ------------------------------------------------------------------------------------------------ cuts
def frame_histograms(frames: np.ndarray) -> np.ndarray:
    """Normalised HSV histograms of ``frames`` (B, H, W, 3) uint8 RGB → (B, 32) float64 (16 H + 8 S + 8 V bins,
    each channel summing to 1)."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise ShapeError(f"frames must be (B, H, W, 3), got {f.shape}")
    step = max(1, -(-max(f.shape[1:3]) // HIST_SIDE))
    x = f[:, ::step, ::step].astype(np.float32) / 255.0
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    chroma = mx - mn
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    c = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(mx == r, ((g - b) / c) % 6.0, np.where(mx == g, (b - r) / c + 2.0, (r - g) / c + 4.0)) / 6.0
    hue = np.where(chroma > 0, hue, 0.0)
    sat = np.where(mx > 0, chroma / np.where(mx > 0, mx, 1.0), 0.0)
    out = []
    n = f.shape[0]
    for channel, bins in zip((hue, sat, mx), HIST_BINS, strict=True):
        idx = np.clip((channel * bins).astype(np.int64), 0, bins - 1).reshape(n, -1)
        idx = idx + np.arange(n, dtype=np.int64)[:, None] * bins
        hist = np.bincount(idx.ravel(), minlength=n * bins).reshape(n, bins).astype(np.float64)
        out.append(hist / np.maximum(hist.sum(axis=1, keepdims=True), 1.0))
    return np.concatenate(out, axis=1)


def histogram_distances(hists: np.ndarray) -> np.ndarray:
    """(F, 32) histograms → (F,) distance of each frame to the previous one in [0, 1] (NaN for frame 0)."""
    h = np.asarray(hists, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != sum(HIST_BINS):
        raise ShapeError(f"histograms must be (F, {sum(HIST_BINS)}), got {h.shape}")
    out = np.full(h.shape[0], np.nan)
    if h.shape[0] > 1:
        diff = np.abs(np.diff(h, axis=0))
        edges = np.cumsum((0, *HIST_BINS))
        per_channel = [0.5 * diff[:, a:b].sum(axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        out[1:] = np.mean(per_channel, axis=0)
    return out


def view_cut_scores(frames: h5py.Dataset | np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Cut scores (F,) float32 of one view's frames (F, H, W, 3), read in batches (NaN for frame 0)."""
    n = frames.shape[0]
    hists = [frame_histograms(np.asarray(frames[s:s + batch_size])) for s in range(0, n, max(1, batch_size))]
    if not hists:
        return np.zeros((0,), dtype=np.float32)
    return histogram_distances(np.concatenate(hists)).astype(np.float32)


def detect_cuts(scores: np.ndarray, threshold: float, ratio: float, window: int = CUT_WINDOW) -> np.ndarray:
    """Frames (C,) int64 that start a new shot: score ≥ ``threshold`` and ≥ ``ratio`` × the median score of the
    ``window`` frames on each side (itself excluded; NaN ignored). ``scores`` (F,), NaN at frame 0."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ShapeError(f"cut scores must be (F,), got {s.shape}")
    cuts = []
    for t in np.flatnonzero(np.nan_to_num(s, nan=0.0) >= threshold):
        around = np.concatenate([s[max(0, t - window):t], s[t + 1:t + 1 + window]])
        around = around[np.isfinite(around)]
        level = float(np.median(around)) if around.size else 0.0
        if t > 0 and s[t] >= ratio * level:
            cuts.append(int(t))
    return np.asarray(cuts, dtype=np.int64)


# ------------------------------------------------------------------------------------------------ shots
def merge_short_shots(bounds: np.ndarray, reasons: list[str], min_frames: int
                      ) -> tuple[np.ndarray, list[str], list[str]]:
    """Merge every shot shorter than ``min_frames`` into the previous one (the first into the next).

    Args:
        bounds: (S, 2) int64 consecutive shots; reasons: (S,) why each starts.
    Returns:
        ``(bounds (S', 2), reasons (S',), notes)`` with one note per merge.
    """
    b = [list(map(int, row)) for row in check_shots(bounds, int(np.asarray(bounds)[-1, 1]))]
    why = list(reasons)
    if len(why) != len(b):
        raise NeufaceError(f"{len(why)} reasons for {len(b)} shots")
    notes: list[str] = []
    i = 0
    while len(b) > 1 and i < len(b):
        start, stop = b[i]
        if stop - start >= min_frames:
            i += 1
            continue
        if i > 0:  # into the previous shot: its boundary goes
            notes.append(f"shot {start}-{stop} ({why[i]}, {stop - start} frame(s) < min_frames {min_frames}) "
                         "merged into the previous shot")
            b[i - 1][1] = stop
            del b[i], why[i]
        else:  # the first shot: into the next one, which then starts the sequence
            notes.append(f"shot {start}-{stop} ({why[0]}, {stop - start} frame(s) < min_frames {min_frames}) "
                         f"merged into the next shot ({why[1]})")
            b[1][0] = start
            del b[0], why[1]
    return np.asarray(b, dtype=np.int64), why, notes


def _view_switches(frames: h5py.Dataset | np.ndarray, res: dict[str, Any], pieces: np.ndarray,
                   describer: FaceDescriber, settings: ShotSettings) -> tuple[dict[int, None], np.ndarray, np.ndarray]:
    """Identity switches of one view inside each piece between cuts; returns (switch frames, sampled frames (K,),
    their descriptors (K, 128))."""
    def describe(t: int) -> np.ndarray:
        return describer.describe(np.asarray(frames[t]), res["landmarks"][t], res["boxes"][t])

    switches: dict[int, None] = {}
    all_frames, all_desc = [], []
    for start, stop in pieces:
        picked = sample_frames(res["detected"], int(start), int(stop), settings.identity_stride)
        if picked.size == 0:
            continue
        desc = np.stack([describe(int(t)) for t in picked])
        all_frames.append(picked)
        all_desc.append(desc)
        if settings.identity_threshold is None:
            continue
        detected = np.flatnonzero(res["detected"][start:stop]) + start
        for k in change_points(desc, settings.identity_threshold, MIN_IDENTITY_SAMPLES):
            frame = refine_switch(detected, desc[max(0, k - WINDOW):k], desc[k:k + WINDOW], int(picked[k - 1]),
                                  int(picked[k]), describe)
            switches[frame] = None
    if not all_frames:
        return switches, np.zeros((0,), np.int64), np.zeros((0, DESCRIPTOR_DIM), np.float32)
    return switches, np.concatenate(all_frames), np.concatenate(all_desc).astype(np.float32)


def segment_shots(n_frames: int, cuts: np.ndarray, views: dict[str, tuple[Any, dict[str, Any]]],
                  settings: ShotSettings, describer: FaceDescriber | None,
                  cut_scores: dict[str, np.ndarray] | None = None) -> ShotResult:
    """Shots of a sequence from its cuts and, with a ``describer``, the identity of the tracked face.

    Args:
        n_frames: F.  cuts: (C,) frames starting a new shot (any view).
        views: view -> (frames (F, H, W, 3) dataset or array, landmarks result of ``landmarks_for_view``).
        describer: None: no identity check and no labels (all 0).
    """
    pieces = shots_from_starts(cuts, n_frames)
    starts: dict[int, str] = {int(s): ("start" if s == 0 else "cut") for s in pieces[:, 0]}
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if describer is not None:
        for view, (frames, res) in views.items():
            switches, picked, desc = _view_switches(frames, res, pieces, describer, settings)
            samples[view] = (picked, desc)
            for frame in switches:
                starts.setdefault(frame, "identity")
    order = sorted(starts)
    bounds = shots_from_starts(order, n_frames)
    reasons = [starts[s] for s in order]
    bounds, reasons, merged = merge_short_shots(bounds, reasons, settings.min_frames)
    if describer is None:
        identity = np.zeros(bounds.shape[0], dtype=np.int64)
    else:
        per_shot = []
        for start, stop in bounds:
            got = [d[(f >= start) & (f < stop)] for f, d in samples.values()]
            got = [g for g in got if len(g)]
            per_shot.append(np.concatenate(got) if got else None)
        threshold = settings.identity_threshold if settings.identity_threshold is not None else 0.6
        identity = identity_labels(per_shot, threshold)
    return ShotResult(bounds, reasons, identity, merged, dict(cut_scores or {}), samples)


# ------------------------------------------------------------------------------------------------ files
def write_shots(f: h5py.File, result: ShotResult, settings: ShotSettings, describer_version: str = "") -> None:
    """Store ``result`` in a landmarks file: ``/shots`` (bounds, reason, identity, settings) and, per view,
    ``cut_score``, ``identity_frames``, ``descriptors`` (docs/formats.md)."""
    g = f.create_group("shots")
    g.create_dataset("bounds", data=check_shots(result.bounds, int(result.bounds[-1, 1])))
    g.create_dataset("reason", data=str_list_attr(result.reasons))
    g.create_dataset("identity", data=np.asarray(result.identity, dtype=np.int64))
    g.attrs["settings"] = settings.to_json()
    g.attrs["merged"] = json.dumps(result.merged)
    g.attrs["descriptor"] = describer_version
    for view in sorted(set(result.cut_scores) | set(result.samples)):
        vg = f.require_group(f"views/{view}")
        if view in result.cut_scores:
            vg.create_dataset("cut_score", data=np.asarray(result.cut_scores[view], dtype=np.float32))
        if view in result.samples:
            frames, desc = result.samples[view]
            vg.create_dataset("identity_frames", data=np.asarray(frames, dtype=np.int64))
            vg.create_dataset("descriptors", data=np.asarray(desc, dtype=np.float32).reshape(-1, DESCRIPTOR_DIM))


def read_shots(path: str | os.PathLike) -> dict[str, Any]:
    """Shots of a landmarks or crops file: ``bounds`` (S, 2) int64, ``reasons`` (S,) str, ``identity`` (S,)
    int64. A file without ``/shots`` (segmentation off, or written before it existed) is one shot of all its
    frames (reason ``start``, identity 0); so is a failed file (0 frames: ``bounds`` (0, 2))."""
    with h5py.File(path, "r") as f:
        n_frames = int(f.attrs.get("n_frames", 0))
        if "shots" not in f:
            bounds = single_shot(n_frames) if n_frames > 0 else np.zeros((0, 2), np.int64)
            return {"bounds": bounds, "reasons": ["start"] * len(bounds),
                    "identity": np.zeros(len(bounds), np.int64)}
        g = f["shots"]
        bounds = check_shots(g["bounds"][()], n_frames)
        reasons = read_str_list_attr(g["reason"][()])
        bad = [r for r in reasons if r not in REASONS]
        if len(reasons) != len(bounds) or bad:
            raise NeufaceError(f"{path}: /shots/reason must hold one of {REASONS} per shot, got {reasons}")
        return {"bounds": bounds, "reasons": reasons, "identity": g["identity"][()].astype(np.int64)}


def copy_shots(src: str | os.PathLike, dst: h5py.File) -> None:
    """Copy ``/shots`` (bounds, reason, identity and attributes) of the file ``src`` into ``dst`` (if present)."""
    with h5py.File(src, "r") as f:
        if "shots" in f:
            f.copy(f["shots"], dst, name="shots")
