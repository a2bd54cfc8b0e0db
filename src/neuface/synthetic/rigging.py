"""Skinning weights, joint regressor and pose correctives of the synthetic head (FLAME layout, NOT FLAME).

Joints (FLAME's order): 0 global (mid neck), 1 neck (top of the neck), 2 jaw (between the jaw hinges, in
front of the ears), 3 left eye (+x eyeball centre), 4 right eye (-x eyeball centre).

* Weights: the neck skin blends from the global joint at the neck base to the neck joint at the skull; the
  jaw joint drives the chin, lower lip and lower jaw, with a sharp boundary at the mouth crease (so opening
  the jaw parts the lips) softening towards the cheeks and the jaw hinge; each eyeball follows its eye joint.
  Rows sum to one.
* J_regressor: each row is a small set of mirror pairs of vertices around its joint location (a ring on the
  mid neck; the neck top and the throat; the cheeks by the ears; the eyeball), with non-negative weights
  summing to one that reproduce the location.
* posedirs (V, 3, 36): small smooth correctives driven by the pose feature ``(R - I)`` of joints 1..4 (FLAME's
  ordering: joint-major, row-major 3x3): a bulge under the chin when the jaw opens, throat and neck-side
  creases when the neck bends or twists, eyelids that follow the gaze up/down.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls
from scipy.spatial import cKDTree

from neuface.synthetic import surface
from neuface.synthetic.head import EYE_VERTICES, HEAD_VERTICES, HeadMesh

#: Joint locations the regressor aims at (the eyes are the eyeball centres).
GLOBAL_JOINT = np.array([0.0, -0.115, -0.02])
NECK_JOINT = np.array([0.0, -0.055, -0.02])
JAW_JOINT = np.array([0.0, -0.016, -0.002])


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def neckness(p: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N,) 1 on the neck cylinder, 0 on the head, smooth across the junction."""
    cranium, jaw, neck = surface._parts(p)
    return _smoothstep(-0.006, 0.006, np.minimum(cranium, jaw) - neck)


