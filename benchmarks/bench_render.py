"""Renderer throughput (renders/s, CPU float32) next to a naive per-face rasterizer measured in the same run.

Mesh: a head-sized ellipsoid (UV sphere, 4970 vertices / 9936 faces, FLAME-sized), radii 7.5/10/8.5 cm.
Cases: the encoder pre-training renders (224x224, batch 16, weak perspective, as in DECA crops), the raw
rasterizer at that size, and the synthetic-video views (7 pinhole views at 512x512).

Reference: the straightforward pure-torch rasterizer (a Python loop over faces; each face tests its pixel
bounding box with vectorized torch ops and updates a z-buffer). It is timed on an evenly spread subset of the
faces of one image and its per-face time is extrapolated linearly to all faces of the batch (its cost is a
near-constant per-face overhead). It only rasterizes (no shading, no barycentric output), which favours it.
Its z-buffer result on the subset is checked against :func:`neuface.render.rasterize` first.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from neuface.geometry.camera import PinholeCamera, WeakPerspectiveCamera
from neuface.render import rasterize, render_mesh, uv_sphere

log = logging.getLogger("benchmarks.bench_render")

HEAD_RADII = (0.075, 0.10, 0.085)


def _head(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    verts, faces = uv_sphere(70, 72)
    verts = verts * torch.tensor(HEAD_RADII)
    return verts.expand(batch, -1, -1).contiguous(), faces


def _views(n: int, size: int) -> PinholeCamera:
    """n pinhole cameras 0.6 m from the origin, yaw spread over [-60, 60] degrees, looking at the origin."""
    yaw = torch.linspace(-math.pi / 3, math.pi / 3, n)
    centres = 0.6 * torch.stack([torch.sin(yaw), torch.zeros(n), torch.cos(yaw)], -1)
    z = -centres / centres.norm(dim=-1, keepdim=True)
    y = torch.tensor([0.0, -1.0, 0.0]).expand(n, 3)
    x = torch.cross(y, z, dim=-1)
    rot = torch.stack([x, y, z], 1)  # rows: camera axes in world coordinates
    t = -(rot @ centres[..., None])[..., 0]
    focal = 2.3 * size  # the head spans ~75% of the image
    k = torch.tensor([[focal, 0.0, size / 2 - 0.5], [0.0, focal, size / 2 - 0.5], [0.0, 0.0, 1.0]])
    return PinholeCamera(k.expand(n, 3, 3), rot, t)


def naive_rasterize(screen: torch.Tensor, faces: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Reference: loop over faces; (H, W) face index (-1 background) of one (V, 3) screen-space mesh."""
    zbuf = torch.full((h, w), math.inf)
    face_idx = torch.full((h, w), -1, dtype=torch.long)
    for f, corners in enumerate(faces.tolist()):
        tri = screen[corners]
        lo, hi = tri[:, :2].amin(0), tri[:, :2].amax(0)
        x0, y0 = max(math.ceil(lo[0]), 0), max(math.ceil(lo[1]), 0)
        x1, y1 = min(math.floor(hi[0]), w - 1), min(math.floor(hi[1]), h - 1)
        if x1 < x0 or y1 < y0:
            continue
        ys, xs = torch.meshgrid(torch.arange(y0, y1 + 1.0), torch.arange(x0, x1 + 1.0), indexing="ij")
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = tri.tolist()
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if area == 0:
            continue
        l0 = ((bx - xs) * (cy - ys) - (by - ys) * (cx - xs)) / area
        l1 = ((cx - xs) * (ay - ys) - (cy - ys) * (ax - xs)) / area
        l2 = 1.0 - l0 - l1
        z = l0 * az + l1 * bz + l2 * cz
        box = zbuf[y0:y1 + 1, x0:x1 + 1]
        closer = (l0 >= 0) & (l1 >= 0) & (l2 >= 0) & (z < box)
        box[closer] = z[closer]
        face_idx[y0:y1 + 1, x0:x1 + 1][closer] = f
    return face_idx


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up (twice: the allocator adapts to the large buffers over the first calls)
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _reference_renders_per_s(screen: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
                             n_faces: int) -> float:
    """Per-face loop on ``n_faces`` spread faces of image 0, extrapolated to all faces of the batch."""
    subset = faces[torch.linspace(0, faces.shape[0] - 1, n_faces).long()]
    ref = naive_rasterize(screen[0], subset, *size)
    ours = rasterize(screen[:1], subset, size).face_idx[0]
    agree = (ref == ours).float().mean().item()
    if agree < 0.999:
        raise RuntimeError(f"naive reference disagrees with rasterize on {100 * (1 - agree):.2f}% of pixels")
    per_face = _best_time(lambda: naive_rasterize(screen[0], subset, *size), 1) / n_faces
    return 1.0 / (per_face * faces.shape[0])


def run(quick: bool = False) -> list[dict]:
    """Rows ``{name, value, unit, reference, ratio}`` (renders/s; ratio = ours / naive per-face loop)."""
    repeats, n_ref = (1, 150) if quick else (5, 600)
    rows = []

    verts, faces = _head(16)
    cam = WeakPerspectiveCamera(torch.tensor([[7.0, 0.0, 0.0]]).expand(16, 3))
    size = (224, 224)
    screen = cam.to_screen(verts, size)
    ref = _reference_renders_per_s(screen, faces, size, n_ref)
    t_render = _best_time(lambda: render_mesh(verts, faces, cam, size), repeats)
    t_raster = _best_time(lambda: rasterize(screen, faces, size), repeats)
    for name, t in (("render_mesh", t_render), ("rasterize", t_raster)):
        value = 16 / t
        rows.append({"name": f"{name} 224x224 B=16 weak-persp 9936 faces cpu f32 (naive per-face ref)",
                     "value": value, "unit": "renders/s", "reference": ref, "ratio": value / ref})

    verts7, faces = _head(7)
    cams = _views(7, 512)
    size = (512, 512)
    ref = _reference_renders_per_s(cams.to_screen(verts7), faces, size, n_ref)
    t_views = _best_time(lambda: render_mesh(verts7, faces, cams, size), repeats)
    value = 7 / t_views
    rows.append({"name": "render_mesh 512x512 7 pinhole views 9936 faces cpu f32 (naive per-face ref)",
                 "value": value, "unit": "renders/s", "reference": ref, "ratio": value / ref})
    for row in rows:
        log.debug("%s", row)
    return rows
