"""Build sample sheets from dataset directory trees (``neuface index``).

Layouts (``ROOT`` is the directory holding the first level shown):

* ``mead``: ``{subject}/video/{view}/{emotion}/level_{n}/{clip}.mp4`` with views ``front, down, top, left_30,
  left_60, right_30, right_60``; one sequence per subject/emotion/level/clip, one row per view found.
* ``voxceleb2``: ``{id}/{youtube}/{clip}.mp4``; subject = speaker id, monocular.
* ``celebvhq``: ``*.mp4`` directly under ROOT; subject = clip id (CelebV-HQ has no identity labels).
* ``files``: every video file under ROOT (recursive); one monocular sequence per file, its own subject.

Splits are assigned per identity with a salted hash, so no identity crosses splits and adding videos never
moves existing subjects: ``u = sha256(seed, dataset, subject) → [0, 1)``; ``u < test_frac`` → test,
``< test_frac + val_frac`` → val, else train.

Few identities: a hash leaves small splits empty by chance (3 identities at 10 % / 10 % land all in train 51 %
of the time). When there are at least as many identities as splits with a positive fraction (3 with the default
fractions), every such split gets at least one identity: for each empty split (test, then val, then train) the
identity whose ``u`` lies nearest to that split's interval is moved there from the largest split (which keeps at
least one). This is deterministic for a given set of identities and seed; it only ever moves identities while a
split would otherwise be empty, so with more identities it stops applying (and an identity it moved may then
return to its hash split). Below that count the hash alone decides and the empty splits are logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from neuface.errors import NeufaceError
from neuface.sheets import validate_sheet

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
MEAD_VIEWS = ("front", "down", "top", "left_30", "left_60", "right_30", "right_60")
MONO_VIEW = "mono"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_ID = 180


@dataclass(frozen=True)
class VideoEntry:
    """One row of a sample sheet before its split is assigned."""

    sequence: str
    view: str
    path: str
    dataset: str
    subject: str
    emotion: str = ""


def safe_id(*parts: str) -> str:
    """Join ``parts`` with ``__`` into a file-name-safe id (unsafe characters → ``_``; long ids hashed)."""
    text = "__".join(_UNSAFE.sub("_", p).strip("._") or "_" for p in parts)
    text = text.lstrip("._-") or "x"
    if len(text) > _MAX_ID:
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        text = f"{text[:_MAX_ID - 12]}__{digest}"
    return text


def _videos(root: Path, recursive: bool = True) -> Iterator[PurePosixPath]:
    """Relative POSIX paths of video files under ``root``, sorted (hidden files/dirs skipped)."""
    if recursive:
        found = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(root)
            found += [PurePosixPath(rel.as_posix(), f) for f in filenames
                      if not f.startswith(".") and f.lower().endswith(VIDEO_EXTENSIONS)]
        yield from sorted(found)
    else:
        yield from sorted(PurePosixPath(p.name) for p in root.iterdir() if p.is_file()
                          and not p.name.startswith(".") and p.name.lower().endswith(VIDEO_EXTENSIONS))


def _join(root: Path, rel: PurePosixPath) -> str:
    return (PurePosixPath(root.as_posix()) / rel).as_posix()


def index_mead(root: Path, views: tuple[str, ...] | None = None) -> list[VideoEntry]:
    """MEAD: ``{subject}/video/{view}/{emotion}/level_{n}/{clip}.mp4``; ``views`` restricts the cameras."""
    keep = set(views or MEAD_VIEWS)
    unknown = keep - set(MEAD_VIEWS)
    if unknown:
        raise NeufaceError(f"unknown MEAD view(s) {sorted(unknown)}; MEAD has {', '.join(MEAD_VIEWS)}")
    entries, skipped = [], 0
    for rel in _videos(root):
        parts = rel.parts
        if (len(parts) != 6 or parts[1] != "video" or parts[2] not in MEAD_VIEWS
                or not parts[4].startswith("level_")):
            skipped += 1
            log.debug("not a MEAD video path, skipped: %s", rel)
            continue
        subject, _, view, emotion, level, clip = parts
        if view not in keep:
            continue
        seq = safe_id("mead", subject, emotion, level, PurePosixPath(clip).stem)
        entries.append(VideoEntry(seq, view, _join(root, rel), "mead", subject, emotion))
    _warn_skipped(skipped, "mead", "{subject}/video/{view}/{emotion}/level_{n}/{clip}.mp4")
    return entries


def index_voxceleb2(root: Path) -> list[VideoEntry]:
    """VoxCeleb2: ``{id}/{youtube}/{clip}.mp4``; subject = speaker id."""
    entries, skipped = [], 0
    for rel in _videos(root):
        if len(rel.parts) != 3:
            skipped += 1
            continue
        speaker, youtube, clip = rel.parts
        seq = safe_id("vox2", speaker, youtube, PurePosixPath(clip).stem)
        entries.append(VideoEntry(seq, MONO_VIEW, _join(root, rel), "voxceleb2", speaker))
    _warn_skipped(skipped, "voxceleb2", "{id}/{youtube}/{clip}.mp4")
    return entries


def index_celebvhq(root: Path) -> list[VideoEntry]:
    """CelebV-HQ: flat ``*.mp4`` under ROOT; each clip is its own subject."""
    entries = []
    for rel in _videos(root, recursive=False):
        clip = rel.stem
        entries.append(VideoEntry(safe_id("celebvhq", clip), MONO_VIEW, _join(root, rel), "celebvhq", clip))
    return entries


def index_files(root: Path) -> list[VideoEntry]:
    """Any video files under ROOT (recursive); one monocular sequence and one subject per file."""
    entries = []
    for rel in _videos(root):
        stem = rel.with_suffix("")
        seq = safe_id("files", *stem.parts)
        entries.append(VideoEntry(seq, MONO_VIEW, _join(root, rel), "files", "__".join(stem.parts)))
    return entries


LAYOUTS: dict[str, Callable[..., list[VideoEntry]]] = {
    "mead": index_mead,
    "voxceleb2": index_voxceleb2,
    "celebvhq": index_celebvhq,
    "files": index_files,
}


def split_of(subject: str, dataset: str, val_frac: float, test_frac: float, seed: int | str = 0) -> str:
    """Deterministic hash split of one identity (see module docstring; :func:`assign_splits` adds the
    few-identities rule)."""
    u = _unit(subject, dataset, seed)
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "val"
    return "train"


def _unit(subject: str, dataset: str, seed: int | str) -> float:
    digest = hashlib.sha256(f"neuface-split\0{seed}\0{dataset}\0{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(identities: list[tuple[str, str]], val_frac: float, test_frac: float,
                  seed: int | str = 0) -> dict[tuple[str, str], str]:
    """Split of each ``(dataset, subject)`` identity: :func:`split_of`, then the few-identities rule of the
    module docstring (no split with a positive fraction left empty when there are enough identities)."""
    unique = sorted(set(identities))
    u = {ident: _unit(ident[1], ident[0], seed) for ident in unique}
    splits = {ident: split_of(ident[1], ident[0], val_frac, test_frac, seed) for ident in unique}
    intervals = {"test": (0.0, test_frac), "val": (test_frac, test_frac + val_frac),
                 "train": (test_frac + val_frac, 1.0)}
    wanted = [name for name in ("test", "val", "train") if intervals[name][1] > intervals[name][0]]
    if len(unique) < len(wanted):
        return splits
    for name in wanted:
        members = {s: [i for i in unique if splits[i] == s] for s in intervals}
        if members[name]:
            continue
        donor = max(("train", "val", "test"), key=lambda s: len(members[s]))  # ties: train first
        lo, hi = intervals[name]
        moved = min(members[donor], key=lambda i: (max(lo - u[i], u[i] - hi, 0.0), i))
        splits[moved] = name
        log.info("split %r would be empty with %d identities: identity %s/%s moved there from %r", name,
                 len(unique), moved[0], moved[1], donor)
    return splits


def build_sheet(entries: list[VideoEntry], val_frac: float = 0.1, test_frac: float = 0.1,
                seed: int | str = 0) -> pd.DataFrame:
    """Sample-sheet DataFrame of ``entries``, split assigned per (dataset, subject); validated, sorted."""
    if not (0.0 <= val_frac <= 1.0 and 0.0 <= test_frac <= 1.0 and val_frac + test_frac <= 1.0):
        raise NeufaceError("need 0 <= val_frac, test_frac and val_frac + test_frac <= 1; "
                           f"got {val_frac}, {test_frac}")
    if not entries:
        raise NeufaceError("no videos found")
    df = pd.DataFrame([e.__dict__ for e in entries])
    dupes = df[df.duplicated(["sequence", "view"], keep=False)]
    if not dupes.empty:
        first = dupes.iloc[0]
        raise NeufaceError(f"two videos map to sequence {first['sequence']!r}, view {first['view']!r}, "
                           f"e.g. {', '.join(dupes['path'].iloc[:2])}; rename one")
    idents = list(zip(df["dataset"], df["subject"], strict=True))
    splits = assign_splits(idents, val_frac, test_frac, seed)
    df["split"] = [splits[i] for i in idents]
    df = df[["sequence", "view", "split", "path", "dataset", "subject", "emotion"]]
    if (df["emotion"] == "").all():
        df = df.drop(columns="emotion")
    return validate_sheet(df)


def index_dataset(layout: str, root: str | os.PathLike, val_frac: float = 0.1, test_frac: float = 0.1,
                  seed: int | str = 0, views: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Scan ``root`` with ``layout`` (one of :data:`LAYOUTS`) and return the validated sheet."""
    if layout not in LAYOUTS:
        raise NeufaceError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise NeufaceError(f"dataset root {root} is not a directory")
    if views is not None and layout != "mead":
        raise NeufaceError("--views only applies to the mead layout")
    entries = LAYOUTS[layout](root, views) if layout == "mead" else LAYOUTS[layout](root)
    if not entries:
        raise NeufaceError(f"no {layout} videos found under {root} "
                           f"(extensions: {', '.join(VIDEO_EXTENSIONS)})")
    df = build_sheet(entries, val_frac, test_frac, seed)
    _log_summary(df, layout, {"train": 1.0 - val_frac - test_frac, "val": val_frac, "test": test_frac})
    return df


