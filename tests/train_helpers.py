"""Shared builders for the training tests (regressor fine-tuning, motion prior): a synthetic kit, rendered
sequences with crops / landmarks / ground truth, annotation fit files and packed splits, sample sheets.

Everything is written with the project's own writers (``write_synthetic_sequence``, ``write_fit_file``,
``filter_fits`` / ``pack_split``), so the files follow the stage formats. The "annotation" fits here are the
ground truth itself (optionally perturbed): a perfect annotator, which isolates the trainer from fitting error.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from neuface.dataset.fake import write_fit_file
from neuface.dataset.filter import FilterThresholds, filter_fits, write_manifest
from neuface.dataset.pack import pack_split, sha256_file
from neuface.fitting.demo_data import SyntheticSequence, write_synthetic_sequence

SHEET_HEADER = "sequence\tview\tsplit\tpath\tdataset\tsubject\temotion\tground_truth\n"


def build_kit(out: Path) -> dict:
    """``neuface kit build`` into ``out``: {'flame', 'embedding', 'deca'} paths and a FlameLayer 'layer'."""
    from neuface.cli import main
    from neuface.flame import FlameLayer

    assert main(["kit", "build", "--out", str(out)]) == 0
    model, emb = out / "flame" / "generic_model.pkl", out / "flame" / "landmark_embedding.npy"
    return {"flame": model, "embedding": emb, "deca": out / "deca" / "deca_model.tar",
            "layer": FlameLayer.from_files(model, emb)}


@dataclass
class SeqFiles:
    """One rendered sequence laid out as the workflow does: crops/<name>.h5, landmarks/<name>.h5, gt/<name>.npz."""

    name: str
    crops: Path
    landmarks: Path
    gt: Path
    synth: SyntheticSequence


def write_sequence(root: Path, layer, name: str, seed: int, n_frames: int = 4, views=("front",), size: int = 64,
                   noise_px: float = 0.3) -> SeqFiles:
    """Render one sequence (``write_synthetic_sequence``) and lay its files out under ``root``."""
    work = root / "work" / name
    seq = write_synthetic_sequence(work, layer, n_frames=n_frames, views=tuple(views), size=size,
                                   noise_px=noise_px, seed=seed, sequence=name)
    paths = {}
    for kind, src in (("crops", seq.crops), ("landmarks", seq.landmarks)):
        dst = root / kind / f"{name}.h5"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        paths[kind] = dst
    with h5py.File(paths["crops"], "a") as f:  # the crops file names its landmarks file, as the stage writes it
        f.attrs["landmarks_file"] = str(paths["landmarks"])
    gt = root / "gt" / f"{name}.npz"
    gt.parent.mkdir(parents=True, exist_ok=True)
    p = seq.params
    np.savez_compressed(gt, shape=p["shape"], expression=p["expression"][:, 0], pose=p["pose"][:, 0],
                        global_pose=p["global_pose"], cam=p["cam"], landmarks=seq.landmarks_gt.astype(np.float32),
                        views=np.array(list(views)), fps=np.float64(25.0), image_size=np.int64(size),
                        flame_sha256=np.array("0" * 64))
    return SeqFiles(name, paths["crops"], paths["landmarks"], gt, seq)


def annotation_arrays(seq: SeqFiles, param_noise: float = 0.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Fit arrays of a perfect annotator (GT parameters, + Gaussian noise of std ``param_noise`` on ψ / pose)."""
    rng = np.random.default_rng(seed)
    p = seq.synth.params
    views = seq.synth.views
    with h5py.File(seq.crops) as f:
        transforms = np.stack([f[f"views/{v}/transforms"][()] for v in views], 1)
    with h5py.File(seq.landmarks) as f:
        lmk = np.stack([f[f"views/{v}/landmarks"][()] for v in views], 1)
        det = np.stack([f[f"views/{v}/detected"][()] for v in views], 1)

    def noisy(a: np.ndarray) -> np.ndarray:
        return (a + rng.normal(0.0, param_noise, a.shape)).astype(np.float32) if param_noise else a.copy()

    return {"shape": p["shape"].copy(), "expression": noisy(p["expression"]), "global_pose": noisy(p["global_pose"]),
            "pose": p["pose"].copy(), "cam": p["cam"].copy(), "crop_transforms": transforms.astype(np.float64),
            "landmarks": lmk.astype(np.float32), "detected": det.astype(bool),
            "landmarks_pred": seq.synth.landmarks_gt.astype(np.float32)}


