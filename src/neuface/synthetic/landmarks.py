"""iBUG-68 landmarks on the synthetic head, in DECA's embedding layout (static / dynamic / full). NOT FLAME's.

The 68-point template is hand-built from average facial proportions, in model metres (frontal view, +x to
the subject's left = image right, +y up), and aligned with the synthetic head's own features (eye almonds,
mouth crease, nose profile) so that each point sits where that landmark sits on a face:

* the 51 inner points (iBUG 17..67) are placed by casting rays along -z onto the head surface (eyeballs
  excluded: eyelid landmarks live on the lids);
* the 17 contour points (iBUG 0..16) are silhouette points: for each integer yaw bin of DECA's table (bin
  ``y`` for yaw ``y`` in 0..39 degrees, bin ``39 - y`` for negative yaw, 79 bins) the head is turned by that
  yaw about +y and, along each contour direction of the template (seen from a face centre), the outermost
  point of the jaw/cheek region in the image is taken (a plane-mesh intersection, so points lie on faces
  with proper barycentric coordinates). Bin 0 (frontal) also gives the contour of the ``full`` landmarks.
"""

from __future__ import annotations

import numpy as np

from neuface.flame.model import LandmarkEmbedding
from neuface.synthetic import surface
from neuface.synthetic.head import HEAD_FACES, HeadMesh

NUM_YAW_BINS = 79
#: 3D point whose projection is the centre the contour directions are taken from.
CONTOUR_CENTRE = np.array([0.0, 0.0, 0.05])


def _eye(side: float) -> np.ndarray:
    """Points 36..41 (side=-1, image-left eye) or 42..47 (side=+1), on the rim of the eye almond."""
    cx, cy, hw, hh = surface.EYE_X * side, surface.EYE_Y, surface.EYE_HALF_WIDTH, surface.EYE_HALF_HEIGHT
    ex = np.array([-0.93, -0.45, 0.45, 0.93, 0.45, -0.45])  # from the image-left corner, clockwise
    up = np.array([0.0, 1.0, 1.0, 0.0, -1.0, -1.0])
    xs = cx + ex * hw
    ys = cy + 0.0004 * (1 - ex**2) + up * 0.92 * hh * np.sqrt(1 - ex**2)
    # Image-space order for both eyes: left corner, upper lid left to right, right corner, lower lid back.
    return np.stack([xs, ys], axis=1)


def ibug_template() -> np.ndarray:
    """(68, 2) frontal iBUG-68 template in model metres (x, y), hand-built for the synthetic head."""
    jaw_y = np.array([0.0, -0.017, -0.034, -0.050, -0.066, -0.081, -0.094, -0.105, -0.112])
    jaw_x = np.array([0.070, 0.069, 0.067, 0.063, 0.057, 0.048, 0.037, 0.021, 0.0])
    jaw = np.concatenate([np.stack([-jaw_x, jaw_y], 1), np.stack([jaw_x[-2::-1], jaw_y[-2::-1]], 1)])
    brow_x = np.array([0.057, 0.048, 0.038, 0.027, 0.016])
    brow_y = np.array([0.015, 0.0215, 0.0245, 0.024, 0.0205])
    brows = np.concatenate([np.stack([-brow_x, brow_y], 1), np.stack([brow_x[::-1], brow_y[::-1]], 1)])
    bridge = np.stack([np.zeros(4), np.array([0.008, -0.005, -0.019, -0.033])], 1)
    nostrils = np.array([[-0.0145, -0.0425], [-0.0075, -0.0455], [0.0, -0.0465], [0.0075, -0.0455],
                         [0.0145, -0.0425]])
    m = surface.MOUTH_Y
    outer = np.array([
        [-0.0255, m - 0.0025], [-0.0165, m + 0.0065], [-0.0065, m + 0.0095], [0.0, m + 0.0085],
        [0.0065, m + 0.0095], [0.0165, m + 0.0065], [0.0255, m - 0.0025], [0.0165, m - 0.0105],
        [0.0085, m - 0.0130], [0.0, m - 0.0135], [-0.0085, m - 0.0130], [-0.0165, m - 0.0105],
    ])
    inner = np.array([
        [-0.0205, m - 0.0018], [-0.0085, m + 0.0022], [0.0, m + 0.0022], [0.0085, m + 0.0022],
        [0.0205, m - 0.0018], [0.0085, m - 0.0026], [0.0, m - 0.0026], [-0.0085, m - 0.0026],
    ])
    tpl = np.concatenate([jaw, brows, bridge, nostrils, _eye(-1.0), _eye(1.0), outer, inner])
    return tpl.astype(np.float64)


def raycast_minus_z(verts: np.ndarray, faces: np.ndarray, xy: np.ndarray):
    """Cast rays from ``(x, y, +inf)`` along -z; keep the front-most hit.

    Args:
        verts: (V, 3); faces: (F, 3) the candidate triangles; xy: (N, 2).

    Returns:
        ``(face, bary, point)``: (N,) index into ``faces`` (-1 for a miss), (N, 3) barycentrics, (N, 3) hits.
    """
    tri = verts[faces][None]  # (1, F, 3, 3)
    p = xy[:, None, :]  # (N, 1, 2)
    a, b, c = tri[..., 0, :2], tri[..., 1, :2], tri[..., 2, :2]

    def cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    den = cross(b - a, c - a)
    den = np.where(np.abs(den) < 1e-18, np.nan, den)
    l1 = cross(p - a, c - a) / den
    l2 = cross(b - a, p - a) / den
    l0 = 1.0 - l1 - l2
    inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
    z = l0 * tri[..., 0, 2] + l1 * tri[..., 1, 2] + l2 * tri[..., 2, 2]
    z = np.where(inside, z, -np.inf)
    best = np.argmax(z, axis=1)
    rows = np.arange(xy.shape[0])
    hit = np.isfinite(z[rows, best])
    bary = np.stack([l0[rows, best], l1[rows, best], l2[rows, best]], axis=1)
    point = np.einsum("nk,nkd->nd", bary, verts[faces[best]])
    return np.where(hit, best, -1), bary, point


