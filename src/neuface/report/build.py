"""``build_report``: tables, figures and overlay videos from metric JSONs (+ fit files) into one directory.

Layout of ``out/``::

    table2.{csv,md,tex} table2_long.csv     annotators × datasets × metrics
    table3.{csv,md,tex} table3_long.csv     variants × datasets × metrics
    sequences.csv                           one row per (annotator, sequence): status and every metric
    per_view.csv                            annotators × datasets × views × metrics (NME, MPVE, CVD, MSI)
    cvd_per_view.png msi_distribution.png   always made: a placeholder saying why when there is no data
    loss_curves.png                         when fits are given
    overlays/<annotator>__<sequence>.mp4
    captions/*.rst                          copies of the Snakemake report captions
    index.md                                what was made
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path
from neuface.report import plots
from neuface.report.tables import aggregate, aggregate_per_view, load_metrics, write_table

log = logging.getLogger(__name__)

__all__ = ["CAPTIONS_DIR", "caption_path", "build_report"]

#: Snakemake report captions shipped with the package (one .rst per report item).
CAPTIONS_DIR = Path(__file__).parent / "captions"


def caption_path(name: str) -> Path:
    """Path of the caption ``name`` (``table2``, ``table3``, ``cvd_per_view``, ``msi_distribution``,
    ``loss_curves``, ``overlay``)."""
    path = CAPTIONS_DIR / f"{name}.rst"
    if not path.is_file():
        raise NeufaceError(f"no report caption {name!r} in {CAPTIONS_DIR}")
    return path


def build_report(metrics: Sequence[str | os.PathLike], out: str | os.PathLike, sheet=None,
                 annotators: Sequence[str] | None = None, variants: Sequence[str] | None = None,
                 split: str | None = None, labels: dict[str, str] | None = None,
                 fits: Sequence[str | os.PathLike] = (), overlays: Sequence[tuple[str, str]] = (), flame=None,
                 overlay_tile: int = 256, overlay_max_frames: int | None = None,
                 manifests: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
    """Write the report into ``out``; returns ``{item: path}`` of what was made.

    Args:
        metrics: metric JSONs (``neuface metrics`` outputs).
        sheet: sample sheet DataFrame (dataset / split of each sequence) or ``None``.
        annotators: rows of Table 2 in order (default: every annotator, sorted).
        variants: rows of Table 3 (default: every annotator).
        split: only sequences of this split (default: all).
        labels: display names of annotators.
        fits: fit files whose loss curves are plotted.
        overlays: ``(fit file, frames file)`` pairs to render as overlay videos (needs ``flame``).
        manifests: filter manifests; Table 2/3 and the index then say which fits the filter rejected and why
            (the tables measure every fit that ran, accepted or not).
    """
    if not metrics:
        raise NeufaceError("no metrics files given")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = labels or {}
    df = load_metrics(metrics, sheet)
    if split is not None and not (df["split"] == split).any():
        raise NeufaceError(f"no sequence of split {split!r} among {len(df)} metrics files")
    found = sorted(df["annotator"].unique())
    annotators = [a for a in (annotators or found) if a in found]
    variants = [a for a in (variants or found) if a in found]
    made: dict[str, Any] = {}
    long = aggregate(df, split=split)
    made["table2"] = write_table(long, annotators, out / "table2", labels,
                                 caption="Table 2: fidelity per annotator and dataset")
    made["table3"] = write_table(long, variants, out / "table3", labels,
                                 caption="Table 3: annotator variants (ablations)")
    if manifests:
        note = filter_note(manifests, split)
        for key in ("table2", "table3"):
            md = made[key]["md"]
            with atomic_path(md, suffix=".md") as tmp:
                tmp.write_text(md.read_text() + "\n" + note + "\n")
    with atomic_path(out / "sequences.csv", suffix=".csv") as tmp:
        df.drop(columns=["per_view_cvd", "per_view"]).to_csv(tmp, index=False, float_format="%.6g")
    made["sequences"] = out / "sequences.csv"
    with atomic_path(out / "per_view.csv", suffix=".csv") as tmp:
        aggregate_per_view(df, split=split).to_csv(tmp, index=False, float_format="%.6g")
    made["per_view"] = out / "per_view.csv"
    sel = df if split is None else df[df["split"] == split]
    made["cvd_per_view"] = plots.plot_cvd_per_view(sel, out / "cvd_per_view.png", labels)
    made["msi_distribution"] = plots.plot_msi_distribution(sel, out / "msi_distribution.png", annotators, labels)
    if fits:
        from neuface.metrics.fitfile import read_fit_arrays

        curves = {}
        for path in fits:
            fit = read_fit_arrays(path)
            if fit["losses"]:
                curves[f"{fit['attrs'].get('annotator', '?')}/{fit['status'].sequence}"] = fit["losses"]
        made["loss_curves"] = plots.plot_loss_curves(curves, out / "loss_curves.png")
    if overlays:
        if flame is None:
            raise NeufaceError("overlay videos need the FLAME model (--flame/--embedding)")
        from neuface.metrics.fitfile import read_fit_arrays
        from neuface.report.overlay import write_overlay_video

        made["overlays"] = []
        for fit_path, frames_path in overlays:
            fit = read_fit_arrays(fit_path)
            name = f"{fit['attrs'].get('annotator', 'fit')}__{fit['status'].sequence}.mp4"
            if not fit["status"].ok:
                log.warning("overlay %s skipped: fit failed (%s)", name, fit["status"].reason)
                continue
            made["overlays"].append(write_overlay_video(fit_path, frames_path, flame, out / "overlays" / name,
                                                        tile=overlay_tile, max_frames=overlay_max_frames))
    cap_dir = out / "captions"
    cap_dir.mkdir(exist_ok=True)
    for rst in sorted(CAPTIONS_DIR.glob("*.rst")):
        shutil.copyfile(rst, cap_dir / rst.name)
    _write_index(out, df, made)
    return made


def filter_note(manifests: Sequence[str | os.PathLike], split: str | None = None) -> str:
    """One Markdown paragraph: per annotator, the fits the filter accepted and each rejected one with its reasons."""
    from neuface.dataset.filter import read_manifest

    parts = []
    for path in manifests:
        rows, meta = read_manifest(path)
        rows = [r for r in rows if split is None or r.get("split") == split]
        name = meta.get("annotator") or Path(path).stem
        rejected = [r for r in rows if r["status"] != "accepted"]
        text = f"{name} {len(rows) - len(rejected)}/{len(rows)} accepted"
        if rejected:
            text += " (rejected: " + "; ".join(f"{r['sequence']}: {r['reasons'] or 'no reason'}"
                                               for r in rejected) + ")"
        parts.append(text)
    return ("Filter (the tables include rejected fits; the datasets do not): " + "; ".join(parts) + "."
            if parts else "")


def _write_index(out: Path, df, made: dict[str, Any]) -> None:
    n_ok = int((df["status"] == "ok").sum())
    lines = ["# neuface fidelity report", "",
             f"{len(df)} metric files ({n_ok} ok, {len(df) - n_ok} failed fits), "
             f"annotators: {', '.join(sorted(df['annotator'].unique()))}.", ""]
    for key in ("table2", "table3"):
        lines += [(out / f"{key}.md").read_text(), ""]
    for key, value in made.items():
        if isinstance(value, Path):
            reason = plots.placeholder_reason(value) if value.suffix == ".png" else None
            lines.append(f"- {key}: `{value.name}`" + (f" (placeholder: {reason})" if reason else ""))
        elif isinstance(value, list):
            lines += [f"- overlay: `overlays/{p.name}`" for p in value]
    with atomic_path(out / "index.md", suffix=".md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
