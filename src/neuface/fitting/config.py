"""Annotator settings: one frozen dataclass for every annotator (``neuface``, ``regress``, ``flamefit``).

Named variants (the paper's ablations, Table 3 / S1 / S3) are plain dicts in :data:`DEFAULT_ANNOTATORS`; the
workflow config may override any key or define new annotators (with a ``method``). :func:`config_hash` is the
sha256 of the canonical JSON of the settings that change results (``device`` and ``checkpoint_every`` are
left out, so a run may resume on another device or with another checkpoint period).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from neuface.errors import NeufaceError

METHODS = ("neuface", "regress", "flamefit")
#: Keys that do not change what a fit computes (left out of :func:`config_hash`).
NON_RESULT_KEYS = ("device", "checkpoint_every", "progress")


@dataclass(frozen=True)
class AnnotatorSettings:
    """Everything an annotator needs besides its input files.

    NeuFace (Eq. 1): ``lr`` Adam on all conv/linear weights of the encoder, ``n_passes`` EM passes over the
    sequence in windows of ``window_frames`` frames (× all views in one batch), targets from a centred
    ``temporal_window`` (odd, frames) ``temporal_reduce`` (mean | median) of head-rotation quaternions and the
    visibility-weighted multi-view mean mesh. ``loss_mode='naive'`` uses appendix B's non-EM losses.
    Defaults follow the official code (λ 10 / 100 / 200, lr 2e-5) except ``n_passes`` (official: 100).

    FLAME fitting (Eq. 5): ``flamefit_steps = (stage1, stage2)`` full-sequence Adam steps at ``flamefit_lr``;
    stage 1 optimizes global rotation + camera, stage 2 β, ψ, jaw and global rotation (camera fixed);
    priors ``lambda_r`` (‖r − r_init‖²), ``lambda_theta`` (‖jaw‖²), ``lambda_beta`` (‖β‖²), ``lambda_psi``
    (‖ψ‖²), each a mean over frames × views of the squared L2 norm.
    """

    method: str = "neuface"
    encoder: str = "deca"
    encoder_weights: str | None = None
    lr: float = 2e-5
    n_passes: int = 5
    window_frames: int = 20
    temporal_window: int = 5
    temporal_reduce: str = "mean"
    loss_mode: str = "em"
    lambda_2d: float = 10.0
    lambda_temp: float = 100.0
    lambda_view: float = 200.0
    visibility_soft_deg: float = 0.0
    flamefit_steps: tuple[int, int] = (30, 60)
    flamefit_lr: float = 5e-3
    flamefit_estep_every: int = 5
    lambda_r: float = 1e-2
    lambda_theta: float = 1e-2
    lambda_beta: float = 1e-3
    lambda_psi: float = 1e-3
    chunk_images: int = 64
    amp: bool = False
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = True
    seed: int = 0
    divergence_factor: float = 100.0
    checkpoint_every: int = 20
    device: str = "auto"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise NeufaceError(f"annotator method must be one of {METHODS}, got {self.method!r}")
        if self.temporal_reduce not in ("mean", "median"):
            raise NeufaceError(f"temporal_reduce must be 'mean' or 'median', got {self.temporal_reduce!r}")
        if self.loss_mode not in ("em", "naive"):
            raise NeufaceError(f"loss_mode must be 'em' or 'naive', got {self.loss_mode!r}")
        if self.temporal_window < 1 or self.temporal_window % 2 == 0:
            raise NeufaceError(f"temporal_window must be a positive odd number, got {self.temporal_window}")
        for name in ("n_passes", "window_frames", "chunk_images", "checkpoint_every"):
            if getattr(self, name) < (0 if name == "n_passes" else 1):
                raise NeufaceError(f"{name} must be positive, got {getattr(self, name)}")
        if len(self.flamefit_steps) != 2 or min(self.flamefit_steps) < 0:
            raise NeufaceError(f"flamefit_steps must be two non-negative ints, got {self.flamefit_steps}")
        for name in ("lr", "flamefit_lr", "divergence_factor"):
            if not getattr(self, name) > 0:
                raise NeufaceError(f"{name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnnotatorSettings:
        """Build from a dict; unknown keys raise :class:`NeufaceError` (a typo must not be ignored)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise NeufaceError(f"unknown annotator setting(s): {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for key, value in data.items():
            default = known[key].default
            try:
                if key == "flamefit_steps":
                    value = tuple(int(v) for v in value)
                elif isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise TypeError("expected true/false")
                elif isinstance(default, int):
                    if isinstance(value, bool) or int(value) != value:
                        raise TypeError("expected an integer")
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
                elif key in ("encoder_weights",):
                    value = None if value is None else str(value)
                elif key == "extra":
                    value = dict(value)
                else:
                    value = str(value)
            except (TypeError, ValueError) as exc:
                raise NeufaceError(f"annotator setting {key}={value!r}: {exc}") from None
            values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["flamefit_steps"] = list(self.flamefit_steps)
        return d

    def replace(self, **changes: Any) -> AnnotatorSettings:
        return dataclasses.replace(self, **changes)

    def canonical_json(self) -> str:
        """Sorted, compact JSON of the result-relevant settings."""
        d = {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_KEYS}
        return json.dumps(d, sort_keys=True, separators=(",", ":"))


def config_hash(settings: AnnotatorSettings) -> str:
    """sha256 hex digest of :meth:`AnnotatorSettings.canonical_json`."""
    return hashlib.sha256(settings.canonical_json().encode()).hexdigest()


#: Named annotators: the paper's Table 2 methods and the ablation rows (Table 3, S1, S3).
DEFAULT_ANNOTATORS: dict[str, dict[str, Any]] = {
    "neuface": {"method": "neuface"},
    "regress": {"method": "regress"},
    "flamefit": {"method": "flamefit"},
    # Table 3: loss ablations.
    "neuface_l2d": {"method": "neuface", "lambda_temp": 0.0, "lambda_view": 0.0},
    "neuface_l2d_temp": {"method": "neuface", "lambda_view": 0.0},
    "neuface_l2d_view": {"method": "neuface", "lambda_temp": 0.0},
    # Table S1: median instead of mean temporal target.
    "neuface_median": {"method": "neuface", "temporal_reduce": "median"},
    # Table S3: naive (non-EM) losses.
    "neuface_naive": {"method": "neuface", "loss_mode": "naive"},
}


def resolve_annotator(name: str, overrides: dict[str, Any] | None = None) -> AnnotatorSettings:
    """Settings of annotator ``name``: ``DEFAULT_ANNOTATORS[name]`` updated by ``overrides``.

    A name not in :data:`DEFAULT_ANNOTATORS` must come with a ``method`` in ``overrides``.
    """
    overrides = dict(overrides or {})
    if name not in DEFAULT_ANNOTATORS and "method" not in overrides:
        raise NeufaceError(f"unknown annotator {name!r}: give its settings with a 'method' "
                           f"(known: {', '.join(DEFAULT_ANNOTATORS)})")
    return AnnotatorSettings.from_dict({**DEFAULT_ANNOTATORS.get(name, {}), **overrides})


__all__ = ["DEFAULT_ANNOTATORS", "METHODS", "AnnotatorSettings", "config_hash", "resolve_annotator"]
