"""The dataset stage: filter fits, pack accepted sequences per split into HDF5, verify, export, and read.

* :mod:`neuface.dataset.filter` — accept/reject each sequence with every reason, manifest TSV.
* :mod:`neuface.dataset.pack` — one ``neuface.dataset`` HDF5 file per split and annotator.
* :mod:`neuface.dataset.verify` — schema / shape / finiteness checks, truncated-file detection.
* :mod:`neuface.dataset.export` — official NeuFace ``params.npz`` and OBJ/PLY meshes.
* :mod:`neuface.dataset.reader` — :class:`NeuFaceH5`, a torch ``Dataset`` of fixed-length clips.

The packed layout is documented in ``docs/dataset.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names and the submodule that defines them (imported lazily: the CLI stays fast without torch).
_EXPORTS = {
    "export_sequence": "export", "sequence_params": "export", "write_obj": "export", "write_ply": "export",
    "FilterRecord": "filter", "FilterThresholds": "filter", "evaluate_fit": "filter", "filter_fits": "filter",
    "read_manifest": "filter", "write_manifest": "filter",
    "pack_split": "pack", "sha256_file": "pack",
    "NeuFaceH5": "reader",
    "DATASET_FORMAT": "schema", "DATASET_FORMAT_VERSION": "schema",
    "VerifyReport": "verify", "verify_file": "verify",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'neuface.dataset' has no attribute {name!r}")
    return getattr(importlib.import_module(f"neuface.dataset.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
