"""HuMoR-style conditional VAE of facial motion transitions ``p(x_{t+1} | x_t)`` and the saved-prior format.

All tensors here are **normalised** states ``(x - mean) / std`` (:func:`neuface.train.motion_state.normalisation_stats`)
unless a docstring says "raw". The model (:class:`MotionCVAE`):

* learned prior ``p(z | x_t) = N(μ_p(x_t), σ_p(x_t)²)``;
* encoder ``q(z | x_t, x_{t+1}) = N(μ_q, σ_q²)``;
* decoder ``p(x_{t+1} | z, x_t) = N(ρ ⊙ x_t + κ ⊙ (b(x_t) − x_t) + Δ(z, x_t), diag σ_d²)``, ``b(x_t)`` the
  constant-velocity extrapolation (:func:`constant_velocity_base`: φ moved by φ̇/fps, J by J̇/fps, the rest kept),
  ρ, κ ∈ (0, 1) learnt per dimension (mean reversion, velocity carry-over; both start within 1e-5 of 1, i.e. the
  baseline), Δ = σ_d ⊙ c·tanh(MLP(z, x_t)/c) a bounded innovation (c = :data:`MAX_INNOVATION`). Generation adds
  a restoring step outside the support box (the widened training range), which keeps rollouts bounded however
  long they run; it is not part of the density (see :meth:`MotionCVAE.decode`).
  σ_d is one learned standard deviation per state dimension (floored at :data:`LOG_SIGMA_MIN`), so the
  reconstruction term is a proper Gaussian log-likelihood.

Training loss per pair: ``NLL(x_{t+1} | z ~ q) + β_KL · KL(q || p)`` (+ an optional velocity-consistency term,
:func:`velocity_consistency`). With β_KL = 1 the loss is the negative ELBO.

One-step likelihood (:func:`cvae_one_step_nll`): the negative ELBO with β_KL = 1, averaged over Monte-Carlo
draws of z from q. It is an upper bound of ``-log p(x_{t+1} | x_t)`` (no importance weighting), so a model whose
bound beats a baseline's exact NLL beats the baseline. The **constant-velocity baseline**
(:func:`constant_velocity_prediction`) moves φ by φ̇/fps, J by J̇/fps, keeps θ and the velocities; its Gaussian
has one variance per dimension fit on training pairs (:func:`fit_constant_velocity`). Both NLLs are in nats per
state dimension in the normalised space (the normalisation's log-Jacobian is the same constant for both).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from neuface.checks import check_shape
from neuface.errors import ModelFormatError, NeufaceError
from neuface.geometry.rotations import axis_angle_to_matrix, matrix_to_rotation_6d, rotation_6d_to_matrix
from neuface.train.motion_state import StateLayout

#: Format tag and version of a saved prior (``torch.save`` dict; ``torch.load(weights_only=True)`` reads it).
PRIOR_FORMAT = "neuface.motion_prior"
PRIOR_FORMAT_VERSION = 2
PRIOR_KEYS = ("format", "format_version", "config", "state_dict", "normalisation", "lineage")
CONFIG_KEYS = ("state_dim", "latent_dim", "hidden", "n_layers", "n_exp")
NORMALISATION_KEYS = ("mean", "std", "min", "max")
#: Floor of the decoder's / baseline's log standard deviation (normalised units).
LOG_SIGMA_MIN = math.log(1e-4)
LOG_SIGMA_MAX = math.log(10.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
#: Largest one-step innovation of the decoder mean, in decoder standard deviations (tanh-bounded).
MAX_INNOVATION = 4.0
#: ρ = exp(−r), κ = exp(−c) with per-step rates r, c = RATE_FLOOR + exp(a) (a learnt): both stay inside (0, 1)
#: whatever a is (the floor keeps them < 1 in float32), and a log-rate moves a rate of 1e-5 as easily as one of 0.1.
RATE_FLOOR = 1e-6
#: Initial rates: ρ = κ = exp(−1e-5), within 1e-5 of the constant-velocity baseline (ρ = κ = 1).
INIT_RATE = 1e-5
#: The support box: the training range of every dimension widened by this fraction of its width on each side.
BOX_MARGIN = 0.5
#: Outside the box, this fraction of the excess is removed per step and of the velocity carry-over too.
RESTORE = 0.5


def _mlp(n_in: int, hidden: int, n_out: int, n_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class MotionCVAE(nn.Module):
    """Conditional VAE over normalised states (see the module docstring).

    Args:
        state_dim: D.
        latent_dim: Z.
        hidden: width of every hidden layer.
        n_layers: hidden layers of each MLP (prior, encoder, decoder).
    """

    def __init__(self, state_dim: int, latent_dim: int = 32, hidden: int = 256, n_layers: int = 2) -> None:
        super().__init__()
        if min(state_dim, latent_dim, hidden, n_layers) < 1:
            raise NeufaceError(f"state_dim, latent_dim, hidden and n_layers must be >= 1, got {state_dim}, "
                               f"{latent_dim}, {hidden}, {n_layers}")
        self.state_dim, self.latent_dim = int(state_dim), int(latent_dim)
        self.prior_net = _mlp(state_dim, hidden, 2 * latent_dim, n_layers)
        self.encoder_net = _mlp(2 * state_dim, hidden, 2 * latent_dim, n_layers)
        self.decoder_net = _mlp(state_dim + latent_dim, hidden, state_dim, n_layers)
        self.decoder_log_sigma = nn.Parameter(torch.zeros(state_dim))
        # stable dynamics: per-dimension mean reversion ρ and velocity carry-over κ, both in (0, 1), start near 1
        # (= the constant-velocity baseline) and are learnt (see :meth:`decode`)
        init = math.log(INIT_RATE - RATE_FLOOR)
        self.reversion_log_rate = nn.Parameter(torch.full((state_dim,), init))
        self.carry_log_rate = nn.Parameter(torch.full((state_dim,), init))
        # the support box (normalised units; ±inf: none): set from the training range by :meth:`set_box`
        self.register_buffer("box_lo", torch.full((state_dim,), -math.inf))
        self.register_buffer("box_hi", torch.full((state_dim,), math.inf))
        nn.init.zeros_(self.decoder_net[-1].weight)  # start as "no change": a stable first rollout
        nn.init.zeros_(self.decoder_net[-1].bias)

    def prior(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) -> mean, log-variance (B, Z) of p(z | x_t)."""
        mu, logvar = self.prior_net(x_t).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)

    def posterior(self, x_t: torch.Tensor, x_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D), (B, D) -> mean, log-variance (B, Z) of q(z | x_t, x_{t+1})."""
        mu, logvar = self.encoder_net(torch.cat([x_t, x_next], dim=-1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, z: torch.Tensor, x_t: torch.Tensor, base: torch.Tensor, support: bool = False) -> torch.Tensor:
        """(B, Z), (B, D), (B, D) -> mean of x_{t+1} (B, D) = ρ ⊙ x_t + κ ⊙ (base − x_t) + Δ(z, x_t)
        [with ``support``: − r ⊙ (e + κ ⊙ (base − x_t)) outside the support box].

        ``base``: the normalised constant-velocity extrapolation of x_t (:func:`constant_velocity_base`), so
        ``base − x_t`` is the velocity step. ρ, κ ∈ (0, 1) per dimension (learnt mean reversion towards the
        training mean and velocity carry-over; they start within 1e-5 of 1, the constant-velocity baseline, and
        may stay there: the one-step likelihood of real motion wants them there). Δ = σ_d ⊙ c·tanh(MLP(z, x_t)/c)
        (c = :data:`MAX_INNOVATION` decoder σ): a bounded innovation.

        ``support`` (generation only, never in the likelihood): with ρ, κ ≈ 1 a position is a (nearly) undamped
        double integrator of the innovations and a long rollout can wander off. Outside the support box
        (:meth:`set_box`: the training range widened by :data:`BOX_MARGIN`), a fixed restoring step then removes
        r = :data:`RESTORE` of the excess e = x_t − clip(x_t) and of the velocity carry-over: a position outside
        follows ``p' ≈ p + κ(1−r)(p − p_prev) − r e + Δ``, a damped spring whose roots lie well inside the unit
        circle, so generated motion stays within a bounded distance of the box however long it runs. Inside the
        box the term is 0. It is not part of the density: a held-out state just outside the training range would
        otherwise cost many nats for a pull of many decoder σ.
        """
        # the network's output is in units of the decoder σ: well-scaled gradients for dimensions whose
        # one-step change is tiny in normalised units (positions), where a raw output would overshoot
        raw = self.decoder_net(torch.cat([z, x_t], dim=-1))
        delta = MAX_INNOVATION * torch.tanh(raw / MAX_INNOVATION) * self.log_sigma().exp()
        rho, kappa = self.dynamics()
        if not support:
            return rho * x_t + kappa * (base - x_t) + delta
        excess = x_t - torch.maximum(torch.minimum(x_t, self.box_hi), self.box_lo)
        outside = (excess != 0).to(x_t.dtype)
        return rho * x_t + kappa * (base - x_t) * (1.0 - RESTORE * outside) - RESTORE * excess + delta

    @torch.no_grad()
    def set_box(self, norm: dict[str, torch.Tensor], margin: float = BOX_MARGIN) -> None:
        """Set the support box from the raw training range ``norm['min']`` / ``['max']`` widened by ``margin`` of
        its width on each side (normalised with ``norm['mean']`` / ``['std']``)."""
        width = norm["max"] - norm["min"]
        lo = (norm["min"] - margin * width - norm["mean"]) / norm["std"]
        hi = (norm["max"] + margin * width - norm["mean"]) / norm["std"]
        self.box_lo.copy_(lo.to(self.box_lo))
        self.box_hi.copy_(hi.to(self.box_hi))

    def dynamics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(D,), (D,): the mean reversion ρ and the velocity carry-over κ, both in (0, 1)."""
        rho = torch.exp(-(RATE_FLOOR + self.reversion_log_rate.exp()))
        kappa = torch.exp(-(RATE_FLOOR + self.carry_log_rate.exp()))
        return rho, kappa

    def log_sigma(self) -> torch.Tensor:
        """(D,) decoder log standard deviation (clamped to [LOG_SIGMA_MIN, LOG_SIGMA_MAX])."""
        return self.decoder_log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)

    def config(self, n_exp: int, hidden: int, n_layers: int) -> dict[str, Any]:
        return {"state_dim": self.state_dim, "latent_dim": self.latent_dim, "hidden": int(hidden),
                "n_layers": int(n_layers), "n_exp": int(n_exp)}


