"""NeuFace E-step: the latent targets of Eq. 1 (temporal, multi-view, identity) for a whole sequence.

Two ways to get them (``AnnotatorSettings.e_step``):

* :func:`e_step` — a no-grad pass of the encoder over every frame and view (``separate``; the first pass of
  ``reuse`` too, since nothing has been predicted yet);
* :class:`TargetCollector` — ``reuse``: during a pass the M-step already runs the encoder on every window; the
  collector keeps those predictions (detached, each taken before its window's Adam step) and turns them into
  the next pass's targets, so a pass costs no extra encoder pass. This is what the official loop does.

Both build the same quantities from per-image predictions: per view a centred moving average of head-rotation
quaternions over the *full* sequence, per frame the confidence-weighted multi-view mean canonical mesh, and the
sequence's mean identity β.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from neuface.encoders.base import EncoderOutput
from neuface.fitting import losses as L
from neuface.fitting.config import AnnotatorSettings
from neuface.fitting.data import SequenceBatch
from neuface.fitting.forward import (
    FlameEval,
    canonical_and_confidence,
    encode_images,
    flame_eval,
    frame_chunks,
    head_quaternions,
)
from neuface.flame import FlameLayer

__all__ = ["Targets", "TargetCollector", "e_step", "uses_terms"]


class Targets(NamedTuple):
    """E-step targets: ``q`` (F, V, 4) temporal, ``mv`` (F, N, 3) multi-view, ``beta`` (n_shape,) identity;
    each None when its term is off."""

    q: torch.Tensor | None = None
    mv: torch.Tensor | None = None
    beta: torch.Tensor | None = None


def uses_terms(settings: AnnotatorSettings, n_views: int) -> tuple[bool, bool, bool]:
    """(temporal target needed, multi-view target needed, identity target needed) in EM mode."""
    if settings.loss_mode != "em":
        return False, False, False
    return settings.lambda_temp > 0, settings.lambda_view > 0 and n_views > 1, settings.lambda_shape > 0


def _mv_target(flame: FlameLayer, ev: FlameEval, out: EncoderOutput, settings: AnnotatorSettings, n_frames: int,
               n_views: int) -> torch.Tensor:
    """(n_frames, N, 3) confidence-weighted mean canonical mesh of ``n_frames`` × ``n_views`` predictions."""
    canon, conf = canonical_and_confidence(ev, out.global_pose, flame.faces, settings.visibility_soft_deg,
                                           n_views=n_views, mode=settings.view_confidence,
                                           temperature=settings.view_temperature)
    return L.multiview_target(canon.reshape(n_frames, n_views, -1, 3), conf.reshape(n_frames, n_views, -1))


@torch.no_grad()
def e_step(encoder, flame: FlameLayer, seq: SequenceBatch, settings: AnnotatorSettings, device: torch.device,
           input_size: int) -> Targets:
    """Latent targets for the whole sequence from one no-grad encoder pass (all None when no term needs one)."""
    use_t, use_v, use_b = uses_terms(settings, seq.n_views)
    if not (use_t or use_v or use_b):
        return Targets()
    collector = TargetCollector(seq.n_frames, seq.n_views, settings)
    for s, e in frame_chunks(seq.n_frames, seq.n_views, settings.chunk_images):
        out = encode_images(encoder, seq.images[s:e].flatten(0, 1), input_size, device, settings.amp,
                            settings.channels_last)
        collector.add(s, e, out, flame_eval(flame, out) if use_v else None, flame)
    return collector.targets()


class TargetCollector:
    """Per-frame E-step statistics filled window by window; :meth:`targets` once every frame was seen.

    ``add(s, e, out, ev)`` takes the encoder outputs of frames ``[s, e)`` × all views (frame-major) and their
    FLAME evaluation with the per-image β (needed only for the multi-view target). Everything is detached and
    kept on the CPU, so a collector can be checkpointed (:meth:`state` / :meth:`from_state`) and a resumed fit
    builds the same targets.
    """

    def __init__(self, n_frames: int, n_views: int, settings: AnnotatorSettings) -> None:
        self.n_frames, self.n_views, self.settings = n_frames, n_views, settings
        self.use_t, self.use_v, self.use_b = uses_terms(settings, n_views)
        self.q: torch.Tensor | None = None
        self.mv: torch.Tensor | None = None
        self.beta_sum: torch.Tensor | None = None
        self.seen = torch.zeros(n_frames, dtype=torch.bool)

    @property
    def active(self) -> bool:
        return self.use_t or self.use_v or self.use_b

    @torch.no_grad()
    def add(self, s: int, e: int, out: EncoderOutput, ev: FlameEval | None, flame: FlameLayer) -> None:
        if not self.active:
            return
        n = e - s
        if self.use_t:
            q = head_quaternions(out.global_pose.detach().float()).reshape(n, self.n_views, 4).cpu()
            if self.q is None:
                self.q = q.new_zeros(self.n_frames, self.n_views, 4)
            self.q[s:e] = q
        if self.use_b:
            part = out.shape.detach().float().sum(dim=0).cpu()
            self.beta_sum = part if self.beta_sum is None else self.beta_sum + part
        if self.use_v:
            if ev is None:
                raise ValueError("the multi-view target needs the FLAME evaluation of the window")
            ev = FlameEval(*(t.detach().float() for t in (ev.lmk, ev.vertices, ev.joints)))
            mv = _mv_target(flame, ev, out, self.settings, n, self.n_views).cpu()
            if self.mv is None:
                self.mv = mv.new_zeros(self.n_frames, *mv.shape[1:])
            self.mv[s:e] = mv
        self.seen[s:e] = True

    @property
    def complete(self) -> bool:
        return bool(self.seen.all())

    def targets(self) -> Targets:
        """The targets of everything added (every frame must have been added exactly once)."""
        if not self.active:
            return Targets()
        if not self.complete:
            missing = (~self.seen).nonzero().flatten().tolist()
            raise RuntimeError(f"E-step targets asked for before frames {missing[:5]}... were predicted")
        q = L.temporal_target(self.q, self.settings.temporal_window, self.settings.temporal_reduce) \
            if self.use_t else None
        beta = self.beta_sum / (self.n_frames * self.n_views) if self.use_b else None
        return Targets(q, self.mv if self.use_v else None, beta)

    def reset(self) -> None:
        self.q = self.mv = self.beta_sum = None
        self.seen.zero_()

    def state(self) -> dict[str, Any]:
        return {"q": self.q, "mv": self.mv, "beta_sum": self.beta_sum, "seen": self.seen.clone()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.q, self.mv, self.beta_sum = state["q"], state["mv"], state["beta_sum"]
        self.seen = state["seen"].clone()
