"""Small file helpers: atomic writes (write to a temporary name in the same directory, then rename).

A temporary file is named ``.<target name>.<pid>-<host tag>.<random><suffix>``. A writer killed by SIGKILL
(OOM killer, SLURM after its grace period) cannot remove it, so the next write of the same target removes the
stale temporary files of that target: those whose writer ran on this host and is dead, and those (from another
host, or from before the pid was in the name) untouched for :data:`STALE_AFTER_S`. Temporary files of other
targets and of live writers are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: Age (seconds since the last write) after which a temporary file whose writer cannot be checked is stale.
STALE_AFTER_S = 3600.0

_HOST_TAG = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_RANDOM = r"[a-z0-9_]{8}"  # tempfile's random part
# after ".<target name>.": "<pid>-<host tag>.<random><suffix>", or (older writers) "<random><.ext>"
_TEMP_RE = re.compile(rf"(?:(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{{8}})\.{_RANDOM}.*|{_RANDOM}(?:\.[A-Za-z0-9]+)?)",
                      re.DOTALL)
#: directory -> names starting with "." (candidates), listed once per process: a directory may hold millions of
#: outputs, so it is not listed again for every write.
_DOTFILES: dict[str, list[str]] = {}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    A killed or failing writer therefore never leaves a file at ``path`` that looks complete; the temporary
    files a killed writer left are removed by the next write of ``path`` (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_HOST_TAG}.", suffix=suffix or ".part",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def finite_or_null(obj):
    """``obj`` with every non-finite float replaced by None, recursively through dicts, lists and tuples (for strict
    JSON: ``json.dumps(..., allow_nan=False)``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left next to it; returns what was removed.

    Never raises: a file that cannot be inspected or removed is left alone.
    """
    path = Path(path)
    try:
        names = _dotfiles(path.parent)
        prefix = f".{path.name}."
        mine = [n for n in names if n.startswith(prefix) and _TEMP_RE.fullmatch(n[len(prefix):])]
    except OSError as exc:
        log.debug("cannot list %s for stale temporary files: %s", path.parent, exc)
        return []
    removed = []
    for name in mine:
        with contextlib.suppress(ValueError):  # another thread of this process may have taken it
            names.remove(name)  # inspected once: a file made after the listing is left to the next process
        tmp = path.parent / name
        try:
            if _is_stale(name[len(prefix):], tmp.stat().st_mtime):
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue  # renamed by its writer, or removed by another cleaner
        except OSError as exc:
            log.debug("cannot remove stale temporary file %s: %s", tmp, exc)
    if removed:
        log.info("removed %d stale temporary file(s) of %s left by killed writers: %s", len(removed), path,
                 ", ".join(p.name for p in removed))
    return removed


def _dotfiles(directory: Path) -> list[str]:
    key = str(directory.resolve())
    names = _DOTFILES.get(key)
    if names is None:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if e.name.startswith(".")]
        _DOTFILES[key] = names
    return names


def _is_stale(tail: str, mtime: float) -> bool:
    """Whether the temporary file named ``.<target>.<tail>`` (last written at ``mtime``) has no live writer."""
    m = _TEMP_RE.fullmatch(tail)
    if m is not None and m["pid"] is not None and m["host"] == _HOST_TAG:
        return not _pid_alive(int(m["pid"]))
    return time.time() - mtime > STALE_AFTER_S  # another host's writer, or a name without pid: by age only


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists (another user's process)
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
