"""NeuFace optimisation (paper Eq. 1): fit the encoder weights w to one video, EM style.

Per pass: **E-step** (:mod:`neuface.fitting.estep`; by default a no-grad pass over the whole sequence in chunks,
with ``e_step: reuse`` the M-step's own predictions of the previous pass) builds the latent targets — per view
a centred moving average of head-rotation quaternions over the *full* sequence (continuous across window
boundaries), per frame the confidence-weighted multi-view mean canonical mesh, and the sequence's mean identity
β. **M-step**: windows of ``window_frames`` frames × all views in one batch (in a seeded random order per pass),
one Adam step each on ``λ2d·L2D + λtemp·Ltemporal + λview·Lmultiview (+ λshape·Lshape)``. The schedule is
convergence-aware (see :class:`~neuface.fitting.config.AnnotatorSettings`): passes stop once the per-pass L2D
stops improving, the learning rate decays at plateaus, and optional full-sequence steps end the fit. After the
last step, a no-grad pass gives the parameters (one β per sequence: the mean of the per-image β, or of the β the
batches were tied to). With one view the multi-view term is never computed. K clips as one batched computation:
:mod:`neuface.fitting.batched`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from neuface.encoders.base import EncoderOutput, FlameEncoder, freeze_batchnorm
from neuface.fitting import losses as L
from neuface.fitting.checkpoint import Checkpointer, set_rng_state
from neuface.fitting.config import AnnotatorSettings
from neuface.fitting.data import SequenceBatch
from neuface.fitting.estep import TargetCollector, Targets, e_step
from neuface.fitting.forward import (
    FitFailure,
    FitParams,
    canonical_and_confidence,
    encode_images,
    flame_eval,
    frame_chunks,
    guard_loss,
    head_quaternions,
    predict_all,
    prepare_encoder,
)
from neuface.flame import FlameLayer

log = logging.getLogger(__name__)

__all__ = ["FitOutcome", "Targets", "fit_neuface", "e_step", "optimisable_parameters", "tied_shape", "window_loss",
           "window_order"]

LOSS_NAMES = ("total", "l2d", "temporal", "multiview", "shape")


@dataclass
class FitOutcome:
    """Parameters and loss curves of one fit; ``details`` (passes run, why it stopped, ...) go to the fit file."""

    params: FitParams
    losses: dict[str, list[float]] = field(default_factory=dict)
    n_steps: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def optimisable_parameters(encoder: nn.Module) -> list[nn.Parameter]:
    """All weights/biases of the encoder's conv and linear layers (NeuFace optimizes exactly these)."""
    params = []
    for m in encoder.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            params.extend(p for p in m.parameters(recurse=False))
    return params


def _uses(settings: AnnotatorSettings, n_views: int) -> tuple[bool, bool]:
    """(temporal term on, multi-view term on)."""
    return settings.lambda_temp > 0, settings.lambda_view > 0 and n_views > 1


def tied_shape(shape: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, n_shape) per-image β → the β FLAME is evaluated with: ``free`` as is, ``mean`` the batch mean,
    ``first`` the first image's (the official code), broadcast to (B, n_shape)."""
    if mode == "free":
        return shape
    if mode == "mean":
        return shape.mean(dim=0, keepdim=True).expand_as(shape)
    if mode == "first":
        return shape[:1].expand_as(shape)
    raise ValueError(f"unknown shape_mode {mode!r}")


