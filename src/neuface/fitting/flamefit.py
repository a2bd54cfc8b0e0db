"""``flamefit`` annotator (paper Eq. 5, appendix E.1; the "Base-dataset"): optimise FLAME parameters directly.

Initialised from :func:`~neuface.fitting.regress.regress`. Free variables: one β per sequence, per
(frame, view) ψ, jaw, global rotation r and camera. Objective::

    λ2d L2D + λtemp Ltemporal + λview Lmultiview + λr Lr + λθ Lθ + λβ Lβ + λψ Lψ

with the same L2D / Ltemporal / Lmultiview as NeuFace (EM-style targets recomputed every
``flamefit_estep_every`` steps) and priors, each a squared L2 norm averaged over frames × views:
``Lr = ‖r − r_init‖²`` (a plain ‖r‖² would pull every camera view towards frontal), ``Lθ = ‖jaw‖²``,
``Lβ = ‖β‖²``, ``Lψ = ‖ψ‖²``. Coarse-to-fine: stage 1 optimises r and the camera only; stage 2 fixes the camera
and optimises β, ψ, jaw and r. Every step is full-batch: gradients of all windows are accumulated, then one
Adam step.
"""

from __future__ import annotations

import logging
import math

import torch
from tqdm import tqdm

from neuface.encoders.base import EncoderOutput
from neuface.fitting import losses as L
from neuface.fitting.checkpoint import Checkpointer, set_rng_state
from neuface.fitting.config import AnnotatorSettings
from neuface.fitting.data import SequenceBatch
from neuface.fitting.forward import (
    FitParams,
    canonical_and_confidence,
    flame_eval,
    frame_chunks,
    guard_loss,
    head_quaternions,
)
from neuface.fitting.neuface import FitOutcome
from neuface.fitting.regress import regress
from neuface.flame import FlameLayer

log = logging.getLogger(__name__)

__all__ = ["flamefit"]

NAMES = ("total", "l2d", "temporal", "multiview", "prior")
VARS = ("beta", "expression", "global_pose", "jaw", "cam")
STAGE_VARS = (("global_pose", "cam"), ("beta", "expression", "jaw", "global_pose"))


def _output(v: dict[str, torch.Tensor], s: int, e: int) -> EncoderOutput:
    n = (e - s) * v["expression"].shape[1]
    return EncoderOutput(shape=v["beta"][None].expand(n, -1), expression=v["expression"][s:e].flatten(0, 1),
                         global_pose=v["global_pose"][s:e].flatten(0, 1), jaw_pose=v["jaw"][s:e].flatten(0, 1),
                         cam=v["cam"][s:e].flatten(0, 1))


@torch.no_grad()
def _targets(v, flame, seq, settings, use_t, use_v):
    n_v = seq.n_views
    q_t = L.temporal_target(head_quaternions(v["global_pose"]), settings.temporal_window,
                            settings.temporal_reduce) if use_t else None
    mv = None
    if use_v:
        parts = []
        for s, e in frame_chunks(seq.n_frames, n_v, settings.chunk_images):
            out = _output(v, s, e)
            canon, conf = canonical_and_confidence(flame_eval(flame, out), out.global_pose, flame.faces,
                                                   settings.visibility_soft_deg, n_views=n_v,
                                                   mode=settings.view_confidence,
                                                   temperature=settings.view_temperature)
            parts.append(L.multiview_target(canon.reshape(e - s, n_v, -1, 3), conf.reshape(e - s, n_v, -1)))
        mv = torch.cat(parts)
    return q_t, mv


