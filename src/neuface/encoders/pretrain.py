"""Offline pre-training of the ``builtin`` encoder on rendered FLAME-model faces.

Each step samples random identities β, expressions ψ (std decaying with the component), head rotations (yaw ±90°,
pitch ±30°, roll ±15°), a jaw that is closed half of the time and open up to ``jaw_max`` otherwise, a crop
camera placed like the crops stage places it (box of the 68 landmarks, size (w+h)/2·1.375,
with scale/offset jitter), a colour/light/background, and renders the faces with
:func:`neuface.render.render_mesh` directly in 224×224 crop space. Because the weak-perspective camera *is* the
crop camera, the target camera is known exactly. Loss: projected-landmark L1 (crop NDC) + parameter losses
(``w_params``; 0 trains from 2D alone) + a β/ψ prior (``w_prior``, DECA's regularisers).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from neuface.encoders.base import EncoderOutput
from neuface.encoders.builtin import BuiltinEncoder
from neuface.errors import NeufaceError
from neuface.flame.layer import FlameLayer
from neuface.geometry.camera import WeakPerspectiveCamera, weak_perspective_project
from neuface.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from neuface.pretrain_settings import PretrainSettings
from neuface.render import render_mesh

log = logging.getLogger(__name__)

CROP_SCALE = 1.1 * 1.25  # crop side / landmark box size (DECA)


@dataclass
class SampleBatch:
    """Rendered crops and their ground truth: images (B, 3, S, S); params as :class:`EncoderOutput`;
    landmarks (B, 68, 2) in crop NDC."""

    images: torch.Tensor
    target: EncoderOutput
    landmarks: torch.Tensor


def _euler_axis_angle(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B,) radians → (B, 3) axis-angle of R = R_y(yaw) R_x(pitch) R_z(roll)."""
    zeros = torch.zeros_like(yaw)

    def rot(axis: int, angle: torch.Tensor) -> torch.Tensor:
        aa = torch.stack([zeros, zeros, zeros], dim=-1)
        aa[:, axis] = angle
        return axis_angle_to_matrix(aa)

    return matrix_to_axis_angle(rot(1, yaw) @ rot(0, pitch) @ rot(2, roll))


def crop_camera(landmarks: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Weak-perspective crop camera framing ``landmarks`` as the crops stage does.

    Args:
        landmarks: (B, 68, 3) model-space landmarks.
        scale: (B,) multiplicative jitter of the crop size.  shift: (B, 2) NDC offset of the face centre.
    Returns:
        (B, 3) ``(s, tx, ty)``.
    """
    lo, hi = landmarks[..., :2].amin(dim=1), landmarks[..., :2].amax(dim=1)
    size = (hi - lo).sum(dim=1) / 2 * CROP_SCALE * scale
    s = 2.0 / size
    centre = (lo + hi) / 2
    # ndc = s * (X + t), y flipped: a face centre at NDC (dx, dy) needs t = -centre + (dx, -dy) / s
    t = -centre + torch.stack([shift[:, 0], -shift[:, 1]], dim=1) / s[:, None]
    return torch.cat([s[:, None], t], dim=1)


def typical_camera(flame: FlameLayer) -> list[float]:
    """The camera of the mean face, frontal, centred: the builtin encoder's ``cam_prior``."""
    with torch.no_grad():
        lmk = flame(batch_size=1).landmarks2d.float()
        cam = crop_camera(lmk, lmk.new_ones(1), lmk.new_zeros(1, 2))
    return [float(v) for v in cam[0]]


def sample_batch(flame: FlameLayer, colors: torch.Tensor, settings: PretrainSettings,
                 gen: torch.Generator) -> SampleBatch:
    """Sample and render one batch on ``flame``'s device (see module docstring)."""
    st = settings
    dev, dtype = flame.v_template.device, flame.v_template.dtype
    b, size = st.batch_size, st.image_size

    def u(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=gen) * 2 - 1).to(dev, dtype)

    def n(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dev, dtype)

    shape = n(b, flame.n_shape) * st.shape_std
    decay = 1.0 + st.exp_decay * torch.arange(flame.n_exp, device=dev, dtype=dtype)
    expression = n(b, flame.n_exp) * st.exp_std / decay
    deg = math.pi / 180
    global_pose = _euler_axis_angle(u(b) * st.yaw_deg * deg, u(b) * st.pitch_deg * deg, u(b) * st.roll_deg * deg)
    closed = (u(b, 1) + 1) / 2 < st.jaw_closed_prob
    opening = torch.where(closed, n(b, 1).abs() * 0.03, (u(b, 1) + 1) / 2 * st.jaw_max)
    jaw = torch.cat([opening, u(b, 2) * 0.03], dim=1)
    out = EncoderOutput(shape=shape, expression=expression, global_pose=global_pose, jaw_pose=jaw,
                        cam=torch.zeros(b, 3, device=dev, dtype=dtype))
    with torch.no_grad():
        fl = flame(shape, expression, global_pose, out.pose12())
        out.cam = crop_camera(fl.landmarks2d, 1 + u(b) * st.scale_jitter, u(b, 2) * st.shift_jitter)
        tint = 1 + 0.25 * u(b, 1, 3)
        light = torch.cat([u(b, 2) * 0.8, 1 + 0.3 * u(b, 1)], dim=1)
        ramp = torch.linspace(0, 1, size, device=dev, dtype=dtype)[None, None, :, None]
        c0, c1 = (u(b, 3, 1, 1) + 1) / 2, (u(b, 3, 1, 1) + 1) / 2
        noise = F.interpolate(u(b, 1, 8, 8), size=(size, size), mode="bilinear", align_corners=False)
        background = (c0 * (1 - ramp) + c1 * ramp + 0.15 * noise).clamp(0, 1)
        res = render_mesh(fl.vertices, flame.faces, WeakPerspectiveCamera(out.cam), (size, size),
                          vertex_colors=(colors[None] * tint).clamp(0, 1), light_dir=light,
                          ambient=0.35 + 0.15 * float(u(1)), diffuse=0.65, background=background)
        images = (res.images + 0.02 * n(b, 3, size, size)).clamp(0, 1)
        lmk = weak_perspective_project(fl.landmarks2d, out.cam)[..., :2]
    return SampleBatch(images=images.float(), target=out, landmarks=lmk)


