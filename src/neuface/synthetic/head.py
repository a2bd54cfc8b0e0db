"""The synthetic head mesh in FLAME's exact topology sizes (5023 vertices, 9976 triangles). NOT FLAME.

Layout (chosen so the counts match FLAME 2020 exactly; the geometry itself is our own analytic toy head):

* vertices ``[0, 4681)``: the head surface, a disc (crown pole + 78 rings x 60 segments, open at the neck:
  60 boundary edges), 9300 triangles;
* vertices ``[4681, 4852)``: the subject's left eyeball (+x side, FLAME joint 3), a closed UV sphere of 171
  vertices (2 poles on the gaze axis, 13 rings x 13 segments), 338 triangles;
* vertices ``[4852, 5023)``: the right eyeball (-x side, joint 4), same layout.

All triangles are wound counter-clockwise seen from outside (outward normals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuface.synthetic import surface

NUM_VERTICES = 5023
NUM_FACES = 9976
HEAD_VERTICES = 1 + surface.N_RINGS * surface.N_SEGMENTS  # 4681
HEAD_FACES = surface.N_SEGMENTS * (2 * surface.N_RINGS - 1)  # 9300
EYE_RINGS = 13
EYE_SEGMENTS = 13
EYE_VERTICES = 2 + EYE_RINGS * EYE_SEGMENTS  # 171
EYE_FACES = 2 * EYE_SEGMENTS * EYE_RINGS  # 338
#: Eyeball centre depth (z); the front of the eyeball sits just behind the surrounding skin.
EYE_Z = 0.0700


@dataclass(frozen=True)
class HeadMesh:
    """The mean head: geometry plus the index ranges of its parts.

    Attributes:
        vertices: (5023, 3) float64, metres.
        faces: (9976, 3) int64.
        eye_centres: (2, 3) centres of the left (+x) and right (-x) eyeballs.
    """

    vertices: np.ndarray
    faces: np.ndarray
    eye_centres: np.ndarray

    @property
    def head_slice(self) -> slice:
        return slice(0, HEAD_VERTICES)

    def eye_slice(self, side: int) -> slice:
        """Vertex range of eyeball ``side`` (0: left / +x, 1: right / -x)."""
        start = HEAD_VERTICES + side * EYE_VERTICES
        return slice(start, start + EYE_VERTICES)

    @property
    def head_faces(self) -> np.ndarray:
        """(9300,) indices of the head-surface triangles (the first ones)."""
        return np.arange(HEAD_FACES)


def uv_sphere(centre: np.ndarray, radius: float, rings: int = EYE_RINGS, segments: int = EYE_SEGMENTS):
    """A closed UV sphere with its poles on the z axis (front pole first, back pole last).

    Returns:
        vertices ``(2 + rings * segments, 3)`` and outward-wound triangles ``(2 * segments * rings, 3)``
        indexing them.
    """
    polar = np.pi * np.arange(1, rings + 1) / (rings + 1)  # from the front pole (+z)
    az = 2.0 * np.pi * np.arange(segments) / segments
    ring = np.stack(
        [
            np.sin(polar)[:, None] * np.cos(az)[None, :],
            np.sin(polar)[:, None] * np.sin(az)[None, :],
            np.repeat(np.cos(polar)[:, None], segments, axis=1),
        ],
        axis=-1,
    ).reshape(-1, 3)
    unit = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]], axis=0)
    j = np.arange(segments)
    jn = (j + 1) % segments
    last = 1 + rings * segments
    front = np.stack([np.zeros(segments, dtype=np.int64), 1 + j, 1 + jn], axis=1)
    k = np.arange(rings - 1)[:, None]
    a, b = 1 + k * segments + j, 1 + (k + 1) * segments + j
    c, d = 1 + (k + 1) * segments + jn, 1 + k * segments + jn
    bands = np.stack([np.stack([a, b, c], -1), np.stack([a, c, d], -1)], axis=2).reshape(-1, 3)
    last_ring = 1 + (rings - 1) * segments
    back = np.stack([np.full(segments, last), last_ring + jn, last_ring + j], axis=1)
    faces = np.concatenate([front, bands, back], axis=0).astype(np.int64)
    verts = centre[None, :] + radius * unit
    if _signed_volume(verts, faces) < 0:  # make the winding outward whatever the axis conventions
        faces = faces[:, ::-1].copy()
    return verts, faces


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    t = verts[faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)


def build_head() -> HeadMesh:
    """Build the deterministic mean head (no randomness: the kit's seed only affects the blendshapes)."""
    head_v, head_f = surface.head_surface()
    centres = np.array(
        [[surface.EYE_X, surface.EYE_Y, EYE_Z], [-surface.EYE_X, surface.EYE_Y, EYE_Z]], dtype=np.float64
    )
    verts, faces = [head_v], [head_f]
    offset = HEAD_VERTICES
    for centre in centres:
        ev, ef = uv_sphere(centre, surface.EYE_RADIUS)
        verts.append(ev)
        faces.append(ef + offset)
        offset += EYE_VERTICES
    mesh = HeadMesh(np.concatenate(verts).astype(np.float64), np.concatenate(faces).astype(np.int64), centres)
    if mesh.vertices.shape != (NUM_VERTICES, 3) or mesh.faces.shape != (NUM_FACES, 3):
        msg = f"synthetic head has {mesh.vertices.shape} / {mesh.faces.shape}, expected FLAME's sizes"
        raise RuntimeError(msg)
    return mesh


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals."""
    t = verts[faces]
    fn = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
