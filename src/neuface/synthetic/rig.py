"""Camera rigs for synthetic captures: MEAD's seven synchronized views, or one monocular camera.

A view is modelled the way the fitting sees it — weak perspective per view — so each view has its own head
rotation ``r_v(t) = R_v · r(t)`` (the camera's orientation folded into the global rotation) and its own camera
``(s, tx, ty)`` in full-frame NDC. The view rotations follow the geometry conventions (+x to the subject's left):
a camera on the subject's left sees the head turned by a negative yaw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

#: MEAD views and the (pitch, yaw) in degrees that each camera's position applies to the head.
MEAD_VIEWS: dict[str, tuple[float, float]] = {
    "front": (0.0, 0.0),
    "down": (-25.0, 0.0),
    "top": (25.0, 0.0),
    "left_30": (0.0, -30.0),
    "left_60": (0.0, -60.0),
    "right_30": (0.0, 30.0),
    "right_60": (0.0, 60.0),
}


@dataclass
class ViewRig:
    """Per-view rotations and cameras.

    Attributes:
        names: view names (V,).
        rotations: (V, 3, 3) rotation each view applies to the head.
        cams: (V, 3) weak-perspective ``(s, tx, ty)`` in full-frame NDC.
    """

    names: list[str]
    rotations: np.ndarray
    cams: np.ndarray

    def view_global_pose(self, global_pose: np.ndarray) -> np.ndarray:
        """(F, 3) head axis-angle → (F, V, 3) per-view axis-angle ``R_v · R(t)``."""
        head = Rotation.from_rotvec(global_pose)
        out = np.empty((global_pose.shape[0], len(self.names), 3))
        for v, rot in enumerate(self.rotations):
            out[:, v] = (Rotation.from_matrix(rot) * head).as_rotvec()
        return out


def make_rig(kind: str, scale: float = 5.5, seed: int = 0) -> ViewRig:
    """Build the ``"mead"`` 7-view rig or a ``"mono"`` frontal camera.

    Args:
        kind: ``"mead"`` or ``"mono"``.
        scale: weak-perspective scale (NDC per metre); 5.5 makes a head fill about two thirds of the frame.
        seed: jitters each camera's scale/offset slightly, like real camera placement.
    """
    if kind == "mead":
        names = list(MEAD_VIEWS)
    elif kind == "mono":
        names = ["front"]
    else:
        raise ValueError(f"unknown rig kind {kind!r}; expected 'mead' or 'mono'")
    rng = np.random.default_rng(seed)
    rotations = np.stack(
        [Rotation.from_euler("xy", MEAD_VIEWS[n], degrees=True).as_matrix() for n in names]
    )
    cams = np.stack(
        [np.array([scale * rng.uniform(0.95, 1.05), rng.uniform(-0.01, 0.01), rng.uniform(0.0, 0.02)])
         for _ in names]
    )
    return ViewRig(names=names, rotations=rotations, cams=cams)