def pretrain_losses(pred: EncoderOutput, batch: SampleBatch, flame: FlameLayer,
                    settings: PretrainSettings) -> dict[str, torch.Tensor]:
    """Landmark L1 in crop NDC + parameter losses (camera scale in log space) + the β/ψ prior
    ``||β||² + ||ψ||²`` (batch mean). Returns named scalars, each weighted by ``settings`` in ``total``."""
    t = batch.target
    fl = flame(pred.shape, pred.expression, pred.global_pose, pred.pose12())
    lmk = weak_perspective_project(fl.landmarks2d, pred.cam)[..., :2]
    l_lmk = (lmk - batch.landmarks).abs().mean()
    s_ratio = torch.log(pred.cam[:, 0].clamp(min=1e-6) / t.cam[:, 0])
    l_par = (F.mse_loss(pred.global_pose, t.global_pose) * 10 + F.mse_loss(pred.jaw_pose, t.jaw_pose) * 10
             + F.mse_loss(pred.expression[:, :10], t.expression[:, :10]) * 0.1
             + F.mse_loss(pred.shape, t.shape)
             + (s_ratio ** 2).mean() * 10
             + F.mse_loss(pred.cam[:, 1:] * t.cam[:, :1], t.cam[:, 1:] * t.cam[:, :1]) * 10)
    l_prior = pred.shape.pow(2).sum(dim=1).mean() + pred.expression.pow(2).sum(dim=1).mean()
    total = settings.w_landmarks * l_lmk + settings.w_params * l_par + settings.w_prior * l_prior
    return {"total": total, "landmarks": l_lmk, "params": l_par, "prior": l_prior}


