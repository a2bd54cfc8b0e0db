"""Train the facial motion prior (:class:`~neuface.train.motion_prior.MotionCVAE`) on packed datasets.

Batches are random (t, t+1) pairs of every training segment (:func:`~neuface.train.motion_state.transition_pairs`),
drawn with a seeded generator; Adam; optional bf16 autocast on CUDA (``amp``). Training is resumable with
:mod:`neuface.fitting.checkpoint`: a checkpoint every ``checkpoint_every`` steps and on SIGTERM (then
:class:`~neuface.fitting.checkpoint.Preempted`, exit 143 from the CLI), fingerprinted by the settings and the
sha256 of the dataset files, the FLAME model and the landmark embedding; the model, optimiser, batch generator
and loss history are in it, so a resumed run equals an uninterrupted one (same device, deterministic kernels).
The checkpoint is deleted after the prior is written.

Model selection: ``val_fraction`` of the training *sequences* (whole sequences, drawn with ``seed``) are held out
(:func:`split_validation`); every ``val_every`` steps the one-step NLL of their pairs is computed, and the prior
written is the model of the step with the lowest one (early stopping without stopping: the run goes on to
``steps`` so its curve shows the whole course). Normalisation and the constant-velocity baseline come from the
training sequences only.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path

if TYPE_CHECKING:  # torch is imported by the functions: the CLI's --help stays light
    import torch

    from neuface.train.motion_state import Segment, StateLayout

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "motion_prior"
CURVE_COLUMNS = ("step", "loss", "nll_per_dim", "kl", "consistency", "val_nll")
#: the validation NLL's latent draws use ``seed + VAL_SEED_OFFSET`` afresh at every evaluation: the numbers of two
#: steps compare models, not draws.
VAL_SEED_OFFSET = 7919
VAL_DRAWS = 2
#: at most this many held-out pairs are scored (an evenly strided subset of them): a validation stays cheap on a
#: dataset of a million clips.
VAL_MAX_PAIRS = 50_000


@dataclass
class PriorSettings:
    """Settings of one training run (all of them enter the checkpoint fingerprint except ``device``,
    ``checkpoint_every`` and ``curve_every``)."""

    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    latent_dim: int = 32
    hidden: int = 256
    n_layers: int = 2
    kl_weight: float = 1.0
    consistency_weight: float = 0.0
    input_noise: float = 0.0
    rollout_steps: int = 1
    seed: int = 0
    views: str = "front"
    max_sequences: int | None = None
    subset_seed: int = 0
    val_fraction: float = 0.1
    val_every: int = 50
    device: str = "cpu"
    amp: bool = False
    checkpoint_every: int = 200
    curve_every: int = 10

    def validate(self) -> PriorSettings:
        for name in ("steps", "batch_size", "latent_dim", "hidden", "n_layers", "checkpoint_every", "curve_every",
                     "rollout_steps", "val_every"):
            if int(getattr(self, name)) < 1:
                raise NeufaceError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or min(self.kl_weight, self.consistency_weight, self.input_noise) < 0:
            raise NeufaceError(f"lr must be > 0 and kl_weight, consistency_weight, input_noise >= 0 (got {self.lr}, "
                               f"{self.kl_weight}, {self.consistency_weight}, {self.input_noise})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise NeufaceError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_sequences is not None and self.max_sequences < 1:
            raise NeufaceError(f"max_sequences must be >= 1, got {self.max_sequences}")
        return self

    def fingerprint(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("device", "checkpoint_every", "curve_every"):
            d.pop(key)
        return d


class PriorTrainer:
    """The optimisation loop state: model, Adam, batch generator, loss history.

    Args:
        states: (N, D) raw states of all segments, concatenated.
        src, dst: (P,) row indices of the (t, t+1) pairs.
        fps: (P,) frame rate of each pair.
        norm: normalisation statistics (``mean``, ``std`` (D,)).
        layout: the state layout.
        settings: :class:`PriorSettings`.
        validation: held-out pairs (``states``, ``src``, ``dst``, ``fps`` as :func:`transition_pairs` gives them)
            for model selection, or None (the last step's model is kept).
    """

    def __init__(self, states: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, fps: torch.Tensor,
                 norm: dict[str, torch.Tensor], layout: StateLayout, settings: PriorSettings,
                 validation: dict[str, torch.Tensor] | None = None) -> None:
        import torch

        from neuface.fitting.forward import resolve_device
        from neuface.train.motion_prior import LOG_SIGMA_MIN, MotionCVAE, constant_velocity_base

        self.settings = settings
        self.layout = layout
        self.device = resolve_device(settings.device)
        torch.manual_seed(settings.seed)
        self.model = MotionCVAE(layout.dim, settings.latent_dim, settings.hidden, settings.n_layers).to(self.device)
        self.norm = {k: v.to(self.device, torch.float32) for k, v in norm.items()}
        if "min" in self.norm and "max" in self.norm:
            self.model.set_box(self.norm)
        self.x = ((states.to(self.device, torch.float32) - self.norm["mean"]) / self.norm["std"]).contiguous()
        self.src, self.dst = src.to(self.device), dst.to(self.device)
        self.fps = fps.to(self.device, torch.float32)
        with torch.no_grad():
            # the constant-velocity extrapolation of every row (the decoder predicts the residual to it); rows
            # that start no pair get their segment's fps too (unused)
            row_fps = torch.zeros(self.x.shape[0], device=self.device)
            row_fps[self.src] = self.fps
            row_fps[row_fps == 0] = self.fps.max()
            self.base = constant_velocity_base(self.x, row_fps, self.norm, layout).contiguous()
            self.row_fps = row_fps
            # windows of rollout_steps consecutive pairs inside one segment: start rows r with r + R in it
            nxt = torch.full((self.x.shape[0],), -1, dtype=torch.long, device=self.device)
            nxt[self.src] = self.dst
            ok = torch.ones(self.x.shape[0], dtype=torch.bool, device=self.device)
            hop = torch.arange(self.x.shape[0], device=self.device)
            for _ in range(settings.rollout_steps):
                ok &= nxt[hop.clamp(min=0)] >= 0
                hop = torch.where(ok, nxt[hop.clamp(min=0)], hop)
            self.window_starts = ok.nonzero()[:, 0]
            # decoder σ starts at the scale of the baseline's residuals: Adam need not walk it there
            change = (self.x[self.dst] - self.base[self.src]).pow(2).mean(0).clamp(min=1e-30)
            self.model.decoder_log_sigma.copy_((0.5 * change.log()).clamp(LOG_SIGMA_MIN, 0.0))
        if self.window_starts.numel() == 0:
            raise NeufaceError(f"no segment has {settings.rollout_steps + 1} frames for rollout_steps="
                               f"{settings.rollout_steps}; lower it")
        self.val: dict[str, torch.Tensor] | None = None
        if validation is not None and validation["src"].numel():
            vsrc, vdst, vfps = validation["src"], validation["dst"], validation["fps"]
            if vsrc.shape[0] > VAL_MAX_PAIRS:
                keep = torch.linspace(0, vsrc.shape[0] - 1, VAL_MAX_PAIRS).long()
                vsrc, vdst, vfps = vsrc[keep], vdst[keep], vfps[keep]
            vsrc, vdst = vsrc.to(self.device), vdst.to(self.device)
            vx = (validation["states"].to(self.device, torch.float32) - self.norm["mean"]) / self.norm["std"]
            with torch.no_grad():
                vbase = constant_velocity_base(vx[vsrc], vfps.to(self.device, torch.float32), self.norm, layout)
            self.val = {"x_t": vx[vsrc].contiguous(), "x_next": vx[vdst].contiguous(), "base": vbase.contiguous()}
        self.best: dict[str, Any] = {"state": None, "step": 0, "val_nll": math.inf}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.history: list[dict[str, float]] = []
        self.step_count = 0
        self.amp = bool(settings.amp and self.device.type == "cuda")
        if settings.amp and not self.amp:
            log.warning("--amp is for CUDA only; training in float32 on %s", self.device)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        import torch

        from neuface.train.motion_prior import constant_velocity_base

        idx = torch.randint(self.src.shape[0], (self.settings.batch_size,), generator=self.generator)
        eps = torch.randn(self.settings.batch_size, self.settings.latent_dim, generator=self.generator)
        idx = idx.to(self.device)
        src = self.src[idx]
        x_t, fps, base = self.x[src], self.fps[idx], self.base[src]
        if self.settings.input_noise > 0:  # denoising: the model learns to pull perturbed states back (stability)
            noise = torch.randn(x_t.shape, generator=self.generator).to(x_t) * self.settings.input_noise
            x_t = x_t + noise
            base = constant_velocity_base(x_t, fps, self.norm, self.layout)
        return x_t, self.x[self.dst[idx]], fps, eps.to(self.device), base

    def loss(self, x_t: torch.Tensor, x_next: torch.Tensor, fps: torch.Tensor, eps: torch.Tensor,
             base: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Batch loss ``mean(NLL + β·KL + w·consistency)`` and its parts (NLL per dimension)."""
        import torch

        from neuface.train.motion_prior import cvae_terms, velocity_consistency

        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with ctx:
            terms = cvae_terms(self.model, x_t, x_next, eps, base)
        self._last_mean = terms["mean"].float()
        nll, kl = terms["nll"].float().mean(), terms["kl"].float().mean()
        loss = nll + self.settings.kl_weight * kl
        cons = torch.zeros((), device=loss.device)
        if self.settings.consistency_weight > 0:
            cons = velocity_consistency(terms["mean"].float(), x_t, fps, self.norm, self.layout).mean()
            loss = loss + self.settings.consistency_weight * cons
        parts = {"loss": float(loss.detach()) / self.layout.dim, "nll_per_dim": float(nll.detach()) / self.layout.dim,
                 "kl": float(kl.detach()), "consistency": float(cons.detach())}
        return loss / self.layout.dim, parts

    def rollout_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of a batch of windows of ``rollout_steps`` pairs, each step fed the model's own prediction
        (decoder mean at z ~ q, velocities re-derived from positions, :func:`consistent_velocities`), with
        gradients through the rollout; averaged over the steps. Teaches the model to recover from its own errors,
        which long autoregressive sampling needs."""
        import torch

        from neuface.train.motion_prior import constant_velocity_base
        from neuface.train.motion_state import consistent_velocities

        n_b, n_z = self.settings.batch_size, self.settings.latent_dim
        pick = torch.randint(self.window_starts.shape[0], (n_b,), generator=self.generator).to(self.device)
        rows = self.window_starts[pick]
        fps = self.row_fps[rows]
        mean, std = self.norm["mean"], self.norm["std"]
        x_hat = self.x[rows]
        total, sums = None, {"loss": 0.0, "nll_per_dim": 0.0, "kl": 0.0, "consistency": 0.0}
        for k in range(self.settings.rollout_steps):
            eps = torch.randn(n_b, n_z, generator=self.generator).to(self.device)
            target = self.x[rows + k + 1]
            base = constant_velocity_base(x_hat, fps, self.norm, self.layout)
            loss, parts = self.loss(x_hat, target, fps, eps, base)
            total = loss if total is None else total + loss
            sums = {key: sums[key] + parts[key] / self.settings.rollout_steps for key in sums}
            if k + 1 < self.settings.rollout_steps:
                pred = self._last_mean * std + mean
                x_hat = (consistent_velocities(pred, x_hat * std + mean, fps, self.layout) - mean) / std
        return total / self.settings.rollout_steps, sums

    def validation_nll(self) -> float:
        """Mean one-step NLL per dimension (negative ELBO, :data:`VAL_DRAWS` latent draws from a generator seeded
        afresh) of the held-out pairs; nan without validation pairs."""
        import torch

        from neuface.train.motion_prior import cvae_one_step_nll

        if self.val is None:
            return math.nan
        generator = torch.Generator().manual_seed(self.settings.seed + VAL_SEED_OFFSET)
        was_training = self.model.training
        self.model.eval()
        nll = cvae_one_step_nll(self.model, self.val["x_t"], self.val["x_next"], self.val["base"],
                                n_draws=VAL_DRAWS, generator=generator)
        self.model.train(was_training)
        return float(nll.mean())

    def _validate(self, parts: dict[str, float]) -> None:
        """At a validation step: the held-out NLL into ``parts``, and the model kept when it is the best so far."""
        if self.val is None:
            return
        if not (self.step_count % self.settings.val_every == 0 or self.step_count == self.settings.steps):
            return
        value = self.validation_nll()
        parts["val_nll"] = value
        if value < self.best["val_nll"]:  # nan never is
            self.best = {"state": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                         "step": self.step_count, "val_nll": value}

    def restore_best(self) -> None:
        """Load the model of the best validation step (no-op without validation or before the first one)."""
        if self.best["state"] is not None:
            self.model.load_state_dict(self.best["state"])

    def step(self) -> dict[str, float]:
        """One optimisation step on a fresh random batch; returns its losses (and ``val_nll`` at a validation
        step)."""
        self.model.train()
        if self.settings.rollout_steps > 1:
            loss, parts = self.rollout_loss()
        else:
            loss, parts = self.loss(*self._batch())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        self._validate(parts)
        if (self.step_count % self.settings.curve_every == 0 or self.step_count == self.settings.steps
                or "val_nll" in parts):
            self.history.append({"step": self.step_count, **parts})
        return parts

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "history": list(self.history),
                "step_count": self.step_count, "best": dict(self.best)}

    def load_state(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.generator.set_state(payload["generator"])
        self.history = list(payload["history"])
        self.step_count = int(payload["step_count"])
        self.best = dict(payload["best"])

    def run(self, checkpointer=None) -> list[dict[str, float]]:
        """Run the remaining steps (resuming from ``checkpointer`` when it holds a matching checkpoint); with
        validation pairs, the model of the best validation step is loaded at the end."""
        from tqdm import tqdm

        from neuface.fitting.checkpoint import set_rng_state

        payload = checkpointer.load() if checkpointer is not None else None
        if payload is not None:
            self.load_state(payload)
            set_rng_state(payload["rng"])
        bar = tqdm(total=self.settings.steps, initial=self.step_count, desc="motion prior", unit="step",
                   mininterval=5, leave=False)
        with bar:
            while self.step_count < self.settings.steps:
                parts = self.step()
                bar.update(1)
                if self.step_count % 50 == 0:
                    bar.set_postfix(loss=f"{parts['loss']:.3f}", kl=f"{parts['kl']:.2f}")
                if checkpointer is not None:
                    checkpointer.after_step(self.step_count, self.state)
        self.restore_best()
        return self.history


def split_validation(segments: Sequence[Segment], fraction: float, seed: int
                     ) -> tuple[list[Segment], list[Segment]]:
    """Hold out whole sequences for model selection: ``(train, validation)`` segments.

    ``round(fraction × n_sequences)`` sequences (at least 1, and at least one left to train on), drawn with
    ``seed``; every segment (view, shot) of a held-out sequence is held out, so no motion is on both sides. With
    ``fraction`` 0, or fewer than 2 sequences (a warning), nothing is held out.
    """
    import numpy as np

    keys = sorted({(s.path, s.sequence) for s in segments})
    if fraction <= 0:
        return list(segments), []
    if len(keys) < 2:
        log.warning("validation off: %d training sequence(s), model selection needs >= 2 (the last step's model "
                    "is kept)", len(keys))
        return list(segments), []
    n_val = min(len(keys) - 1, max(1, round(fraction * len(keys))))
    picked = {keys[i] for i in np.random.default_rng(seed).choice(len(keys), size=n_val, replace=False)}
    train = [s for s in segments if (s.path, s.sequence) not in picked]
    held = [s for s in segments if (s.path, s.sequence) in picked]
    return train, held


def write_curve(path: str | os.PathLike, history: Sequence[dict[str, float]]) -> None:
    """The loss curve as CSV (``CURVE_COLUMNS``), atomically."""
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in CURVE_COLUMNS})


def train_motion_prior(datasets: Sequence[str | os.PathLike], flame_path: str | os.PathLike,
                       embedding_path: str | os.PathLike, out: str | os.PathLike,
                       settings: PriorSettings | None = None, checkpoint: str | os.PathLike | None = None,
                       curve: str | os.PathLike | None = None, stop=None) -> dict[str, Any]:
    """Train a prior on ``datasets`` and write it to ``out`` (format ``neuface.motion_prior`` v1, atomically).

    Returns:
        a summary (``steps``, ``final`` losses, ``n_pairs``, ``n_segments``, ``path``).
    Raises:
        NeufaceError: unreadable inputs, no usable motion.
        neuface.fitting.checkpoint.Preempted: after a stop request (a checkpoint was written).
    """
    import torch

    from neuface import __version__
    from neuface.dataset.pack import sha256_file
    from neuface.fitting.checkpoint import Checkpointer
    from neuface.flame import FlameLayer
    from neuface.train.motion_prior import PRIOR_FORMAT, PRIOR_FORMAT_VERSION, fit_constant_velocity
    from neuface.train.motion_state import StateLayout, normalisation_stats, states_from_packed, transition_pairs

    settings = (settings or PriorSettings()).validate()
    if not datasets:
        raise NeufaceError("no --dataset given")
    datasets = [str(d) for d in datasets]
    for path in (*datasets, flame_path, embedding_path):
        if not Path(path).is_file():
            raise NeufaceError(f"{path} does not exist")
    n_shape, n_exp = _dataset_sizes(datasets)
    flame = FlameLayer.from_files(flame_path, embedding_path, n_shape=n_shape, n_exp=n_exp, dtype=torch.float64)
    segments, used = states_from_packed(datasets, flame, views=settings.views, max_sequences=settings.max_sequences,
                                        seed=settings.subset_seed)
    if not segments:
        raise NeufaceError(f"no motion to train on: {', '.join(datasets)} hold no sequence with >= 2 frames (an "
                           "empty split: every sequence of it was rejected by the filter or none was fitted)")
    train_segments, val_segments = split_validation(segments, settings.val_fraction, settings.seed)
    pairs = transition_pairs(train_segments)
    val_pairs = transition_pairs(val_segments) if val_segments else None
    layout = StateLayout(n_exp)
    norm = normalisation_stats([s.states for s in train_segments])
    log.info("motion prior: %d segments, %d transition pairs, state dim %d; %d held-out segment(s) (%d pairs) for "
             "model selection", len(train_segments), len(pairs["src"]), layout.dim, len(val_segments),
             0 if val_pairs is None else len(val_pairs["src"]))

    def input_digests() -> dict[str, str]:
        digests = {f"dataset{i}": sha256_file(p) for i, p in enumerate(datasets)}
        digests.update(flame=sha256_file(flame_path), embedding=sha256_file(embedding_path))
        return digests

    fingerprint = {**settings.fingerprint(), "datasets": datasets}
    config_hash = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    checkpointer = Checkpointer(checkpoint, settings.checkpoint_every, config_hash, CHECKPOINT_KIND, stop,
                                input_digests) if checkpoint is not None or stop is not None else None
    trainer = PriorTrainer(pairs["states"], pairs["src"], pairs["dst"], pairs["fps"], norm, layout, settings,
                           validation=val_pairs)
    history = trainer.run(checkpointer)
    validation = None
    if trainer.val is not None:
        val_curve = [(int(r["step"]), float(r["val_nll"])) for r in history if "val_nll" in r]
        validation = {"fraction": settings.val_fraction, "every": settings.val_every,
                      "sequences": sorted({f"{Path(s.path).name}:{s.sequence}" for s in val_segments}),
                      "n_segments": len(val_segments), "n_pairs": int(val_pairs["src"].shape[0]),
                      "selected_step": int(trainer.best["step"]), "selected_val_nll": float(trainer.best["val_nll"]),
                      "last_val_nll": val_curve[-1][1] if val_curve else None}
        log.info("model selection: step %d of %d (held-out NLL %.3f; last step %.3f)", trainer.best["step"],
                 trainer.step_count, trainer.best["val_nll"], validation["last_val_nll"])
    digests = checkpointer.inputs if checkpointer is not None else input_digests()  # hashed once
    fps_values = sorted({float(s.fps) for s in segments})
    lineage = {
        "datasets": [{"path": d["path"], "sha256": digests[f"dataset{i}"], "annotator": d["annotator"],
                      "n_sequences": d["n_sequences"], "sequences": d["sequences"]} for i, d in enumerate(used)],
        "flame": {"path": str(flame_path), "sha256": digests["flame"]},
        "embedding": {"path": str(embedding_path), "sha256": digests["embedding"]},
        "settings": asdict(settings), "config_hash": config_hash, "steps": trainer.step_count,
        "final": dict(history[-1]) if history else {}, "fps": fps_values, "n_segments": len(train_segments),
        "n_pairs": int(pairs["src"].shape[0]), "validation": validation, "neuface_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    x = pairs["states"]
    cv_log_sigma = fit_constant_velocity(x[pairs["src"]], x[pairs["dst"]], pairs["fps"], norm, layout)
    payload = {
        "format": PRIOR_FORMAT, "format_version": PRIOR_FORMAT_VERSION,
        "config": {**trainer.model.config(n_exp, settings.hidden, settings.n_layers), "n_shape": n_shape,
                   "layout": layout.to_dict(), "views": settings.views},
        "state_dict": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "normalisation": {k: v.cpu() for k, v in norm.items()},
        "lineage": lineage,
        "baseline": {"const_velocity_log_sigma": cv_log_sigma.float().cpu()},
    }
    with atomic_path(out, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    if curve is not None:
        write_curve(curve, history)
    if checkpointer is not None:
        checkpointer.done()
    log.info("wrote motion prior %s (%d steps, final loss %.4f)", out, trainer.step_count,
             lineage["final"].get("loss", float("nan")))
    return {"path": str(out), "steps": trainer.step_count, "final": lineage["final"],
            "n_pairs": lineage["n_pairs"], "n_segments": len(train_segments), "validation": validation}


def _dataset_sizes(paths: Sequence[str]) -> tuple[int, int]:
    """The common ``(n_shape, n_exp)`` of packed files (a NeufaceError when they differ)."""
    import h5py

    sizes = set()
    for path in paths:
        try:
            with h5py.File(path, "r") as f:
                sizes.add((int(f.attrs["n_shape"]), int(f.attrs["n_exp"])))
        except (OSError, KeyError) as exc:
            raise NeufaceError(f"cannot read packed dataset {path}: {exc}") from None
    if len(sizes) != 1:
        raise NeufaceError(f"datasets have different (n_shape, n_exp): {sorted(sizes)}")
    return next(iter(sizes))


__all__ = ["CHECKPOINT_KIND", "PriorSettings", "PriorTrainer", "split_validation", "train_motion_prior",
           "write_curve"]