# ------------------------------------------------------------------------------------------- pure functions
def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Element-wise ``-log N(x; mean, exp(log_sigma)²)`` (broadcasting)."""
    return 0.5 * ((x - mean) * torch.exp(-log_sigma)) ** 2 + log_sigma + _HALF_LOG_2PI


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
                ) -> torch.Tensor:
    """``KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p))`` summed over the last dim: (B, Z) x4 -> (B,)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1.0).sum(-1)


def constant_velocity_base(x_t: torch.Tensor, fps: torch.Tensor, norm: dict[str, torch.Tensor],
                           layout: StateLayout) -> torch.Tensor:
    """Normalised constant-velocity extrapolation (B, D) of normalised states ``x_t`` (B, D); ``fps`` (B,)."""
    raw = x_t * norm["std"] + norm["mean"]
    return (constant_velocity_prediction(raw, fps, layout) - norm["mean"]) / norm["std"]


def cvae_terms(model: MotionCVAE, x_t: torch.Tensor, x_next: torch.Tensor, eps: torch.Tensor, base: torch.Tensor
               ) -> dict[str, torch.Tensor]:
    """Per-pair terms with z = μ_q + σ_q·eps: ``nll`` (B,) (summed over D), ``kl`` (B,), ``mean`` (B, D).

    Args:
        x_t, x_next: (B, D) normalised states.
        eps: (B, Z) standard normal draws.
        base: (B, D) :func:`constant_velocity_base` of ``x_t``.
    """
    sizes = check_shape(x_t, "x_t", ("B", "D"))
    check_shape(x_next, "x_next", ("B", "D"), sizes)
    check_shape(base, "base", ("B", "D"), sizes)
    check_shape(eps, "eps", ("B", model.latent_dim), sizes)
    mu_q, logvar_q = model.posterior(x_t, x_next)
    mu_p, logvar_p = model.prior(x_t)
    z = mu_q + torch.exp(0.5 * logvar_q) * eps
    mean = model.decode(z, x_t, base)
    nll = gaussian_nll(x_next, mean, model.log_sigma()).sum(-1)
    return {"nll": nll, "kl": gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), "mean": mean}


