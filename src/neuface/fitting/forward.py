"""Shared forward pieces of the annotators: encoder → FLAME → projected landmarks / canonical meshes.

Batches are (frame, view) pairs flattened frame-major: index ``f * V + v``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from neuface.encoders.base import EncoderOutput, FlameEncoder
from neuface.errors import NeufaceError
from neuface.fitting.data import SequenceBatch, images_to_input
from neuface.fitting.losses import canonical_vertices, softmax_view_confidence
from neuface.flame import FlameLayer
from neuface.geometry.camera import weak_perspective_project
from neuface.geometry.crop import crop_ndc_to_pixels
from neuface.geometry.mesh import vertex_normals, vertex_visibility, visibility_confidence
from neuface.geometry.rotations import axis_angle_to_matrix, axis_angle_to_quaternion

log = logging.getLogger(__name__)

__all__ = ["FitFailure", "FitParams", "FlameEval", "deterministic_mode", "encode_images", "flame_eval",
           "resolve_device", "predict_landmarks_px", "frame_chunks", "autocast"]


class FitFailure(NeufaceError):
    """The optimisation failed (non-finite or diverging loss); the CLI writes a failed fit with the reason."""


def guard_loss(value: float, initial: float, divergence_factor: float, where: str) -> float:
    """Raise :class:`FitFailure` for a non-finite loss or one above ``divergence_factor`` × the first loss.

    ``initial`` is NaN until the first step; returns the (possibly newly set) initial loss. ``where`` names the
    step in the messages (e.g. ``"pass 2 window 3 (step 17)"``).
    """
    if not math.isfinite(value):
        raise FitFailure(f"non-finite loss at {where}")
    if math.isnan(initial):
        return value
    if value > divergence_factor * max(initial, 1e-12):
        raise FitFailure(f"loss diverged at {where}: {value:.4g} > {divergence_factor:g} x initial {initial:.4g}")
    return initial


@dataclass
class FitParams:
    """Per-sequence FLAME parameters (numpy float32) as written to a fit file.

    Attributes:
        shape: (n_shape,).  expression: (F, V, n_exp).  global_pose: (F, V, 3).  pose: (F, V, 12).
        cam: (F, V, 3).
    """

    shape: np.ndarray
    expression: np.ndarray
    global_pose: np.ndarray
    pose: np.ndarray
    cam: np.ndarray

    @classmethod
    def from_encoder_output(cls, out: EncoderOutput, n_frames: int, n_views: int) -> FitParams:
        """One β per sequence (mean over all frames and views); the rest reshaped to (F, V, ·)."""
        def fv(x: torch.Tensor) -> np.ndarray:
            return x.detach().float().cpu().reshape(n_frames, n_views, -1).numpy()

        return cls(shape=out.shape.detach().float().mean(0).cpu().numpy(), expression=fv(out.expression),
                   global_pose=fv(out.global_pose), pose=fv(out.pose12()), cam=fv(out.cam))


@dataclass
class FlameEval:
    """FLAME evaluated for a batch: ``lmk`` (B, 68, 2) crop NDC, ``vertices`` (B, N, 3), ``joints`` (B, J, 3)."""

    lmk: torch.Tensor
    vertices: torch.Tensor
    joints: torch.Tensor


def resolve_device(name: str) -> torch.device:
    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise NeufaceError(f"unknown device {name!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NeufaceError("--device cuda was asked for but CUDA is not available")
    return dev


@contextlib.contextmanager
def deterministic_mode(enabled: bool, seed: int) -> Iterator[None]:
    """Seed every RNG; when ``enabled`` also force deterministic kernels (restored on exit)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    prev = torch.are_deterministic_algorithms_enabled()
    prev_cudnn = torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cudnn.benchmark = prev_cudnn


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast for the encoder when ``enabled`` (FLAME and the losses stay float32)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def encode_images(encoder, images: torch.Tensor, input_size: int, device: torch.device, amp: bool = False,
                  channels_last: bool = False) -> EncoderOutput:
    """Run the encoder (``FlameEncoder`` or its compiled wrapper) on (B, 3, S, S) uint8 crops; float32 out."""
    x = images_to_input(images, input_size, device, channels_last)
    with autocast(device, amp):
        out = encoder(x)
    if amp:
        out = EncoderOutput(**{k: v.float() for k, v in vars(out).items()})
    return out


def flame_eval(flame: FlameLayer, out: EncoderOutput, shape: torch.Tensor | None = None) -> FlameEval:
    """Evaluate FLAME for encoder outputs; ``shape`` (B, n_shape) replaces the per-image β if given."""
    beta = out.shape if shape is None else shape
    res = flame(shape=beta[:, : flame.n_shape], expression=out.expression[:, : flame.n_exp],
                global_pose=out.global_pose, pose=out.pose12())
    lmk = weak_perspective_project(res.landmarks2d, out.cam)[..., :2]
    return FlameEval(lmk=lmk, vertices=res.vertices, joints=res.joints)


