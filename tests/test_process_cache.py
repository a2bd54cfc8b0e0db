"""Per-process model caches (neuface.process_cache): reuse, eviction, and reloading a replaced file."""

from __future__ import annotations

import os

from neuface.process_cache import ProcessCache, file_key


def test_cache_reuses_evicts_oldest_and_sees_replaced_files(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"one")
    cache, made = ProcessCache(size=2), []

    def load(p=path):
        made.append(p.read_bytes())
        return made[-1]

    assert cache.get(file_key(path), load) == b"one" and cache.get(file_key(path), load) == b"one"
    assert made == [b"one"]
    st = path.stat()
    path.write_bytes(b"two")  # same size: the mtime tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.get(file_key(path), load) == b"two" and len(made) == 2
    cache.get(("other",), lambda: "x")  # third key: the oldest entry goes
    assert len(cache.items) == 2 and (file_key(path) in cache.items)
    assert file_key(None) == (None,)