def velocity_consistency(mean: torch.Tensor, x_t: torch.Tensor, fps: torch.Tensor, norm: dict[str, torch.Tensor],
                         layout: StateLayout) -> torch.Tensor:
    """Per-pair squared mismatch (B,) between the predicted J̇ and the finite difference (J_pred − J_t)·fps, in
    units of the J̇ standard deviation (mean over the 204 coordinates). ``mean``, ``x_t``: (B, D) normalised."""
    sl_j, sl_v = layout.parts["landmarks"], layout.parts["landmark_vel"]
    std = norm["std"]
    j_pred = mean[:, sl_j] * std[sl_j] + norm["mean"][sl_j]
    j_now = x_t[:, sl_j] * std[sl_j] + norm["mean"][sl_j]
    v_pred = mean[:, sl_v] * std[sl_v] + norm["mean"][sl_v]
    return (((v_pred - (j_pred - j_now) * fps[:, None]) / std[sl_v]) ** 2).mean(-1)


@torch.no_grad()
def cvae_one_step_nll(model: MotionCVAE, x_t: torch.Tensor, x_next: torch.Tensor, base: torch.Tensor,
                      n_draws: int = 4, generator: torch.Generator | None = None, chunk: int = 8192) -> torch.Tensor:
    """Negative ELBO (β_KL = 1) of each pair in nats per state dimension, averaged over ``n_draws`` z ~ q.

    Args:
        x_t, x_next: (P, D) normalised states.
        base: (P, D) :func:`constant_velocity_base` of ``x_t``.
    Returns:
        (P,) upper bounds of ``-log p(x_{t+1} | x_t) / D``.
    """
    out = []
    for s in range(0, x_t.shape[0], chunk):
        a, b, c = x_t[s:s + chunk], x_next[s:s + chunk], base[s:s + chunk]
        acc = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        for _ in range(n_draws):
            eps = torch.randn(a.shape[0], model.latent_dim, generator=generator).to(a)
            terms = cvae_terms(model, a, b, eps, c)
            acc += terms["nll"] + terms["kl"]
        out.append(acc / (n_draws * a.shape[1]))
    return torch.cat(out)


