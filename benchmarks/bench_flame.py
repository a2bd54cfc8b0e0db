"""FlameLayer throughput (meshes/s, forward+backward) on CPU float32 at batch 140, next to a naive reference.

Model: a random FLAME-sized model (5023 vertices, 9976 faces, 400 shapedirs columns, 36 posedirs, 5 joints)
with a random DECA-layout landmark embedding; 100 shape + 50 expression coefficients, as in the paper.
Reference, measured in the same run: the textbook smplx/DECA-style LBS (einsum blend shapes, a full 4×4 matrix
per vertex, homogeneous coordinates) plus landmarks, evaluated one sample at a time — what a straightforward
per-frame implementation does. Its per-mesh time is measured on fewer samples and reported as meshes/s.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from neuface.dataset.fake import random_landmark_embedding
from neuface.flame import FlameLayer, FlameModel, LandmarkEmbedding, batch_rodrigues, dynamic_contour

log = logging.getLogger("benchmarks.bench_flame")

N_VERTS, N_FACES, N_COLS, N_SHAPE, N_EXP = 5023, 9976, 400, 100, 50
BATCH = 140


def flame_sized_model(seed: int = 0) -> tuple[FlameModel, LandmarkEmbedding]:
    rng = np.random.default_rng(seed)
    j_reg = rng.random((5, N_VERTS)) * (rng.random((5, N_VERTS)) < 0.01)
    j_reg[:, 0] += 1e-3
    weights = rng.random((N_VERTS, 5)) ** 4
    model = FlameModel(
        v_template=rng.uniform(-0.1, 0.1, (N_VERTS, 3)),
        faces=rng.integers(0, N_VERTS, (N_FACES, 3)),
        shapedirs=1e-3 * rng.normal(size=(N_VERTS, 3, N_COLS)),
        posedirs=1e-3 * rng.normal(size=(N_VERTS, 3, 36)),
        J_regressor=j_reg / j_reg.sum(1, keepdims=True),
        weights=weights / weights.sum(1, keepdims=True),
        parents=np.array([-1, 0, 1, 1, 1]),
        num_shape_total=300,
    )
    return model, random_landmark_embedding(N_FACES, rng)


def _inputs(batch: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, N_SHAPE, generator=g).requires_grad_(),
        torch.randn(batch, N_EXP, generator=g).requires_grad_(),
        (0.3 * torch.randn(batch, 3, generator=g)).requires_grad_(),
        (0.1 * torch.randn(batch, 12, generator=g)).requires_grad_(),
    ]


def naive_flame_one(layer: FlameLayer, shape, expression, global_pose, pose):
    """Reference for ONE sample (leading dim 1), smplx/DECA-style math with per-vertex 4×4 matrices."""
    parents = layer.parents.tolist()
    betas = torch.cat([shape, expression], dim=1)
    full_pose = torch.cat([global_pose, pose], dim=1).view(1, 5, 3)
    v_shaped = layer.v_template + torch.einsum("bl,mkl->bmk", betas, layer.shapedirs)
    joints = torch.einsum("bik,ji->bjk", v_shaped, layer.J_regressor)
    rot = batch_rodrigues(full_pose.view(-1, 3)).view(1, 5, 3, 3)
    feature = (rot[:, 1:] - torch.eye(3)).view(1, -1)
    posedirs = layer.posedirs.reshape(-1, 36).T  # (P, V*3), as smplx stores it
    v_posed = v_shaped + (feature @ posedirs).view(1, -1, 3)
    rel = joints.clone()
    rel[:, 1:] -= joints[:, parents[1:]]
    local = torch.zeros(1, 5, 4, 4)
    local[:, :, :3, :3] = rot
    local[:, :, :3, 3] = rel
    local[:, :, 3, 3] = 1.0
    chain = [local[:, 0]]
    for i in range(1, 5):
        chain.append(chain[parents[i]] @ local[:, i])
    world = torch.stack(chain, dim=1)
    hom_joints = torch.cat([joints, torch.zeros(1, 5, 1)], dim=-1)[..., None]
    skin = world - torch.nn.functional.pad(world @ hom_joints, [3, 0])
    per_vertex = (layer.lbs_weights @ skin.view(1, 5, 16)).view(1, -1, 4, 4)
    hom = torch.cat([v_posed, torch.ones(1, v_posed.shape[1], 1)], dim=2)
    verts = (per_vertex @ hom[..., None])[:, :, :3, 0]
    dyn_faces, dyn_bary = dynamic_contour(rot, layer.dynamic_lmk_faces_idx, layer.dynamic_lmk_bary_coords)
    idx = torch.cat([dyn_faces, layer.static_lmk_faces_idx[None]], dim=1)[0]
    bary = torch.cat([dyn_bary, layer.static_lmk_bary_coords[None]], dim=1)[0]
    lmk2d = torch.einsum("lfi,lf->li", verts[0][layer.faces[idx]], bary)[None]
    full_corners = verts[0][layer.faces[layer.full_lmk_faces_idx]]
    lmk3d = torch.einsum("lfi,lf->li", full_corners, layer.full_lmk_bary_coords)
    return verts, lmk2d, lmk3d[None]


def _loss(verts: torch.Tensor, lmk2d: torch.Tensor, lmk3d: torch.Tensor) -> torch.Tensor:
    return verts.square().mean() + lmk2d.square().mean() + lmk3d.square().mean()


def _interleaved_best(fast, slow, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` wall time of each, alternating the two so that load changes hit both."""
    fast()  # warm-up
    slow()
    best_fast = best_slow = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fast()
        t1 = time.perf_counter()
        slow()
        t2 = time.perf_counter()
        best_fast, best_slow = min(best_fast, t1 - t0), min(best_slow, t2 - t1)
    return best_fast, best_slow


