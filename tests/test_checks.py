"""Argument checks and atomic writes."""

import os

import pytest
import torch

from neuface.checks import check_floating, check_shape
from neuface.errors import ShapeError
from neuface.io_utils import atomic_path


def test_named_sizes_must_agree():
    sizes = check_shape(torch.zeros(2, 5, 3), "vertices", ("B", "V", 3))
    assert sizes == {"B": 2, "V": 5}
    with pytest.raises(ShapeError, match=r"cam must have shape \(B, 3\); dim 0 \(B\) is 4, but B=2"):
        check_shape(torch.zeros(4, 3), "cam", ("B", 3), sizes)


def test_wrong_rank_and_exact_size():
    with pytest.raises(ShapeError, match="faces must have shape"):
        check_shape(torch.zeros(3), "faces", ("F", 3))
    with pytest.raises(ShapeError, match="dim 1 is 4, expected 3"):
        check_shape(torch.zeros(7, 4), "faces", ("F", 3))
    with pytest.raises(ShapeError, match="must be a torch.Tensor"):
        check_shape([1, 2, 3], "x", (3,))


def test_leading_ellipsis():
    assert check_shape(torch.zeros(2, 7, 5, 3), "q", ("...", "T", 3)) == {"T": 5}
    with pytest.raises(ShapeError, match="at least 2 dims"):
        check_shape(torch.zeros(3), "q", ("...", "T", 3))


def test_check_floating():
    check_floating(torch.zeros(1), "x")
    with pytest.raises(ShapeError, match="floating-point"):
        check_floating(torch.zeros(1, dtype=torch.long), "x")


def test_atomic_path_renames_only_on_success(tmp_path):
    os.umask(0o022)
    target = tmp_path / "sub" / "out.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"done")
        assert not target.exists()
    assert target.read_bytes() == b"done"
    assert target.stat().st_mode & 0o044 == 0o044  # readable by group/others like any new file (umask 022)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"done"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


KILLED_WRITER = """
import os, signal, sys
from neuface.io_utils import atomic_path
cm = atomic_path(sys.argv[1], suffix=".h5")
cm.__enter__().write_bytes(b"half")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_next_write_removes_temporaries_of_killed_writers(tmp_path):
    """SIGKILL inside atomic_path leaves its temporary file; the next write of the same target removes it,
    and only the stale ones of that target (not other targets', not live writers', not recent unknown ones)."""
    import subprocess
    import sys
    import time

    from neuface.io_utils import _HOST_TAG, STALE_AFTER_S

    target = tmp_path / "out.h5"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err.decode()
    dead = proc.pid  # reaped: no such process now
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".out.h5.{dead}-{_HOST_TAG}.") and not target.exists()
    old = time.time() - STALE_AFTER_S - 60

    def temp(name, mtime=None):
        path = tmp_path / name
        path.write_bytes(b"x")
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    keep = [
        temp(f".other.h5.{dead}-{_HOST_TAG}.abcdefgh.h5"),  # another target's (its next write removes it)
        temp(f".out.h5.{os.getpid()}-{_HOST_TAG}.abcdefgh.h5", old),  # a live writer's, however old
        temp(".out.h5.0123abcd-deadbeef.h5", old),  # not a temporary file name of out.h5
        temp(".out.h5.abcdefgh.h5"),  # without a pid (older neuface) and recent
        temp(f".out.h5.{dead}-{int(_HOST_TAG, 16) ^ 1:08x}.abcdefgh.h5"),  # another host's, recent
    ]
    gone = [
        tmp_path / left[0],
        temp(f".out.h5.{dead}-{_HOST_TAG}.zyxwvuts.part"),  # a dead writer of this host's
        temp(".out.h5.abc_efgh.h5", old),  # without a pid, untouched for longer than STALE_AFTER_S
        temp(f".out.h5.{dead}-{int(_HOST_TAG, 16) ^ 1:08x}.abcdefgh.h5x", old),  # another host's, old
    ]
    with atomic_path(target, suffix=".h5") as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done"
    assert all(p.exists() for p in keep), [p.name for p in keep if not p.exists()]
    assert not any(p.exists() for p in gone), [p.name for p in gone if p.exists()]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name] + [p.name for p in keep])
