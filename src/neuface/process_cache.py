"""Models loaded once per process: `neuface shard` runs a stage's command for many sequences in one process.

Keys include each file's resolved path, mtime and size, so a file replaced between two sequences is read again.
Only objects that the commands use read-only are shared as they are (the FLAME layer); anything a command
changes (an encoder NeuFace optimises) must be copied by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def file_key(path: str | os.PathLike | None) -> tuple:
    """(resolved path, mtime_ns, size) of ``path``; ``(None,)`` for no file."""
    if path is None:
        return (None,)
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


class ProcessCache:
    """A tiny insertion-ordered cache holding at most ``size`` entries (the oldest is dropped first)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.items: dict[tuple, Any] = {}

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self.items:
            while len(self.items) >= self.size:
                self.items.pop(next(iter(self.items)))
            self.items[key] = make()
        return self.items[key]

    def clear(self) -> None:
        self.items.clear()


_FLAMES = ProcessCache()


def cached_flame_layer(flame_path: str | os.PathLike, embedding_path: str | os.PathLike, n_shape: int, n_exp: int,
                       device: Any = "cpu"):
    """``FlameLayer.from_files(...).to(device)``, loaded once per process and arguments (use it read-only)."""
    from neuface.flame import FlameLayer

    key = (file_key(flame_path), file_key(embedding_path), n_shape, n_exp, str(device))
    return _FLAMES.get(key, lambda: FlameLayer.from_files(flame_path, embedding_path, n_shape=n_shape,
                                                          n_exp=n_exp).to(device))
