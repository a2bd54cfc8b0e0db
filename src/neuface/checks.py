"""Kornia-style argument checks for public functions: clear messages instead of asserts.

A shape spec is a tuple whose items are ints (exact size), strings (named symbolic sizes that must agree
between the dims that share the name within one call) or ``None`` / ``"*"`` (anything). A leading ``"..."``
allows any number of leading batch dims.

Example::

    sizes = check_shape(vertices, "vertices", ("B", "V", 3))
    check_shape(faces, "faces", ("F", 3))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from neuface.errors import ShapeError

ShapeSpec = Sequence[int | str | None]


def check_shape(
    x: torch.Tensor,
    name: str,
    spec: ShapeSpec,
    sizes: dict[str, int] | None = None,
) -> dict[str, int]:
    """Check ``x.shape`` against ``spec``; returns the dict of named sizes (updated in place if given).

    Raises:
        ShapeError: if ``x`` is not a tensor, has the wrong number of dims, or a size disagrees.
    """
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    sizes = {} if sizes is None else sizes
    spec = list(spec)
    shape = list(x.shape)
    if spec and spec[0] == "...":
        spec = spec[1:]
        if len(shape) < len(spec):
            raise ShapeError(f"{name} must have at least {len(spec)} dims (..., {_fmt(spec)}), got {tuple(shape)}")
        shape = shape[len(shape) - len(spec):]
    elif len(shape) != len(spec):
        raise ShapeError(f"{name} must have shape ({_fmt(spec)}), got {tuple(x.shape)}")
    for dim, (want, got) in enumerate(zip(spec, shape, strict=True)):
        if want is None or want == "*":
            continue
        if isinstance(want, int):
            if got != want:
                raise ShapeError(f"{name} must have shape ({_fmt(spec)}); dim {dim} is {got}, expected {want}")
        elif want in sizes and sizes[want] != got:
            raise ShapeError(
                f"{name} must have shape ({_fmt(spec)}); dim {dim} ({want}) is {got}, "
                f"but {want}={sizes[want]} elsewhere"
            )
        else:
            sizes[want] = got
    return sizes


def check_floating(x: torch.Tensor, name: str) -> None:
    """Raise :class:`ShapeError` unless ``x`` is a floating-point tensor."""
    if not torch.is_floating_point(x):
        raise ShapeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _fmt(spec: ShapeSpec) -> str:
    return ", ".join("*" if s is None else str(s) for s in spec)