def pack_sequences(root: Path, seqs: list[SeqFiles], flame: Path, split: str = "train", annotator: str = "neuface",
                   arrays: dict[str, dict[str, np.ndarray]] | None = None, out: Path | None = None) -> Path:
    """Annotation fits of ``seqs`` (``arrays`` by name, default :func:`annotation_arrays`) → filter → pack."""
    fits = []
    for s in seqs:
        a = (arrays or {}).get(s.name) or annotation_arrays(s)
        fits.append(write_fit_file(root / "fits" / annotator / f"{s.name}.h5", s.name, a, annotator=annotator,
                                   views=s.synth.views, flame_sha256=sha256_file(flame)))
    th = FilterThresholds(max_nme=100.0)
    manifest = write_manifest(filter_fits(fits, {s.name: split for s in seqs}, annotator, th),
                              root / "filter" / f"{annotator}-{split}.tsv", th, annotator)
    out = out or root / "dataset" / annotator / f"{split}.h5"
    pack_split(manifest, split, out, flame=flame)
    return out


def write_sheet(path: Path, seqs: list[SeqFiles], split: str = "test", with_gt: dict[str, bool] | None = None) -> Path:
    """A sample sheet listing ``seqs`` (one row per view); ``with_gt[name]=False`` leaves ground_truth empty."""
    lines = [SHEET_HEADER]
    for s in seqs:
        gt = str(s.gt) if (with_gt or {}).get(s.name, True) else ""
        for v in s.synth.views:
            lines.append(f"{s.name}\t{v}\t{split}\tvideos/{s.name}/{v}.mp4\tsynth\tS{s.name}\tneutral\t{gt}\n")
    path.write_text("".join(lines))
    return path


# ------------------------------------------------------------------------------------------- motion prior
def tiny_flame_files(root: Path, seed: int = 3) -> dict:
    """A small random FLAME-format model (80 vertices) and landmark embedding written under ``root``:
    {'flame', 'embedding' paths, 'layer' (float64 FlameLayer with landmarks)}. Fast enough for many frames."""
    import torch

    from neuface.dataset.fake import random_flame_model
    from neuface.flame import FlameLayer
    from neuface.flame.io import write_flame_pickle, write_landmark_embedding

    model, emb = random_flame_model(seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    flame = write_flame_pickle(model, root / "flame.pkl")
    embedding = write_landmark_embedding(emb, root / "landmark_embedding.npy")
    return {"flame": flame, "embedding": embedding, "layer": FlameLayer(model, emb, dtype=torch.float64)}


def motion_fit_arrays(n_frames: int, seed: int, n_views: int = 1, fps: float = 25.0, param_noise: float = 0.0,
                      noise_seed: int = 0) -> dict[str, np.ndarray]:
    """Fit arrays whose FLAME parameters are ``neuface.synthetic.motion.sample_motion(seed)`` (view v sees the head
    turned by a fixed yaw of 30°·v, folded into ``global_pose``), + i.i.d. Gaussian noise of std ``param_noise``
    on ψ, jaw and global pose per frame and view (a jittery per-frame annotator); 2D arrays from
    ``synthetic_fit_arrays``."""
    from neuface.dataset.fake import synthetic_fit_arrays
    from neuface.synthetic.motion import sample_motion

    m = sample_motion(n_frames, fps=fps, seed=seed)
    a = synthetic_fit_arrays(n_frames, n_views=n_views, seed=seed)
    rng = np.random.default_rng(noise_seed)
    a["shape"] = m.shape.astype(np.float32)
    a["expression"] = np.repeat(m.expression[:, None], n_views, 1).astype(np.float32)
    a["pose"] = np.repeat(m.pose[:, None], n_views, 1).astype(np.float32)
    gp = np.repeat(m.global_pose[:, None], n_views, 1)
    gp[..., 1] += np.deg2rad(30.0) * np.arange(n_views)[None]  # small angles: yaw offsets add
    a["global_pose"] = gp.astype(np.float32)
    if param_noise:
        for key, sl in (("expression", slice(None)), ("global_pose", slice(None)), ("pose", slice(3, 6))):
            a[key][..., sl] += rng.normal(0.0, param_noise, a[key][..., sl].shape).astype(np.float32)
    return a


def pack_motion_dataset(root: Path, flame: Path, seeds, split: str = "train", annotator: str = "neuface",
                        n_frames: int = 60, n_views: int = 1, fps: float = 25.0, param_noise: float = 0.0) -> Path:
    """A packed split of sequences ``m<seed>`` with synthetic motion (:func:`motion_fit_arrays`)."""
    fits = []
    for seed in seeds:
        a = motion_fit_arrays(n_frames, seed, n_views=n_views, fps=fps, param_noise=param_noise, noise_seed=seed)
        views = ["front", "left_30", "right_30"][:n_views] if n_views <= 3 else None
        fits.append(write_fit_file(root / "fits" / annotator / split / f"m{seed}.h5", f"m{seed}", a,
                                   annotator=annotator, views=views, fps=fps, flame_sha256=sha256_file(flame)))
    th = FilterThresholds()
    splits = {f"m{s}": split for s in seeds}
    manifest = write_manifest(filter_fits(fits, splits, annotator, th), root / "filter" / f"{annotator}-{split}.tsv",
                              th, annotator)
    out = root / "dataset" / annotator / f"{split}.h5"
    pack_split(manifest, split, out, flame=flame)
    return out