def window_loss(encoder, flame: FlameLayer, seq: SequenceBatch, s: int, e: int, settings: AnnotatorSettings,
                device: torch.device, input_size: int, targets: Targets, collector: TargetCollector | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of frames ``[s, e)`` × all views, computed in one batch (no Python loop over frames/views).

    With a ``collector`` (``e_step: reuse``), the window's predictions — taken here, before the Adam step on
    this loss — are added to the next pass's E-step statistics (the multi-view target from the mesh evaluated
    with the β this step uses)."""
    out = encode_images(encoder, seq.images[s:e].flatten(0, 1), input_size, device, settings.amp,
                        settings.channels_last)
    return loss_from_output(out, flame, seq, s, e, settings, device, targets, collector)


def loss_from_output(out: EncoderOutput, flame: FlameLayer, seq: SequenceBatch, s: int, e: int,
                     settings: AnnotatorSettings, device: torch.device, targets: Targets,
                     collector: TargetCollector | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`window_loss` from the encoder outputs of frames ``[s, e)`` × all views ((e-s)·V images,
    frame-major); used as is by the K-clip batched fit, whose encoder pass is one vmapped call."""
    n_v = seq.n_views
    use_t, use_v = _uses(settings, n_v)
    beta = tied_shape(out.shape, settings.shape_mode)
    ev = flame_eval(flame, out, shape=beta)
    target = seq.landmarks[s:e].flatten(0, 1).to(device)
    valid = seq.valid[s:e].flatten(0, 1).to(device)
    if collector is not None:
        collector.add(s, e, out, ev, flame)
    l2d = L.landmark_loss(ev.lmk, target, valid)
    zero = l2d.new_zeros(())
    temporal = multiview = shape = zero
    if use_t:
        q = head_quaternions(out.global_pose).reshape(e - s, n_v, 4)
        if settings.loss_mode == "naive":
            temporal = L.temporal_loss_naive(q)
        elif settings.temporal_scale == "official":
            temporal = L.temporal_loss_official(q, targets.q[s:e].to(device, q.dtype))
        else:
            temporal = L.temporal_loss(q, targets.q[s:e].to(device, q.dtype))
    if use_v:
        ev_view = ev if settings.view_identity_grad else flame_eval(flame, out, shape=beta.detach())
        canon, _ = canonical_and_confidence(ev_view, out.global_pose, flame.faces, need_confidence=False)
        canon = canon.reshape(e - s, n_v, -1, 3)
        multiview = L.multiview_loss_naive(canon) if settings.loss_mode == "naive" else \
            L.multiview_loss(canon, targets.mv[s:e].to(device, canon.dtype))
    if settings.lambda_beta > 0:
        shape = settings.lambda_beta * beta.square().sum(dim=-1).mean()
    if targets.beta is not None:
        shape = shape + settings.lambda_shape * (out.shape - targets.beta.to(device, out.shape.dtype)
                                                 ).square().sum(dim=-1).mean()
    total = (settings.lambda_2d * l2d + settings.lambda_temp * temporal + settings.lambda_view * multiview
             + shape)
    parts = {"total": total.detach(), "l2d": l2d.detach(), "temporal": temporal.detach(),
             "multiview": multiview.detach(), "shape": shape.detach()}
    return total, parts


@dataclass
class Schedule:
    """Convergence-aware pass schedule (state saved in checkpoints; see ``AnnotatorSettings``)."""

    lr: float
    prev_l2d: float = math.nan
    plateaus: int = 0
    pass_l2d: list[float] = field(default_factory=list)
    stop_reason: str = ""

    def state(self) -> dict[str, Any]:
        return {"lr": self.lr, "prev_l2d": self.prev_l2d, "plateaus": self.plateaus,
                "pass_l2d": list(self.pass_l2d), "stop_reason": self.stop_reason}

    def lr_for_pass(self, settings: AnnotatorSettings, p: int) -> float:
        if settings.lr_schedule == "cosine":
            f = settings.lr_min_factor
            return settings.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * p / max(1, settings.n_passes))))
        return self.lr

    def end_pass(self, settings: AnnotatorSettings, p: int, mean_l2d: float) -> bool:
        """Record pass ``p``'s mean L2D; True when the fit should stop (converged)."""
        self.pass_l2d.append(mean_l2d)
        prev, self.prev_l2d = self.prev_l2d, mean_l2d
        if settings.converge_tol <= 0 or p + 1 < max(2, settings.min_passes) or not math.isfinite(prev):
            return False
        if (prev - mean_l2d) / max(prev, 1e-12) >= settings.converge_tol:
            return False
        self.plateaus += 1
        if self.plateaus >= settings.patience:
            self.stop_reason = (f"converged: L2D improved < {settings.converge_tol:g} (relative) at "
                                f"{self.plateaus} plateau(s), pass {p + 1}")
            return True
        if settings.lr_schedule == "plateau":
            self.lr *= settings.lr_decay
        return False


