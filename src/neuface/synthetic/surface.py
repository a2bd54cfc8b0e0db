"""The synthetic head surface: a smooth implicit base shape plus hand-placed facial features.

This is **not FLAME** and is not derived from any scanned data: it is an analytic toy head, built so that the
kit has FLAME's exact file layout and a face-like shape for tests and the demo.

Construction (all lengths in metres, conventions of :mod:`neuface.geometry`):

1. A base field ``f(p) < 0`` inside: the smooth union of a cranium (a superellipsoid flattened at the front),
   a tapered lower face (jaw, chin) and an elliptic neck cylinder capped inside the head.
2. Surface points are found along rays from a centre ``C`` (star-shaped parametrization): direction
   ``d(theta, phi) = (sin t sin p, cos t, sin t cos p)`` with ``theta`` down from the crown and ``phi`` around
   the vertical axis (``phi = 0`` looks at the face), by marching from outside and bisecting.
3. Facial features (nose, brows, eye sockets, cheekbones, lips with a mouth crease, chin, ears) are radial
   displacements given by localized analytic profiles of the base point.

Sampling: a pole on the crown, :data:`N_RINGS` rings of :data:`N_SEGMENTS` vertices. Segments are denser at
the front (``phi = u - a sin u``), rings denser over the face; one ring passes exactly through the mouth
crease at the midline. The lowest rings are spaced by arc length per column so that the open neck boundary is
the plane ``y = NECK_BOTTOM_Y``.
"""

from __future__ import annotations

import numpy as np

N_RINGS = 78
N_SEGMENTS = 60
#: Parametrization centre (rays start here).
CENTRE = np.array([0.0, -0.005, 0.0])
NECK_BOTTOM_Y = -0.17
#: Mouth crease height at the midline (the ring through it is exact).
MOUTH_Y = -0.0715
#: How much lower the mouth corners are than the middle of the crease.
MOUTH_DROOP = 0.0025
#: Eye (eyeball-centre) positions; +x is the subject's left.
EYE_X = 0.0315
EYE_Y = 0.0
EYE_RADIUS = 0.0120
#: Half width / half height of the almond-shaped eye opening.
EYE_HALF_WIDTH = 0.0138
EYE_HALF_HEIGHT = 0.0060
SEGMENT_FRONT_DENSITY = 0.62


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (smooth union of two fields)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def _super_ellipsoid(p: np.ndarray, centre, axes, n_xz: float, n_y: float = 2.0) -> np.ndarray:
    """Approximate signed distance to a superellipsoid (exponent ``n_xz`` in x-z, ``n_y`` along y)."""
    q = (p - np.asarray(centre)) / np.asarray(axes)
    rxz = (np.abs(q[..., 0]) ** n_xz + np.abs(q[..., 2]) ** n_xz) ** (1.0 / n_xz)
    k = (rxz**n_y + np.abs(q[..., 1]) ** n_y) ** (1.0 / n_y)
    return (k - 1.0) * min(axes)


