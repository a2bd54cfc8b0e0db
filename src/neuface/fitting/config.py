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

METHODS = ("neuface", "regress", "flamefit", "groundtruth")
LR_SCHEDULES = ("constant", "cosine", "plateau")
SHAPE_MODES = ("free", "mean", "first")
E_STEPS = ("reuse", "separate")
#: Keys that do not change what a fit computes (left out of :func:`config_hash`).
NON_RESULT_KEYS = ("device", "checkpoint_every", "progress")


@dataclass(frozen=True)
class AnnotatorSettings:
    """Everything an annotator needs besides its input files.

    NeuFace (Eq. 1): Adam at ``lr`` on all conv/linear weights of the encoder, EM passes over the sequence in
    windows of ``window_frames`` frames (× all views in one batch), targets from a centred ``temporal_window``
    (odd, frames) ``temporal_reduce`` (mean | median) of head-rotation quaternions and the confidence-weighted
    multi-view mean mesh. ``loss_mode='naive'`` uses appendix B's non-EM losses. λ 10 / 100 / 200 as the official
    code; the temporal term is scaled as the official code's (per-component MSE summed over views).

    Schedule (convergence-aware): at most ``n_passes`` passes; after ``min_passes``, a pass whose mean L2D
    improved on the previous pass by less than ``converge_tol`` (relative) is a *plateau*; the fit stops at the
    ``patience``-th plateau (``converge_tol = 0`` runs exactly ``n_passes``). ``lr_schedule``: ``constant``
    (official), ``cosine`` (to ``lr_min_factor`` × lr over ``n_passes``) or ``plateau`` (× ``lr_decay`` at every
    plateau). ``shuffle_windows`` permutes the window order every pass (seeded by ``seed`` and the pass, so a
    resumed fit takes the same order). ``e_step``: ``separate`` runs a no-grad pass over the whole sequence at
    the start of every pass (targets from the current weights); ``reuse`` builds the next pass's targets from the
    predictions the M-step already made (detached, each window's prediction before its own update, as the
    official loop; only the first pass pays a separate pass) — cheaper per pass, but the targets lag a pass
    behind and slow the landmark fit on short clips (docs/fitting.md). ``final_full_steps`` adds Adam steps on the
    whole sequence at once (gradients of every window accumulated), which favour no window.

    Identity: ``lambda_beta`` weighs the Gaussian prior ``‖β‖²`` of the β FLAME is evaluated with (neuface and
    flamefit), which keeps the identity in the encoder's prior instead of absorbing landmark error;
    ``shape_mode`` ``mean`` ties β inside each batch to the batch mean, ``first`` copies the first image's β to
    the batch (the official code), ``free`` gives every image its own β; ``lambda_shape`` pulls each image's β
    to the sequence's mean β of the E-step (one identity across windows). Multi-view confidence:
    ``view_confidence`` ``binary`` (visible 0/1) or ``softmax`` (softmax over views of cos / ``view_temperature``,
    zero where not visible, as the official code). ``view_identity_grad``: whether NeuFace's multi-view term
    back-propagates into β (the flamefit baseline's term is not affected). Off by default: β is already one
    identity for all views of a batch, and its target is rebuilt every pass from the current β, so the term's
    gradient on β has no anchor and moved the identity of seven-view benchmark fits far from the truth
    (docs/fitting.md); on (the official code's behaviour) in the ``neuface_paper`` preset.

    FLAME fitting (Eq. 5): ``flamefit_steps = (stage1, stage2)`` full-sequence Adam steps at ``flamefit_lr``;
    stage 1 optimizes global rotation + camera, stage 2 β, ψ, jaw and global rotation (camera fixed);
    priors ``lambda_r`` (‖r − r_init‖²), ``lambda_theta`` (‖jaw‖²), ``lambda_beta`` (‖β‖²), ``lambda_psi``
    (‖ψ‖²), each a mean over frames × views of the squared L2 norm.
    """

    method: str = "neuface"
    encoder: str = "deca"
    encoder_weights: str | None = None
    lr: float = 2e-5
    n_passes: int = 100
    min_passes: int = 3
    converge_tol: float = 0.003
    patience: int = 3
    lr_schedule: str = "plateau"
    lr_decay: float = 0.5
    lr_min_factor: float = 0.05
    shuffle_windows: bool = True
    e_step: str = "separate"
    final_full_steps: int = 0
    shape_mode: str = "mean"
    lambda_shape: float = 1.0
    temporal_scale: str = "official"
    view_confidence: str = "softmax"
    view_temperature: float = 0.1
    view_identity_grad: bool = False
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
    lambda_beta: float = 0.005
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
        for name, allowed in (("lr_schedule", LR_SCHEDULES), ("shape_mode", SHAPE_MODES), ("e_step", E_STEPS),
                              ("temporal_scale", ("official", "mean")), ("view_confidence", ("binary", "softmax"))):
            if getattr(self, name) not in allowed:
                raise NeufaceError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.temporal_window < 1 or self.temporal_window % 2 == 0:
            raise NeufaceError(f"temporal_window must be a positive odd number, got {self.temporal_window}")
        for name in ("n_passes", "window_frames", "chunk_images", "checkpoint_every", "patience"):
            if getattr(self, name) < (0 if name == "n_passes" else 1):
                raise NeufaceError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("min_passes", "final_full_steps"):
            if getattr(self, name) < 0:
                raise NeufaceError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("converge_tol", "lambda_shape"):
            if not getattr(self, name) >= 0:
                raise NeufaceError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr_decay", "lr_min_factor"):
            if not 0 < getattr(self, name) <= 1:
                raise NeufaceError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if len(self.flamefit_steps) != 2 or min(self.flamefit_steps) < 0:
            raise NeufaceError(f"flamefit_steps must be two non-negative ints, got {self.flamefit_steps}")
        for name in ("lr", "flamefit_lr", "divergence_factor", "view_temperature"):
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


#: The official NeuFace schedule and identity handling (lr 2e-5, 100 fixed passes over windows of 20 frames in
#: order at a constant lr, β of the batch's first image copied to the batch): the ``neuface_paper`` preset.
PAPER_SCHEDULE: dict[str, Any] = {
    "method": "neuface", "lr": 2e-5, "n_passes": 100, "window_frames": 20, "converge_tol": 0.0,
    "lr_schedule": "constant", "shuffle_windows": False, "e_step": "reuse", "final_full_steps": 0,
    "shape_mode": "first",
    "lambda_shape": 0.0, "lambda_beta": 0.0, "temporal_scale": "official", "view_confidence": "softmax",
    "view_temperature": 0.1, "view_identity_grad": True,
}

#: Named annotators: the paper's Table 2 methods and the ablation rows (Table 3, S1, S3).
DEFAULT_ANNOTATORS: dict[str, dict[str, Any]] = {
    "neuface": {"method": "neuface"},
    "neuface_paper": PAPER_SCHEDULE,
    # Table 3: binary (0/1 visibility) multi-view confidence instead of the graded softmax.
    "neuface_binary_view": {"method": "neuface", "view_confidence": "binary"},
    # One β per image during the fit (no identity tying).
    "neuface_free_shape": {"method": "neuface", "shape_mode": "free"},
    "regress": {"method": "regress"},
    # the synthetic benchmark's true parameters written as a fit (needs `neuface fit --ground-truth`)
    "gt": {"method": "groundtruth"},
    "flamefit": {"method": "flamefit", "lambda_beta": 1e-3},
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


__all__ = ["DEFAULT_ANNOTATORS", "PAPER_SCHEDULE", "METHODS", "AnnotatorSettings", "config_hash", "resolve_annotator"]
