"""Training frames for regressor fine-tuning: packed NeuFace splits joined with the crops the fits used.

One item is one (sequence, view, frame) of a packed ``neuface.dataset`` file (:class:`~neuface.dataset.NeuFaceH5`,
docs/dataset.md): the crop image from ``<crops_dir>/<sequence>.h5`` and the packed annotation as targets.
Nothing is recomputed: landmarks are the packed detections mapped to crop NDC with the packed
``crop_transforms``; β is that of the frame's shot (a cut sequence has one β per shot). Multi-view sequences give
one item per view and frame.

The crops file must be the one the fits were made from: its ``transforms`` must equal the packed
``crop_transforms`` at the packed ``frame_indices`` (else the crops are stale: a NeufaceError naming the
sequence). Targets (a few hundred bytes per item) are read into memory when the dataset is built; images are
read per item from the crops files (HDF5 handles opened lazily per process, dropped on pickling, so
``DataLoader(num_workers > 0)`` works).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from neuface.dataset.reader import NeuFaceH5
from neuface.dataset.schema import attr_str_list
from neuface.errors import NeufaceError
from neuface.fitting.data import images_to_input
from neuface.geometry.crop import pixels_to_crop_ndc

log = logging.getLogger(__name__)

__all__ = ["RegressorFrames", "DatasetInfo", "IMAGE_SIZE"]

IMAGE_SIZE = 224
#: Crops files kept open per process.
OPEN_CROPS = 8
#: Largest difference (crop pixels per original pixel / crop pixels) tolerated between the crops file's transforms
#: and the packed ones; they are copies of one float64 array, so any real difference means other crops.
TRANSFORM_TOL = 1e-6
_TARGETS = ("shape", "expression", "global_pose", "pose", "cam", "landmarks", "landmarks_valid", "valid")


@dataclass
class DatasetInfo:
    """Provenance of one packed file used for training (recorded in the lineage)."""

    path: str
    annotator: str
    split: str
    n_sequences: int
    n_items: int
    encoder_ids: list[str]
    config_hashes: list[str]
    flame_sha256: str
    skipped_sequences: list[str]


class RegressorFrames(Dataset):
    """Frames of one or more packed splits with their crops.

    Args:
        datasets: packed ``neuface.dataset`` files (``neuface pack``); their ``n_shape`` / ``n_exp`` must agree.
        crops_dir: directory of ``<sequence>.h5`` crops files (``results/crops``).
        skip_missing: leave out sequences without a crops file (warning) instead of raising.
        image_size: side of the returned images (crops are resized when their size differs).

    Item (dict): ``image`` (3, S, S) float32 in [0, 1]; ``shape`` (n_shape,) β of the frame's shot;
    ``expression`` (n_exp,); ``global_pose`` (3,); ``pose`` (12,) neck, jaw, eyes; ``cam`` (3,); ``landmarks``
    (68, 2) detections in crop NDC (0 where not valid); ``landmarks_valid`` (68,) bool (detected and finite);
    ``valid`` () bool: every parameter target is finite (the item's 3D targets are usable); ``index`` (int).

    Raises:
        NeufaceError: unreadable dataset, mismatched coefficient counts, missing crops files (listed) without
            ``skip_missing``, stale crops (transforms differ; names the sequence), no item at all.
    """

    def __init__(self, datasets: list[str | os.PathLike], crops_dir: str | os.PathLike, skip_missing: bool = False,
                 image_size: int = IMAGE_SIZE) -> None:
        if not datasets:
            raise NeufaceError("no dataset file given")
        self.crops_dir = Path(crops_dir)
        self.image_size = int(image_size)
        self.infos: list[DatasetInfo] = []
        self.n_shape = self.n_exp = -1
        parts: dict[str, list[np.ndarray]] = {k: [] for k in _TARGETS}
        self._where: list[tuple[str, str, int]] = []  # (crops file, view, crops frame) per item
        self.keys: list[tuple[str, str, int]] = []  # (sequence, view, packed frame) per item
        for path in datasets:
            self._add_dataset(Path(path), skip_missing, parts)
        if not self.keys:
            raise NeufaceError(f"no training frames in {', '.join(map(str, datasets))}")
        self.targets = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}
        self._handles: OrderedDict[str, h5py.File] = OrderedDict()
        self._pid: int | None = None

    # ------------------------------------------------------------------------------------------- index
    def _add_dataset(self, path: Path, skip_missing: bool, parts: dict[str, list[np.ndarray]]) -> None:
        packed = NeuFaceH5(path, clip_len=None, split_shots=True, dtype=torch.float64)  # exact transforms
        if self.n_shape < 0:
            self.n_shape, self.n_exp = packed.n_shape, packed.n_exp
        elif (packed.n_shape, packed.n_exp) != (self.n_shape, self.n_exp):
            raise NeufaceError(f"{path}: n_shape={packed.n_shape}, n_exp={packed.n_exp}; the other datasets have "
                               f"{self.n_shape}, {self.n_exp}")
        sequences = sorted({s for s, _, _ in packed.clips()} | set(packed.shots))
        missing = [s for s in sequences if not (self.crops_dir / f"{s}.h5").is_file()]
        if missing and not skip_missing:
            raise NeufaceError(f"{path}: {len(missing)} sequence(s) have no crops file in {self.crops_dir}: "
                               f"{', '.join(missing)} (run the crops stage, or pass --skip-missing)")
        if missing:
            log.warning("%s: skipping %d sequence(s) without crops in %s: %s", path, len(missing), self.crops_dir,
                        ", ".join(missing))
        n_before = len(self.keys)
        with packed:
            for i, (name, _, _) in enumerate(packed.clips()):
                if name not in missing:
                    self._add_clip(packed[i], parts)
        a = packed.attrs
        self.infos.append(DatasetInfo(
            path=str(path), annotator=str(a.get("annotator", "")), split=str(a.get("split", "")),
            n_sequences=len(sequences) - len(missing), n_items=len(self.keys) - n_before,
            encoder_ids=attr_str_list(a.get("encoder_ids", [])),
            config_hashes=attr_str_list(a.get("config_hashes", [])),
            flame_sha256=str(a.get("flame_sha256", "")), skipped_sequences=missing))

    def _add_clip(self, item: dict[str, Any], parts: dict[str, list[np.ndarray]]) -> None:
        """Append the frames of one (sequence, view, shot) clip after checking them against the crops file."""
        name, view = item["sequence"], item["view"]
        crops_path = str(self.crops_dir / f"{name}.h5")
        frames = item["frame_indices"].numpy()
        crop_size, transforms = self._crops_transforms(crops_path, name, view, frames)
        packed_tr = item["crop_transforms"].numpy()
        if not np.allclose(transforms, packed_tr, rtol=0.0, atol=TRANSFORM_TOL):
            bad = int(np.argmax(np.abs(transforms - packed_tr).reshape(len(frames), -1).max(axis=1)))
            raise NeufaceError(f"stale crops for sequence {name!r} (view {view}): {crops_path} has other crop "
                               f"transforms than the packed dataset (first differing frame {int(frames[bad])}); "
                               "the crops changed after the fits: re-run the fits and pack, or use the crops they used")
        n = len(frames)
        px = item["landmarks"].to(torch.float64)
        ndc = pixels_to_crop_ndc(px, item["crop_transforms"].to(torch.float64), crop_size).float()
        lmk_valid = torch.isfinite(ndc).all(dim=-1) & item["detected"].bool()[:, None]
        params = torch.cat([item["shapes"], item["expression"], item["global_pose"], item["pose"], item["cam"]], 1)
        parts["shape"].append(item["shapes"].float().numpy())
        for key in ("expression", "global_pose", "pose", "cam"):
            parts[key].append(item[key].float().numpy())
        parts["landmarks"].append(torch.where(lmk_valid[..., None], ndc, 0.0).numpy())
        parts["landmarks_valid"].append(lmk_valid.numpy())
        parts["valid"].append(torch.isfinite(params).all(dim=1).numpy())
        start = int(item["start"])
        self.keys += [(name, view, start + k) for k in range(n)]
        self._where += [(crops_path, view, int(f)) for f in frames]

    def _crops_transforms(self, crops_path: str, name: str, view: str, frames: np.ndarray) -> tuple[int, np.ndarray]:
        try:
            with h5py.File(crops_path, "r") as f:
                if f.attrs.get("format") != "neuface.crops":
                    raise NeufaceError(f"{crops_path} is not a neuface crops file")
                if f"views/{view}/transforms" not in f:
                    raise NeufaceError(f"stale crops for sequence {name!r}: {crops_path} has no view {view!r} "
                                       "(the packed dataset has it)")
                tr = f[f"views/{view}/transforms"]
                if len(frames) and int(frames.max()) >= tr.shape[0]:
                    raise NeufaceError(f"stale crops for sequence {name!r}: {crops_path} view {view} has "
                                       f"{tr.shape[0]} frames, the packed dataset uses frame {int(frames.max())}")
                crop_size = int(f.attrs["crop_size"])
                transforms = tr[()][frames]
        except OSError as exc:
            raise NeufaceError(f"cannot read crops file {crops_path}: {exc}") from None
        return crop_size, transforms.astype(np.float64)

    # ------------------------------------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.keys)

    def _crops(self, path: str) -> h5py.File:
        if self._pid != os.getpid():  # after a fork: never reuse the parent's handles
            self._handles, self._pid = OrderedDict(), os.getpid()
        f = self._handles.get(path)
        if f is None:
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                raise NeufaceError(f"cannot open crops file {path}: {exc}") from None
            self._handles[path] = f
            if len(self._handles) > OPEN_CROPS:
                self._handles.popitem(last=False)[1].close()
        else:
            self._handles.move_to_end(path)
        return f

    def image(self, i: int) -> torch.Tensor:
        """(3, S, S) float32 crop of item ``i`` in [0, 1] (resized to ``image_size`` when needed)."""
        path, view, frame = self._where[i]
        try:
            raw = self._crops(path)[f"views/{view}/crops"][frame]
        except (OSError, KeyError, ValueError) as exc:
            raise NeufaceError(f"cannot read crop {frame} of view {view} from {path}: {exc}") from None
        return images_to_input(torch.from_numpy(np.ascontiguousarray(raw)).permute(2, 0, 1)[None], self.image_size,
                               "cpu")[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} frames")
        i = i % len(self)
        item = {k: v[i] for k, v in self.targets.items()}
        item["image"] = self.image(i)
        item["index"] = i
        return item

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = OrderedDict(), None
        return state

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._handles.values():
                f.close()
        self._handles, self._pid = OrderedDict(), None

    def describe(self) -> str:
        n_seq = sum(i.n_sequences for i in self.infos)
        return f"{len(self)} frames of {n_seq} sequence(s) in {len(self.infos)} dataset file(s)"
