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