def canonical_and_confidence(ev: FlameEval, global_pose: torch.Tensor, faces: torch.Tensor,
                             soft_deg: float = 0.0, need_confidence: bool = True, n_views: int = 1,
                             mode: str = "binary", temperature: float = 0.1
                             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, N, 3) canonical vertices (global rotation undone) and (B, N) multi-view confidence of the posed mesh.

    Visibility uses the view's posed vertices in model space (the weak-perspective camera looks along -z, so
    the direction to the camera is +z) with NeuFace's τa = 72°, τz = -0.08. ``mode='binary'``: the 0/1
    visibility (softened by ``soft_deg``); ``mode='softmax'``: the graded weights of
    :func:`~neuface.fitting.losses.softmax_view_confidence` over the ``n_views`` views of each frame (the batch
    is frame-major, ``B = F·V``).
    """
    rot = axis_angle_to_matrix(global_pose)
    canon = canonical_vertices(ev.vertices, rot, ev.joints[:, 0])
    if not need_confidence:
        return canon, None
    posed = ev.vertices.detach()
    normals = vertex_normals(posed, faces)
    if mode == "binary":
        return canon, visibility_confidence(posed, normals, None, soft_deg=soft_deg)
    if mode != "softmax":
        raise NeufaceError(f"view confidence mode must be 'binary' or 'softmax', got {mode!r}")
    b, n = posed.shape[:2]
    if b % n_views:
        raise NeufaceError(f"a batch of {b} images is not whole frames of {n_views} views")
    visible = vertex_visibility(posed, normals)
    conf = softmax_view_confidence(normals[..., 2].reshape(-1, n_views, n), visible.reshape(-1, n_views, n),
                                   temperature)
    return canon, conf.reshape(b, n)


def head_quaternions(global_pose: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle → (..., 4) XYZW unit quaternions."""
    return axis_angle_to_quaternion(global_pose)


def frame_chunks(n_frames: int, n_views: int, chunk_images: int) -> list[tuple[int, int]]:
    """Frame ranges ``[s, e)`` holding at most ``chunk_images`` images (at least one frame each)."""
    step = max(1, chunk_images // max(1, n_views))
    return [(s, min(n_frames, s + step)) for s in range(0, n_frames, step)]


@torch.no_grad()
def predict_all(encoder, seq: SequenceBatch, input_size: int, device: torch.device, chunk_images: int,
                amp: bool = False, channels_last: bool = False) -> EncoderOutput:
    """Encoder outputs for every (frame, view), frame-major, on the CPU."""
    outs = []
    for s, e in frame_chunks(seq.n_frames, seq.n_views, chunk_images):
        imgs = seq.images[s:e].flatten(0, 1)
        out = encode_images(encoder, imgs, input_size, device, amp, channels_last)
        outs.append(EncoderOutput(**{k: v.detach().float().cpu() for k, v in vars(out).items()}))
    return EncoderOutput.cat(outs)


@torch.no_grad()
def predict_landmarks_px(flame: FlameLayer, params: FitParams, transforms: torch.Tensor, crop_size: int,
                         chunk: int = 256) -> np.ndarray:
    """(F, V, 68, 2) float32 projected landmarks of ``params`` in original pixels (dynamic contour)."""
    n_f, n_v = params.expression.shape[:2]
    dev = flame.v_template.device
    dtype = flame.v_template.dtype

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype, device=dev).reshape(n_f * n_v, -1)

    expr, gp, pose, cam = t(params.expression), t(params.global_pose), t(params.pose), t(params.cam)
    beta = torch.as_tensor(params.shape, dtype=dtype, device=dev)[None]
    tr = transforms.reshape(n_f * n_v, 3, 3).to(torch.float64)
    out = []
    for s in range(0, n_f * n_v, chunk):
        e = min(n_f * n_v, s + chunk)
        res = flame(shape=beta[:, : flame.n_shape].expand(e - s, -1), expression=expr[s:e, : flame.n_exp],
                    global_pose=gp[s:e], pose=pose[s:e])
        ndc = weak_perspective_project(res.landmarks2d, cam[s:e])[..., :2]
        out.append(crop_ndc_to_pixels(ndc.double().cpu(), tr[s:e], crop_size).float())
    return torch.cat(out).reshape(n_f, n_v, -1, 2).numpy()


def prepare_encoder(encoder, device: torch.device, channels_last: bool = False):
    """Move the encoder to ``device`` in eval mode (BatchNorm statistics frozen), weights channels-last if asked."""
    check_encoder(encoder)
    encoder.to(device).eval()
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
    return encoder


def check_encoder(encoder) -> FlameEncoder:
    if not isinstance(encoder, FlameEncoder):
        raise NeufaceError(f"encoder must be a FlameEncoder, got {type(encoder).__name__}")
    return encoder