def constant_velocity_prediction(x_t: torch.Tensor, fps: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """Raw state (P, D) one step ahead at constant velocity: ``R ← exp(φ̇/fps)·R``, ``J ← J + J̇/fps``; θ and the
    velocities unchanged. ``fps``: (P,)."""
    p = layout.parts
    out = x_t.clone()
    rot = rotation_6d_to_matrix(x_t[:, p["rot6d"]])
    step = axis_angle_to_matrix(x_t[:, p["rot_vel"]] / fps[:, None])
    out[:, p["rot6d"]] = matrix_to_rotation_6d(step @ rot)
    out[:, p["landmarks"]] = x_t[:, p["landmarks"]] + x_t[:, p["landmark_vel"]] / fps[:, None]
    return out


def _cv_residual(x_t: torch.Tensor, x_next: torch.Tensor, fps: torch.Tensor, norm: dict[str, torch.Tensor],
                 layout: StateLayout) -> torch.Tensor:
    return (x_next - constant_velocity_prediction(x_t, fps, layout)) / norm["std"]


def fit_constant_velocity(x_t: torch.Tensor, x_next: torch.Tensor, fps: torch.Tensor,
                          norm: dict[str, torch.Tensor], layout: StateLayout) -> torch.Tensor:
    """(D,) log standard deviation (normalised units, floored) of the baseline's residuals on raw pairs (P, D)."""
    res = _cv_residual(x_t, x_next, fps, norm, layout)
    return (0.5 * torch.log((res ** 2).mean(0).clamp(min=1e-30))).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


def constant_velocity_nll(x_t: torch.Tensor, x_next: torch.Tensor, fps: torch.Tensor, norm: dict[str, torch.Tensor],
                          layout: StateLayout, log_sigma: torch.Tensor) -> torch.Tensor:
    """(P,) NLL of raw pairs (P, D) under the baseline, nats per state dimension (normalised space)."""
    res = _cv_residual(x_t, x_next, fps, norm, layout)
    return gaussian_nll(res, torch.zeros_like(res), log_sigma).mean(-1)


# ------------------------------------------------------------------------------------------- saved prior
@dataclass
class LoadedPrior:
    """A prior read by :func:`load_motion_prior`."""

    model: MotionCVAE
    normalisation: dict[str, torch.Tensor]
    layout: StateLayout
    config: dict[str, Any]
    lineage: dict[str, Any]
    raw: dict[str, Any]


def load_motion_prior(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedPrior:
    """Load a prior written by ``neuface train motion-prior`` (``torch.load(weights_only=True)``).

    Raises:
        ModelFormatError: not a prior file, another format version, missing keys, or weights that do not match
            the recorded architecture.
    """
    if not os.path.isfile(path):
        raise NeufaceError(f"motion prior {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a format error for the user
        raise ModelFormatError(f"{path} is not a readable motion prior ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != PRIOR_FORMAT:
        fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFormatError(f"{path} is not a {PRIOR_FORMAT} file (format={fmt!r})")
    if payload.get("format_version") != PRIOR_FORMAT_VERSION:
        raise ModelFormatError(f"{path} has format_version {payload.get('format_version')!r}; this neuface reads "
                               f"{PRIOR_FORMAT_VERSION}")
    missing = [k for k in PRIOR_KEYS if k not in payload]
    if missing:
        raise ModelFormatError(f"{path} lacks key(s) {', '.join(missing)}")
    config, norm = payload["config"], payload["normalisation"]
    missing = [f"config.{k}" for k in CONFIG_KEYS if k not in config]
    missing += [f"normalisation.{k}" for k in NORMALISATION_KEYS if k not in norm]
    if missing:
        raise ModelFormatError(f"{path} lacks key(s) {', '.join(missing)}")
    layout = StateLayout(int(config["n_exp"]))
    if layout.dim != int(config["state_dim"]):
        raise ModelFormatError(f"{path}: state_dim {config['state_dim']} does not match n_exp={config['n_exp']} "
                               f"(expected {layout.dim})")
    for k in NORMALISATION_KEYS:
        if tuple(norm[k].shape) != (layout.dim,):
            raise ModelFormatError(f"{path}: normalisation.{k} has shape {tuple(norm[k].shape)}, expected "
                                   f"({layout.dim},)")
    model = MotionCVAE(int(config["state_dim"]), int(config["latent_dim"]), int(config["hidden"]),
                       int(config["n_layers"]))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(f"{path}: weights do not match the recorded architecture: {exc}") from None
    return LoadedPrior(model.eval(), {k: norm[k].float() for k in NORMALISATION_KEYS}, layout, dict(config),
                       dict(payload["lineage"]), payload)


__all__ = ["CONFIG_KEYS", "LOG_SIGMA_MIN", "LoadedPrior", "MotionCVAE", "PRIOR_FORMAT", "PRIOR_FORMAT_VERSION",
           "PRIOR_KEYS", "constant_velocity_base", "constant_velocity_nll", "constant_velocity_prediction",
           "cvae_one_step_nll",
           "cvae_terms", "fit_constant_velocity", "gaussian_kl", "gaussian_nll", "load_motion_prior",
           "velocity_consistency"]
