"""Report figures (matplotlib, Agg backend, PNG): per-view CVD bars (paper Fig. 7), MSI_3D distributions,
and loss curves of fits.

The report's figures always exist, whatever the sheet holds (monocular sequences only, one sequence, every fit
failed): a figure without data is a placeholder PNG that says why (:func:`plot_placeholder`), so the workflow
can declare it as an output."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from neuface.io_utils import atomic_path

log = logging.getLogger(__name__)

__all__ = ["plot_cvd_per_view", "plot_msi_distribution", "plot_loss_curves", "plot_placeholder",
           "placeholder_reason"]

#: Texts of the placeholder figures (the reason a figure has no data).
NO_CVD = "no multi-view sequences: CVD not applicable"
NO_FIT = "no successful fit: {} not available"

_VIEW_ORDER = ("left_60", "left_30", "front", "right_30", "right_60", "top", "down")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, description: str | None = None) -> Path:
    plt = _pyplot()
    metadata = {"Description": description} if description else None
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return Path(path)


def plot_placeholder(path: str | os.PathLike, title: str, message: str) -> Path:
    """A small PNG that shows ``title`` and why the figure has no data (``message``, also the PNG's
    ``Description`` text chunk); logged."""
    log.info("%s: %s (placeholder written to %s)", title, message, path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.62, title, ha="center", va="center", fontsize=11, transform=ax.transAxes)
    ax.text(0.5, 0.3, message, ha="center", va="center", fontsize=9, color="0.35", transform=ax.transAxes)
    return _save(fig, path, description=message)


def placeholder_reason(path: str | os.PathLike) -> str | None:
    """Why the figure at ``path`` has no data, if it is a :func:`plot_placeholder`; else None."""
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get("Description") if hasattr(image, "text") else None


def _cvd_means(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """annotator -> view -> mean per-view CVD over the ok sequences that have a value for that view."""
    means: dict[str, dict[str, float]] = {}
    for ann, group in df[df["status"] == "ok"].groupby("annotator", sort=False):
        per = [d for d in group["per_view_cvd"] if isinstance(d, dict)]
        values: dict[str, list[float]] = {}
        for d in per:
            for view, value in d.items():
                if value is not None and math.isfinite(float(value)):
                    values.setdefault(view, []).append(float(value))
        if values:
            means[ann] = {v: float(np.mean(vals)) for v, vals in sorted(values.items())}
    return means


def plot_cvd_per_view(df: pd.DataFrame, path: str | os.PathLike, labels: dict[str, str] | None = None) -> Path:
    """Grouped bars: per view, the per-view CVD (mm) averaged over ok multi-view sequences, one bar per annotator.

    Without any per-view CVD the figure is a placeholder saying why: :data:`NO_CVD` (monocular sequences only)
    or :data:`NO_FIT` (every fit failed). Returns the path.
    """
    labels = labels or {}
    means = _cvd_means(df)
    if not means:
        reason = NO_CVD if (df["status"] == "ok").any() else NO_FIT.format("CVD")
        return plot_placeholder(path, "Cross-view vertex distance per view", reason)
    all_views = sorted({v for m in means.values() for v in m},
                       key=lambda v: (_VIEW_ORDER.index(v) if v in _VIEW_ORDER else 99, v))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(all_views) + 2), 3.5))
    width = 0.8 / len(means)
    x = np.arange(len(all_views))
    for i, (ann, m) in enumerate(means.items()):
        ax.bar(x + (i - (len(means) - 1) / 2) * width, [m.get(v, math.nan) for v in all_views], width,
               label=labels.get(ann, ann))
    ax.set_xticks(x, all_views)
    ax.set_ylabel("CVD [mm] (mean per-vertex L1)")
    ax.set_title("Cross-view vertex distance per view")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_msi_distribution(df: pd.DataFrame, path: str | os.PathLike, annotators: Sequence[str] | None = None,
                          labels: dict[str, str] | None = None) -> Path:
    """Box plots of per-sequence MSI_3D^L and MSI_3D^V (log scale) per annotator; returns the path.

    Without any value (every fit failed) the figure is a placeholder saying :data:`NO_FIT`; a panel whose metric
    has no positive value says so.
    """
    labels = labels or {}
    ok = df[df["status"] == "ok"]
    anns = list(annotators) if annotators is not None else list(dict.fromkeys(ok["annotator"]))
    data = {k: [ok.loc[ok["annotator"] == a, k].dropna().to_numpy() for a in anns] for k in ("msi3d_l", "msi3d_v")}
    if not any(len(v) for vals in data.values() for v in vals):
        return plot_placeholder(path, "Temporal stability (MSI$_{3D}$)", NO_FIT.format("MSI"))
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 2.0 * len(anns) + 3), 3.8), constrained_layout=True)
    for ax, (key, title) in zip(axes, (("msi3d_l", "MSI$_{3D}^{L}$"), ("msi3d_v", "MSI$_{3D}^{V}$")), strict=True):
        vals = [v[v > 0] for v in data[key]]
        keep = [i for i, v in enumerate(vals) if len(v)]
        if keep:
            ax.boxplot([vals[i] for i in keep], tick_labels=[labels.get(anns[i], anns[i]) for i in keep])
            for pos, i in enumerate(keep, start=1):  # the sequences themselves, jittered
                n = len(vals[i])
                ax.scatter(pos + (np.arange(n) - (n - 1) / 2) * 0.24 / max(n - 1, 1), vals[i], s=8, alpha=0.6, zorder=3)
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no positive value", ha="center", va="center", color="0.35", transform=ax.transAxes)
        ax.set_title(f"{title} per sequence")
        ax.set_ylabel("1/mm$^2$")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Temporal stability (higher = smoother)", fontsize=10)
    return _save(fig, path)


def plot_loss_curves(curves: dict[str, dict[str, np.ndarray]], path: str | os.PathLike, max_lines: int = 24
                     ) -> Path | None:
    """One panel per loss name, one line per fit (``curves[fit_label][loss_name] = (T,) values``), log y."""
    names = sorted({n for c in curves.values() for n in c})
    if not names:
        return None
    names = ["total"] + [n for n in names if n != "total"] if "total" in names else names
    plt = _pyplot()
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for label, c in list(curves.items())[:max_lines]:
            if name in c and len(c[name]):
                y = np.asarray(c[name], dtype=float)
                ax.plot(np.arange(len(y)), y, label=label, linewidth=1)
                if np.all(y[np.isfinite(y)] > 0):
                    ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    if len(curves) > max_lines:
        log.info("loss curves: showing %d of %d fits", max_lines, len(curves))
    return _save(fig, path)
