"""The pure-torch renderer: rasterizer vs a naive per-pixel/per-face loop, analytic coverage, shading,
cameras, gradients, overlays and PNG output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuface.errors import ShapeError
from neuface.geometry.camera import PinholeCamera, WeakPerspectiveCamera
from neuface.render import (
    draw_landmarks,
    grid_plane,
    interpolate,
    rasterize,
    render_mesh,
    save_png,
    uv_sphere,
)

F64 = torch.float64


# ----------------------------------------------------------------------------------------------- reference
def naive_rasterize(screen, faces, image_size, cull_backfaces=False, perspective_correct=False, znear=1e-6):
    """Loop over every pixel and every face in float64 Python arithmetic."""
    h, w = image_size
    bsz = screen.shape[0]
    face_idx = torch.full((bsz, h, w), -1, dtype=torch.long)
    bary = torch.zeros(bsz, h, w, 3, dtype=F64)
    zbuf = torch.full((bsz, h, w), math.inf, dtype=F64)
    for b in range(bsz):
        for y in range(h):
            for x in range(w):
                best = (math.inf, -1, None)
                for f, corners in enumerate(faces.tolist()):
                    (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = screen[b, corners].tolist()
                    if perspective_correct and min(z0, z1, z2) <= znear:
                        continue
                    cross = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)  # < 0: front (clockwise, y down)
                    if cross == 0 or (cull_backfaces and cross > 0):
                        continue
                    # barycentrics = sub-triangle areas / total area
                    l0 = ((x1 - x) * (y2 - y) - (y1 - y) * (x2 - x)) / cross
                    l1 = ((x2 - x) * (y0 - y) - (y2 - y) * (x0 - x)) / cross
                    l2 = 1.0 - l0 - l1
                    if min(l0, l1, l2) < 0:
                        continue
                    if perspective_correct:
                        s = l0 / z0 + l1 / z1 + l2 / z2
                        lam, depth = (l0 / z0 / s, l1 / z1 / s, l2 / z2 / s), 1.0 / s
                    else:
                        lam, depth = (l0, l1, l2), l0 * z0 + l1 * z1 + l2 * z2
                    if depth < best[0]:
                        best = (depth, f, lam)
                if best[1] >= 0:
                    face_idx[b, y, x] = best[1]
                    bary[b, y, x] = torch.tensor(best[2], dtype=F64)
                    zbuf[b, y, x] = best[0]
    return face_idx, bary, zbuf


def _scene():
    """Two batch items of 7 triangles on a 16 x 12 image: overlaps at different depths, an interpenetrating
    pair, a partly off-screen face, a degenerate face, a back face, one vertex behind a pinhole camera."""
    verts = torch.tensor([
        [1.3, 0.7, 4.0], [13.6, 2.2, 4.5], [4.1, 10.8, 5.0],      # 0: big, far
        [3.2, 3.1, 2.0], [11.7, 4.4, 2.5], [6.6, 9.3, 1.5],       # 1: overlaps 0, closer
        [2.4, 5.2, 1.0], [14.3, 6.95, 6.5], [9.1, 11.6, 3.0],      # 2: interpenetrates 0 and 1
        [-4.7, -3.1, 3.0], [7.9, 1.6, 3.5], [-2.2, 7.4, 0.5],     # 3: partly off-screen
        [1.0, 1.0, 1.0], [5.0, 5.0, 1.0], [9.0, 9.0, 1.0],        # 4: degenerate (collinear)
        [12.4, 8.3, 0.8], [15.9, 11.2, 0.9], [10.2, 13.7, 0.7],   # 5: back face (counter-clockwise on screen)
        [6.3, 2.4, -1.0], [9.8, 2.9, 2.0], [8.1, 6.2, 2.2],       # 6: one vertex behind a pinhole camera
    ], dtype=F64)
    faces = torch.tensor([[0, 2, 1], [3, 5, 4], [6, 8, 7], [9, 11, 10], [12, 13, 14], [15, 16, 17],
                          [18, 20, 19]])
    second = verts.clone()
    second[:, 0] = 15.0 - verts[:, 0] + 0.37  # mirrored: flips every winding
    second[:, 2] = verts[:, 2] * 1.3 + 0.1
    return torch.stack([verts, second]), faces


@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("perspective", [False, True])
def test_rasterize_matches_naive_loop(cull, perspective):
    screen, faces = _scene()
    if not perspective:
        screen = screen.clone()
        screen[..., 2] -= 2.0  # weak-perspective depths may be negative
    frags = rasterize(screen, faces, (12, 16), cull_backfaces=cull, perspective_correct=perspective)
    face_idx, bary, zbuf = naive_rasterize(screen, faces, (12, 16), cull, perspective)
    assert (face_idx >= 0).sum() > 100 and len(face_idx.unique()) >= 5  # a non-trivial case
    assert torch.equal(frags.face_idx, face_idx)
    torch.testing.assert_close(frags.bary, bary, atol=1e-10, rtol=0)
    torch.testing.assert_close(frags.zbuf, zbuf, atol=1e-10, rtol=0)
    assert not (frags.face_idx == 4).any()  # degenerate
    if perspective:
        assert not (frags.face_idx == 6).any()  # behind the camera
    if cull:
        assert not (frags.face_idx[0] == 5).any() and (frags.face_idx[1] == 5).any()


def test_chunking_and_dtype_do_not_change_the_result():
    screen, faces = _scene()
    ref = rasterize(screen, faces, (12, 16))
    small = rasterize(screen, faces, (12, 16), max_candidates=3)
    assert torch.equal(small.face_idx, ref.face_idx) and torch.equal(small.bary, ref.bary)
    f32 = rasterize(screen.float(), faces.int(), (12, 16))
    assert torch.equal(f32.face_idx, ref.face_idx) and f32.bary.dtype == torch.float32


# ----------------------------------------------------------------------------------------------- analytic
def test_square_coverage_is_exact_and_watertight():
    # a 7 x 5 cell grid over x in [2, 9], y in [1, 6]: inclusive edges -> 8 x 6 pixel centres; the diagonals
    # pass exactly through pixel centres, where both neighbours must not drop the pixel
    verts, faces = grid_plane(7, size=1.0, dtype=F64)
    screen = torch.stack([2 + (verts[:, 0] + 0.5) * 7, 1 + (verts[:, 1] + 0.5) * 5, 1 + verts[:, 0]], -1)
    frags = rasterize(screen[None], faces, (9, 12))
    expected = torch.zeros(9, 12, dtype=torch.bool)
    expected[1:7, 2:10] = True
    assert torch.equal(frags.mask[0], expected)
    # half-integer corners: x in [1.5, 5.5] -> columns 2..5, y in [0.5, 2.5] -> rows 1..2
    quad = torch.tensor([[[1.5, 0.5, 1.0], [5.5, 0.5, 1.0], [5.5, 2.5, 1.0], [1.5, 2.5, 1.0]]], dtype=F64)
    quad_faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    assert rasterize(quad, quad_faces, (4, 7)).mask.sum() == 8
    # equal depths on the shared diagonal (x - y = 1 here): the smaller face index wins the tie
    square = torch.tensor([[[2.0, 1.0, 1.0], [8.0, 1.0, 1.0], [8.0, 7.0, 1.0], [2.0, 7.0, 1.0]]], dtype=F64)
    diag = (torch.arange(2, 9), torch.arange(1, 8))
    for order in ([0, 1], [1, 0]):
        tri = torch.tensor([[0, 1, 2], [0, 2, 3]])[order]
        face_idx = rasterize(square, tri, (9, 10)).face_idx[0]
        assert (face_idx[diag[1], diag[0]] == 0).all()
        assert (face_idx[1:8, 2:9] >= 0).all() and (face_idx >= 0).sum() == 49


def test_shared_edges_through_pixel_centres_leave_no_gaps():
    # quads split along a diagonal a-b that passes (to rounding) through 9 pixel centres: each such centre is
    # inside one face or the other, so none may be dropped by both (independent rounding of the two faces'
    # edge functions would drop some of them)
    g = torch.Generator().manual_seed(0)
    n = 200
    p1 = torch.randint(0, 10, (n, 2), generator=g).double()
    step = torch.randint(1, 4, (n, 2), generator=g).double() * torch.tensor([1.0, -1.0]).pow(
        torch.randint(0, 2, (n, 2), generator=g))
    a = p1 + (-0.05 - 0.9 * torch.rand(n, 1, generator=g, dtype=F64)) * step
    b = p1 + (8.05 + 0.9 * torch.rand(n, 1, generator=g, dtype=F64)) * step
    normal = torch.stack([-step[:, 1], step[:, 0]], 1)
    c, d = (a + b) / 2 + 3.7 * normal, (a + b) / 2 - 4.1 * normal
    screen = torch.cat([torch.stack([a, b, c, d], 1), torch.ones(n, 4, 1, dtype=F64)], 2)
    for faces in (torch.tensor([[0, 1, 2], [1, 0, 3]]), torch.tensor([[2, 0, 1], [3, 1, 0]])):
        mask = rasterize(screen, faces, (64, 64)).mask
        pts = (p1[:, None] + torch.arange(9.0)[None, :, None] * step[:, None]).long()  # (n, 9, 2)
        batch = torch.arange(n)[:, None].expand(n, 9)
        ok = ((pts >= 0) & (pts < 64)).all(-1)
        assert ok.sum() > 800
        assert mask[batch[ok], pts[..., 1][ok], pts[..., 0][ok]].all()


def test_sphere_silhouette_area():
    verts, faces = uv_sphere(48, 64, radius=0.5, dtype=F64)
    cam = WeakPerspectiveCamera(torch.tensor([[1.25, 0.0, 0.0]], dtype=F64))  # radius 0.625 NDC = 40 px
    out = render_mesh(verts[None], faces, cam, (128, 128))
    area = out.alpha.sum().item()
    assert abs(area - math.pi * 40**2) / (math.pi * 40**2) < 0.02
    ys, xs = out.alpha[0, 0].nonzero().double().unbind(1)
    assert abs(xs.mean().item() - 63.5) < 0.1 and abs(ys.mean().item() - 63.5) < 0.1


def test_culling_a_closed_mesh_keeps_the_same_visible_faces():
    verts, faces = uv_sphere(16, 24, radius=0.5, dtype=F64)
    rot = torch.tensor([[0.8, 0.0, 0.6], [0.0, 1.0, 0.0], [-0.6, 0.0, 0.8]], dtype=F64)
    cam = WeakPerspectiveCamera(torch.tensor([[1.5, 0.1, -0.05]], dtype=F64))
    screen = cam.to_screen((verts @ rot.T)[None], (40, 48))
    full = rasterize(screen, faces, (40, 48))
    culled = rasterize(screen, faces, (40, 48), cull_backfaces=True)
    assert torch.equal(full.face_idx, culled.face_idx)
    # with the faces flipped (normals inwards) culling keeps the far hemisphere instead
    inward = rasterize(screen, faces.flip(1), (40, 48), cull_backfaces=True)
    assert torch.equal(inward.mask, full.mask)
    mask = full.mask
    assert (inward.zbuf[mask] > full.zbuf[mask]).float().mean() > 0.95


def test_perspective_correct_interpolation_lands_on_the_pixel_ray():
    verts, faces = grid_plane(3, size=2.0, dtype=F64)
    tilt = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, -0.8], [0.0, 0.8, 0.6]], dtype=F64)
    world = verts @ tilt.T
    k = torch.tensor([[[40.0, 0.0, 23.5], [0.0, 44.0, 15.5], [0.0, 0.0, 1.0]]], dtype=F64)
    r = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64))[None]
    cam = PinholeCamera(k, r, torch.tensor([[0.1, 0.0, 3.0]], dtype=F64))
    frags = rasterize(cam.to_screen(world[None]), faces, (32, 48), perspective_correct=True)
    points = interpolate(frags, world, faces)  # interpolated world points (B, H, W, 3)
    mask = frags.mask
    assert mask.sum() > 300
    reproj = cam.to_screen(points.view(1, -1, 3)).view(1, 32, 48, 3)
    ys, xs = torch.meshgrid(torch.arange(32.0, dtype=F64), torch.arange(48.0, dtype=F64), indexing="ij")
    torch.testing.assert_close(reproj[..., 0][mask], xs[None].expand_as(mask)[mask], atol=1e-9, rtol=0)
    torch.testing.assert_close(reproj[..., 1][mask], ys[None].expand_as(mask)[mask], atol=1e-9, rtol=0)
    torch.testing.assert_close(reproj[..., 2][mask], frags.zbuf[mask], atol=1e-9, rtol=0)
    # affine interpolation of the same fragments would miss the ray
    affine = rasterize(cam.to_screen(world[None]), faces, (32, 48), perspective_correct=False)
    off = cam.to_screen(interpolate(affine, world, faces).view(1, -1, 3)).view(1, 32, 48, 3)
    assert (off[..., 0][mask] - xs[None].expand_as(mask)[mask]).abs().max() > 0.05


# ----------------------------------------------------------------------------------------------- shading
def _plane_render(light_dir, **kw):
    verts, faces = grid_plane(2, size=1.0, dtype=F64)
    cam = WeakPerspectiveCamera(torch.tensor([[1.0, 0.0, 0.0]], dtype=F64))
    colors = torch.full_like(verts, 0.9)
    return render_mesh(verts[None], faces, cam, (20, 24), vertex_colors=colors, light_dir=light_dir, **kw)


def test_lambert_plane_intensity():
    out = _plane_render((0.0, 0.0, 1.0))
    inside = out.alpha[0, 0] > 0
    torch.testing.assert_close(out.images[0][:, inside], torch.full((3, int(inside.sum())), 0.9 * 1.0,
                                                                     dtype=F64))
    at60 = _plane_render((2 * math.sin(math.pi / 3), 0.0, 2 * math.cos(math.pi / 3)))  # unnormalised
    torch.testing.assert_close(at60.images[0][:, inside], torch.full_like(at60.images[0][:, inside],
                                                                          0.9 * (0.3 + 0.7 / 2)))
    behind = _plane_render((0.0, 0.0, -1.0))
    torch.testing.assert_close(behind.images[0][:, inside], torch.full_like(behind.images[0][:, inside],
                                                                            0.9 * 0.3))
    assert (out.images[0][:, ~inside] == 0).all()


def _full(mask, value):
    return torch.full((3, int(mask.sum())), value, dtype=F64)


def _close(a, b):
    torch.testing.assert_close(a, b)


def test_headlight_and_two_sided():
    # default light = from the camera: a plane facing the camera is fully lit
    out = _plane_render(None, ambient=0.2, diffuse=0.8)
    inside = out.alpha[0, 0] > 0
    torch.testing.assert_close(out.images[0][:, inside], torch.full_like(out.images[0][:, inside], 0.9))
    # its back side: dark unless two-sided
    verts, faces = grid_plane(2, size=1.0, dtype=F64)
    cam = WeakPerspectiveCamera(torch.tensor([[1.0, 0.0, 0.0]], dtype=F64))
    one = render_mesh(verts[None], faces.flip(1), cam, (20, 24), ambient=0.25)
    two = render_mesh(verts[None], faces.flip(1), cam, (20, 24), ambient=0.25, two_sided=True)
    _close(one.images[0][:, inside], _full(inside, 0.8 * 0.25))
    _close(two.images[0][:, inside], _full(inside, 0.8 * 0.95))


def test_background_colour_and_image():
    out = _plane_render(None, background=(0.1, 0.2, 0.3))
    outside = out.alpha[0, 0] == 0
    assert outside.any()
    torch.testing.assert_close(out.images[0][:, outside][:, 0], torch.tensor([0.1, 0.2, 0.3], dtype=F64))
    bg = torch.rand(1, 3, 20, 24, dtype=F64)
    out = _plane_render(None, background=bg)
    assert torch.equal(out.images[0][:, outside], bg[0][:, outside])
    with pytest.raises(ShapeError, match="background"):
        _plane_render(None, background=(0.1, 0.2))


def _far_pinhole(scale, image_size, distance):
    """A pinhole camera on +z looking at the origin that matches ``WeakPerspectiveCamera((scale, 0, 0))``."""
    h, w = image_size
    k = torch.tensor([[[scale * w / 2 * distance, 0.0, w / 2 - 0.5],
                       [0.0, scale * h / 2 * distance, h / 2 - 0.5], [0.0, 0.0, 1.0]]], dtype=F64)
    r = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64))[None]
    return PinholeCamera(k, r, torch.tensor([[0.0, 0.0, distance]], dtype=F64))


@pytest.mark.parametrize("image_size", [(48, 64), (64, 40)])
def test_far_pinhole_approximates_weak_perspective(image_size):
    verts, faces = uv_sphere(12, 16, radius=0.4, dtype=F64)
    verts = verts * torch.tensor([1.0, 1.3, 0.7], dtype=F64) + torch.tensor([0.2, -0.1, 0.0], dtype=F64)
    weak = render_mesh(verts[None], faces, WeakPerspectiveCamera(torch.tensor([[1.1, 0.0, 0.0]], dtype=F64)),
                       image_size)
    pin = render_mesh(verts[None], faces, _far_pinhole(1.1, image_size, 100.0), image_size)
    a, b = weak.alpha > 0, pin.alpha > 0
    assert (a & b).sum() / (a | b).sum() > 0.95
    assert weak.images.shape == (1, 3, *image_size)
    both = (a & b).expand_as(weak.images)
    assert (weak.images[both] - pin.images[both]).abs().mean() < 0.01


def test_batch_equals_separate_renders():
    verts, faces = uv_sphere(10, 14, radius=0.5, dtype=F64)
    batch = torch.stack([verts, verts * 0.8 + 0.1])
    cam = torch.tensor([[1.2, 0.0, 0.1], [0.9, -0.2, 0.0]], dtype=F64)
    colors = torch.rand(2, verts.shape[0], 3, dtype=F64)
    light = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 0.7]], dtype=F64)
    both = render_mesh(batch, faces, WeakPerspectiveCamera(cam), (30, 26), vertex_colors=colors,
                       light_dir=light)
    for i in range(2):
        one = render_mesh(batch[i:i + 1], faces, WeakPerspectiveCamera(cam[i:i + 1]), (30, 26),
                          vertex_colors=colors[i:i + 1], light_dir=light[i])
        torch.testing.assert_close(both.images[i], one.images[0], atol=1e-12, rtol=0)
        assert torch.equal(both.fragments.face_idx[i], one.fragments.face_idx[0])
    assert not torch.equal(both.images[0], both.images[1])


# ----------------------------------------------------------------------------------------------- gradients
def _tiny():
    screen, faces = _scene()
    return screen[:, :9], faces[:3]


def test_gradcheck_interpolate_wrt_attributes():
    screen, faces = _tiny()
    frags = rasterize(screen, faces, (12, 16))
    attrs = torch.rand(2, 9, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(frags, a, faces), (attrs,))


@pytest.mark.parametrize("perspective", [False, True])
def test_gradcheck_bary_and_depth_wrt_vertex_positions(perspective):
    screen, faces = _tiny()
    mask = rasterize(screen, faces, (12, 16)).mask

    def fn(s):
        frags = rasterize(s, faces, (12, 16), perspective_correct=perspective)
        assert torch.equal(frags.mask, mask)  # visibility is fixed under the small perturbation
        return frags.bary, torch.where(mask, frags.zbuf, torch.zeros_like(frags.zbuf))

    screen = screen.clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (screen,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradcheck_render_wrt_colors_vertices_and_light():
    verts = torch.tensor([[-0.6, -0.5, 0.1], [0.7, -0.4, 0.0], [0.1, 0.6, 0.2], [-0.5, 0.5, -0.1]], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    colors = torch.tensor([[0.2, 0.5, 0.7], [0.6, 0.1, 0.3], [0.4, 0.4, 0.4], [0.8, 0.3, 0.1]], dtype=F64)
    cam = WeakPerspectiveCamera(torch.tensor([[1.1, 0.03, -0.02]], dtype=F64))
    light = torch.tensor([0.3, 0.2, 1.0], dtype=F64)

    def fn(v, c, lgt):
        return render_mesh(v[None], faces, cam, (9, 11), vertex_colors=c, light_dir=lgt).images

    args = (verts.requires_grad_(), colors.requires_grad_(), light.requires_grad_())
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)
    images = fn(*args)
    grads = torch.autograd.grad(images.sum(), args)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


# ----------------------------------------------------------------------------------------------- overlays
def test_draw_landmarks_matches_disc_definition():
    images = torch.rand(2, 3, 12, 15)
    points = torch.tensor([[[5.3, 4.6], [14.2, 0.4], [float("nan"), 3.0]],
                           [[-1.6, 5.0], [7.0, 7.0], [30.0, 30.0]]])
    out = draw_landmarks(images, points, color=(1.0, 0.0, 0.5), radius=2.0)
    expected = images.clone()
    for b in range(2):
        for x, y in points[b].tolist():
            for i in range(12):
                for j in range(15):
                    if (j - x) ** 2 + (i - y) ** 2 <= 4.0:
                        expected[b, :, i, j] = torch.tensor([1.0, 0.0, 0.5])
    assert torch.equal(out, expected)
    assert not torch.equal(out, images)  # the input was not modified, the output was
    per_point = draw_landmarks(images, points, color=torch.eye(3), radius=0.0)
    assert torch.equal(per_point[1, :, 7, 7], torch.tensor([0.0, 1.0, 0.0]))


def test_save_png_roundtrip(tmp_path):
    from PIL import Image

    image = torch.rand(3, 7, 9)
    path = tmp_path / "sub" / "x.png"
    save_png(image, path)
    back = torch.tensor(np.asarray(Image.open(path))).permute(2, 0, 1)
    assert torch.equal(back, (image * 255).round().to(torch.uint8))
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.png"]


# ----------------------------------------------------------------------------------------------- primitives
def test_primitives_are_closed_and_outward():
    from neuface.geometry.mesh import vertex_normals

    verts, faces = uv_sphere(7, 9, dtype=F64)
    assert verts.shape == (6 * 9 + 2, 3) and faces.shape == (2 * 9 * 6, 3)
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).tolist()
    directed = set(map(tuple, edges))
    assert len(directed) == len(edges) and all((b, a) in directed for a, b in directed)  # closed, oriented
    torch.testing.assert_close(verts.norm(dim=-1), torch.ones(len(verts), dtype=F64))
    assert ((vertex_normals(verts[None], faces)[0] * verts).sum(-1) > 0.9).all()
    plane, plane_faces = grid_plane(3, size=2.0, dtype=F64)
    assert plane.shape == (16, 3) and plane_faces.shape == (18, 3)
    normals = vertex_normals(plane[None], plane_faces)[0]
    torch.testing.assert_close(normals, torch.tensor([0.0, 0.0, 1.0], dtype=F64).expand(16, 3))


# ----------------------------------------------------------------------------------------------- errors
def test_invalid_inputs_raise_shape_errors():
    screen, faces = _scene()
    with pytest.raises(ShapeError, match="screen"):
        rasterize(screen[0], faces, (12, 16))
    with pytest.raises(ShapeError, match="outside"):
        rasterize(screen, faces + 100, (12, 16))
    with pytest.raises(ShapeError, match="integer"):
        rasterize(screen, faces.double(), (12, 16))
    with pytest.raises(ShapeError, match="image_size"):
        rasterize(screen, faces, (0, 16))
    frags = rasterize(screen, faces, (12, 16))
    with pytest.raises(ShapeError, match="vertex_attrs"):
        interpolate(frags, torch.zeros(3, 21, 2, dtype=F64), faces)
    with pytest.raises(ShapeError, match="points"):
        draw_landmarks(torch.zeros(1, 3, 4, 4), torch.zeros(2, 1, 2))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    verts, faces = uv_sphere(24, 32, radius=0.5)
    cam = torch.tensor([[1.2, 0.05, 0.0], [0.8, 0.0, 0.1]])
    batch = torch.stack([verts, verts * 0.9])
    cpu = render_mesh(batch, faces, WeakPerspectiveCamera(cam), (64, 80))
    gpu = render_mesh(batch.cuda(), faces.cuda(), WeakPerspectiveCamera(cam.cuda()), (64, 80))
    assert gpu.images.is_cuda
    assert (gpu.fragments.face_idx.cpu() != cpu.fragments.face_idx).float().mean() < 1e-3
    torch.testing.assert_close(gpu.images.cpu(), cpu.images, atol=1e-3, rtol=0)
