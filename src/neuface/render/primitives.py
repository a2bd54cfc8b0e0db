"""Procedural test meshes (tests, benchmarks, demos): UV sphere and subdivided grid plane."""

from __future__ import annotations

import math

import torch


def uv_sphere(
    n_lat: int = 70, n_lon: int = 72, radius: float = 1.0, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A UV sphere centred at the origin with outward (counter-clockwise) faces.

    Args:
        n_lat: number of latitude bands (>= 2); n_lon: number of longitude segments (>= 3).

    Returns:
        vertices (V, 3) with ``V = (n_lat - 1) * n_lon + 2`` and faces (F, 3) long with
        ``F = 2 * n_lon * (n_lat - 1)`` (the defaults give 4970 vertices / 9936 faces, FLAME-sized).
    """
    if n_lat < 2 or n_lon < 3:
        raise ValueError(f"uv_sphere needs n_lat >= 2 and n_lon >= 3, got {n_lat}, {n_lon}")
    theta = torch.arange(1, n_lat, dtype=torch.float64) * (math.pi / n_lat)  # polar angle from +y
    phi = torch.arange(n_lon, dtype=torch.float64) * (2 * math.pi / n_lon)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([torch.sin(t) * torch.sin(p), torch.cos(t), torch.sin(t) * torch.cos(p)], -1)
    verts = torch.cat([ring.reshape(-1, 3), torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]],
                                                          dtype=torch.float64)]) * radius
    top, bottom = (n_lat - 1) * n_lon, (n_lat - 1) * n_lon + 1
    j = torch.arange(n_lon)
    jn = (j + 1) % n_lon
    cap_top = torch.stack([torch.full_like(j, top), j, jn], -1)
    a = (torch.arange(n_lat - 2)[:, None] * n_lon + j).reshape(-1)  # upper-left corner of every band cell
    b = a - j.repeat(n_lat - 2) + jn.repeat(n_lat - 2)
    c, d = a + n_lon, b + n_lon
    last = (n_lat - 2) * n_lon
    cap_bottom = torch.stack([last + j, torch.full_like(j, bottom), last + jn], -1)
    bands = torch.stack([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)], 1).reshape(-1, 3)
    faces = [cap_top, bands, cap_bottom]
    return verts.to(dtype=dtype, device=device), torch.cat(faces).to(device=device)


def grid_plane(
    n: int, size: float = 1.0, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A square ``[-size/2, size/2]^2`` in the z = 0 plane split into ``n x n`` cells of two triangles,
    facing +z (counter-clockwise seen from +z). Returns vertices ((n+1)^2, 3) and faces (2 n^2, 3)."""
    lin = torch.linspace(-size / 2, size / 2, n + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    verts = torch.stack([xx, yy, torch.zeros_like(xx)], -1).reshape(-1, 3)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    a = (i * (n + 1) + j).reshape(-1)
    b, c, d = a + 1, a + n + 1, a + n + 2
    faces = torch.cat([torch.stack([a, b, d], -1), torch.stack([a, d, c], -1)])
    return verts.to(dtype=dtype, device=device), faces.to(device=device)
