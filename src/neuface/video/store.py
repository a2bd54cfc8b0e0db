"""The frames container: one HDF5 file per sequence holding every view's decoded RGB frames.

Layout (``FORMAT = "neuface.frames"``, version 1)::

    /                       attrs: format, format_version, sequence, stage="frames", status, reason, details,
                                   warnings, neuface_version (see neuface.status), views (list of str),
                                   n_frames (common frame count), fps, trimmed (JSON: view -> original count)
    /views/<view>/frames      (F, H, W, 3) uint8 RGB, one frame per chunk, compressed
    /views/<view>/timestamps  (F,) float64 seconds since the view's first decoded frame
        attrs: source (video path), fps, width, height, n_frames_decoded, n_frames_expected (what the container
               announces, 0 if unknown), truncated (decoding stopped early), source_width, source_height,
               source_fps, codec

One file per sequence (not one image per frame) keeps HPC inode counts low. A failed sequence's file has the
status attributes and no views.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from neuface.errors import NeufaceError
from neuface.status import StageStatus, read_status_attrs, write_status_attrs

FORMAT = "neuface.frames"
FORMAT_VERSION = 1
COMPRESSION = "lzf"
_BLOCK = 16  # frames buffered per write


def str_list_attr(values: list[str]) -> np.ndarray:
    """A list of str as an HDF5 variable-length UTF-8 string array attribute."""
    return np.array(list(values), dtype=h5py.string_dtype())


def read_str_list_attr(value: Any) -> list[str]:
    """Inverse of :func:`str_list_attr` (also accepts bytes items)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)]


class ViewWriter:
    """Appends frames of one view to ``/views/<view>`` (resizable datasets, written in small blocks)."""

    def __init__(self, f: h5py.File, view: str, height: int, width: int,
                 compression: str | None = COMPRESSION):
        self.group = f.require_group("views").create_group(view)
        opts: dict[str, Any] = {"compression": compression}
        if compression == "gzip":
            opts["compression_opts"] = 1
        self.frames = self.group.create_dataset(
            "frames", shape=(0, height, width, 3), maxshape=(None, height, width, 3), dtype=np.uint8,
            chunks=(1, height, width, 3), **opts)
        self.times = self.group.create_dataset("timestamps", shape=(0,), maxshape=(None,), dtype=np.float64,
                                               chunks=(1024,))
        self._buf: list[np.ndarray] = []
        self._tbuf: list[float] = []
        self.count = 0

    def append(self, t: float, rgb: np.ndarray) -> None:
        self._buf.append(rgb)
        self._tbuf.append(t)
        if len(self._buf) >= _BLOCK:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        n = len(self._buf)
        self.frames.resize(self.count + n, axis=0)
        self.times.resize(self.count + n, axis=0)
        self.frames[self.count:self.count + n] = np.stack(self._buf)
        self.times[self.count:self.count + n] = self._tbuf
        self.count += n
        self._buf, self._tbuf = [], []

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` frames."""
        self.flush()
        self.frames.resize(n, axis=0)
        self.times.resize(n, axis=0)
        self.count = n


def write_root_attrs(f: h5py.File, status: StageStatus, views: list[str], n_frames: int, fps: float | None,
                     trimmed: dict[str, int]) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    write_status_attrs(f.attrs, status)
    f.attrs["views"] = str_list_attr(views)
    f.attrs["n_frames"] = int(n_frames)
    f.attrs["fps"] = float(fps) if fps else float("nan")
    f.attrs["trimmed"] = json.dumps(trimmed, sort_keys=True)


def _open(h5: str | os.PathLike | h5py.File) -> tuple[h5py.File, bool]:
    if isinstance(h5, h5py.File):
        return h5, False
    path = Path(h5)
    if not path.is_file():
        raise NeufaceError(f"frames file {path} does not exist")
    return h5py.File(path, "r"), True


def frames_info(h5: str | os.PathLike | h5py.File) -> dict[str, Any]:
    """Root metadata of a frames file: status (a :class:`StageStatus`), views, n_frames, fps, trimmed,
    and per view its attributes and frame shape."""
    f, close = _open(h5)
    try:
        if f.attrs.get("format") != FORMAT:
            raise NeufaceError(f"{f.filename} is not a neuface frames file "
                               f"(format={f.attrs.get('format')!r})")
        views = read_str_list_attr(f.attrs["views"])
        info: dict[str, Any] = {
            "status": read_status_attrs(f.attrs),
            "views": views,
            "n_frames": int(f.attrs["n_frames"]),
            "fps": float(f.attrs["fps"]),
            "trimmed": json.loads(f.attrs["trimmed"]),
            "view_attrs": {},
        }
        for v in views:
            attrs = {k: (val.item() if isinstance(val, np.generic) else val)
                     for k, val in f[f"views/{v}"].attrs.items()}
            attrs["shape"] = tuple(f[f"views/{v}/frames"].shape)
            info["view_attrs"][v] = attrs
        return info
    finally:
        if close:
            f.close()


def read_frames(h5: str | os.PathLike | h5py.File, view: str, start: int = 0,
                stop: int | None = None) -> np.ndarray:
    """Frames ``[start, stop)`` of ``view`` as an ``(F, H, W, 3)`` uint8 RGB array.

    ``h5`` may be a path or an open ``h5py.File`` (reuse an open file when reading many slices).
    """
    f, close = _open(h5)
    try:
        key = f"views/{view}/frames"
        if key not in f:
            views = read_str_list_attr(f.attrs.get("views", [])) if "views" in f.attrs else []
            raise NeufaceError(f"{f.filename} has no view {view!r} (views: {', '.join(views) or 'none'}; "
                               f"status {f.attrs.get('status', '?')})")
        ds = f[key]
        n = ds.shape[0]
        stop = n if stop is None else stop
        if not (0 <= start <= stop <= n):
            raise NeufaceError(f"frame range [{start}, {stop}) is outside [0, {n}) for view {view!r}")
        return ds[start:stop]
    finally:
        if close:
            f.close()


__all__ = [
    "COMPRESSION",
    "FORMAT",
    "FORMAT_VERSION",
    "ViewWriter",
    "frames_info",
    "read_frames",
    "read_str_list_attr",
    "str_list_attr",
    "write_root_attrs",
]
