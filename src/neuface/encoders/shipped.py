"""Pre-trained builtin-encoder weights shipped with the package, keyed by the head model they were trained on.

Pre-training the builtin encoder into a credible prior takes 15-30 min on 2 CPU cores, longer than ``make demo``
may take. So the package ships weights trained on the default synthetic kit (``data/encoders/*.pt``), each with
a record (``*.json``): the sha256 of the FLAME-format model file, a content hash of the landmark embedding (its
arrays: the kit's ``.npy`` is not byte-identical across builds because torch's pickle embeds memory addresses),
the pre-training settings, the exact command that produced the weights and the weights' own sha256.

``neuface encoder pretrain`` copies shipped weights instead of training when the configured model, embedding and
settings all match a record, and trains otherwise: a real FLAME model, another kit seed or other settings never
match. Nothing here knows what the kit is; the record's hashes decide.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from neuface.encoders.checkpoint import file_sha256
from neuface.io_utils import atomic_path

log = logging.getLogger(__name__)

__all__ = ["SHIPPED_DIR", "embedding_content_sha256", "find_shipped", "install_shipped", "model_key"]

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "encoders"


def embedding_content_sha256(path: str | os.PathLike) -> str:
    """sha256 over the landmark embedding's arrays (name, dtype, shape, bytes), in a fixed key order."""
    from dataclasses import fields

    from neuface.flame.io import load_landmark_embedding

    emb = load_landmark_embedding(path)
    h = hashlib.sha256()
    for f in sorted(fields(emb), key=lambda f: f.name):
        arr = getattr(emb, f.name)
        h.update(f"{f.name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def model_key(flame_path: str | os.PathLike, embedding_path: str | os.PathLike) -> dict[str, str]:
    """What a shipped record must match: the model file's sha256 and the embedding's content hash."""
    return {"flame_sha256": file_sha256(flame_path),
            "embedding_content_sha256": embedding_content_sha256(embedding_path)}


def find_shipped(key: dict[str, str], settings: dict[str, Any], directory: str | os.PathLike = SHIPPED_DIR
                 ) -> Path | None:
    """The shipped weights whose record matches ``key`` and ``settings`` (and whose file is intact), or None."""
    directory = Path(directory)
    for record_path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable shipped-encoder record %s: %s", record_path, exc)
            continue
        if any(record.get(k) != v for k, v in key.items()) or record.get("settings") != settings:
            continue
        weights = directory / str(record.get("weights", ""))
        if not weights.is_file() or file_sha256(weights) != record.get("weights_sha256"):
            log.warning("shipped encoder %s does not match its record %s; ignoring it", weights, record_path)
            continue
        return weights
    return None


def install_shipped(weights: Path, out: str | os.PathLike) -> Path:
    """Copy shipped weights to ``out`` atomically."""
    with atomic_path(out, suffix=".pt") as tmp:
        shutil.copyfile(weights, tmp)
    return Path(out)