def run(quick: bool = False) -> list[dict]:
    """Rows ``{name, value, unit, reference, ratio}`` (meshes/s; ratio = layer / naive reference)."""
    model, emb = flame_sized_model()
    layer = FlameLayer(model, emb, n_shape=N_SHAPE, n_exp=N_EXP, dtype=torch.float32)
    batch = 20 if quick else BATCH
    n_ref = 5 if quick else 20
    repeats = 2 if quick else 7
    inputs = _inputs(batch)

    def layer_fwd_bwd() -> None:
        out = layer(*inputs)
        _loss(out.vertices, out.landmarks2d, out.landmarks3d).backward()

    def layer_fwd() -> None:
        with torch.no_grad():
            layer(*inputs)

    def naive(backward: bool) -> None:
        for b in range(n_ref):
            one = [x[b : b + 1] for x in inputs]
            if backward:
                _loss(*naive_flame_one(layer, *one)).backward()
            else:
                with torch.no_grad():
                    naive_flame_one(layer, *one)

    # the reference computes the same function (sanity check, float32)
    with torch.no_grad():
        out = layer(*[x[:2] for x in inputs])
        ref = naive_flame_one(layer, *[x[:1] for x in inputs])
    err = max(
        (out.vertices[:1] - ref[0]).abs().max().item(), (out.landmarks2d[:1] - ref[1]).abs().max().item()
    )
    if err > 1e-4:
        raise RuntimeError(f"naive reference disagrees with FlameLayer by {err:.3g}")

    rows = []
    for label, fast, slow in (
        ("forward+backward", layer_fwd_bwd, lambda: naive(True)),
        ("forward", layer_fwd, lambda: naive(False)),
    ):
        t_fast, t_slow = _interleaved_best(fast, slow, repeats)
        value, reference = batch / t_fast, n_ref / t_slow
        rows.append({
            "name": f"FlameLayer {label} B={batch} cpu float32 (naive per-sample ref)",
            "value": value, "unit": "meshes/s", "reference": reference, "ratio": value / reference,
        })
    return rows


if __name__ == "__main__":
    from neuface.logs import setup_logging

    setup_logging(0)
    log.info("torch %s, %d threads", torch.__version__, torch.get_num_threads())
    for row in run():
        log.info(
            "%-64s %10.1f %s  reference %10.1f  ratio %.2f",
            row["name"], row["value"], row["unit"], row["reference"], row["ratio"],
        )
