"""A pure-torch z-buffer triangle rasterizer (vectorized; no Python loop over faces or pixels).

Screen space is the one of :mod:`neuface.geometry.camera`: ``(x_pix, y_pix, depth)`` with pixel centres at
integer coordinates and smaller depth = closer. A pixel is covered by a triangle when its centre lies inside
the triangle or exactly on its border (inclusive rule); the visible face is the one with the smallest depth,
ties going to the smallest face index.

Algorithm:

1. Per face: its pixel bounding box (clipped to the image), the signed area and the three edge functions in
   a canonical form. Each edge is evaluated from its lower-index vertex to its higher-index one (and negated
   where needed), so two faces sharing an edge compute bit-identical edge values: meshes render watertight
   (no pixel along a shared edge is missed by both faces).
2. Faces are grouped by bounding-box size class (1, 2, 3, 4, 6, 8, 12, ... pixels per side); a group with
   class Kx x Ky tests a fixed Ky x Kx grid of candidate pixels per face, in chunks of at most
   ``max_candidates`` samples (bounded memory for any mesh and image size). The edge functions and depth are
   affine in (x, y), so each candidate costs a few broadcast comparisons, with no per-sample gathers.
3. Depth and face index are packed into one sortable int64 key (the float32 depth bits, or the top 40 bits
   of a float64 depth, made order-preserving, then the 24-bit face index) and resolved with a single
   ``scatter_reduce("amin")`` on a flat ``(B*H*W)`` buffer, giving the closest face and the smallest index on
   ties in one pass.
4. A final differentiable pass recomputes the barycentrics and depth of the winning face at each covered
   pixel from the (non-detached) screen vertices, so gradients flow to vertex positions through ``bary``
   and ``zbuf`` (visibility itself is piecewise constant and has no gradient).

Front faces: a face is front-facing when its vertices are counter-clockwise seen from the camera in a
y-up view (the usual outward-normal winding), i.e. clockwise in pixel coordinates (x right, y down).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError

_FACE_BITS = 24
_FACE_MASK = (1 << _FACE_BITS) - 1
_NO_FACE = torch.iinfo(torch.int64).max
#: Edge ``k`` is opposite vertex ``k``: it runs from vertex ``_EDGE_A[k]`` to vertex ``_EDGE_B[k]``.
_EDGE_A = (1, 2, 0)
_EDGE_B = (2, 0, 1)


@dataclass
class Fragments:
    """Rasterizer output, one entry per pixel.

    Attributes:
        face_idx: (B, H, W) long index into ``faces`` of the visible face, ``-1`` for background.
        bary: (B, H, W, 3) barycentric coordinates of the pixel centre in the visible face
            (perspective-correct when rasterized with ``perspective_correct=True``), zeros for background.
            Differentiable w.r.t. the screen vertices.
        zbuf: (B, H, W) depth of the visible surface (``inf`` for background). Differentiable.
    """

    face_idx: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool, True where some face is visible."""
        return self.face_idx >= 0


def _check_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in image_size)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"image_size must be (H, W), got {image_size!r}") from exc
    if h <= 0 or w <= 0:
        raise ShapeError(f"image_size must be positive, got {(h, w)}")
    return h, w


def _check_faces(faces: torch.Tensor, num_vertices: int, device: torch.device) -> torch.Tensor:
    check_shape(faces, "faces", ("F", 3))
    if faces.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ShapeError(f"faces must be an integer tensor, got dtype {faces.dtype}")
    faces = faces.to(device=device, dtype=torch.long)
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
        raise ShapeError(f"faces index vertices outside [0, {num_vertices})")
    if faces.shape[0] > _FACE_MASK:
        raise ShapeError(f"at most {_FACE_MASK} faces are supported, got {faces.shape[0]}")
    return faces


def _double_area(xy: torch.Tensor) -> torch.Tensor:
    """(..., 3, 2) → (...) ``D = cross(v2 - v0, v1 - v0)``; positive for front faces (clockwise on screen)."""
    e1 = xy[..., 1, :] - xy[..., 0, :]
    e2 = xy[..., 2, :] - xy[..., 0, :]
    return e2[..., 0] * e1[..., 1] - e2[..., 1] * e1[..., 0]


def _sortable_keys(depth: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """Pack (depth, face index) into int64 keys whose integer order is the (depth, face) lexicographic order.

    float32 depths keep all their bits; float64 depths keep their top 40 bits (relative resolution ~4e-9)."""
    if depth.dtype == torch.float64:
        bits = depth.view(torch.int64)
        bits = torch.where(bits < 0, bits ^ 0x7FFF_FFFF_FFFF_FFFF, bits)
        return ((bits >> _FACE_BITS) << _FACE_BITS) | face
    bits = depth.to(torch.float32).view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFF_FFFF, bits)
    return (bits.to(torch.int64) << _FACE_BITS) | face