def _parts(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fields of the cranium, the lower face and the neck."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    cranium = _super_ellipsoid(p, (0.0, 0.016, -0.008), (0.0775, 0.099, 0.1), 2.35)
    # Lower face: narrower towards the chin, pushed forward.
    taper = 1.0 - 0.36 * _smoothstep(-0.02, -0.125, y)
    q = np.stack([x / taper, y, z], axis=-1)
    jaw = _super_ellipsoid(q, (0.0, -0.05, 0.008), (0.071, 0.071, 0.084), 2.6, 3.0)
    neck_r = np.sqrt((x / 0.053) ** 2 + ((z + 0.02) / 0.056) ** 2)
    neck = np.maximum(np.maximum((neck_r - 1.0) * 0.053, y + 0.03), -0.24 - y)
    return cranium, jaw, neck


def base_field(p: np.ndarray) -> np.ndarray:
    """(..., 3) points -> (...) approximate signed distance of the base head (negative inside)."""
    cranium, jaw, neck = _parts(p)
    head = _smin(cranium, jaw, 0.02)
    return _smin(head, neck, 0.014)


def component_labels(p: np.ndarray) -> np.ndarray:
    """(..., 3) points -> (...) int label of the nearest base part: 0 cranium, 1 lower face, 2 neck."""
    fields = _parts(p)
    return np.argmin(np.stack(fields, axis=-1), axis=-1)


def directions(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit ray directions for polar angle ``theta`` (from +y) and azimuth ``phi`` (from +z towards +x)."""
    st = np.sin(theta)
    return np.stack([st * np.sin(phi), np.cos(theta), st * np.cos(phi)], axis=-1)


def base_radius(d: np.ndarray, r_max: float = 0.2, step: float = 0.005, iters: int = 24) -> np.ndarray:
    """(..., 3) unit directions -> (...) distance from :data:`CENTRE` to the outermost base surface."""
    shape = d.shape[:-1]
    d = d.reshape(-1, 3)
    radii = np.arange(r_max, 0.0, -step)
    inside = base_field(CENTRE + radii[None, :, None] * d[:, None, :]) < 0.0
    first = np.argmax(inside, axis=1)  # first sample (from outside) that is inside
    hi = radii[np.maximum(first - 1, 0)]
    lo = radii[first]
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        ins = base_field(CENTRE + mid[:, None] * d) < 0.0
        lo = np.where(ins, mid, lo)
        hi = np.where(ins, hi, mid)
    return (0.5 * (lo + hi)).reshape(shape)


def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def feature_displacement(p: np.ndarray) -> np.ndarray:
    """(..., 3) base surface points -> (...) outward radial displacement of the facial features."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    ax = np.abs(x)
    front = _smoothstep(0.02, 0.06, z)
    # Nose: a ridge whose height and width follow a profile along y, plus the alae.
    ky = np.array([0.030, 0.012, 0.000, -0.015, -0.027, -0.034, -0.039, -0.044, -0.049, -0.056])
    kh = np.array([0.000, 0.003, 0.0055, 0.011, 0.019, 0.0225, 0.020, 0.010, 0.002, 0.000])
    kw = np.array([0.010, 0.0065, 0.0058, 0.0062, 0.0075, 0.0090, 0.0100, 0.0110, 0.0120, 0.0120])
    h = np.interp(-y, -ky, kh)
    w = np.interp(-y, -ky, kw)
    disp = h * np.exp(-0.5 * (x / w) ** 4)
    disp += 0.0065 * _gauss(ax, y, 0.0145, -0.0405, 0.0055, 0.0050)
    # Brow ridge and glabella.
    disp += 0.0045 * _gauss(ax, y, 0.031, 0.021, 0.017, 0.0065)
    disp += 0.0025 * _gauss(ax, y, 0.0, 0.018, 0.010, 0.010)
    # Eye sockets: a broad shallow hollow and a deep almond where the eyeball shows.
    disp -= 0.0050 * _gauss(ax, y, EYE_X, EYE_Y - 0.001, 0.018, 0.012)
    ex = (ax - EYE_X) / EYE_HALF_WIDTH
    half_h = EYE_HALF_HEIGHT * np.sqrt(np.clip(1.0 - ex**2, 0.0, 1.0)) + 1e-4
    ey = (y - EYE_Y - 0.0004 * (1 - ex**2)) / half_h
    almond = np.clip(1.0 - ex**2, 0.0, 1.0) * _smoothstep(1.25, 0.75, np.abs(ey))
    disp -= 0.016 * almond**0.7
    # Cheekbones and cheeks.
    disp += 0.0045 * _gauss(ax, y, 0.043, -0.022, 0.014, 0.011)
    disp += 0.0025 * _gauss(ax, y, 0.035, -0.050, 0.015, 0.015)
    # Mouth: muzzle, lips and the crease between them.
    disp += 0.0055 * _gauss(ax, y, 0.0, -0.070, 0.026, 0.018)
    lip_w = np.exp(-0.5 * (x / 0.019) ** 4)
    disp += 0.0045 * lip_w * np.exp(-0.5 * ((y - (MOUTH_Y + 0.0055)) / 0.0035) ** 2)
    disp += 0.0050 * lip_w * np.exp(-0.5 * ((y - (MOUTH_Y - 0.0065)) / 0.0045) ** 2)
    crease_y = MOUTH_Y - MOUTH_DROOP * (x / 0.026) ** 2
    crease_w = _smoothstep(0.029, 0.022, ax)
    disp -= 0.0075 * crease_w * np.exp(-0.5 * ((y - crease_y) / 0.0011) ** 2)
    # Chin and the sulcus above it.
    disp += 0.0050 * _gauss(ax, y, 0.0, -0.101, 0.014, 0.010)
    disp -= 0.0020 * _gauss(ax, y, 0.0, -0.089, 0.016, 0.004)
    disp = disp * front
    # Ears: on the sides, behind the jaw joint.
    side = _smoothstep(0.055, 0.07, ax)
    disp += side * 0.011 * np.exp(-0.5 * (((y + 0.008) / 0.022) ** 2 + ((z + 0.012) / 0.011) ** 2))
    return disp


def surface_points(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Surface points (..., 3) for polar/azimuth angles (broadcast together)."""
    theta, phi = np.broadcast_arrays(theta, phi)
    d = directions(theta, phi)
    r0 = base_radius(d)
    p0 = CENTRE + r0[..., None] * d
    return p0 + feature_displacement(p0)[..., None] * _horizontal(d)


def _horizontal(d: np.ndarray) -> np.ndarray:
    """Features push horizontally (along the ray's x-z part) so that they keep their designed height."""
    h = d * np.array([1.0, 0.0, 1.0])
    return h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-9)


def segment_angles() -> np.ndarray:
    """(N_SEGMENTS,) azimuths, mirror symmetric (segment j mirrors N_SEGMENTS - j), denser at the front."""
    u = 2.0 * np.pi * np.arange(N_SEGMENTS) / N_SEGMENTS
    u = np.where(u > np.pi, u - 2.0 * np.pi, u)
    return u - (1.0 - SEGMENT_FRONT_DENSITY) * np.sin(u)


def _inverse_cdf(lo: float, hi: float, n: int, density) -> np.ndarray:
    """``n`` angles in ``(lo, hi]`` equally spaced in the cumulative ``density`` (the last one is ``hi``)."""
    t = np.linspace(lo, hi, 4001)
    dens = density(t)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(t))])
    return np.interp(np.arange(1, n + 1) / n * cdf[-1], cdf, t)