def _warn_skipped(n: int, layout: str, pattern: str) -> None:
    if n:
        log.warning("%d video file(s) do not match the %s layout %s and were skipped (-v lists them)",
                    n, layout, pattern)


def _log_summary(df: pd.DataFrame, layout: str, fractions: dict[str, float]) -> None:
    seqs = df.drop_duplicates("sequence")
    subjects = df.drop_duplicates(["dataset", "subject"])
    counts = seqs["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
    subj_counts = subjects["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
    log.info("%s: %d sequence(s), %d video(s), %d subject(s); sequences per split %s; subjects per split %s",
             layout, len(seqs), len(df), len(subjects), dict(counts), dict(subj_counts))
    for split, n in subj_counts.items():
        if n == 0 and fractions[split] > 0:
            log.warning("split %r has no subjects (only %d subject(s) in total; with at least one per split "
                        "every split gets one)", split, len(subjects))


__all__ = [
    "LAYOUTS",
    "MEAD_VIEWS",
    "MONO_VIEW",
    "VIDEO_EXTENSIONS",
    "VideoEntry",
    "assign_splits",
    "build_sheet",
    "index_celebvhq",
    "index_dataset",
    "index_files",
    "index_mead",
    "index_voxceleb2",
    "safe_id",
    "split_of",
]