def window_order(n_windows: int, settings: AnnotatorSettings, p: int) -> list[int]:
    """Window order of pass ``p``: in order, or a permutation seeded by ``(seed, p)`` (resume-safe)."""
    if not settings.shuffle_windows:
        return list(range(n_windows))
    gen = torch.Generator().manual_seed(int(settings.seed) * 1_000_003 + p)
    return torch.randperm(n_windows, generator=gen).tolist()


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def fit_neuface(encoder: FlameEncoder, flame: FlameLayer, seq: SequenceBatch, settings: AnnotatorSettings,
                device: torch.device, checkpointer: Checkpointer | None = None) -> FitOutcome:
    """Run NeuFace on one sequence; ``encoder`` is modified in place (its weights are the fit).

    Raises:
        FitFailure: non-finite loss, or loss above ``divergence_factor`` × the first step's loss.
        Preempted: SIGTERM was received (a checkpoint was written first).
    """
    prepare_encoder(encoder, device, settings.channels_last)  # eval: BatchNorm statistics stay frozen
    freeze_batchnorm(encoder, freeze_affine=True)  # BN in eval, running statistics and affine fixed
    flame = flame.to(device)
    input_size = int(getattr(encoder, "input_size", 224))
    params = optimisable_parameters(encoder)
    if not params:
        raise FitFailure("the encoder has no conv/linear weights to optimise")
    for p in encoder.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model = torch.compile(encoder) if settings.compile else encoder
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    windows = frame_chunks(seq.n_frames, 1, settings.window_frames)
    n_max = settings.n_passes * len(windows) + settings.final_full_steps
    losses: dict[str, list[float]] = {k: [] for k in LOSS_NAMES}
    start_pass, start_window, step, initial = 0, 0, 0, math.nan
    sched = Schedule(lr=settings.lr)
    pass_sum = [0.0, 0]  # L2D sum and step count of the current pass
    targets = Targets()
    reuse = settings.e_step == "reuse"
    collector = TargetCollector(seq.n_frames, seq.n_views, settings) if reuse else None
    ckpt = checkpointer.load() if checkpointer is not None else None
    if ckpt is not None:
        encoder.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_pass, start_window, step = ckpt["pass"], ckpt["window"], ckpt["step"]
        losses = {k: list(v) for k, v in ckpt["losses"].items()}
        initial = ckpt["initial"]
        targets = Targets(*ckpt["targets"])
        sched = Schedule(**ckpt["schedule"])
        pass_sum = list(ckpt["pass_sum"])
        if collector is not None and ckpt.get("collector") is not None:
            collector.load_state(ckpt["collector"])
        set_rng_state(ckpt["rng"])

    def payload(p: int, w: int) -> dict:
        return {"model": encoder.state_dict(), "optimizer": optimizer.state_dict(), "pass": p, "window": w,
                "losses": losses, "initial": initial, "targets": tuple(targets), "schedule": sched.state(),
                "pass_sum": list(pass_sum), "collector": collector.state() if collector is not None else None}

    def record(parts: dict, value: float) -> None:
        for k in LOSS_NAMES:
            losses[k].append(float(parts[k]))
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4g}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")

    bar = tqdm(total=n_max, initial=step, desc=f"neuface {seq.sequence}", unit="step",
               disable=not settings.progress, leave=False)
    n_passes_run = start_pass
    try:
        for p in range(start_pass, settings.n_passes):
            if sched.stop_reason:
                break
            w0 = start_window if p == start_pass else 0
            if w0 == 0 or all(t is None for t in targets):
                targets = next_targets(model, flame, seq, settings, device, input_size, collector)
            _set_lr(optimizer, sched.lr_for_pass(settings, p))
            order = window_order(len(windows), settings, p)
            for w in range(w0, len(windows)):
                s, e = windows[order[w]]
                optimizer.zero_grad(set_to_none=True)
                total, parts = window_loss(model, flame, seq, s, e, settings, device, input_size, targets,
                                           collector)
                value = float(total.detach())
                initial = guard_loss(value, initial, settings.divergence_factor,
                                     f"pass {p} window {order[w]} (step {step})")
                total.backward()
                optimizer.step()
                step += 1
                pass_sum[0] += float(parts["l2d"]) * (e - s)
                pass_sum[1] += e - s
                record(parts, value)
                if w + 1 == len(windows):
                    sched.end_pass(settings, p, pass_sum[0] / max(1, pass_sum[1]))
                    pass_sum[:] = [0.0, 0]
                if checkpointer is not None:
                    nxt = (p, w + 1) if w + 1 < len(windows) else (p + 1, 0)
                    checkpointer.after_step(step, lambda nxt=nxt: payload(*nxt))
            n_passes_run = p + 1
        if not sched.stop_reason:
            sched.stop_reason = f"maximum of {settings.n_passes} passes"
        step = _full_sequence_steps(model, flame, seq, settings, device, input_size, optimizer, windows, step,
                                    initial, record, checkpointer, payload, n_passes_run, collector)
    finally:
        bar.close()
    for prm in encoder.parameters():
        prm.requires_grad_(False)
    return finish_fit(model, seq, settings, device, input_size, windows, sched, losses, step, n_passes_run,
                      optimizer.param_groups[0]["lr"])