def flamefit(encoder, flame: FlameLayer, seq: SequenceBatch, settings: AnnotatorSettings, device: torch.device,
             checkpointer: Checkpointer | None = None) -> FitOutcome:
    """Fit FLAME + cameras to one sequence (see the module docstring)."""
    init = regress(encoder, seq, settings, device).params
    flame = flame.to(device)
    n_f, n_v = seq.n_frames, seq.n_views

    def t(x) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=device).clone()

    v = {"beta": t(init.shape[: flame.n_shape]), "expression": t(init.expression[..., : flame.n_exp]),
         "global_pose": t(init.global_pose), "jaw": t(init.pose[..., 3:6]), "cam": t(init.cam)}
    r_init = v["global_pose"].clone()
    use_t = settings.lambda_temp > 0
    use_v = settings.lambda_view > 0 and n_v > 1
    windows = frame_chunks(n_f, n_v, max(settings.chunk_images, n_v))
    losses: dict[str, list[float]] = {k: [] for k in NAMES}
    stage, stage_step, step, initial = 0, 0, 0, math.nan
    opt_state = q_t = mv = None
    ckpt = checkpointer.load() if checkpointer is not None else None
    if ckpt is not None:
        v = {k: ckpt["vars"][k].to(device) for k in VARS}
        stage, stage_step, step, initial = ckpt["stage"], ckpt["stage_step"], ckpt["step"], ckpt["initial"]
        losses = {k: list(x) for k, x in ckpt["losses"].items()}
        opt_state, q_t, mv = ckpt["optimizer"], ckpt["q_target"], ckpt["mv_target"]
        set_rng_state(ckpt["rng"])
    total_steps = sum(settings.flamefit_steps)
    bar = tqdm(total=total_steps, initial=step, desc=f"flamefit {seq.sequence}", unit="step",
               disable=not settings.progress, leave=False)
    try:
        for st in range(stage, 2):
            names = STAGE_VARS[st]
            for k in VARS:
                v[k].requires_grad_(k in names)
            opt = torch.optim.Adam([v[k] for k in names], lr=settings.flamefit_lr)
            if st == stage and opt_state is not None:
                opt.load_state_dict(opt_state)
            first = stage_step if st == stage else 0
            for i in range(first, settings.flamefit_steps[st]):
                if (use_t or use_v) and (i % settings.flamefit_estep_every == 0 or (q_t is None and mv is None)):
                    q_t, mv = _targets(v, flame, seq, settings, use_t, use_v)
                opt.zero_grad(set_to_none=True)
                sums = dict.fromkeys(NAMES, 0.0)
                for s, e in windows:
                    frac = (e - s) / n_f
                    out = _output(v, s, e)
                    ev = flame_eval(flame, out)
                    l2d = L.landmark_loss(ev.lmk, seq.landmarks[s:e].flatten(0, 1).to(device),
                                          seq.valid[s:e].flatten(0, 1).to(device))
                    temporal = multiview = l2d.new_zeros(())
                    if use_t:
                        q = head_quaternions(out.global_pose).reshape(e - s, n_v, 4)
                        if settings.loss_mode == "naive":
                            temporal = L.temporal_loss_naive(q)
                        elif settings.temporal_scale == "official":
                            temporal = L.temporal_loss_official(q, q_t[s:e])
                        else:
                            temporal = L.temporal_loss(q, q_t[s:e])
                    if use_v:
                        canon, _ = canonical_and_confidence(ev, out.global_pose, flame.faces, need_confidence=False)
                        canon = canon.reshape(e - s, n_v, -1, 3)
                        multiview = L.multiview_loss_naive(canon) if settings.loss_mode == "naive" else \
                            L.multiview_loss(canon, mv[s:e])
                    prior = (settings.lambda_r * (v["global_pose"][s:e] - r_init[s:e]).square().sum(-1).mean()
                             + settings.lambda_theta * v["jaw"][s:e].square().sum(-1).mean()
                             + settings.lambda_psi * v["expression"][s:e].square().sum(-1).mean()
                             + settings.lambda_beta * v["beta"].square().sum())
                    total = (settings.lambda_2d * l2d + settings.lambda_temp * temporal
                             + settings.lambda_view * multiview + prior)
                    (total * frac).backward()
                    for k, x in zip(NAMES, (total, l2d, temporal, multiview, prior), strict=True):
                        sums[k] += float(x.detach()) * frac
                value = sums["total"]
                initial = guard_loss(value, initial, settings.divergence_factor,
                                     f"flamefit stage {st + 1} step {i}")
                opt.step()
                step += 1
                for k in NAMES:
                    losses[k].append(sums[k])
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4g}", stage=st + 1)
                if checkpointer is not None:
                    nxt = (st, i + 1) if i + 1 < settings.flamefit_steps[st] else (st + 1, 0)

                    def payload(nxt=nxt, opt=opt, st=st, initial=initial, q_t=q_t, mv=mv):
                        return {"vars": {k: x.detach().cpu() for k, x in v.items()}, "stage": nxt[0],
                                "stage_step": nxt[1], "initial": initial, "losses": losses,
                                "optimizer": opt.state_dict() if nxt[0] == st else None,
                                "q_target": q_t, "mv_target": mv}

                    checkpointer.after_step(step, payload)
            opt_state = None
    finally:
        bar.close()
    pose = torch.zeros(n_f, n_v, 12, device=device)
    pose[..., 3:6] = v["jaw"].detach()
    params = FitParams(shape=_np(v["beta"]), expression=_np(v["expression"]), global_pose=_np(v["global_pose"]),
                       pose=_np(pose), cam=_np(v["cam"]))
    return FitOutcome(params, losses, step)


def _np(x: torch.Tensor):
    return x.detach().float().cpu().numpy()
