"""The NeuFace optimisation step written the way the official loop writes it: the reference for step timings.

Written from the facts in DESIGN.md §3/§7 and a reading of the official code (never copied), on this package's
encoder and FLAME layer so the two steps differ only in how they are written, not in the model:

* encoder forward on the window's ``F·V`` crops; β of the batch's first image copied to every image with a
  Python loop of in-place row assignments;
* FLAME evaluated twice: posed (landmarks, projected with the weak-perspective camera) and again with the
  global rotation zeroed (the canonical mesh of the multi-view term);
* multi-view term, computed for monocular clips too (it is then 0): vertex normals of the posed mesh, cosine to
  the +z ray, zeroed below 0.28 or where z < −0.08, softmax over views of cos / 0.1 (zeros → −100) per frame, on
  ``spatial_sample`` random frames of the batch, one Python iteration per frame: L1 between each view's
  canonical mesh and the confidence-weighted merged mesh, which is **not** detached;
* temporal term: head-rotation quaternions, a Python loop over frames ``t ∈ [2, F−2)`` building the smoothed
  target as the normalised mean of ``q[t−2 : t+2]`` (not detached), per-component MSE summed over views;
* L1 landmark loss; weights 10 / 100 / 200; ``zero_grad`` → ``backward`` → Adam ``step``;
* ``torch.autograd`` anomaly detection on, as the official modules switch it on at import (``anomaly=False``
  measures the same step without it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neuface.fitting.data import images_to_input
from neuface.fitting.forward import head_quaternions
from neuface.flame import FlameLayer
from neuface.geometry.camera import weak_perspective_project
from neuface.geometry.mesh import vertex_normals

LAMBDA_2D, LAMBDA_TEMP, LAMBDA_VIEW = 10.0, 100.0, 200.0
COS_MIN, Z_MIN, TEMPERATURE = 0.28, -0.08, 0.1


def official_spatial_loss(canonical: torch.Tensor, posed: torch.Tensor, faces: torch.Tensor, n_views: int,
                          sample: torch.Tensor) -> torch.Tensor:
    """Multi-view term as the official loop computes it.

    Args:
        canonical: (F·V, N, 3) vertices with the global rotation zeroed, frame-major.
        posed: (F·V, N, 3) posed vertices (their normals give the view confidence).
        faces: (T, 3) mesh faces.
        n_views: V.
        sample: (S,) frame indices (the official loop draws 5 at random per batch).
    Returns:
        () mean over the sampled frames of the L1 between each view and the merged (not detached) mesh.
    """
    n = canonical.shape[1]
    verts = canonical.reshape(-1, n_views, n, 3)
    cos = vertex_normals(posed, faces)[..., 2]
    sim = cos.clone()
    sim[posed[..., 2] < Z_MIN] = 0
    sim[cos < COS_MIN] = 0
    sim = sim.reshape(-1, n_views, n)
    total = canonical.new_zeros(())
    for f in sample.tolist():
        s = sim[f].clone()
        s[s == 0] = -100.0
        w = torch.softmax(s / TEMPERATURE, dim=0)  # over views, per vertex
        merged = (verts[f] * w[..., None]).sum(dim=0)
        total = total + F.l1_loss(merged.expand_as(verts[f]), verts[f])
    return total / max(1, len(sample))


def official_temporal_loss(global_pose: torch.Tensor, n_views: int, half: int = 2) -> torch.Tensor:
    """Temporal term as the official loop computes it: (F·V, 3) axis-angle → () Σ_v mean_{f,c} (q − q̃)², with
    q̃[t] the normalised mean of ``q[t−half : t+half]`` for ``t ∈ [half, F−half)`` (q elsewhere)."""
    q = head_quaternions(global_pose).reshape(-1, n_views, 4)
    smooth = q.clone()
    for t in range(half, q.shape[0] - half):
        smooth[t] = F.normalize(q[t - half:t + half].mean(dim=0), dim=-1)
    return (q - smooth).square().mean(dim=(0, 2)).sum()


def official_loss(encoder, flame: FlameLayer, images: torch.Tensor, landmarks: torch.Tensor, n_views: int,
                  input_size: int, sample: torch.Tensor) -> torch.Tensor:
    """() total loss of one window: ``images`` (F·V, 3, S, S) uint8 and ``landmarks`` (F·V, 68, 2) crop NDC,
    frame-major."""
    out = encoder(images_to_input(images, input_size, images.device))
    shape = out.shape.clone()
    for i in range(1, shape.shape[0]):
        shape[i] = shape[0]
    n_s, n_e = flame.n_shape, flame.n_exp
    posed = flame(shape=shape[:, :n_s], expression=out.expression[:, :n_e], global_pose=out.global_pose,
                  pose=out.pose12())
    lmk = weak_perspective_project(posed.landmarks2d, out.cam)[..., :2]
    canonical = flame(shape=shape[:, :n_s], expression=out.expression[:, :n_e],
                      global_pose=torch.zeros_like(out.global_pose), pose=out.pose12()).vertices
    spatial = official_spatial_loss(canonical, posed.vertices, flame.faces, n_views, sample)
    temporal = official_temporal_loss(out.global_pose, n_views)
    data = (lmk - landmarks).abs().mean()
    return LAMBDA_VIEW * spatial + LAMBDA_TEMP * temporal + LAMBDA_2D * data


def official_step(encoder, flame: FlameLayer, images: torch.Tensor, landmarks: torch.Tensor, n_views: int,
                  optimizer: torch.optim.Optimizer, input_size: int, generator: torch.Generator,
                  spatial_sample: int = 5, anomaly: bool = True) -> float:
    """One Adam step of the official loop on one window; returns the loss (a host sync, as its logging does)."""
    n_frames = images.shape[0] // n_views
    sample = torch.randperm(n_frames, generator=generator)[:spatial_sample]
    with torch.autograd.set_detect_anomaly(anomaly):
        loss = official_loss(encoder, flame, images, landmarks, n_views, input_size, sample)
        optimizer.zero_grad()
        loss.backward()
    optimizer.step()
    return float(loss.detach())
