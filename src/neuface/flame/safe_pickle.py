"""Safe pickle reading and Python-2-layout pickle writing for FLAME/DECA assets (no chumpy needed).

A pickle can run arbitrary code, so neuface never calls :func:`pickle.load` on asset files.
:class:`RestrictedUnpickler` resolves globals from an allow-list only (numpy arrays/dtypes/scalars, scipy
csc/csr matrices, a few builtins; torch tensors on request) and raises
:class:`~neuface.errors.UnsafePickleError` naming ``module.name`` the moment anything else is requested, i.e.
before it could be called. ``chumpy.*`` classes
become stubs that keep their pickled state: ``chumpy.ch.Ch.__getstate__`` returns its ``__dict__`` without the
weakref caches, and the array lives under ``'x'`` (``chumpy.reordering.Select`` keeps ``a``/``idxs``).

:class:`Py2Pickler` writes what Python 2 + numpy 1.x + old scipy + chumpy wrote (protocol 2): the globals
``numpy.core.multiarray._reconstruct``, ``scipy.sparse.csc.csc_matrix``, ``chumpy.ch.Ch`` and raw bytes as
Python-2 ``str``.
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
from typing import Any

import numpy as np
import scipy.sparse as sp

from neuface.errors import ModelFormatError, UnsafePickleError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

__all__ = [
    "RestrictedUnpickler",
    "restricted_unpickler",
    "restricted_loads",
    "to_dense_array",
    "ChumpyObject",
    "Py2Pickler",
]


# ----------------------------------------------------------------------------------------- unpickling


class _PickledState:
    """Stand-in for a foreign class: keeps the pickled state, runs nothing."""

    pickled_name = "?"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | None):
            state = {**(state[0] or {}), **(state[1] or {})}  # (__dict__, slots) form
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_name}>"


class _ChumpyStub(_PickledState):
    pickled_name = "chumpy.ch.Ch"


class _SparseStub(_PickledState):
    pickled_name = "scipy.sparse.csc_matrix"
    fmt = "csc"


_STUB_CACHE: dict[tuple[str, str], type] = {}


def _stub_class(base: type[_PickledState], module: str, name: str, **attrs: Any) -> type:
    key = (module, name)
    if key not in _STUB_CACHE:
        _STUB_CACHE[key] = type(f"Stub_{name}", (base,), {"pickled_name": f"{module}.{name}", **attrs})
    return _STUB_CACHE[key]


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"numpy _reconstruct of {subtype!r} refused (only numpy.ndarray)")
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _safe_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` as called by pickles; Python-2 pickles pass ``align``/``copy`` as ints (0, 1)."""
    return np.dtype(obj, align=bool(align), copy=bool(copy))


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` limited to the stub classes (protocol 0/1 pickles of new-style objects)."""
    is_stub = isinstance(cls, type) and issubclass(cls, _PickledState)
    if not is_stub or base is not object or state is not None:
        raise UnsafePickleError(f"copyreg._reconstructor({cls!r}, {base!r}) refused")
    return object.__new__(cls)


def _safe_codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as used by protocol-2 pickles of bytes: latin-1 str -> bytes only."""
    if not isinstance(obj, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode(..., {encoding!r}) refused (only latin-1 text)")
    return obj.encode("latin-1")


def _torch_load_from_bytes(data: bytes) -> Any:
    """Replacement for ``torch.storage._load_from_bytes``: the legacy torch.save blob, weights only."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _torch_rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
    backward_hooks: Any = None, metadata: Any = None,
) -> Any:
    import torch
    from torch._utils import _rebuild_tensor_v2

    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise UnsafePickleError(f"torch tensor rebuild from {type(storage).__name__} refused")
    if backward_hooks:
        raise UnsafePickleError("torch tensor with backward hooks refused")
    if not all(isinstance(v, int) for v in (storage_offset, *size, *stride)):
        raise UnsafePickleError("torch tensor rebuild with non-integer geometry refused")
    hooks: collections.OrderedDict = collections.OrderedDict()
    return _rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), False, hooks)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _safe_reconstruct
        allowed[(mod, "scalar")] = _multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = _safe_dtype
    for mod in ("copy_reg", "copyreg"):
        allowed[(mod, "_reconstructor")] = _safe_reconstructor
    for mod in ("__builtin__", "builtins"):
        for name, obj in (("object", object), ("set", set), ("frozenset", frozenset)):
            allowed[(mod, name)] = obj
    allowed[("_codecs", "encode")] = _safe_codecs_encode
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    for fmt in ("csc", "csr"):
        for mod in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}", "scipy.sparse"):
            for kind in ("matrix", "array"):
                allowed[(mod, f"{fmt}_{kind}")] = _stub_class(_SparseStub, mod, f"{fmt}_{kind}", fmt=fmt)
    return allowed


_ALLOWED = _allowed_globals()
_ALLOWED_TORCH = {
    ("torch._utils", "_rebuild_tensor_v2"): _torch_rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _torch_load_from_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves allow-listed numpy/scipy globals (``encoding='latin1'`` for Python 2).

    * ``chumpy.*`` classes become stubs that keep their pickled ``__dict__`` (``.state``); scipy csc/csr
      matrices become stubs too (converted with :func:`to_dense_array`).
    * ``allow_torch=True`` also allows tensor rebuilding (``torch._utils._rebuild_tensor_v2`` and
      ``torch.storage._load_from_bytes``, replaced by a ``torch.load(weights_only=True)`` call).
    * Anything else (``os.system``, ``subprocess.*``, ``builtins.eval``, ...) raises
      :class:`~neuface.errors.UnsafePickleError` naming ``module.name`` when the global is looked up, i.e.
      before it could be called. Persistent ids are refused.
    """

    def __init__(self, file: Any, *, allow_torch: bool = False) -> None:
        super().__init__(file, encoding="latin1", fix_imports=True)
        self.allow_torch = allow_torch

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _stub_class(_ChumpyStub, module, name)
        obj = _ALLOWED.get((module, name))
        if obj is None and self.allow_torch:
            obj = _ALLOWED_TORCH.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"pickle refers to {module}.{name}, which is not on the allow-list; refused"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"pickle uses a persistent id ({type(pid).__name__}); refused")


#: Alias (the name used in the design notes).
restricted_unpickler = RestrictedUnpickler


def restricted_loads(data: bytes, *, allow_torch: bool = False) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data), allow_torch=allow_torch).load()


def to_dense_array(value: Any, key: str = "value") -> np.ndarray:
    """Turn a loaded value (ndarray, chumpy stub, sparse stub/matrix, list) into a plain numpy array."""
    if isinstance(value, _ChumpyStub):
        state = value.state if isinstance(value.state, dict) else {}
        if "x" in state:  # chumpy.ch.Ch keeps its array in __dict__['x']
            return to_dense_array(state["x"], key)
        if "a" in state and "idxs" in state:  # chumpy.reordering.Select
            out = to_dense_array(state["a"], key).reshape(-1)[np.asarray(state["idxs"], dtype=np.int64)]
            if state.get("preferred_shape") is not None:
                out = out.reshape(tuple(state["preferred_shape"]))
            return out
        raise ModelFormatError(
            f"{key}: unsupported chumpy object {value.pickled_name} (state keys {sorted(state)})"
        )
    if isinstance(value, _SparseStub):
        state = value.state if isinstance(value.state, dict) else {}
        shape = state.get("_shape", state.get("shape"))
        try:
            cls = sp.csc_matrix if value.fmt == "csc" else sp.csr_matrix
            mat = cls((state["data"], state["indices"], state["indptr"]), shape=tuple(int(s) for s in shape))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"{key}: malformed sparse matrix ({exc})") from None
        return mat.toarray()
    if sp.issparse(value):
        return value.toarray()
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch tensor
        return value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == object:
        raise ModelFormatError(f"{key}: expected a numeric array, got {type(value).__name__}")
    return arr


class ChumpyObject:
    """Writer-side stand-in for a chumpy object: pickled as the global ``pickle_global`` with ``state``.

    ``ChumpyObject.ch(array)`` gives the layout of a plain ``chumpy.ch.Ch`` (the ``__dict__`` chumpy's
    ``__getstate__`` returns: ``x`` plus its bookkeeping entries, without the weakref caches).
    """

    pickle_global: tuple[str, str] = ("chumpy.ch", "Ch")

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    @classmethod
    def ch(cls, array: np.ndarray) -> ChumpyObject:
        state = {
            "_dirty_vars": {"x"}, "_itr": None, "_make_dense": False, "_make_sparse": False,
            "_depends_on_deps": {}, "x": np.asarray(array, dtype=np.float64),
        }
        return cls(state)

    @classmethod
    def named(cls, module: str, name: str) -> type[ChumpyObject]:
        """A subclass pickled as ``module.name`` (e.g. ``chumpy.reordering.Select``)."""
        return type(f"Chumpy_{name}", (cls,), {"pickle_global": (module, name)})


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us write the exact global names
    """Protocol-2 pickler writing what Python 2 + numpy 1.x + old scipy wrote: ``numpy.core.multiarray``,
    ``scipy.sparse.csc``, ``chumpy.ch.Ch`` globals and bytes as Python-2 ``str`` (BINSTRING)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    _NAMES = {
        id(_multiarray._reconstruct): ("numpy.core.multiarray", "_reconstruct"),
        id(_multiarray.scalar): ("numpy.core.multiarray", "scalar"),
        id(np.ndarray): ("numpy", "ndarray"),
        id(np.dtype): ("numpy", "dtype"),
        id(sp.csc_matrix): ("scipy.sparse.csc", "csc_matrix"),
    }

    def save_global(self, obj: Any, name: str | None = None) -> None:
        target = self._NAMES.get(id(obj))
        if target is None and isinstance(obj, type) and issubclass(obj, ChumpyObject):
            target = obj.pickle_global
        if target is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{target[0]}\n{target[1]}\n".encode("ascii"))
        self.memoize(obj)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, ChumpyObject):
            return copyreg.__newobj__, (type(obj),), obj.state
        if isinstance(obj, sp.csc_matrix):
            state = {
                "_shape": tuple(int(s) for s in obj.shape), "maxprint": 50,
                "indices": obj.indices.astype(np.int32), "indptr": obj.indptr.astype(np.int32),
                "data": np.asarray(obj.data),
            }
            return copyreg.__newobj__, (sp.csc_matrix,), state
        return NotImplemented
