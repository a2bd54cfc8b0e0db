"""Render synthetic face videos with known ground truth (``neuface synth``).

A :class:`~neuface.synthetic.motion.MotionParams` sequence is posed with a
:class:`~neuface.flame.layer.FlameLayer`, seen by every view of a :class:`~neuface.synthetic.rig.ViewRig`
(weak perspective, full-frame NDC), rasterized with Lambert shading over a textured background, and encoded as
one H.264 MP4 per view. The ground truth (parameters per frame and view, projected 68 landmarks in pixels) is
saved next to it as ``.npz``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from tqdm import tqdm

from neuface.geometry.camera import WeakPerspectiveCamera
from neuface.io_utils import atomic_path
from neuface.synthetic.motion import MotionParams
from neuface.synthetic.rig import ViewRig

log = logging.getLogger(__name__)

SKIN = (0.80, 0.62, 0.52)
LIPS = (0.66, 0.33, 0.33)
BROWS = (0.30, 0.22, 0.17)
SCLERA = (0.93, 0.93, 0.90)
IRIS = (0.18, 0.12, 0.08)


@dataclass
class Capture:
    """Rendered views and their ground truth.

    Attributes:
        frames: (V, F, H, W, 3) uint8 RGB.
        global_pose: (F, V, 3) per-view head rotation.
        cams: (F, V, 3) per-view weak-perspective camera in full-frame NDC.
        landmarks: (F, V, 68, 2) projected landmarks in pixels.
    """

    frames: np.ndarray
    global_pose: np.ndarray
    cams: np.ndarray
    landmarks: np.ndarray


def vertex_colors(flame, rest_landmarks: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Skin-toned per-vertex colours with darker brows, red lips and eyes (sclera + iris).

    Regions are found from the model itself: lips/brows as the vertices near the rest-pose landmarks 48–67 /
    17–26, eyes as the vertices skinned to the eye joints. Returns (V, 3) in [0, 1].
    """
    verts = flame.v_template
    dtype = verts.dtype
    gen = torch.Generator().manual_seed(seed)
    colors = torch.tensor(SKIN, dtype=dtype).expand_as(verts).clone()
    colors = colors * (1.0 + 0.04 * torch.randn(verts.shape[0], 1, generator=gen, dtype=dtype))

    def near(points: torch.Tensor, radius: float) -> torch.Tensor:
        return torch.cdist(verts, points).amin(dim=1) < radius

    colors[near(rest_landmarks[17:27], 0.006)] = torch.tensor(BROWS, dtype=dtype)
    colors[near(rest_landmarks[48:68], 0.005)] = torch.tensor(LIPS, dtype=dtype)
    eye_weight = flame.lbs_weights[:, 3:5].sum(dim=1)
    eyes = eye_weight > 0.5
    colors[eyes] = torch.tensor(SCLERA, dtype=dtype)
    for joint in (3, 4):
        members = flame.lbs_weights[:, joint] > 0.5
        if members.any():
            z = verts[members, 2]
            front = members.clone()
            front[members] = z > z.max() - 0.35 * (z.max() - z.min())
            colors[front] = torch.tensor(IRIS, dtype=dtype)
    return colors.clamp(0, 1)


def background(size: int, seed: int) -> torch.Tensor:
    """A smooth colour gradient with low-frequency texture: (3, size, size) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(2, 3, 1, 1, generator=gen) * 0.6 + 0.2
    ramp = torch.linspace(0, 1, size)[None, :, None]
    image = base[0] * (1 - ramp) + base[1] * ramp
    texture = torch.nn.functional.interpolate(torch.rand(1, 1, 8, 8, generator=gen), size=(size, size),
                                              mode="bicubic", align_corners=False)[0]
    return (image + 0.15 * (texture - 0.5)).clamp(0, 1)


def render_capture(flame, motion: MotionParams, rig: ViewRig, size: int, seed: int = 0,
                   chunk: int = 16) -> Capture:
    """Render every frame of every view of ``motion``; see :class:`Capture` for shapes."""
    from neuface.render import render_mesh

    dtype = flame.v_template.dtype
    n_f, n_v = motion.n_frames, len(rig.names)
    view_pose = rig.view_global_pose(motion.global_pose)  # (F, V, 3)
    cams = np.broadcast_to(rig.cams[None], (n_f, n_v, 3)).copy()
    with torch.no_grad():
        rest = flame(shape=torch.as_tensor(motion.shape[None, : flame.n_shape], dtype=dtype))
        colors = vertex_colors(flame, rest.landmarks3d[0], seed=seed)
    bg = background(size, seed)
    frames = np.empty((n_v, n_f, size, size, 3), dtype=np.uint8)
    landmarks = np.empty((n_f, n_v, 68, 2))
    flat = [(f, v) for f in range(n_f) for v in range(n_v)]
    for start in tqdm(range(0, len(flat), chunk), desc="render", unit="chunk", leave=False):
        idx = flat[start: start + chunk]
        fi = torch.tensor([f for f, _ in idx])
        vi = torch.tensor([v for _, v in idx])
        b = len(idx)
        with torch.no_grad():
            out = flame(
                shape=torch.as_tensor(motion.shape[: flame.n_shape], dtype=dtype).expand(b, -1),
                expression=torch.as_tensor(motion.expression[:, : flame.n_exp], dtype=dtype)[fi],
                global_pose=torch.as_tensor(view_pose, dtype=dtype)[fi, vi],
                pose=torch.as_tensor(motion.pose, dtype=dtype)[fi],
            )
            camera = WeakPerspectiveCamera(torch.as_tensor(cams, dtype=dtype)[fi, vi])
            result = render_mesh(out.vertices, flame.faces, camera, (size, size),
                                 vertex_colors=colors, background=bg.to(dtype).expand(b, -1, -1, -1))
            lmk = camera.to_screen(out.landmarks2d, (size, size))[..., :2]
        images = (result.images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for k, (f, v) in enumerate(idx):
            frames[v, f] = images[k]
            landmarks[f, v] = lmk[k].numpy()
    return Capture(frames=frames, global_pose=view_pose, cams=cams, landmarks=landmarks)


def write_mp4(frames: np.ndarray, path: str | Path, fps: float, crf: int = 18) -> Path:
    """Encode (F, H, W, 3) uint8 RGB frames as H.264 MP4 (yuv420p) at ``path``, atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def save_ground_truth(path: str | Path, motion: MotionParams, rig: ViewRig, capture: Capture,
                      image_size: int, model_sha256: str) -> Path:
    """Write the ground truth of a capture as ``.npz`` (atomic). Keys are documented in the README."""
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            shape=motion.shape, expression=motion.expression, pose=motion.pose,
            head_pose=motion.global_pose, global_pose=capture.global_pose, cam=capture.cams,
            landmarks=capture.landmarks.astype(np.float32), views=np.array(rig.names),
            fps=np.float64(motion.fps), image_size=np.int64(image_size), flame_sha256=np.array(model_sha256),
        )
    return Path(path)
