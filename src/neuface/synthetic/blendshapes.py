"""Identity and expression blendshapes of the synthetic head (FLAME's ``shapedirs`` layout, NOT FLAME's).

``shapedirs`` is (5023, 3, 400): columns 0..299 identity, 300..399 expression. Like a PCA basis, the columns
are mutually orthogonal (Gram-Schmidt in column order, so the first, hand-designed ones keep their meaning)
and scaled to decreasing sizes, so that coefficients ~ N(0, 1) give plausible variation:

* identity: overall size, head width / depth, face length, nose size, jaw width, chin, forehead, cheekbones,
  eye spacing, lips, nose width, brows, mouth width, ears, then random smooth fields (sums of a few broad
  Gaussian bumps with random 3D directions, from the seed). Column 0 moves vertices by up to 8 mm (sizes
  :data:`IDENTITY_SIZES`), the random columns from 2 mm down to ~7 micrometres (column 299).
* expression: mouth open, smile, pucker, brow raise, brow furrow, eyes close, squint, cheek puff, lip
  corners down, mouth stretch, upper-lip raise, lower-lip depress, jaw sideways, mouth sideways, nose
  wrinkle, lip press (sizes :data:`EXPRESSION_SIZES`, 3-9 mm per unit), then random local smooth fields on
  the face (from the seed), 2 mm down to ~0.05 mm. Expression columns are orthogonal to each other, not to
  the identity columns.

Eyeballs move rigidly with the identity fields' value at their centre (so they stay spheres) and do not
move with expressions (gaze is the eye joints' job).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from neuface.synthetic import surface
from neuface.synthetic.head import HEAD_VERTICES, HeadMesh
from neuface.synthetic.rigging import jaw_region

NUM_IDENTITY = 300
NUM_EXPRESSION = 100
#: Largest vertex displacement (metres per unit coefficient) of the hand-designed identity columns.
IDENTITY_SIZES = np.array(
    [0.008, 0.005, 0.005, 0.004, 0.004, 0.004, 0.003, 0.003, 0.003, 0.0025, 0.0025, 0.0025, 0.002, 0.002, 0.002]
)
#: Largest vertex displacement (metres per unit coefficient) of the hand-designed expression columns.
EXPRESSION_SIZES = np.array(
    [0.006, 0.005, 0.005, 0.005, 0.004, 0.009, 0.004, 0.005, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.003, 0.003]
)
M = surface.MOUTH_Y
EX = surface.EYE_X


def _g(p: np.ndarray, c, s) -> np.ndarray:
    """Anisotropic Gaussian ``(N,)``; ``c`` and ``s`` may use ``None`` for an ignored axis."""
    out = np.zeros(len(p))
    for k in range(3):
        if c[k] is not None:
            out += ((p[:, k] - c[k]) / s[k]) ** 2
    return np.exp(-0.5 * out)


def _pair(p: np.ndarray, x: float, y: float, sx: float, sy: float, z=None, sz=None) -> np.ndarray:
    """A Gaussian mirrored on both sides of the face (at ``+-x``)."""
    ax = np.abs(p)
    ax[:, 1:] = p[:, 1:]
    return _g(ax, (x, y, z), (sx, sy, sz))


def _vec(*cols) -> np.ndarray:
    return np.stack(np.broadcast_arrays(*cols), axis=1).astype(np.float64)


def _front(p: np.ndarray) -> np.ndarray:
    return np.clip((p[:, 2] - 0.02) / 0.04, 0.0, 1.0)


def identity_fields(p: np.ndarray, n: np.ndarray) -> list[np.ndarray]:
    """Hand-designed identity displacement fields at points ``p`` (N, 3) with normals ``n`` (N, 3)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    zero = np.zeros(len(p))
    sgn = np.tanh(x / 0.01)
    fr = _front(p)
    lower = 1.0 / (1.0 + np.exp((y + 0.02) / 0.01))  # below the cheekbones
    nose = _g(p, (0.0, -0.02, None), (0.008, 0.02, None)) * fr
    return [
        p - np.array([0.0, -0.02, 0.0]),  # overall size
        _vec(x, zero, zero),  # head width
        _vec(zero, np.minimum(y + 0.01, 0.0), zero),  # face length
        _vec(zero, zero, z + 0.01),  # head depth
        _vec(zero, -0.3 * nose, nose),  # nose size
        _vec(x * lower, zero, zero),  # jaw width
        _vec(zero, -0.3, 1.0) * (_g(p, (0.0, -0.105, None), (0.018, 0.012, None)) * fr)[:, None],  # chin
        _vec(zero, zero, np.maximum(y - 0.02, 0.0)) * fr[:, None],  # forehead slope
        n * _pair(p, 0.045, -0.02, 0.014, 0.012)[:, None],  # cheekbones
        _vec(sgn, zero, zero) * _pair(p, EX, 0.0, 0.018, 0.016)[:, None],  # eye spacing
        n * _g(p, (0.0, M, None), (0.022, 0.008, None))[:, None] * fr[:, None],  # lip thickness
        _vec(x, zero, zero) * (_g(p, (0.0, -0.04, None), (0.014, 0.008, None)) * fr)[:, None],  # nose width
        n * _pair(p, 0.032, 0.022, 0.018, 0.007)[:, None] * fr[:, None],  # brow ridge
        _vec(x, zero, zero) * _g(p, (0.0, M, None), (0.025, 0.008, None))[:, None] * fr[:, None],  # mouth w
        n * _pair(p, 0.08, -0.008, 0.02, 0.022, -0.012, 0.02)[:, None],  # ears
    ]