def yaw_of_bin(b: int) -> float:
    """Yaw in degrees of dynamic bin ``b`` (DECA: bin y for yaw y >= 0, bin 39 - y for yaw y < 0)."""
    return float(b) if b <= 39 else float(39 - b)


def rot_y(deg: float) -> np.ndarray:
    """Rotation by ``deg`` about +y; DECA's yaw ``atan2(-R[2,0], sqrt(R00^2 + R10^2))`` of it is ``deg``."""
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def contour_faces(mesh: HeadMesh) -> np.ndarray:
    """Indices of the head triangles that may carry a contour landmark: cheeks, jaw and chin, no neck/ears."""
    v = mesh.vertices
    labels = surface.component_labels(v)
    ok = (labels != 2) & (v[:, 2] > 0.004) & (v[:, 1] < 0.012) & (v[:, 1] > -0.14)
    face_ok = ok[mesh.faces].all(axis=1)
    face_ok[HEAD_FACES:] = False
    return np.nonzero(face_ok)[0]


def contour_for_rotation(mesh: HeadMesh, R: np.ndarray, cand: np.ndarray, dirs: np.ndarray):
    """Silhouette contour points of the head turned by ``R``.

    For each image direction ``dirs[k]`` from the projected :data:`CONTOUR_CENTRE`, the candidate faces cut
    by the view plane through that half-line are found (from vertex signs), each cut is represented by the
    midpoint of its segment, and the cut farthest along the direction wins.

    Args:
        cand: candidate face indices (from :func:`contour_faces`); dirs: (K, 2) unit image-plane directions.

    Returns:
        ``(faces (K,), bary (K, 3))`` on the un-rotated mesh.
    """
    faces = mesh.faces[cand]
    used, local = np.unique(faces, return_inverse=True)
    local = local.reshape(faces.shape)
    rel = (mesh.vertices[used] @ R.T)[:, :2] - (R @ CONTOUR_CENTRE)[:2]  # (U, 2)
    perp = np.stack([-dirs[:, 1], dirs[:, 0]], axis=1)
    sv = perp @ rel.T  # (K, U) signed distance to each view plane
    sv = np.where(np.abs(sv) < 1e-12, 1e-12, sv)  # a vertex exactly on the plane counts as on its + side
    tv = dirs @ rel.T  # (K, U) position along each direction
    pos = sv[:, local] > 0  # (K, C, 3)
    kk, cc = np.nonzero(pos.any(axis=2) & ~pos.all(axis=2))
    s = sv[kk[:, None], local[cc]]  # (M, 3)
    t = tv[kk[:, None], local[cc]]
    bary = np.zeros(s.shape)
    eye3 = np.eye(3)
    for i0, i1 in ((0, 1), (1, 2), (2, 0)):
        sa, sb = s[:, i0], s[:, i1]
        cross = sa * sb < 0
        lam = np.where(cross, sa / np.where(cross, sa - sb, 1.0), 0.0)
        bary += cross[:, None] * ((1.0 - lam)[:, None] * eye3[i0] + lam[:, None] * eye3[i1])
    bary *= 0.5  # two edges are cut: the midpoint of the cut segment
    along = (bary * t).sum(axis=1)
    out_f = np.full(dirs.shape[0], -1, dtype=np.int64)
    out_b = np.zeros((dirs.shape[0], 3))
    best = np.full(dirs.shape[0], -np.inf)
    order = np.lexsort((along, kk))  # per k, ascending along: the last entry of each k wins
    last = np.ones(order.size, dtype=bool)
    last[:-1] = kk[order][1:] != kk[order][:-1]
    for m in order[last]:
        if along[m] > 0:
            out_f[kk[m]], out_b[kk[m]], best[kk[m]] = cand[cc[m]], bary[m], along[m]
    if (out_f < 0).any():
        raise RuntimeError("a contour direction found no silhouette point on the synthetic head")
    return out_f, out_b


def build_embedding(mesh: HeadMesh) -> LandmarkEmbedding:
    """The DECA-layout landmark embedding of the synthetic head."""
    tpl = ibug_template()
    head_faces = mesh.faces[:HEAD_FACES]
    face, bary, _ = raycast_minus_z(mesh.vertices, head_faces, tpl[17:])
    if (face < 0).any():
        raise RuntimeError(f"inner landmarks {np.nonzero(face < 0)[0] + 17} missed the synthetic head")
    cand = contour_faces(mesh)
    c2 = CONTOUR_CENTRE[:2]
    dirs = tpl[:17] - c2
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dyn_f = np.zeros((NUM_YAW_BINS, 17), dtype=np.int64)
    dyn_b = np.zeros((NUM_YAW_BINS, 17, 3))
    for b in range(NUM_YAW_BINS):
        dyn_f[b], dyn_b[b] = contour_for_rotation(mesh, rot_y(yaw_of_bin(b)), cand, dirs)
    emb = LandmarkEmbedding(
        static_lmk_faces_idx=face.astype(np.int64),
        static_lmk_bary_coords=bary.astype(np.float64),
        dynamic_lmk_faces_idx=dyn_f,
        dynamic_lmk_bary_coords=dyn_b,
        full_lmk_faces_idx=np.concatenate([dyn_f[0], face]).astype(np.int64),
        full_lmk_bary_coords=np.concatenate([dyn_b[0], bary]).astype(np.float64),
    )
    return emb.validate(num_faces=mesh.faces.shape[0])
