"""NeuFace optimisation (paper Eq. 1): fit the encoder weights w to one video, EM style.

Per pass: **E-step** (no gradient, whole sequence in chunks) runs the encoder on every frame and view and builds
the latent targets — per view a centred moving average of head-rotation quaternions over the *full* sequence
(continuous across window boundaries) and per frame the visibility-weighted multi-view mean canonical mesh.
**M-step**: windows of ``window_frames`` frames × all views in one batch, one Adam step each on
``λ2d·L2D + λtemp·Ltemporal + λview·Lmultiview``. After the last pass, a no-grad pass gives the parameters
(one β per sequence: the mean of the per-image β). With one view the multi-view term is never computed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from neuface.encoders.base import FlameEncoder, freeze_batchnorm
from neuface.fitting import losses as L
from neuface.fitting.checkpoint import Checkpointer, set_rng_state
from neuface.fitting.config import AnnotatorSettings
from neuface.fitting.data import SequenceBatch
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

__all__ = ["FitOutcome", "fit_neuface", "e_step", "optimisable_parameters"]

LOSS_NAMES = ("total", "l2d", "temporal", "multiview")


@dataclass
class FitOutcome:
    """Parameters and loss curves of one fit."""

    params: FitParams
    losses: dict[str, list[float]] = field(default_factory=dict)
    n_steps: int = 0


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


@torch.no_grad()
def e_step(encoder, flame: FlameLayer, seq: SequenceBatch, settings: AnnotatorSettings, device: torch.device,
           input_size: int, ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Latent targets for the whole sequence.

    Returns:
        ``q_target`` (F, V, 4) temporal targets or None; ``mv_target`` (F, N, 3) multi-view targets or None.
    """
    use_t, use_v = _uses(settings, seq.n_views)
    if settings.loss_mode != "em" or not (use_t or use_v):
        return None, None
    n_f, n_v = seq.n_frames, seq.n_views
    quats, mv = [], []
    for s, e in frame_chunks(n_f, n_v, settings.chunk_images):
        out = encode_images(encoder, seq.images[s:e].flatten(0, 1), input_size, device, settings.amp,
                            settings.channels_last)
        quats.append(head_quaternions(out.global_pose).reshape(e - s, n_v, 4))
        if use_v:
            ev = flame_eval(flame, out)
            canon, conf = canonical_and_confidence(ev, out.global_pose, flame.faces, settings.visibility_soft_deg)
            mv.append(L.multiview_target(canon.reshape(e - s, n_v, -1, 3), conf.reshape(e - s, n_v, -1)))
    q_target = L.temporal_target(torch.cat(quats), settings.temporal_window, settings.temporal_reduce) \
        if use_t else None
    return q_target, (torch.cat(mv) if use_v else None)


def window_loss(encoder, flame: FlameLayer, seq: SequenceBatch, s: int, e: int, settings: AnnotatorSettings,
                device: torch.device, input_size: int, q_target: torch.Tensor | None,
                mv_target: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of frames ``[s, e)`` × all views, computed in one batch (no Python loop over frames/views)."""
    n_v = seq.n_views
    use_t, use_v = _uses(settings, n_v)
    out = encode_images(encoder, seq.images[s:e].flatten(0, 1), input_size, device, settings.amp,
                        settings.channels_last)
    ev = flame_eval(flame, out)
    target = seq.landmarks[s:e].flatten(0, 1).to(device)
    valid = seq.valid[s:e].flatten(0, 1).to(device)
    l2d = L.landmark_loss(ev.lmk, target, valid)
    zero = l2d.new_zeros(())
    temporal = multiview = zero
    if use_t:
        q = head_quaternions(out.global_pose).reshape(e - s, n_v, 4)
        temporal = L.temporal_loss_naive(q) if settings.loss_mode == "naive" else \
            L.temporal_loss(q, q_target[s:e].to(device, q.dtype))
    if use_v:
        canon, _ = canonical_and_confidence(ev, out.global_pose, flame.faces, need_confidence=False)
        canon = canon.reshape(e - s, n_v, -1, 3)
        multiview = L.multiview_loss_naive(canon) if settings.loss_mode == "naive" else \
            L.multiview_loss(canon, mv_target[s:e].to(device, canon.dtype))
    total = settings.lambda_2d * l2d + settings.lambda_temp * temporal + settings.lambda_view * multiview
    parts = {"total": total.detach(), "l2d": l2d.detach(), "temporal": temporal.detach(),
             "multiview": multiview.detach()}
    return total, parts


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
    n_total = settings.n_passes * len(windows)
    losses: dict[str, list[float]] = {k: [] for k in LOSS_NAMES}
    start_pass, start_window, step, initial = 0, 0, 0, math.nan
    q_target = mv_target = None
    ckpt = checkpointer.load() if checkpointer is not None else None
    if ckpt is not None:
        encoder.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_pass, start_window, step = ckpt["pass"], ckpt["window"], ckpt["step"]
        losses = {k: list(v) for k, v in ckpt["losses"].items()}
        initial = ckpt["initial"]
        q_target, mv_target = ckpt["q_target"], ckpt["mv_target"]
        set_rng_state(ckpt["rng"])

    def payload(p: int, w: int) -> dict:
        return {"model": encoder.state_dict(), "optimizer": optimizer.state_dict(), "pass": p, "window": w,
                "losses": losses, "initial": initial, "q_target": q_target, "mv_target": mv_target}

    bar = tqdm(total=n_total, initial=step, desc=f"neuface {seq.sequence}", unit="step",
               disable=not settings.progress, leave=False)
    try:
        for p in range(start_pass, settings.n_passes):
            w0 = start_window if p == start_pass else 0
            if w0 == 0 or (q_target is None and mv_target is None):
                q_target, mv_target = e_step(model, flame, seq, settings, device, input_size)
            for w in range(w0, len(windows)):
                s, e = windows[w]
                optimizer.zero_grad(set_to_none=True)
                total, parts = window_loss(model, flame, seq, s, e, settings, device, input_size, q_target,
                                           mv_target)
                value = float(total.detach())
                initial = guard_loss(value, initial, settings.divergence_factor,
                                     f"pass {p} window {w} (step {step})")
                total.backward()
                optimizer.step()
                step += 1
                for k in LOSS_NAMES:
                    losses[k].append(float(parts[k]))
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4g}")
                if checkpointer is not None:
                    nxt = (p, w + 1) if w + 1 < len(windows) else (p + 1, 0)
                    checkpointer.after_step(step, lambda nxt=nxt: payload(*nxt))
    finally:
        bar.close()
    for prm in encoder.parameters():
        prm.requires_grad_(False)
    out = predict_all(model, seq, input_size, device, settings.chunk_images, settings.amp, settings.channels_last)
    if not all(torch.isfinite(v).all() for v in vars(out).values()):
        raise FitFailure("the fitted encoder predicts non-finite parameters")
    return FitOutcome(FitParams.from_encoder_output(out, seq.n_frames, seq.n_views), losses, step)