def jaw_region(p: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N,) in [0, 1]: how much a point of the head surface belongs to the lower jaw.

    Sharp at the mouth crease, softening laterally into the cheeks, rising towards the jaw hinge and fading
    behind the ramus.
    """
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    corner = 0.026
    lateral = np.maximum(ax - corner, 0.0)
    boundary = surface.MOUTH_Y - surface.MOUTH_DROOP * (np.minimum(ax, corner) / corner) ** 2
    boundary = boundary + 1.2 * lateral * _smoothstep(0.0, 0.02, lateral)
    softness = 0.0007 + 0.25 * lateral
    below = _sigmoid((boundary - y) / softness)
    behind = _smoothstep(-0.022, 0.004, z)
    region = below * behind * _smoothstep(-0.004, -0.022, y)  # nothing at the eyes or above
    return np.where(region < 1e-3, 0.0, region)


def skinning_weights(mesh: HeadMesh) -> np.ndarray:
    """(5023, 5) linear-blend-skinning weights, rows summing to one."""
    v = mesh.vertices[:HEAD_VERTICES]
    nu = neckness(v)
    attach = 1.0 - nu * (1.0 - _smoothstep(-0.165, -0.065, v[:, 1]))  # follows the neck joint (the head)
    jaw = jaw_region(v) * (1.0 - nu * (1.0 - _smoothstep(-0.15, -0.115, v[:, 1])))
    w = np.zeros((mesh.vertices.shape[0], 5))
    w[:HEAD_VERTICES, 0] = 1.0 - attach
    w[:HEAD_VERTICES, 2] = attach * jaw
    w[:HEAD_VERTICES, 1] = attach * (1.0 - jaw)
    for side in (0, 1):
        w[mesh.eye_slice(side), 3 + side] = 1.0
    return w


def _mirror_index(verts: np.ndarray) -> np.ndarray:
    """For each vertex, the index of its mirror image ``(-x, y, z)`` (the head is mirror symmetric)."""
    mirrored = verts * np.array([-1.0, 1.0, 1.0])
    dist, idx = cKDTree(verts).query(mirrored)
    if dist.max() > 1e-9:
        raise RuntimeError("the synthetic head is not mirror symmetric")
    return idx


def _directions(azimuths, elevations) -> list[tuple[float, float]]:
    return [(float(a), float(e)) for a in azimuths for e in elevations]


def _regressor_row(verts: np.ndarray, target: np.ndarray, directions: list[tuple[float, float]]):
    """Non-negative weights (sum 1) over a few mirror pairs of head vertices around ``target``.

    In each direction ``(azimuth, elevation)`` (degrees; azimuth from +z towards +x, elevation above the
    horizontal) the nearest head vertex is taken with its mirror image; the pair weights reproduce ``target``
    as well as they can (NNLS), and the regressed joint lies on the symmetry plane.
    """
    head = verts[:HEAD_VERTICES]
    mirror = _mirror_index(head)
    rel = head - target
    dist = np.linalg.norm(rel, axis=1)
    unit = rel / dist[:, None]
    picks = []
    for az, el in np.radians(np.asarray(directions, dtype=np.float64)):
        d = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
        cand = np.nonzero(unit @ d > 0.97)[0]
        if cand.size:
            picks.append(int(cand[np.argmin(dist[cand])]))
    pairs = np.unique(np.minimum(picks, mirror[picks]))
    mids = 0.5 * (head[pairs] + head[mirror[pairs]])
    big = 10.0
    a = np.vstack([mids[:, 1:].T, big * np.ones((1, pairs.size))])
    w, _ = nnls(a, np.concatenate([target[1:], [big]]))
    w /= w.sum()
    row = np.zeros(verts.shape[0])
    np.add.at(row, pairs, 0.5 * w)
    np.add.at(row, mirror[pairs], 0.5 * w)
    return row


def joint_regressor(mesh: HeadMesh) -> np.ndarray:
    """(5, 5023) dense joint regressor; rows sum to one."""
    reg = np.zeros((5, mesh.vertices.shape[0]))
    # Global: a ring around the mid neck. Neck: the sides and back of the neck top, and the throat below
    # the chin. Jaw: the cheeks in front of and below the ears.
    reg[0] = _regressor_row(mesh.vertices, GLOBAL_JOINT, _directions(np.arange(0.0, 360.0, 45.0), (-10, 0, 10)))
    neck_dirs = _directions((90.0, 135.0, 180.0, 225.0, 270.0), (-20.0, 0.0, 20.0)) + [(0.0, -50.0)]
    reg[1] = _regressor_row(mesh.vertices, NECK_JOINT, neck_dirs)
    reg[2] = _regressor_row(mesh.vertices, JAW_JOINT, _directions((60.0, 90.0, 120.0), (-30.0, 0.0, 30.0)))
    for side in (0, 1):
        reg[3 + side, mesh.eye_slice(side)] = 1.0 / EYE_VERTICES
    return reg


def _gauss3(p: np.ndarray, c, s) -> np.ndarray:
    return np.exp(-0.5 * (((p - np.asarray(c)) / np.asarray(s)) ** 2).sum(axis=1))


def _put_sin(pd: np.ndarray, joint: int, axis: int, field: np.ndarray) -> None:
    """Make ``field`` respond as ``field * sin(angle)`` to a rotation about ``axis`` of ``joint`` (1..4)."""
    # (R - I) of a rotation by a about x has [2,1] = sin a and [1,2] = -sin a (cyclic for y, z).
    i, j = {0: (2, 1), 1: (0, 2), 2: (1, 0)}[axis]
    base = 9 * (joint - 1)
    pd[:, :, base + 3 * i + j] += 0.5 * field
    pd[:, :, base + 3 * j + i] -= 0.5 * field


def pose_correctives(mesh: HeadMesh, normals: np.ndarray) -> np.ndarray:
    """(5023, 3, 36) posedirs: smooth, small (a few millimetres per radian), deterministic."""
    n_v = mesh.vertices.shape[0]
    pd = np.zeros((n_v, 3, 36))
    v = mesh.vertices[:HEAD_VERTICES]
    nrm = normals[:HEAD_VERTICES]
    head = slice(0, HEAD_VERTICES)

    def field(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n_v, 3))
        out[head] = values
        return out

    # Jaw opening (about x): soft tissue under the chin bulges, the cheeks are pulled in a little.
    under_chin = _gauss3(v, (0.0, -0.118, 0.045), (0.03, 0.012, 0.02))
    cheeks = _gauss3(v, (0.0, -0.075, 0.07), (0.045, 0.014, 0.03)) * np.clip(np.abs(v[:, 0]) / 0.035, 0, 1)
    jaw_f = 0.006 * under_chin[:, None] * nrm - 0.003 * cheeks[:, None] * nrm
    _put_sin(pd, 2, 0, field(jaw_f))
    # Neck pitch: the throat bunches out when the head bends forward; neck twist and roll.
    nu = neckness(v)
    band = nu * _gauss3(v, (0.0, -0.11, 0.0), (1.0, 0.03, 1.0))
    throat = band * _smoothstep(-0.01, 0.03, v[:, 2])
    _put_sin(pd, 1, 0, field(0.006 * throat[:, None] * nrm))
    around = np.stack([v[:, 2], np.zeros(len(v)), -v[:, 0]], axis=1)
    around /= np.maximum(np.linalg.norm(around, axis=1, keepdims=True), 1e-9)
    _put_sin(pd, 1, 1, field(0.004 * band[:, None] * around))
    side = np.tanh(v[:, 0] / 0.02)
    _put_sin(pd, 1, 2, field(0.004 * (band * side)[:, None] * nrm))
    # Gaze up/down: the upper eyelid follows the eye (a rotation about +x looks down).
    for k, sign in ((3, 1.0), (4, -1.0)):
        lid = _gauss3(v, (sign * surface.EYE_X, surface.EYE_Y + 0.005, 0.08), (0.014, 0.006, 0.02))
        down = np.zeros((len(v), 3))
        down[:, 1] = -0.005 * lid
        _put_sin(pd, k, 0, field(down))
    pd[np.abs(pd) < 1e-6] = 0.0  # Gaussian tails (< 1 micrometre per radian): keep far regions exactly still
    return pd