def finish_fit(model, seq: SequenceBatch, settings: AnnotatorSettings, device: torch.device, input_size: int,
               windows: list[tuple[int, int]], sched: Schedule, losses: dict[str, list[float]], step: int,
               n_passes_run: int, final_lr: float) -> FitOutcome:
    """The fit's parameters from a no-grad pass of the fitted encoder, and its details."""
    out = predict_all(model, seq, input_size, device, settings.chunk_images, settings.amp, settings.channels_last)
    if not all(torch.isfinite(v).all() for v in vars(out).values()):
        raise FitFailure("the fitted encoder predicts non-finite parameters")
    if settings.shape_mode == "first":  # the β each batch was evaluated with: its first image's
        firsts = torch.tensor([s * seq.n_views for s, _ in windows])
        out.shape = out.shape[firsts].mean(dim=0, keepdim=True).expand_as(out.shape)
    details = {"passes": n_passes_run, "stop_reason": sched.stop_reason, "pass_l2d": sched.pass_l2d,
               "final_lr": final_lr, "full_sequence_steps": settings.final_full_steps, "e_step": settings.e_step}
    log.info("%s: %d step(s), %d pass(es); %s", seq.sequence, step, n_passes_run, sched.stop_reason)
    return FitOutcome(FitParams.from_encoder_output(out, seq.n_frames, seq.n_views), losses, step, details)


def next_targets(model, flame: FlameLayer, seq: SequenceBatch, settings: AnnotatorSettings, device: torch.device,
                  input_size: int, collector: TargetCollector | None) -> Targets:
    """Targets for the coming pass: from the predictions the last pass collected (``reuse``, once it has seen
    every frame; the collector is then emptied for this pass), else from a separate no-grad pass."""
    if collector is not None and collector.active and collector.complete:
        targets = collector.targets()
        collector.reset()
        return targets
    if collector is not None:
        collector.reset()
    return e_step(model, flame, seq, settings, device, input_size)


def _full_sequence_steps(model, flame, seq, settings, device, input_size, optimizer, windows, step, initial,
                         record, checkpointer, payload, n_passes_run, collector=None) -> int:
    """``final_full_steps`` Adam steps whose gradient is that of the whole sequence (windows accumulated,
    each weighted by its share of the frames), so no window is fitted last. Returns the step count."""
    done = step - _pass_steps(settings, len(windows), n_passes_run)
    for i in range(max(0, done), settings.final_full_steps):
        targets = next_targets(model, flame, seq, settings, device, input_size, collector)
        optimizer.zero_grad(set_to_none=True)
        sums = dict.fromkeys(LOSS_NAMES, 0.0)
        for s, e in windows:
            frac = (e - s) / seq.n_frames
            total, parts = window_loss(model, flame, seq, s, e, settings, device, input_size, targets, collector)
            (total * frac).backward()
            for k in LOSS_NAMES:
                sums[k] += float(parts[k]) * frac
        guard_loss(sums["total"], initial, settings.divergence_factor, f"full-sequence step {i}")
        optimizer.step()
        step += 1
        record(sums, sums["total"])
        if checkpointer is not None:
            checkpointer.after_step(step, lambda: payload(n_passes_run, len(windows)))
    return step


def _pass_steps(settings: AnnotatorSettings, n_windows: int, n_passes_run: int) -> int:
    return n_passes_run * n_windows
