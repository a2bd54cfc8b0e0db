"""``run_fit``: one annotator on one sequence, from input files to the fit file (the ``fit`` rule).

A sequence of several shots (cuts or identity changes, :mod:`neuface.shots`) is fitted shot by shot, each with
its own identity β (:mod:`neuface.fitting.shots`); the fit file then also holds ``shots`` and ``shape_shots``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from neuface.errors import NeufaceError
from neuface.fitting.checkpoint import Checkpointer, StopSignal
from neuface.fitting.config import AnnotatorSettings, config_hash
from neuface.fitting.data import load_sequence, upstream_status
from neuface.fitting.forward import FitFailure, deterministic_mode, predict_landmarks_px, resolve_device
from neuface.fitting.output import STAGE, FitMeta, write_fit
from neuface.fitting.shots import fit_by_shot
from neuface.process_cache import ProcessCache, cached_flame_layer, file_key
from neuface.status import StageStatus, carry_warnings

log = logging.getLogger(__name__)

__all__ = ["run_fit", "load_encoder", "sha256_file"]


def load_encoder(kind: str, weights: str | None, device: torch.device | str):
    """Indirection to :func:`neuface.encoders.load_encoder` (tests may replace this module attribute)."""
    from neuface.encoders import load_encoder as _load

    return _load(kind, weights, device)


_ENCODERS, _HASHES = ProcessCache(), ProcessCache(8)


def _fresh_encoder(kind: str, weights, device: torch.device):
    """A new copy of the encoder (same as loading ``weights`` again, without reading the file again)."""
    loader = load_encoder  # the module attribute at call time (tests replace it)
    pristine = _ENCODERS.get((id(loader), kind, file_key(weights), str(device)),
                             lambda: loader(kind, weights, device))
    return copy.deepcopy(pristine)


def _flame_sha256(path) -> str:
    return _HASHES.get(file_key(path), lambda: sha256_file(path))


_INPUT_HASHES = ProcessCache(4)  # per-sequence inputs (crops, landmarks); shared assets stay in _HASHES


def _input_sha256s(crops, landmarks, flame, embedding, encoder_weights) -> dict[str, str]:
    """sha256 of every input file of a fit (its checkpoint's key besides the settings), cached per process and
    (path, mtime, size); ``none`` / ``missing`` for no / a missing encoder weights file."""
    digests = {}
    for name, path, cache in (("crops", crops, _INPUT_HASHES), ("landmarks", landmarks, _INPUT_HASHES),
                              ("flame", flame, _HASHES), ("embedding", embedding, _HASHES),
                              ("encoder_weights", encoder_weights, _HASHES)):
        if path is None:
            digests[name] = "none"
        elif not Path(path).is_file():
            digests[name] = "missing"
        else:
            digests[name] = cache.get(file_key(path), lambda p=path: sha256_file(p))
    return digests


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def run_fit(crops: str | os.PathLike, landmarks: str | os.PathLike, flame_path: str | os.PathLike,
            embedding_path: str | os.PathLike, annotator: str, settings: AnnotatorSettings,
            out: str | os.PathLike, checkpoint: str | os.PathLike | None = None, encoder=None,
            stop: StopSignal | None = None, ground_truth: str | os.PathLike | None = None) -> StageStatus:
    """Fit one sequence and always write ``out`` (a failed fit on upstream failure / FitFailure).

    Args:
        encoder: a ready :class:`~neuface.encoders.base.FlameEncoder`; default loads ``settings.encoder``.
        stop: SIGTERM flag polled between optimisation steps (see :mod:`neuface.fitting.checkpoint`).
        ground_truth: the sequence's ``neuface synth`` ground truth (.npz); needed by method ``groundtruth``.
    Raises:
        Preempted: SIGTERM was received; a checkpoint was written (the caller exits 143).
    """
    check_assets(flame_path, embedding_path)
    if settings.method == "groundtruth" and ground_truth is None:
        raise NeufaceError(f"annotator {annotator!r} (method groundtruth) needs the sequence's ground truth: "
                           "--ground-truth (the sheet's ground_truth column)")
    chash = config_hash(settings)
    meta = new_meta(annotator, settings, flame_path)
    upstream = upstream_status(crops, landmarks)
    if not upstream.ok:
        return write_upstream_failure(out, upstream, meta)
    device = resolve_device(settings.device)
    meta.device = str(device)
    seq = load_sequence(crops, landmarks)
    describe_sequence(meta, seq)
    flame = cached_flame_layer(flame_path, embedding_path, n_shape=100, n_exp=50, device=device)  # read-only
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    ckpt = _checkpointer(checkpoint, settings, chash, stop, crops, landmarks, flame_path, embedding_path)
    with deterministic_mode(settings.deterministic, settings.seed):
        if encoder is None and settings.method in ("neuface", "regress", "flamefit"):
            encoder = _fresh_encoder(settings.encoder, settings.encoder_weights, device)
        meta.encoder_id = str(getattr(encoder, "encoder_id", "unknown"))
        try:
            if settings.method == "groundtruth":  # one identity: the truth, whatever the shot detection says
                from neuface.fitting.groundtruth import ground_truth_fit
                from neuface.fitting.neuface import FitOutcome

                by_shot, outcome = None, FitOutcome(ground_truth_fit(seq, flame, ground_truth, crops))
            elif seq.n_shots > 1:  # one identity per shot: each shot fitted on its own (neuface.fitting.shots)
                by_shot = fit_by_shot(encoder, flame, seq, settings, device, checkpoint,
                                      lambda path: _checkpointer(path, settings, chash, stop, crops, landmarks,
                                                                 flame_path, embedding_path), _dispatch)
                outcome = by_shot.outcome
            else:
                by_shot = None
                outcome = _dispatch(encoder, flame, seq, settings, device, ckpt)
        except FitFailure as exc:
            status = write_failed_fit(out, seq, annotator, exc, meta, upstream, time.perf_counter() - t0, device)
            ckpt.done()
            return status
    status = write_outcome(out, seq, annotator, outcome, by_shot, meta, upstream, flame, time.perf_counter() - t0,
                           device)
    ckpt.done()
    return status


def check_assets(flame_path, embedding_path) -> None:
    """A clear error for a missing FLAME model or landmark embedding (nothing can be fitted without them)."""
    for p in (flame_path, embedding_path):
        if not Path(p).is_file():
            raise NeufaceError(f"asset file {p} does not exist")


def new_meta(annotator: str, settings: AnnotatorSettings, flame_path) -> FitMeta:
    """The fit file's metadata before the sequence is read (settings, their hash, the FLAME file's digest)."""
    return FitMeta(annotator=annotator, views=[], n_frames=0, fps=math.nan, encoder_id="",
                   config_hash=config_hash(settings), config=settings.canonical_json(),
                   flame_sha256=_flame_sha256(flame_path))


def describe_sequence(meta: FitMeta, seq) -> None:
    """Fill the sequence's views, frame count, fps and crop size into ``meta``."""
    meta.views, meta.n_frames, meta.fps, meta.crop_size = seq.views, seq.n_frames, seq.fps, seq.crop_size


