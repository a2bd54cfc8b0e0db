"""Motion-prior training throughput: transition pairs per second of :class:`neuface.train.motion_train.PriorTrainer`
's step, next to a plain PyTorch loop of the same CVAE and batch measured in the same run.

Input: random states of the real state size (D = 470: 50 expression coefficients) in 64 segments of 100 frames;
timings do not depend on content. Ours: ``PriorTrainer.step`` (seeded batch draw, constant-velocity base,
σ-scaled residual decoder, NLL + KL, Adam). Reference: the textbook loop — index a batch, encoder / prior /
decoder MLPs of the same sizes, ``x_t +`` residual, Gaussian NLL + KL, ``backward``, Adam — without the
constant-velocity base or the bookkeeping; ``ratio`` = ours / reference (1 = no overhead).
"""

from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger("benchmarks.bench_motion_prior")


def _data(n_seg: int, n_frames: int, dim: int):
    g = torch.Generator().manual_seed(0)
    states = torch.randn(n_seg * n_frames, dim, generator=g) * 0.1
    states[:, 0:6] = torch.tensor([1.0, 0, 0, 0, 1.0, 0])  # valid 6D rotations
    src = torch.cat([torch.arange(s * n_frames, (s + 1) * n_frames - 1) for s in range(n_seg)])
    return states, src, src + 1, torch.full((src.shape[0],), 25.0)


def _reference_rate(states, src, dst, settings, steps: int) -> float:
    from neuface.train.motion_prior import MotionCVAE, gaussian_kl, gaussian_nll

    torch.manual_seed(0)
    model = MotionCVAE(states.shape[1], settings.latent_dim, settings.hidden, settings.n_layers)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    x = (states - states.mean(0)) / states.std(0).clamp(min=1e-3)
    b = settings.batch_size

    def one_step():
        idx = torch.randint(src.shape[0], (b,))
        x_t, x_n = x[src[idx]], x[dst[idx]]
        mu_q, lv_q = model.posterior(x_t, x_n)
        mu_p, lv_p = model.prior(x_t)
        z = mu_q + torch.exp(0.5 * lv_q) * torch.randn_like(mu_q)
        mean = x_t + model.decoder_net(torch.cat([z, x_t], -1))
        loss = (gaussian_nll(x_n, mean, model.log_sigma()).sum(-1) + gaussian_kl(mu_q, lv_q, mu_p, lv_p)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        one_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step()
    return steps * b / (time.perf_counter() - t0)


def _ours_rate(states, src, dst, fps, settings, steps: int, validation=None) -> float:
    from neuface.train.motion_state import StateLayout, normalisation_stats
    from neuface.train.motion_train import PriorTrainer

    trainer = PriorTrainer(states, src, dst, fps, normalisation_stats([states]), StateLayout(50), settings,
                           validation=validation)
    for _ in range(3):
        trainer.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return steps * settings.batch_size / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[dict]:
    """Rows ``{name, value, unit, reference, ratio}`` (pairs/s)."""
    from neuface.train.motion_train import PriorSettings

    steps = 10 if quick else 100
    settings = PriorSettings(batch_size=256, hidden=256, latent_dim=32, curve_every=10 ** 9)
    states, src, dst, fps = _data(64, 100, 470)
    ours = _ours_rate(states, src, dst, fps, settings, steps)
    ref = _reference_rate(states, src, dst, settings, steps)
    name = (f"motion prior step, batch {settings.batch_size}, hidden {settings.hidden}, D 470, cpu f32 "
            "(plain PyTorch CVAE loop ref)")
    # model selection's cost: 10 % of the pairs (the default fraction) scored every val_every steps
    n_val = src.shape[0] // 10
    val = {"states": states, "src": src[:n_val], "dst": dst[:n_val], "fps": fps[:n_val]}
    with_val = _ours_rate(states, src[n_val:], dst[n_val:], fps[n_val:], settings, steps, validation=val)
    return [{"name": name, "value": ours, "unit": "pairs/s", "reference": ref, "ratio": ours / ref},
            {"name": f"motion prior step with model selection (10 % held out, every {settings.val_every} steps; "
                     "ref: the same loop without)", "value": with_val, "unit": "pairs/s", "reference": ours,
             "ratio": with_val / ours}]
