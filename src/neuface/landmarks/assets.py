"""Where the landmark detectors' weight files live, and what to tell the user when they are missing.

* FAN (``face-alignment`` 1.5.0) downloads its weights at run time into ``$TORCH_HOME/hub/checkpoints``
  (default ``~/.cache/torch/hub/checkpoints``); offline machines need the files put there by hand.
* dlib's 68-point shape predictor ships with the pip package ``face-recognition-models`` (found without
  importing it: its ``__init__`` needs ``pkg_resources``) or Debian's ``libdlib-data`` (``/usr/share/dlib``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from neuface.errors import AssetMissingError

#: FAN weight files of face-alignment 1.5.0 (2D landmarks + S3FD face detector) and their download URLs.
FAN_FILES: dict[str, str] = {
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}

DLIB_PREDICTOR = "shape_predictor_68_face_landmarks.dat"
DLIB_PREDICTOR_URL = "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2"
DLIB_PREDICTOR_ENV = "NEUFACE_DLIB_PREDICTOR"
DEBIAN_DLIB_DIR = Path("/usr/share/dlib")


def torch_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch.hub resolves it (where FAN looks for its weights)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def missing_fan_files() -> list[tuple[str, Path, str]]:
    """``(file name, expected path, URL)`` of every FAN weight file that is not in place."""
    folder = torch_checkpoint_dir()
    return [(name, folder / name, url) for name, url in FAN_FILES.items() if not (folder / name).is_file()]


def fan_available() -> bool:
    """True if face-alignment is installed and both weight files are in place."""
    return importlib.util.find_spec("face_alignment") is not None and not missing_fan_files()


def fan_missing_message(cause: BaseException | None = None) -> str:
    """A message naming each missing FAN file, where to put it and where to download it from."""
    folder = torch_checkpoint_dir()
    missing = missing_fan_files() or [(n, folder / n, u) for n, u in FAN_FILES.items()]
    lines = ["FAN weights for face-alignment 1.5.0 are missing"
             + (f" and could not be downloaded ({' '.join(str(cause).split())})" if cause else "")
             + f". Put these files in {folder} (set TORCH_HOME to use another cache directory):"]
    lines += [f"  {path}  <- {url}" for _, path, url in missing]
    lines.append("Or use --backend dlib (offline: pip packages dlib-bin + face-recognition-models).")
    return "\n".join(lines)


def dlib_model_candidates(filename: str, env_var: str) -> list[Path]:
    """Places searched for a dlib model file, in order: ``$env_var``, the ``face-recognition-models`` wheel (found
    without importing it: its ``__init__`` needs ``pkg_resources``), Debian's ``/usr/share/dlib``."""
    out = []
    env = os.environ.get(env_var)
    if env:
        out.append(Path(env))
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.origin:
        out.append(Path(spec.origin).parent / "models" / filename)
    out.append(DEBIAN_DLIB_DIR / filename)
    return out


def find_dlib_model(candidates: list[Path], what: str, hint: str, path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else the first existing file of ``candidates`` (from :func:`dlib_model_candidates`).

    Raises:
        AssetMissingError: naming ``what``, every place searched and ``hint`` (how to get the file).
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise AssetMissingError(f"{what} {p} does not exist")
        return p
    for p in candidates:
        if p.is_file():
            return p
    raise AssetMissingError(f"{what} not found (searched: " + ", ".join(str(p) for p in candidates) + f"). {hint}")


def dlib_predictor_candidates() -> list[Path]:
    """Places searched for the dlib 68-point predictor, in order."""
    return dlib_model_candidates(DLIB_PREDICTOR, DLIB_PREDICTOR_ENV)


def find_dlib_predictor(path: str | os.PathLike | None = None) -> Path:
    """Path of ``shape_predictor_68_face_landmarks.dat`` (``path`` if given, else the first candidate found).

    Raises:
        AssetMissingError: naming every place searched and how to get the file.
    """
    return find_dlib_model(
        [] if path is not None else dlib_predictor_candidates(), f"dlib 68-point shape predictor {DLIB_PREDICTOR}",
        "Install it with `pip install face-recognition-models` or `apt-get install libdlib-data`, or "
        f"download {DLIB_PREDICTOR_URL}, unpack it and set {DLIB_PREDICTOR_ENV} to its path.", path)


__all__ = [
    "DLIB_PREDICTOR",
    "DLIB_PREDICTOR_ENV",
    "FAN_FILES",
    "dlib_model_candidates",
    "dlib_predictor_candidates",
    "find_dlib_model",
    "fan_available",
    "fan_missing_message",
    "find_dlib_predictor",
    "missing_fan_files",
    "torch_checkpoint_dir",
]