def write_upstream_failure(out, upstream: StageStatus, meta: FitMeta) -> StageStatus:
    """Write the failed fit of a sequence whose crops or landmarks stage failed (no work done)."""
    status = upstream.propagate(STAGE)
    write_fit(out, status, meta)
    log.warning("%s", status.summary())
    return status


def write_failed_fit(out, seq, annotator: str, exc: FitFailure, meta: FitMeta, upstream: StageStatus,
                     seconds: float, device: torch.device) -> StageStatus:
    """Write the failed fit of ``seq`` (the reason, the upstream warnings); returns its status."""
    status = StageStatus.failed(seq.sequence, STAGE, str(exc), annotator=annotator).with_warnings(upstream.warnings)
    meta.wall_time_s = seconds
    meta.peak_memory_bytes = _peak_memory(device)
    write_fit(out, status, meta)
    log.error("%s", status.summary())
    return status


def write_outcome(out, seq, annotator: str, outcome, by_shot, meta: FitMeta, upstream: StageStatus, flame,
                  seconds: float, device: torch.device) -> StageStatus:
    """Write the fit file of a successful fit (parameters, landmarks, losses, details); returns its status."""
    params = outcome.params
    if by_shot is None:
        lmk_pred = predict_landmarks_px(flame, params, seq.transforms, seq.crop_size)
    else:
        lmk_pred = by_shot.landmarks_pred  # each shot's landmarks with its own β
    arrays = {"shape": params.shape, "expression": params.expression, "global_pose": params.global_pose,
              "pose": params.pose, "cam": params.cam, "crop_transforms": seq.transforms.numpy(),
              "landmarks": seq.landmarks_px.numpy(), "detected": seq.detected.numpy(),
              "landmarks_pred": lmk_pred}
    meta.wall_time_s = seconds
    meta.peak_memory_bytes = _peak_memory(device)
    beta_norm = float(np.linalg.norm(params.shape))
    details = {"annotator": annotator, "n_steps": outcome.n_steps, "beta_norm": beta_norm,
               "final_loss": outcome.losses["total"][-1] if outcome.losses.get("total") else None,
               **outcome.details}
    if by_shot is not None:
        arrays.update(shots=seq.shots, shape_shots=by_shot.shape_shots)
        meta.shot_reasons, meta.shot_identity = list(seq.shot_reasons), seq.shot_identity
        details.update(beta_norm=float(np.linalg.norm(by_shot.shape_shots, axis=1).max()),
                       n_shots=seq.n_shots, shots=by_shot.details)
    # the upstream stages' warnings (partial inputs: truncated decode, trimmed/missing/dropped views) go on
    status = StageStatus(seq.sequence, STAGE, details=details, warnings=carry_warnings(upstream.warnings))
    write_fit(out, status, meta, arrays, outcome.losses)
    log.info("%s (%.1f s on %s)", status.summary(), meta.wall_time_s, device)
    return status


def _checkpointer(path, settings: AnnotatorSettings, chash: str, stop: StopSignal | None, crops, landmarks,
                  flame_path, embedding_path) -> Checkpointer:
    """The fit's checkpointer at ``path``, keyed by the settings and the digests of every input file."""
    return Checkpointer(path, settings.checkpoint_every, chash, settings.method, stop,
                        inputs=lambda: _input_sha256s(crops, landmarks, flame_path, embedding_path,
                                                      settings.encoder_weights))


def _dispatch(encoder, flame, seq, settings: AnnotatorSettings, device, ckpt: Checkpointer):
    if settings.method == "regress":
        from neuface.fitting.regress import regress

        return regress(encoder, seq, settings, device)
    if settings.method == "neuface":
        from neuface.fitting.neuface import fit_neuface

        return fit_neuface(encoder, flame, seq, settings, device, ckpt)
    from neuface.fitting.flamefit import flamefit

    return flamefit(encoder, flame, seq, settings, device, ckpt)