def expression_fields(p: np.ndarray, n: np.ndarray) -> list[np.ndarray]:
    """Hand-designed expression displacement fields (same arguments as :func:`identity_fields`)."""
    x, y = p[:, 0], p[:, 1]
    zero = np.zeros(len(p))
    sgn = np.tanh(x / 0.006)
    fr = _front(p)[:, None]
    jaw = (jaw_region(p) * _g(p, (0.0, -0.09, None), (0.045, 0.04, None)))[:, None]
    upper_lip = _g(p, (0.0, M + 0.006, None), (0.02, 0.005, None))[:, None] * fr
    lower_lip = _g(p, (0.0, M - 0.007, None), (0.02, 0.006, None))[:, None] * fr
    lips = _g(p, (0.0, M, None), (0.024, 0.011, None))[:, None] * fr
    corners = _pair(p, 0.026, M, 0.009, 0.008)[:, None] * fr
    cheeks = _pair(p, 0.036, -0.045, 0.015, 0.014)[:, None] * fr
    brows = _pair(p, 0.03, 0.022, 0.022, 0.011)[:, None] * fr
    inner_brows = _pair(p, 0.013, 0.02, 0.01, 0.009)[:, None] * fr
    lids = _pair(p, EX, surface.EYE_Y + 0.001, 0.012, 0.006)[:, None] * fr
    lower_lids = _pair(p, EX, surface.EYE_Y - 0.009, 0.015, 0.007)[:, None] * fr
    nose_top = _g(p, (0.0, -0.005, None), (0.012, 0.012, None))[:, None] * fr
    return [
        jaw * _vec(zero, -1.0, -0.25) + 0.25 * upper_lip * _vec(zero, 1.0, zero),  # mouth open
        corners * _vec(0.6 * sgn, 0.8, -0.25) + 0.4 * cheeks * _vec(zero, 0.8, 0.4),  # smile
        lips * _vec(-x / 0.025, zero, 1.0),  # pucker
        brows * _vec(zero, 1.0, 0.1),  # brow raise
        inner_brows * _vec(-0.6 * sgn, -0.6, 0.2),  # brow furrow
        lids * _vec(zero, -0.5, 1.0) + 0.1 * lower_lids * _vec(zero, 1.0, zero),  # eyes close (lids over)
        lower_lids * _vec(zero, 0.8, 0.2) + 0.5 * cheeks * _vec(zero, 0.6, 0.3),  # squint
        _pair(p, 0.042, -0.062, 0.015, 0.016)[:, None] * fr * n,  # cheek puff
        corners * _vec(0.1 * sgn, -1.0, zero),  # lip corners down
        corners * _vec(sgn, -0.2, -0.3),  # mouth stretch
        upper_lip * _vec(zero, 1.0, 0.2) + 0.4 * _pair(p, 0.015, -0.04, 0.006, 0.006)[:, None] * fr * _vec(
            zero, 1.0, zero
        ),  # upper-lip raise
        lower_lip * _vec(zero, -1.0, 0.15),  # lower-lip depress
        jaw * _vec(1.0, zero, zero),  # jaw sideways
        lips * _vec(1.0, zero, zero),  # mouth sideways
        nose_top * _vec(zero, 0.4, -0.6),  # nose wrinkle
        lips * _vec(zero, -np.clip((y - M) / 0.008, -1.0, 1.0), zero),  # lip press
    ]


