"""Geometry: rotations, cameras, crops and mesh utilities.

Conventions (stated once, used everywhere in neuface):

* Model / world space (FLAME): right-handed, metres; +x to the subject's left (the viewer's right when the
  subject faces the camera), +y up, +z out of the face towards a frontal camera.
* Rotations are axis-angle vectors (radians) or 3×3 matrices acting on column vectors (``x' = R x``).
  Quaternions are **XYZW** (roma's convention), unit norm.
* Images: (B, C, H, W) tensors, RGB in [0, 1]; the y axis points **down**. Pixel coordinates ``(x, y)`` have
  integer values at pixel centres, so the image spans ``[-0.5, W-0.5] × [-0.5, H-0.5]``
  (``grid_sample(align_corners=False)`` convention). NDC ``[-1, 1]`` spans the image edges.
* Weak perspective (DECA): ``cam = (s, tx, ty)``; ``ndc_xy = s * (X_xy + t)`` with y flipped; NDC is relative
  to the 224×224 face crop, and a crop transform (:mod:`neuface.geometry.crop`) maps crop pixels back to the
  original frame.
* Pinhole (OpenCV): ``x_cam = R X + t``, camera looks along +z_cam with y_cam down; ``x_pix = K x_cam / z``.
* Screen space (projection output, rasterizer input): ``(x_pix, y_pix, depth)``, smaller depth = closer.
"""

from neuface.geometry.camera import (
    PinholeCamera,
    WeakPerspectiveCamera,
    ndc_to_pixels,
    pinhole_project,
    pixels_to_ndc,
    weak_perspective_project,
)
from neuface.geometry.crop import (
    apply_transform,
    crop_ndc_to_pixels,
    crop_to_pixels,
    crop_transform,
    estimate_crop_box,
    invert_transform,
    pixels_to_crop,
    pixels_to_crop_ndc,
    smooth_boxes,
    warp_images,
)
from neuface.geometry.mesh import face_normals, vertex_normals, vertex_visibility, visibility_confidence
from neuface.geometry.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    canonicalize_quaternions,
    compose_axis_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_hemisphere,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
)

__all__ = [
    "PinholeCamera",
    "WeakPerspectiveCamera",
    "ndc_to_pixels",
    "pinhole_project",
    "pixels_to_ndc",
    "weak_perspective_project",
    "apply_transform",
    "crop_ndc_to_pixels",
    "crop_to_pixels",
    "crop_transform",
    "estimate_crop_box",
    "invert_transform",
    "pixels_to_crop",
    "pixels_to_crop_ndc",
    "smooth_boxes",
    "warp_images",
    "face_normals",
    "vertex_normals",
    "vertex_visibility",
    "visibility_confidence",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "canonicalize_quaternions",
    "compose_axis_angle",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "quaternion_hemisphere",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "rotation_6d_to_matrix",
]
