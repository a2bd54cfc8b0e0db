"""``NeuFaceH5``: a torch ``Dataset`` of fixed-length clips from a packed ``neuface.dataset`` file.

One item is a window of ``clip_len`` consecutive frames of one view of one sequence. The clip index is built
from group attributes (``n_frames``, ``views``; and, for a cut sequence, its small ``shots`` array), so opening
a large file is cheap. A sequence cut into shots (:mod:`neuface.shots`) has one identity β per shot: by default
clips stay inside one shot, and every item carries the β of each of its frames. The HDF5 handle is
opened lazily in the process that reads (and re-opened after a fork), and dropped when the dataset is pickled,
so ``DataLoader(num_workers > 0)`` works with both ``fork`` and ``spawn``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from neuface.dataset.schema import DATASET_FORMAT, attr_str, attr_str_list, sequence_warnings
from neuface.errors import NeufaceError
from neuface.shots import check_shots, frame_shapes, shot_of_frame, single_shot

log = logging.getLogger(__name__)

#: HDF5 chunk cache per open dataset (bytes) and how many sequences keep their dataset handles open.
CHUNK_CACHE_BYTES = 1 << 20
OPEN_SEQUENCES = 4

#: Per-frame arrays returned for each clip (sliced to the clip's view).
CLIP_ARRAYS = ("expression", "global_pose", "pose", "cam", "crop_transforms", "landmarks", "landmarks_pred",
               "detected", "frame_indices")


class NeuFaceH5(Dataset):
    """Fixed-length clips ``(sequence, view, window)`` of a packed dataset.

    Args:
        path: a ``neuface.dataset`` HDF5 file (``neuface pack``).
        clip_len: frames per clip N; ``None`` gives whole sequences (variable length: use batch size 1).
        stride: frames between the starts of consecutive clips (default ``clip_len``: no overlap).
        views: only these view names (default: every view of every sequence).
        with_vertices: also return ``vertices`` (N, V, 3) and, with a landmark embedding, ``landmarks3d``
            (N, 68, 3), computed with ``flame``.
        flame: a :class:`~neuface.flame.FlameLayer` (with ``n_shape`` / ``n_exp`` equal to the file's), or a
            FLAME model path (then ``embedding`` may give the landmark embedding path).
        embedding: landmark embedding path, used when ``flame`` is a path.
        dtype: floating dtype of the returned tensors (``crop_transforms`` included).
        split_shots: clips never cross a shot boundary of a cut sequence (``clip_len=None``: one item per shot);
            False: windows over the whole sequence, as for an uncut one. Uncut sequences are the same either way.

    Item (dict): ``shape`` (S,) (the β of the clip's first frame's shot: the sequence's β when it is uncut),
    ``shapes`` (N, S) (the β of every frame), ``shot`` (N,) int64 (the shot index of every frame),
    ``expression`` (N, E), ``global_pose`` (N, 3), ``pose`` (N, 12), ``cam`` (N, 3), ``crop_transforms``
    (N, 3, 3), ``landmarks`` / ``landmarks_pred`` (N, 68, 2), ``detected`` (N,) bool, ``frame_indices`` (N,)
    int64, ``sequence`` (str), ``view`` (str), ``start`` (int); plus ``vertices`` / ``landmarks3d`` (computed
    with each frame's β) when requested. ``shots`` maps every sequence to its shot bounds (S, 2) ``[start,
    stop)`` (one row for an uncut sequence).

    ``warnings`` maps every sequence of the file to its partial-input codes (``[]`` for a complete input; e.g.
    ``["truncated_decode:front:75/270"]``, see :mod:`neuface.input_warnings`); ``sequence_warnings(name)`` reads
    one. Sequences with warnings are yielded like the others; to leave them out, wrap the dataset in a
    ``torch.utils.data.Subset`` of ``[i for i, (s, _, _) in enumerate(ds.clips()) if not ds.warnings[s]]``.
    """

    def __init__(self, path: str | os.PathLike, clip_len: int | None = 16, stride: int | None = None,
                 views: list[str] | None = None, with_vertices: bool = False, flame: Any = None,
                 embedding: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
                 split_shots: bool = True) -> None:
        self.path = Path(path)
        self.split_shots = split_shots
        self.shots: dict[str, np.ndarray] = {}
        if clip_len is not None and clip_len < 1:
            raise NeufaceError(f"clip_len must be >= 1, got {clip_len}")
        self.clip_len = clip_len
        self.stride = stride or clip_len or 1
        if self.stride < 1:
            raise NeufaceError(f"stride must be >= 1, got {self.stride}")
        self.dtype = dtype
        self.with_vertices = with_vertices
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._groups: OrderedDict[str, dict[str, h5py.Dataset]] = OrderedDict()
        self.warnings: dict[str, list[str]] = {}
        self._index, self.n_shape, self.n_exp, self.attrs = self._build_index(views)
        self.flame = self._make_flame(flame, embedding) if with_vertices else None

    # ------------------------------------------------------------------------------------------- index
    def _build_index(self, views: list[str] | None) -> tuple[list[tuple[str, int, str, int, int]], int, int, dict]:
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise NeufaceError(f"cannot open dataset {self.path}: {exc}") from None
        with f, self._reading("the file's index"):
            fmt = attr_str(f.attrs.get("format", ""))
            if fmt != DATASET_FORMAT:
                raise NeufaceError(f"{self.path} is not a {DATASET_FORMAT} file (format={fmt!r})")
            attrs = {k: (attr_str_list(v) if isinstance(v, np.ndarray) and v.ndim else v) for k, v in f.attrs.items()}
            n_shape, n_exp = int(self._attr(f, "n_shape")), int(self._attr(f, "n_exp"))
            index: list[tuple[str, int, str, int, int]] = []
            wanted = None if views is None else set(views)
            skipped = 0
            for name in self._member(f, "sequences"):
                g = self._member(f, f"sequences/{name}")
                n_frames = int(self._attr(g, "n_frames"))
                self.warnings[name] = sequence_warnings(g)
                self.shots[name] = self._sequence_shots(g, n_frames)
                ranges = self.shots[name] if self.split_shots else [(0, n_frames)]
                for vi, view in enumerate(attr_str_list(self._attr(g, "views"))):
                    if wanted is not None and view not in wanted:
                        continue
                    for first, last in ranges:
                        n = int(last) - int(first)
                        length = n if self.clip_len is None else self.clip_len
                        if n < length or n == 0:
                            skipped += 1
                            continue
                        index += [(name, vi, view, int(first) + s, int(first) + s + length)
                                  for s in range(0, n - length + 1, self.stride)]
        if skipped:
            log.info("%s: %d (sequence, view%s) pairs shorter than clip_len=%s skipped", self.path, skipped,
                     ", shot" if self.split_shots else "", self.clip_len)
        return index, n_shape, n_exp, attrs

    def _sequence_shots(self, g: h5py.Group, n_frames: int) -> np.ndarray:
        """Shot bounds (S, 2) of a packed sequence; one shot when it has none (uncut, or packed before shots)."""
        if "shots" not in g:
            return single_shot(n_frames)
        with self._reading(f"{g.name}/shots"):
            try:
                return check_shots(g["shots"][()], n_frames)
            except NeufaceError as exc:
                raise NeufaceError(f"{self.path}: {g.name}/shots: {exc}") from None

    def _make_flame(self, flame: Any, embedding: str | os.PathLike | None):
        from neuface.flame import FlameLayer

        if flame is None:
            raise NeufaceError("with_vertices=True needs flame= (a FlameLayer or a FLAME model path)")
        if not isinstance(flame, FlameLayer):
            flame = FlameLayer.from_files(flame, embedding, n_shape=self.n_shape, n_exp=self.n_exp,
                                          dtype=self.dtype)
        if (flame.n_shape, flame.n_exp) != (self.n_shape, self.n_exp):
            raise NeufaceError(f"FlameLayer has n_shape={flame.n_shape}, n_exp={flame.n_exp}; the dataset has "
                               f"{self.n_shape}, {self.n_exp}")
        return flame.eval()

    # ------------------------------------------------------------------------------------------- errors
    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """h5py errors while reading ``what`` become a :class:`NeufaceError` naming the file (a corrupted file)."""
        try:
            yield
        except NeufaceError:
            raise
        except (OSError, KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
            # IndexError too: out of __getitem__ it would end a `for item in dataset` loop silently
            raise NeufaceError(f"{self.path}: cannot read {what} (corrupted file?): {exc}") from None

    def _member(self, parent: h5py.Group, key: str) -> Any:
        """``parent[key]``; a missing or unreadable object is a NeufaceError naming the file and the object."""
        where = f"{parent.name.rstrip('/')}/{key}"
        try:
            return parent[key]
        except KeyError:
            raise NeufaceError(f"{self.path}: {where} is missing (corrupted or incomplete file)") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise NeufaceError(f"{self.path}: cannot open {where} (corrupted file?): {exc}") from None

    def _attr(self, obj: h5py.Group | h5py.Dataset, key: str) -> Any:
        """``obj.attrs[key]``; a missing or unreadable attribute is a NeufaceError naming the file and object."""
        try:
            return obj.attrs[key]
        except KeyError:
            raise NeufaceError(f"{self.path}: attribute {key!r} of {obj.name} is missing (corrupted or incomplete "
                               "file)") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise NeufaceError(f"{self.path}: cannot read attribute {key!r} of {obj.name} (corrupted file?): "
                               f"{exc}") from None

    # ------------------------------------------------------------------------------------------- file handle
    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # after a fork the parent's handle is not reused; a larger chunk cache lets consecutive clips of a
            # sequence share decompressed chunks
            try:
                self._file = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
            except OSError as exc:
                raise NeufaceError(f"cannot open dataset {self.path}: {exc}") from None
            self._pid = os.getpid()
            self._groups = OrderedDict()
        return self._file

    def _datasets(self, name: str) -> dict[str, h5py.Dataset]:
        """Open dataset handles of sequence ``name`` (kept for the last few sequences: their chunk caches)."""
        f = self._h5()
        handles = self._groups.get(name)
        if handles is None:
            g = self._member(f, f"sequences/{name}")
            handles = {key: self._member(g, key) for key in ("shape", *CLIP_ARRAYS)}
            if "shape_shots" in g:  # a cut sequence (its shots are in self.shots)
                handles["shape_shots"] = self._member(g, "shape_shots")
            self._groups[name] = handles
            if len(self._groups) > OPEN_SEQUENCES:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(name)
        return handles

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._groups = OrderedDict()
            self._file.close()
        self._file, self._pid, self._groups = None, None, OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"], state["_groups"] = None, None, OrderedDict()
        return state

    def __enter__(self) -> NeuFaceH5:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self._index)

    def sequence_warnings(self, sequence: str) -> list[str]:
        """Partial-input codes of ``sequence`` (``[]``: complete input); a NeufaceError for an unknown one."""
        if sequence not in self.warnings:
            raise NeufaceError(f"{self.path} has no sequence {sequence!r}")
        return list(self.warnings[sequence])

    def clips(self) -> list[tuple[str, str, int]]:
        """``(sequence, view, start)`` of every item, in item order."""
        return [(s, v, st) for s, _, v, st, _ in self._index]

    def _frame_shapes(self, name: str, g: dict[str, h5py.Dataset], start: int, stop: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """β of frames ``[start, stop)`` (N, S) and their shot indices (N,) (:func:`neuface.shots.frame_shapes`)."""
        bounds = self.shots[name]
        n_frames = int(bounds[-1, 1])
        fit: dict[str, Any] = {"shape": g["shape"][()], "expression": np.empty((n_frames, 0))}
        if len(bounds) > 1:
            if "shape_shots" not in g:
                raise NeufaceError(f"{self.path}: /sequences/{name} has shots but no shape_shots (corrupted file)")
            fit.update(shots=bounds, shape_shots=g["shape_shots"][()])
        return frame_shapes(fit)[start:stop], shot_of_frame(bounds, n_frames)[start:stop]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range for {len(self)} clips")
        name, vi, view, start, stop = self._index[i]
        g = self._datasets(name)
        item: dict[str, Any] = {}
        for key in ("shape", *CLIP_ARRAYS):
            with self._reading(f"/sequences/{name}/{key}"):
                data = g[key]
                if key == "shape":
                    arr = data[()]
                elif key == "frame_indices":
                    arr = data[start:stop]
                else:
                    arr = data[start:stop, vi]
            if key != "shape" and arr.shape[0] != stop - start:
                raise NeufaceError(f"{self.path}: /sequences/{name}/{key} has {data.shape[0]} frames, the group's "
                                   f"n_frames needs at least {stop} (corrupted file)")
            arr = torch.from_numpy(np.ascontiguousarray(arr))
            item[key] = arr.to(self.dtype) if arr.is_floating_point() else arr
        with self._reading(f"/sequences/{name}/shape_shots"):
            shapes, shot = self._frame_shapes(name, g, start, stop)
        item["shapes"] = torch.from_numpy(np.ascontiguousarray(shapes)).to(self.dtype)
        item["shot"] = torch.from_numpy(shot)
        if len(self.shots[name]) > 1:
            item["shape"] = item["shapes"][0].clone()
        item.update(sequence=name, view=view, start=start)
        if self.flame is not None:
            item.update(self._flame_outputs(item))
        return item

    @torch.no_grad()
    def _flame_outputs(self, item: dict[str, Any]) -> dict[str, torch.Tensor]:
        n = item["expression"].shape[0]
        layer_dtype = self.flame.v_template.dtype
        out = self.flame(
            shape=item["shapes"].to(layer_dtype).reshape(n, -1),
            expression=item["expression"].to(layer_dtype),
            global_pose=item["global_pose"].to(layer_dtype),
            pose=item["pose"].to(layer_dtype),
        )
        res = {"vertices": out.vertices.to(self.dtype)}
        if out.landmarks3d is not None:
            res["landmarks3d"] = out.landmarks3d.to(self.dtype)
        return res


__all__ = ["CLIP_ARRAYS", "NeuFaceH5"]