def _size_classes(limit: int, device: torch.device) -> torch.Tensor:
    """Bounding-box size classes 1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to >= limit (padding waste <= 1.5x)."""
    sizes = [1, 2, 3]
    while sizes[-1] < limit:
        sizes.append(sizes[-2] * 2)
    return torch.tensor(sizes, device=device)


def _face_table(
    screen: torch.Tensor,
    faces: torch.Tensor,
    image_size: tuple[int, int],
    cull_backfaces: bool,
    perspective_correct: bool,
    znear: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-face set-up of the candidate pass (no grad), for the n faces that may cover a pixel centre.

    Returns:
        floats (n, 12): per edge k (sign-normalised so that "inside" is ``a_k(x) >= b_k(y)``) the terms of
            ``a_k(x) = c_k + x * dy_k`` and ``b_k(y) = y * dx_k`` as [c, dy, dx] x 3, then the depth-key plane
            ``zc + x * zx + y * zy``.
        ints (n, 6): bounding box x0, y0, x1, y1 (inclusive, clipped), batch offset ``b * H * W``, face index.
    """
    h, w = image_size
    bsz, num_faces = screen.shape[0], faces.shape[0]
    tri = screen.index_select(1, faces.reshape(-1)).view(bsz, num_faces, 3, 3)
    xy, z = tri[..., :2], tri[..., 2]
    area = _double_area(xy)  # (B, F)
    valid = torch.isfinite(tri).flatten(2).all(2) & torch.isfinite(area) & (area != 0) & torch.isfinite(1.0 / area)
    if cull_backfaces:
        valid &= area > 0
    if perspective_correct:
        valid &= (z > znear).all(2)
    lim = xy.new_tensor([w, h])
    lo = torch.ceil(xy.amin(2).clamp(min=-1.0).minimum(lim)).clamp(min=0)  # (B, F, 2)
    hi = torch.floor(xy.amax(2).clamp(min=-1.0).minimum(lim)).minimum(lim - 1)
    valid &= (hi >= lo).all(2)
    # Canonical edges (shared by the batch): edge k runs from its lower-index vertex to its higher one.
    a_ids, b_ids = faces[:, list(_EDGE_A)], faces[:, list(_EDGE_B)]
    swap = a_ids > b_ids
    screen_xy = screen[..., :2]
    start = screen_xy.index_select(1, torch.where(swap, b_ids, a_ids).reshape(-1)).view(bsz, num_faces, 3, 2)
    delta = screen_xy.index_select(1, torch.where(swap, a_ids, b_ids).reshape(-1)).view(bsz, num_faces, 3, 2)
    delta = delta - start
    sign = 1.0 - 2.0 * swap.to(screen.dtype)  # (F, 3)
    # Orientation-normalised edge terms: multiplying by +-1 is exact, so shared edges stay bit-identical.
    orient = sign * torch.sign(area)[..., None]
    cross0 = start[..., 1] * delta[..., 0] - start[..., 0] * delta[..., 1]
    # Depth key as a plane in (x, y): sum_k l_k t_k with l_k = edge_k / D (t = z, or -1/z for perspective).
    t = -1.0 / z if perspective_correct else z
    coef = t * sign / area[..., None]
    floats = torch.cat([
        torch.stack([cross0 * orient, delta[..., 1] * orient, delta[..., 0] * orient], -1).flatten(2),
        torch.stack([(coef * cross0).sum(2), (coef * delta[..., 1]).sum(2), -(coef * delta[..., 0]).sum(2)],
                    -1),
    ], 2)
    offset = (torch.arange(bsz, device=screen.device) * (h * w))[:, None, None].expand(bsz, num_faces, 1)
    face_id = torch.arange(num_faces, device=screen.device)[None, :, None].expand(bsz, num_faces, 1)
    ints = torch.cat([lo.long(), hi.long(), offset, face_id], 2)
    sel = valid.view(-1).nonzero().squeeze(1)
    return floats.view(bsz * num_faces, 12)[sel], ints.view(bsz * num_faces, 6)[sel]


def _resolve_keys(
    screen: torch.Tensor,
    faces: torch.Tensor,
    image_size: tuple[int, int],
    cull_backfaces: bool,
    perspective_correct: bool,
    znear: float,
    max_candidates: int,
) -> torch.Tensor:
    """Candidate pass: (B*H*W,) int64 buffer with the smallest (depth, face) key per pixel.

    Faces are grouped by bounding-box size class (Kx, Ky); each group enumerates a fixed Ky x Kx grid per
    face, so every per-candidate quantity is a broadcast of per-face rows and per-column/row terms."""
    h, w = image_size
    device = screen.device
    keys = torch.full((screen.shape[0] * h * w,), _NO_FACE, dtype=torch.int64, device=device)
    floats, ints = _face_table(screen, faces, image_size, cull_backfaces, perspective_correct, znear)
    if ints.shape[0] == 0:
        return keys
    classes = _size_classes(max(h, w), device)
    num_classes = classes.shape[0]
    size = ints[:, 2:4] - ints[:, 0:2] + 1
    cls = torch.searchsorted(classes, size)
    bucket = cls[:, 0] * num_classes + cls[:, 1]
    order = torch.argsort(bucket)
    counts = torch.bincount(bucket, minlength=num_classes * num_classes).tolist()
    class_sizes = classes.tolist()
    start = 0
    for b, count in enumerate(counts):
        if count == 0:
            continue
        kx, ky = class_sizes[b // num_classes], class_sizes[b % num_classes]
        step = max(1, max_candidates // (kx * ky))
        for first in range(start, start + count, step):
            idx = order[first:min(first + step, start + count)]
            _splat(keys, floats[idx], ints[idx], kx, ky, image_size)
        start += count
    return keys


def _splat(keys: torch.Tensor, floats: torch.Tensor, ints: torch.Tensor, kx: int, ky: int,
           image_size: tuple[int, int]) -> None:
    """Test a Ky x Kx pixel grid per face and scatter-min the keys of the covered samples into ``keys``."""
    h, w = image_size
    dtype = floats.dtype
    nan = torch.tensor(float("nan"), dtype=dtype, device=floats.device)
    xs = ints[:, 0:1] + torch.arange(kx, device=ints.device)  # (n, Kx)
    ys = ints[:, 1:2] + torch.arange(ky, device=ints.device)  # (n, Ky)
    xf, yf = xs.to(dtype), ys.to(dtype)
    a = floats[:, None, 0:9:3] + xf[:, :, None] * floats[:, None, 1:9:3]  # (n, Kx, 3)
    b = yf[:, :, None] * floats[:, None, 2:9:3]  # (n, Ky, 3)
    # Samples outside the face's box get NaN, which fails every comparison.
    a[..., 0] = torch.where(xs <= ints[:, 2:3], a[..., 0], nan)
    b[..., 0] = torch.where(ys <= ints[:, 3:4], b[..., 0], nan)
    inside = a[:, None, :, 0] >= b[:, :, None, 0]
    inside &= a[:, None, :, 1] >= b[:, :, None, 1]
    inside &= a[:, None, :, 2] >= b[:, :, None, 2]
    depth = (floats[:, 9:10] + xf * floats[:, 10:11])[:, None, :] + (yf * floats[:, 11:12])[:, :, None]
    depth = torch.where(inside, depth, torch.tensor(float("inf"), dtype=dtype, device=depth.device))
    key = _sortable_keys(depth, ints[:, 5, None, None])
    pix = ints[:, 4, None, None] + (ys.clamp(max=h - 1) * w)[:, :, None] + xs.clamp(max=w - 1)[:, None, :]
    keys.scatter_reduce_(0, pix.reshape(-1), key.reshape(-1), reduce="amin", include_self=True)


def rasterize(
    screen: torch.Tensor,
    faces: torch.Tensor,
    image_size: tuple[int, int],
    cull_backfaces: bool = False,
    perspective_correct: bool = False,
    znear: float = 1e-6,
    max_candidates: int = 1 << 20,
) -> Fragments:
    """Rasterize a batch of triangle meshes given in screen space.

    Args:
        screen: (B, V, 3) ``(x_pix, y_pix, depth)`` per vertex (e.g. from ``camera.to_screen``).
        faces: (F, 3) integer vertex indices, shared by the batch.
        image_size: ``(H, W)``.
        cull_backfaces: skip faces whose front (outward, counter-clockwise winding) side points away.
        perspective_correct: screen depth is the camera-space z of a pinhole camera: barycentrics and depth
            are interpolated perspective-correctly (through ``1/z``), and faces with a vertex at
            ``depth <= znear`` are skipped (no near-plane clipping). Leave False for weak perspective
            (affine interpolation; any depth sign).
        znear: near limit used with ``perspective_correct``.
        max_candidates: at most this many candidate (face, pixel) samples are tested at once, which bounds
            the working memory of the candidate pass (about 50 bytes per candidate) whatever the mesh; the
            outputs themselves take about 60 bytes per pixel of the batch.

    Returns:
        :class:`Fragments`. Degenerate, non-finite and off-screen faces are skipped.
    """
    sizes = check_shape(screen, "screen", ("B", "V", 3))
    check_floating(screen, "screen")
    faces = _check_faces(faces, sizes["V"], screen.device)
    h, w = _check_image_size(image_size)
    if max_candidates < 1:
        raise ShapeError(f"max_candidates must be positive, got {max_candidates}")
    bsz = sizes["B"]
    with torch.no_grad():
        keys = _resolve_keys(screen.detach(), faces, (h, w), cull_backfaces, perspective_correct, znear,
                             max_candidates)
    no_key = _sortable_keys(screen.new_tensor(float("inf")), torch.zeros((), dtype=torch.int64))
    covered = keys < no_key
    face_idx = torch.where(covered, keys & _FACE_MASK, torch.full_like(keys, -1))
    pix = covered.nonzero().squeeze(1)
    rem = pix % (h * w)
    py = torch.div(rem, w, rounding_mode="floor")
    px = rem - py * w
    tri = _corner_values(screen, faces, face_idx, pix, h * w)
    bary, depth = _barycentrics(tri, px.to(screen.dtype), py.to(screen.dtype), perspective_correct)
    bary_img = screen.new_zeros(bsz * h * w, 3).index_put((pix,), bary)
    zbuf = screen.new_full((bsz * h * w,), float("inf")).index_put((pix,), depth)
    return Fragments(face_idx.view(bsz, h, w), bary_img.view(bsz, h, w, 3), zbuf.view(bsz, h, w))


def _corner_values(values: torch.Tensor, faces: torch.Tensor, face_flat: torch.Tensor, pix: torch.Tensor,
                   image_numel: int) -> torch.Tensor:
    """(B, V, C) per-vertex values → (3, P, C) at the corners of the faces seen at flat pixels ``pix``
    (corner-major, so that each corner's (P, C) block is contiguous)."""
    bsz, num_v, ch = values.shape
    batch = torch.div(pix, image_numel, rounding_mode="floor")
    rows = faces.index_select(0, face_flat.index_select(0, pix)) + (batch * num_v)[:, None]
    return values.reshape(bsz * num_v, ch).index_select(0, rows.t().reshape(-1)).view(3, -1, ch)


def _barycentrics(
    tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor, perspective_correct: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable barycentrics (N, 3) and depth (N,) of pixel centres ``(px, py)`` (N,) in triangles
    ``tri`` (3, N, 3) of screen vertices (corner-major)."""
    x0, x1, x2 = tri[0, :, 0], tri[1, :, 0], tri[2, :, 0]
    y0, y1, y2 = tri[0, :, 1], tri[1, :, 1], tri[2, :, 1]
    # edge k (opposite corner k) from corner a = k+1 to b = k+2: cross(p - a, b - a)
    edge = torch.stack([
        (px - x1) * (y2 - y1) - (py - y1) * (x2 - x1),
        (px - x2) * (y0 - y2) - (py - y2) * (x0 - x2),
        (px - x0) * (y1 - y0) - (py - y0) * (x1 - x0),
    ], dim=-1)
    z = tri[..., 2].t()
    bary = edge / edge.sum(-1, keepdim=True)
    if perspective_correct:
        weighted = bary / z
        inv_depth = weighted.sum(-1, keepdim=True)
        return weighted / inv_depth, 1.0 / inv_depth[:, 0]
    return bary, (bary * z).sum(-1)


def _interpolate_pixels(fragments: Fragments, vertex_attrs: torch.Tensor, faces: torch.Tensor,
                        pix: torch.Tensor) -> torch.Tensor:
    """(B, V, C) attributes → (P, C) interpolated at the flat covered pixels ``pix``."""
    bsz, h, w = fragments.face_idx.shape
    values = _corner_values(vertex_attrs, faces, fragments.face_idx.reshape(-1), pix, h * w)
    bary = fragments.bary.reshape(-1, 3).index_select(0, pix).to(values.dtype)
    out = torch.addcmul(values[0] * bary[:, 0:1], values[1], bary[:, 1:2])
    return torch.addcmul(out, values[2], bary[:, 2:3])


def interpolate(fragments: Fragments, vertex_attrs: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel with the fragments' barycentrics.

    Args:
        fragments: from :func:`rasterize` (B, H, W).
        vertex_attrs: (B, V, C) or (V, C) attributes (shared by the batch in the second form).
        faces: (F, 3) the faces that were rasterized.

    Returns:
        (B, H, W, C), zeros for background pixels. Differentiable w.r.t. the attributes and the barycentrics.
    """
    bsz, h, w = fragments.face_idx.shape
    if vertex_attrs.dim() == 2:
        vertex_attrs = vertex_attrs.expand(bsz, -1, -1)
    sizes = check_shape(vertex_attrs, "vertex_attrs", (bsz, "V", "C"))
    faces = _check_faces(faces, sizes["V"], vertex_attrs.device)
    pix = fragments.face_idx.reshape(-1).ge(0).nonzero().squeeze(1)
    out = _interpolate_pixels(fragments, vertex_attrs, faces, pix)
    return out.new_zeros(bsz * h * w, sizes["C"]).index_put((pix,), out).view(bsz, h, w, -1)