def _random_fields(rng: np.random.Generator, p: np.ndarray, centres: np.ndarray, count: int,
                   sigma: tuple[float, float], bumps: int) -> list[np.ndarray]:
    out = []
    for _ in range(count):
        c = centres[rng.integers(0, len(centres), size=bumps)]
        s = rng.uniform(sigma[0], sigma[1], size=bumps)
        a = rng.standard_normal((bumps, 3))
        d2 = ((p[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        out.append(np.exp(-0.5 * d2 / s[None, :] ** 2) @ a)
    return out


def _evaluate(fields_fn, mesh: HeadMesh, normals: np.ndarray, extra: list[np.ndarray],
              move_eyes: bool) -> list[np.ndarray]:
    """Evaluate on the head vertices and the eye centres; eyeballs follow their centre rigidly if
    ``move_eyes``, else stay still (expressions: the eyes have their own joints)."""
    head_p = mesh.vertices[:HEAD_VERTICES]
    pts = np.concatenate([head_p, mesh.eye_centres])
    nrm = np.concatenate([normals[:HEAD_VERTICES], np.tile([[0.0, 0.0, 1.0]], (2, 1))])
    cols = fields_fn(pts, nrm) + extra
    out = []
    for f in cols:
        full = np.zeros_like(mesh.vertices)
        full[:HEAD_VERTICES] = f[:HEAD_VERTICES]
        for side in range(2 if move_eyes else 0):
            full[mesh.eye_slice(side)] = f[HEAD_VERTICES + side]
        out.append(full)
    return out


def _orthogonal_basis(cols: list[np.ndarray], max_disp: np.ndarray) -> np.ndarray:
    """Gram-Schmidt in column order (Cholesky-QR, twice), each column scaled to ``max_disp``: (V, 3, K).

    The triangular factor has a positive diagonal, so every column keeps the orientation of its field.
    """
    q = np.stack([c.reshape(-1) for c in cols], axis=1)
    q[np.abs(q) < 1e-100] = 0.0  # far tails of the Gaussians: no denormals (they make BLAS crawl)
    for _ in range(2):
        r = np.linalg.cholesky(q.T @ q).T  # upper triangular, q = q_new @ r
        q = solve_triangular(r, q.T, trans="T", lower=False).T
    q = q.reshape(-1, 3, q.shape[1])
    peak = np.linalg.norm(q, axis=1).max(axis=0)
    return q * (max_disp / peak)[None, None, :]


def build_shapedirs(mesh: HeadMesh, normals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(5023, 3, 400) shapedirs: identity columns then expression columns."""
    head_p = mesh.vertices[:HEAD_VERTICES]
    pts = np.concatenate([head_p, mesh.eye_centres])
    n_id_hand = len(identity_fields(pts[:1], normals[:1]))
    id_rand = _random_fields(rng, pts, head_p, NUM_IDENTITY - n_id_hand, (0.025, 0.07), 3)
    ident = _evaluate(identity_fields, mesh, normals, id_rand, move_eyes=True)
    face = head_p[(head_p[:, 2] > 0.03) & (head_p[:, 1] > -0.125) & (head_p[:, 1] < 0.05)]
    n_ex_hand = len(expression_fields(pts[:1], normals[:1]))
    ex_rand = [f * _front(pts)[:, None] for f in _random_fields(rng, pts, face, NUM_EXPRESSION - n_ex_hand,
                                                                (0.008, 0.025), 2)]
    expr = _evaluate(expression_fields, mesh, normals, ex_rand, move_eyes=False)
    id_scale = 0.002 * (1.0 + np.arange(NUM_IDENTITY) - n_id_hand).clip(1.0) ** -1.0
    id_scale[:n_id_hand] = IDENTITY_SIZES
    ex_scale = 0.002 * (1.0 + np.arange(NUM_EXPRESSION) - n_ex_hand).clip(1.0) ** -0.8
    ex_scale[:n_ex_hand] = EXPRESSION_SIZES
    return np.concatenate([_orthogonal_basis(ident, id_scale), _orthogonal_basis(expr, ex_scale)], axis=2)