def _solve_theta(target_y: float, phi: np.ndarray, lo: float, hi: float, base: bool) -> np.ndarray:
    """Per azimuth, the polar angle in ``[lo, hi]`` where the (base or final) surface is at ``target_y``."""
    lo = np.full(phi.shape, lo)
    hi = np.full(phi.shape, hi)
    for _ in range(32):
        mid = 0.5 * (lo + hi)
        d = directions(mid, phi)
        p = CENTRE + base_radius(d)[..., None] * d
        if not base:
            p = p + feature_displacement(p)[..., None] * _horizontal(d)
        above = p[..., 1] > target_y
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return 0.5 * (lo + hi)


def _density(theta: np.ndarray, th_eye: float, th_mouth: float, th_nose: float) -> np.ndarray:
    deg = np.degrees(theta)
    d = 0.45 + 0.65 * _smoothstep(35.0, 60.0, deg)
    d += 0.9 * np.exp(-0.5 * ((theta - th_eye) / np.radians(7.0)) ** 2)
    d += 0.5 * np.exp(-0.5 * ((theta - th_nose) / np.radians(6.0)) ** 2)
    d += 2.2 * np.exp(-0.5 * ((theta - th_mouth) / np.radians(4.0)) ** 2)
    return d


def ring_angles(n_lower: int = 20, chin_y: float = -0.1) -> np.ndarray:
    """(N_RINGS, N_SEGMENTS) polar angle of every ring vertex (crown pole excluded)."""
    phi = segment_angles()
    zero = np.zeros(1)
    th_mouth = float(_solve_theta(MOUTH_Y, zero, 0.5, 3.0, base=True)[0])
    th_eye = float(_solve_theta(EYE_Y, zero, 0.5, 3.0, base=True)[0])
    th_nose = float(_solve_theta(-0.04, zero, 0.5, 3.0, base=True)[0])
    th_low = float(_solve_theta(chin_y, zero, 0.5, 3.0, base=True)[0])

    def dens(t):
        return _density(t, th_eye, th_mouth, th_nose)

    n_upper = N_RINGS - n_lower
    t = np.linspace(1e-6, th_low, 4001)
    cdf = np.cumsum(dens(t))
    frac = np.interp(th_mouth, t, cdf) / cdf[-1]
    n1 = int(round(n_upper * frac))
    upper = np.concatenate(
        [_inverse_cdf(0.0, th_mouth, n1, dens), _inverse_cdf(th_mouth, th_low, n_upper - n1, dens)]
    )
    # Lower rings: per column, equal arc length between th_low and the neck-bottom plane.
    th_bottom = _solve_theta(NECK_BOTTOM_Y, phi, th_low, np.radians(179.0), base=False)
    s = np.linspace(0.0, 1.0, 200)
    ths = th_low + s[:, None] * (th_bottom - th_low)[None, :]  # (200, S)
    pts = surface_points(ths, phi[None, :])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=-1)
    arc = np.concatenate([np.zeros((1, phi.size)), np.cumsum(seg, axis=0)], axis=0)
    arc /= arc[-1:]
    k = (np.arange(1, n_lower + 1) / n_lower) ** 1.25  # a little denser under the chin
    lower = np.stack([np.interp(k, arc[:, j], ths[:, j]) for j in range(phi.size)], axis=1)
    return np.concatenate([np.repeat(upper[:, None], phi.size, axis=1), lower], axis=0)


def head_surface() -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(1 + N_RINGS * N_SEGMENTS, 3)`` and triangles ``(N_SEGMENTS * (2 * N_RINGS - 1), 3)``.

    Vertex 0 is the crown pole, then ring by ring (top to bottom), segment by segment (``phi`` increasing
    from the front towards +x). Triangles are wound counter-clockwise seen from outside.
    """
    theta = ring_angles()
    phi = segment_angles()
    ring_pts = surface_points(theta, phi[None, :])
    crown = surface_points(np.zeros(1), np.zeros(1))
    verts = np.concatenate([crown, ring_pts.reshape(-1, 3)], axis=0)
    s = N_SEGMENTS
    j = np.arange(s)
    jn = (j + 1) % s
    cap = np.stack([np.zeros(s, dtype=np.int64), 1 + j, 1 + jn], axis=1)
    k = np.arange(N_RINGS - 1)[:, None]
    a = 1 + k * s + j
    b = 1 + (k + 1) * s + j
    c = 1 + (k + 1) * s + jn
    d = 1 + k * s + jn
    quads = np.stack([np.stack([a, b, c], -1), np.stack([a, c, d], -1)], axis=2).reshape(-1, 3)
    return verts, np.concatenate([cap, quads], axis=0).astype(np.int64)