def augment(batch: SampleBatch, settings: PretrainSettings, gen: torch.Generator) -> SampleBatch:
    """Random zoom ``k`` and shift ``d`` of the crop, with exactly updated targets, plus colour jitter.

    An image warp ``ndc' = k ndc + d`` maps the camera to ``s' = k s``, ``tx' = tx + dx / (k s)``,
    ``ty' = ty - dy / (k s)`` (weak perspective flips y) and the landmarks to ``k l + d``.
    """
    imgs = batch.images
    b, dev = imgs.shape[0], imgs.device

    def u(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=gen) * 2 - 1).to(dev)

    k = 1 + settings.scale_jitter * u(b)
    d = settings.shift_jitter * u(b, 2)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / k
    theta[:, :, 2] = -d / k[:, None]
    grid = F.affine_grid(theta, list(imgs.shape), align_corners=False)
    out = F.grid_sample(imgs, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    gain = 1 + 0.2 * u(b, 3, 1, 1)
    out = (out * gain + 0.08 * u(b, 1, 1, 1)).clamp(0, 1)
    t = batch.target
    cam = t.cam.clone()
    ks = (k.to(cam) * cam[:, 0])
    cam[:, 0] = ks
    cam[:, 1] = cam[:, 1] + d[:, 0].to(cam) / ks
    cam[:, 2] = cam[:, 2] - d[:, 1].to(cam) / ks
    target = EncoderOutput(shape=t.shape, expression=t.expression, global_pose=t.global_pose,
                           jaw_pose=t.jaw_pose, cam=cam)
    lmk = batch.landmarks * k[:, None, None].to(cam) + d[:, None, :].to(cam)
    return SampleBatch(images=out, target=target, landmarks=lmk)


def render_pool(flame: FlameLayer, colors: torch.Tensor, settings: PretrainSettings,
                gen: torch.Generator) -> SampleBatch:
    """Render ``settings.pool_size`` samples (in batches of ``settings.batch_size``)."""
    parts = []
    for _ in range(math.ceil(settings.pool_size / settings.batch_size)):
        parts.append(sample_batch(flame, colors, settings, gen))
    n = settings.pool_size
    return SampleBatch(images=torch.cat([p.images for p in parts])[:n],
                       target=EncoderOutput.cat([p.target for p in parts]).index(slice(0, n)),
                       landmarks=torch.cat([p.landmarks for p in parts])[:n])


def pretrain_builtin(flame: FlameLayer, settings: PretrainSettings | None = None,
                     model: BuiltinEncoder | None = None) -> tuple[BuiltinEncoder, dict[str, list[float]]]:
    """Train a :class:`BuiltinEncoder` on rendered faces of ``flame`` (needs a landmark embedding).

    With ``pool_size > 0`` a pool of faces is rendered once and every step draws a batch from it with random
    zoom/shift/colour augmentation (rendering dominates on CPU); ``pool_size = 0`` renders every batch afresh
    (better on a GPU). Runs on ``flame``'s device. Returns the model (eval mode) and per-step loss curves.
    """
    st = settings or PretrainSettings()
    if not flame.has_landmarks:
        raise NeufaceError("pretraining needs a FLAME layer with a landmark embedding")
    if st.steps < 1 or st.batch_size < 1 or st.pool_size < 0:
        raise NeufaceError("pretraining needs steps >= 1, batch_size >= 1 and pool_size >= 0")
    from neuface.synthetic.capture import vertex_colors  # face paint (lips, brows, eyes) located from the model

    dev = flame.v_template.device
    torch.manual_seed(st.seed)
    gen = torch.Generator().manual_seed(st.seed)
    if model is None:
        model = BuiltinEncoder({"n_shape": flame.n_shape, "n_exp": flame.n_exp, "cam_prior": typical_camera(flame)})
        model.reset_parameters(st.seed)
    model = model.to(dev).train()
    if st.channels_last:
        model.to_channels_last()
    with torch.no_grad():
        rest = flame(batch_size=1).landmarks2d[0]
    colors = vertex_colors(flame, rest, seed=st.seed).to(dev)
    t0 = time.perf_counter()
    pool = render_pool(flame, colors, st, gen) if st.pool_size > 0 else None
    if pool is not None:
        log.info("rendered a pool of %d faces in %.1f s", st.pool_size, time.perf_counter() - t0)
    opt = torch.optim.AdamW(model.parameters(), lr=st.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=st.lr, total_steps=st.steps, pct_start=0.15)
    history: dict[str, list[float]] = {"total": [], "landmarks": [], "params": [], "prior": []}
    for step in range(st.steps):
        if pool is None:
            batch = sample_batch(flame, colors, st, gen)
        else:
            idx = torch.randint(st.pool_size, (st.batch_size,), generator=gen).to(dev)
            batch = augment(SampleBatch(pool.images[idx], pool.target.index(idx), pool.landmarks[idx]), st, gen)
        losses = pretrain_losses(model(batch.images), batch, flame, st)
        if not torch.isfinite(losses["total"]):
            raise NeufaceError(f"pretraining diverged at step {step} (loss {losses['total'].item()})")
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        for k, v in losses.items():
            history[k].append(float(v.detach()))
        if step % max(1, st.steps // 10) == 0 or step == st.steps - 1:
            log.info("pretrain step %d/%d: total %.4f landmarks %.4f (NDC) params %.4f prior %.4f [%.0f s]",
                     step + 1, st.steps, history["total"][-1], history["landmarks"][-1], history["params"][-1],
                     history["prior"][-1], time.perf_counter() - t0)
    return model.eval(), history


def settings_record(settings: PretrainSettings) -> dict:
    """JSON-like dict of the settings (stored in the encoder file)."""
    return asdict(settings)
