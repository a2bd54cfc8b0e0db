"""Long-term generation with a motion prior, the samples file, and the Table 4 evaluation (FD, APD, one-step NLL).

Rollout (:func:`rollout`): from a start state, every step draws z from the learned prior ``p(z | x_t)``, takes
the decoder's mean as ``x_{t+1}`` (decoder noise is not added: it is per-frame jitter, not motion), and
re-projects the 6D rotation onto SO(3). ``clamp`` (off by default) keeps every state dimension within the
training range widened by ``clamp_margin`` times its width.

Samples file (:func:`write_samples`): a ``neuface.dataset`` v1 file (``neuface h5 verify`` / ``export`` read it)
with one sequence ``sample_000`` … per sample, one view ``prior``: ``global_pose``, ``pose`` (jaw only),
``expression`` per frame, β of the start segment, ``cam`` / ``crop_transforms`` of the start frame repeated,
``landmarks_pred`` the FLAME landmarks projected with them, ``landmarks`` NaN and ``detected`` False (nothing was
detected), annotator ``prior``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuface.dataset.pack import sha256_file
from neuface.errors import NeufaceError
from neuface.train.motion_prior import LoadedPrior
from neuface.train.motion_state import (
    Segment,
    StateLayout,
    consistent_velocities,
    flame_params_from_states,
    head_local_landmarks,
    project_rotation,
    state_rotations,
)

log = logging.getLogger(__name__)

SAMPLE_VIEW = "prior"
#: ``stable`` needs generated landmarks within this many times the training range of the landmarks.
STABILITY_FACTOR = 10.0


@torch.no_grad()
def rollout(prior: LoadedPrior, starts: torch.Tensor, fps: float, n_steps: int, n_samples: int,
            generator: torch.Generator | None = None, clamp: bool = False, clamp_margin: float = 0.5,
            device: str | torch.device = "cpu", consistent: bool = True, support: bool = True) -> torch.Tensor:
    """Autoregressive samples.

    Args:
        prior: a loaded prior.
        starts: (B, D) raw start states.
        fps: frame rate of the generated motion.
        n_steps: generated steps after the start.
        n_samples: K samples per start (batched together).
        generator: CPU generator of the latent draws (seeded runs are reproducible).
        clamp: keep states within the widened training range.
        support: the decoder's restoring step outside the support box (:meth:`MotionCVAE.decode`): keeps long
            rollouts within a bounded distance of the training range.
        consistent: after each step, replace the velocities by the finite differences of the generated
            positions (φ̇ from R_t, R_{t+1}; J̇ from J_t, J_{t+1}), as the rollout training does
            (:func:`~neuface.train.motion_state.consistent_velocities`).
    Returns:
        (B, K, n_steps + 1, D) raw states (float32, CPU), the start first.
    """
    from neuface.train.motion_prior import constant_velocity_base

    model = prior.model.to(device).eval()
    norm = {k: v.to(device) for k, v in prior.normalisation.items()}
    mean, std = prior.normalisation["mean"].to(device), prior.normalisation["std"].to(device)
    lo = prior.normalisation["min"].to(device)
    hi = prior.normalisation["max"].to(device)
    lo, hi = lo - clamp_margin * (hi - lo), hi + clamp_margin * (hi - lo)
    n_b, dim = starts.shape
    x = starts.to(device, torch.float32)[:, None].expand(n_b, n_samples, dim).reshape(-1, dim)
    out = [x.cpu()]
    fps_t = torch.full((x.shape[0],), float(fps), device=device)
    for _ in range(n_steps):
        xn = (x - mean) / std
        mu, logvar = model.prior(xn)
        eps = torch.randn(mu.shape, generator=generator).to(mu)
        base = constant_velocity_base(xn, fps_t, norm, prior.layout)
        nxt = model.decode(mu + torch.exp(0.5 * logvar) * eps, xn, base, support=support) * std + mean
        nxt = project_rotation(nxt, prior.layout)
        if consistent:
            nxt = consistent_velocities(nxt, x, fps, prior.layout)
        if clamp:
            nxt = torch.maximum(torch.minimum(nxt, hi), lo)
        x = nxt
        out.append(x.cpu())
    return torch.stack(out, dim=1).reshape(n_b, n_samples, n_steps + 1, dim)


def n_rollout_steps(seconds: float, fps: float) -> int:
    """Steps so that the samples last at least ``seconds`` at ``fps`` (frames = steps + 1)."""
    if not (seconds > 0 and fps > 0):
        raise NeufaceError(f"seconds and fps must be > 0, got {seconds}, {fps}")
    return int(np.ceil(seconds * fps))


def pick_start(segments: Sequence[Segment], sequence: str | None, frame: int) -> tuple[Segment, int]:
    """The segment of ``sequence`` (default: the first) holding frame ``frame`` and the row of that frame."""
    if not segments:
        raise NeufaceError("the start dataset has no usable motion segment (every sequence shorter than 2 frames?)")
    name = sequence or segments[0].sequence
    cands = [s for s in segments if s.sequence == name]
    if not cands:
        raise NeufaceError(f"sequence {name!r} is not in the start dataset (or has no segment of >= 2 frames); "
                           f"available: {', '.join(sorted({s.sequence for s in segments})[:10])}")
    for seg in cands:
        if seg.start <= frame < seg.start + seg.states.shape[0]:
            return seg, frame - seg.start
    raise NeufaceError(f"frame {frame} is outside the segments of sequence {name!r}")


@torch.no_grad()
def write_samples(path: str | os.PathLike, samples: torch.Tensor, layout: StateLayout, shape: torch.Tensor,
                  fps: float, flame, cam: np.ndarray, crop_transform: np.ndarray,
                  attrs: dict[str, Any] | None = None) -> Path:
    """Write (K, T, D) raw states as a ``neuface.dataset`` file (module docstring), atomically."""
    import h5py

    from neuface import __version__
    from neuface.dataset.schema import DATASET_DTYPES, DATASET_FORMAT, DATASET_FORMAT_VERSION, str_list
    from neuface.geometry.camera import weak_perspective_project
    from neuface.geometry.crop import crop_ndc_to_pixels
    from neuface.io_utils import atomic_path

    n_k, n_t, _ = samples.shape
    attrs = dict(attrs or {})
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        root = f.create_group("sequences")
        for k in range(n_k):
            params = {key: v.double() for key, v in flame_params_from_states(samples[k].double(), layout).items()}
            layer_dtype = flame.v_template.dtype
            beta = shape.to(layer_dtype).expand(n_t, -1)
            out = flame(shape=beta, expression=params["expression"].to(layer_dtype),
                        global_pose=params["global_pose"].to(layer_dtype), pose=params["pose"].to(layer_dtype))
            cam_t = torch.as_tensor(cam, dtype=layer_dtype).expand(n_t, 3)
            ndc = weak_perspective_project(out.landmarks2d, cam_t)[..., :2]
            crop_t = torch.as_tensor(crop_transform, dtype=torch.float64).expand(n_t, 3, 3)
            pred = crop_ndc_to_pixels(ndc.double(), crop_t)
            arrays = {
                "shape": shape.double().numpy(),
                "expression": params["expression"].numpy()[:, None],
                "global_pose": params["global_pose"].numpy()[:, None],
                "pose": params["pose"].numpy()[:, None],
                "cam": np.broadcast_to(np.asarray(cam), (n_t, 1, 3)),
                "crop_transforms": np.broadcast_to(np.asarray(crop_transform), (n_t, 1, 3, 3)),
                "landmarks": np.full((n_t, 1, 68, 2), np.nan),
                "landmarks_pred": pred.numpy()[:, None],
                "detected": np.zeros((n_t, 1), dtype=bool),
                "frame_indices": np.arange(n_t, dtype=np.int64),
            }
            g = root.create_group(f"sample_{k:03d}")
            for name, arr in arrays.items():
                g.create_dataset(name, data=np.ascontiguousarray(arr, dtype=DATASET_DTYPES[name]))
            a = g.attrs
            a["views"] = str_list([SAMPLE_VIEW])
            a["n_views"], a["n_frames"], a["fps"], a["n_shots"] = 1, n_t, float(fps), 1
            a["annotator"], a["encoder_id"], a["config_hash"] = SAMPLE_VIEW, "", ""
            a["flame_sha256"] = str(attrs.get("flame_sha256", ""))
            a["source"] = str(attrs.get("prior", ""))
            a["warnings"] = str_list([])
            a["nme"] = a["nme_eye"] = float("nan")  # no detections to compare with
            a["shape_norm"], a["detected_frac"] = float(shape.norm()), 0.0
        a = f.attrs
        a["format"], a["format_version"] = DATASET_FORMAT, DATASET_FORMAT_VERSION
        a["split"], a["annotator"] = "prior_samples", SAMPLE_VIEW
        a["n_sequences"], a["n_frames_total"], a["n_sequences_with_warnings"] = n_k, n_k * n_t, 0
        a["n_shape"], a["n_exp"] = int(shape.shape[0]), int(layout.n_exp)
        a["flame_sha256"] = str(attrs.pop("flame_sha256", ""))
        a["encoder_ids"], a["config_hashes"] = str_list([]), str_list([])
        a["neuface_version"] = __version__
        a["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for key, value in attrs.items():  # provenance: prior path/sha256, seed, start sequence/frame
            a[f"prior_{key}" if not key.startswith("prior") else key] = value
    log.info("wrote %s: %d samples of %d frames at %g fps", path, n_k, n_t, fps)
    return Path(path)


# ------------------------------------------------------------------------------------------- evaluation
def sample_landmarks(samples: torch.Tensor, layout: StateLayout, shape: torch.Tensor, flame) -> torch.Tensor:
    """Head-local FLAME landmarks (..., T, 68, 3) of raw states (..., T, D) with β ``shape`` (S,): the landmarks
    of the FLAME parameters that would be written (not the state's own J)."""
    lead = samples.shape[:-1]
    flat = samples.reshape(-1, samples.shape[-1]).double()
    parts = layout.parts
    lmk = head_local_landmarks(flame, shape.double(), flat[:, parts["jaw"]], flat[:, parts["expression"]])
    return lmk.reshape(*lead, 68, 3).float()


def segment_features(segments: Sequence[Segment], layout: StateLayout, window_s: float = 1.0) -> torch.Tensor:
    """Motion features (W, F) of real segments (their own J and rotations)."""
    from neuface.metrics.motion import FEATURE_NAMES, motion_features
    from neuface.train.motion_state import state_landmarks

    feats = [motion_features(state_landmarks(s.states, layout), state_rotations(s.states, layout), s.fps,
                             window_s) for s in segments]
    feats = [f for f in feats if f.shape[0]]
    return torch.cat(feats) if feats else torch.zeros(0, len(FEATURE_NAMES), dtype=torch.float64)


def one_step_nlls(prior: LoadedPrior, segments: Sequence[Segment], generator: torch.Generator,
                  n_draws: int = 4) -> dict[str, float]:
    """Mean one-step NLL per dimension (normalised space) of every (t, t+1) pair of ``segments``: the CVAE's
    negative ELBO (``n_draws`` z draws) and the constant-velocity baseline's, whose variances were fit on the
    prior's training pairs (stored in the prior file)."""
    from neuface.train.motion_prior import constant_velocity_base, constant_velocity_nll, cvae_one_step_nll
    from neuface.train.motion_state import transition_pairs

    baseline = prior.raw.get("baseline", {})
    if "const_velocity_log_sigma" not in baseline:
        raise NeufaceError("the prior file has no constant-velocity baseline variances (baseline."
                           "const_velocity_log_sigma); retrain it with this neuface version")
    pairs = transition_pairs(segments)
    x, src, dst, fps = pairs["states"], pairs["src"], pairs["dst"], pairs["fps"]
    norm = prior.normalisation
    if src.shape[0] < 1:
        raise NeufaceError("the test data have no (t, t+1) pair for the one-step NLL")
    cv = constant_velocity_nll(x[src], x[dst], fps, norm, prior.layout, baseline["const_velocity_log_sigma"].float())
    xn = (x - norm["mean"]) / norm["std"]
    base = constant_velocity_base(xn[src], fps, norm, prior.layout)
    cvae = cvae_one_step_nll(prior.model.cpu().eval(), xn[src], xn[dst], base, n_draws=n_draws, generator=generator)
    return {"one_step_nll": float(cvae.mean()), "const_velocity_nll": float(cv.mean()),
            "n_test_pairs": int(cv.shape[0])}


def _training_features(prior: LoadedPrior, flame, window_s: float) -> torch.Tensor | None:
    """Features of the prior's training data when its lineage files are readable and unchanged, else None."""
    from neuface.train.motion_state import states_from_packed

    entries = prior.lineage.get("datasets", [])
    paths = [e["path"] for e in entries]
    if not paths or not all(Path(p).is_file() for p in paths):
        log.warning("fd_train_vs_test: the prior's training datasets are not readable here; null")
        return None
    if any(sha256_file(e["path"]) != e.get("sha256") for e in entries):
        log.warning("fd_train_vs_test: a training dataset changed since the prior was trained (sha256); null")
        return None
    settings = prior.lineage.get("settings", {})
    segments, _ = states_from_packed(paths, flame, views=settings.get("views", "front"),
                                     max_sequences=settings.get("max_sequences"),
                                     seed=int(settings.get("subset_seed", 0)))
    feats = segment_features(segments, prior.layout, window_s)
    return feats if feats.shape[0] >= 2 else None


def _own_test_nlls(prior: LoadedPrior, paths: Sequence[str | os.PathLike], flame, views,
                   generator: torch.Generator) -> dict[str, Any] | None:
    """One-step NLLs on held-out data of the prior's own kind, or None (none given, or no pair in them)."""
    from neuface.train.motion_state import states_from_packed

    if not paths:
        return None
    segments, _ = states_from_packed(paths, flame, views=views)
    try:
        nll = one_step_nlls(prior, segments, generator)
    except NeufaceError as exc:
        log.warning("own_test: %s; null", exc)
        return None
    return {"paths": [str(p) for p in paths], "sha256": [sha256_file(p) for p in paths], **nll}


def evaluate_prior(prior_path: str | os.PathLike, test_paths: Sequence[str | os.PathLike],
                   flame_path: str | os.PathLike, embedding_path: str | os.PathLike, label: str,
                   seconds: float = 10.0, n_samples: int = 50, n_starts: int = 4, seed: int = 0,
                   device: str = "cpu", clamp: bool = False, window_s: float = 1.0,
                   own_test_paths: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
    """Table 4 evaluation of a prior on held-out packed data (the ``neuface.eval.motion_prior`` JSON dict).

    ``own_test_paths``: held-out data of the kind the prior was trained on (e.g. its annotator's test split when
    ``test_paths`` hold the true motion): their one-step NLLs go to ``own_test`` (null without them, or when they
    hold no transition pair: a warning)."""
    from neuface.fitting.forward import resolve_device
    from neuface.flame import FlameLayer
    from neuface.metrics.motion import FEATURE_NAMES, apd, frechet_distance, motion_features
    from neuface.train.motion_prior import load_motion_prior
    from neuface.train.motion_state import states_from_packed

    if n_samples < 2 or n_starts < 1:
        raise NeufaceError(f"n_samples must be >= 2 and n_starts >= 1, got {n_samples}, {n_starts}")
    prior = load_motion_prior(prior_path)
    layout = prior.layout
    flame = FlameLayer.from_files(flame_path, embedding_path, n_shape=int(prior.config.get("n_shape", 100)),
                                  n_exp=layout.n_exp, dtype=torch.float64)
    views = prior.lineage.get("settings", {}).get("views", "front")
    segments, used = states_from_packed(test_paths, flame, views=views)
    if not segments:
        raise NeufaceError("the test datasets have no motion segment of >= 2 frames")
    real = segment_features(segments, layout, window_s)
    if real.shape[0] < 2:
        raise NeufaceError(f"the test data have {real.shape[0]} window(s) of {window_s} s; FD needs >= 2")
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = resolve_device(device)
    lmk_idx = layout.parts["landmarks"]
    lmk_mean = prior.normalisation["mean"][lmk_idx]
    train_dev = float(torch.maximum(prior.normalisation["max"][lmk_idx] - lmk_mean,
                                    lmk_mean - prior.normalisation["min"][lmk_idx]).max())
    gen_feats, apds, max_dev, consistency, finite, fps_used = [], [], 0.0, [], True, []
    for k in range(n_starts):
        seg = segments[int(rng.integers(len(segments)))]
        row = int(rng.integers(seg.states.shape[0]))
        steps = n_rollout_steps(seconds, seg.fps)
        states = rollout(prior, seg.states[row][None], seg.fps, steps, n_samples, generator, clamp=clamp,
                         device=dev)[0]  # (K, T, D)
        finite &= bool(torch.isfinite(states).all())
        if not finite:
            log.warning("start %d: a sample diverged to non-finite values", k)
            break
        lmk = sample_landmarks(states, layout, seg.shape, flame)  # (K, T, 68, 3)
        rot = state_rotations(states, layout)
        consistency.append(float((lmk - states[..., lmk_idx].unflatten(-1, (68, 3))).norm(dim=-1).mean()))
        max_dev = max(max_dev, float((states[..., lmk_idx] - lmk_mean).abs().max()))
        gen_feats.append(motion_features(lmk, rot, seg.fps, window_s))
        apds.append(apd(lmk @ rot.transpose(-1, -2)))
        fps_used.append(seg.fps)
    fd = frechet_distance(torch.cat(gen_feats), real) if finite else float("nan")
    train_feats = _training_features(prior, flame, window_s)
    fd_train = frechet_distance(train_feats, real) if train_feats is not None else None
    nll = one_step_nlls(prior, segments, generator)
    tested = [{"path": d["path"], "sha256": sha256_file(d["path"]), "annotator": d["annotator"],
               "n_sequences": d["n_sequences"]} for d in used]
    if [str(p) for p in own_test_paths] == [str(p) for p in test_paths]:  # its own kind is the test split itself:
        own = {"paths": [d["path"] for d in tested], "sha256": [d["sha256"] for d in tested], **nll}  # no rerun
    else:
        own = _own_test_nlls(prior, own_test_paths, flame, views, generator)
    stable = finite and max_dev <= STABILITY_FACTOR * train_dev
    return {
        "format": "neuface.eval.motion_prior", "format_version": 1, "label": label,
        "prior": {"path": str(prior_path), "sha256": sha256_file(prior_path), "lineage": prior.lineage},
        "test": tested,
        "fd": fd, "fd_train_vs_test": fd_train,
        "apd_cm": float(np.mean(apds)) if apds else float("nan"), "apd_cm_per_start": apds,
        "seconds": float(seconds), "n_samples": int(n_samples), "n_starts": int(n_starts),
        "fps": float(np.median(fps_used)) if fps_used else float("nan"),
        "stable": bool(stable), "max_landmark_dev_m": max_dev, "train_landmark_dev_m": train_dev,
        "stability_factor": STABILITY_FACTOR, "clamp": bool(clamp),
        "landmark_consistency_m": float(np.mean(consistency)) if consistency else float("nan"),
        **nll, "own_test": own,
        "window_s": float(window_s), "feature_names": list(FEATURE_NAMES),
        "n_real_windows": int(real.shape[0]),
        "n_generated_windows": int(sum(f.shape[0] for f in gen_feats)),
        "seed": int(seed),
    }


__all__ = ["SAMPLE_VIEW", "STABILITY_FACTOR", "evaluate_prior", "n_rollout_steps", "one_step_nlls", "pick_start",
           "rollout",
           "sample_landmarks", "segment_features", "write_samples"]
