"""Paper-style tables from per-sequence metric JSONs: Table 2 (annotators × datasets × metrics) and Table 3
(variants × datasets × metrics), written as CSV (wide and long), Markdown and LaTeX.

Each cell is the mean over the sequences of a dataset (optionally one split) whose fit succeeded and for which
the metric applies (CVD: multi-view; MPVE / nme_gt: with ground truth). Failed sequences are counted, never
averaged. The best value of a column (max for ↑, min for ↓) is bold in Markdown and LaTeX. Headline columns
come first: NME normalised by the landmark bounding box (``nme``), then the eye-corner NME (``nme_eye``);
similarity-aligned MPVE (``mpve_aligned``, "MPVE"), then the unaligned canonical MPVE (``mpve``).
:func:`aggregate_per_view` gives the same statistics per camera view (``per_view.csv``).

Metrics JSONs of format version 1 are read with their meaning: their ``nme`` / ``nme_gt`` were eye-corner
normalised, so they land in ``nme_eye`` / ``nme_gt_eye`` (v1 has no bounding-box NME and no aligned MPVE).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path

__all__ = ["METRICS", "load_metrics", "aggregate", "aggregate_per_view", "write_table", "format_value",
           "dataset_label"]

#: metric key → (Markdown header, LaTeX header, higher is better); column order of the tables.
METRICS: dict[str, tuple[str, str, bool]] = {
    "msi3d_l": ("MSI3D-L ↑", r"MSI$^{L}_{3D}\uparrow$", True),
    "msi3d_v": ("MSI3D-V ↑", r"MSI$^{V}_{3D}\uparrow$", True),
    "cvd": ("CVD ↓", r"CVD$\downarrow$", False),
    "nme": ("NME ↓", r"NME$\downarrow$", False),
    "nme_eye": ("NME-eye ↓", r"NME$_{eye}\downarrow$", False),
    "nme_gt": ("NME-GT ↓", r"NME$_{GT}\downarrow$", False),
    "nme_gt_eye": ("NME-GT-eye ↓", r"NME$_{GT,eye}\downarrow$", False),
    "mpve_aligned": ("MPVE ↓", r"MPVE$\downarrow$", False),
    "mpve": ("MPVE-unaligned ↓", r"MPVE$_{unal}\downarrow$", False),
}
#: format version 1 of ``neuface.metrics``: its keys → today's keys of the same meaning.
_V1_KEYS = {"nme": "nme_eye", "nme_gt": "nme_gt_eye"}
_DATASET_LABELS = {"mead": "MEAD", "voxceleb2": "VoxCeleb2", "celebvhq": "CelebV-HQ", "files": "Files",
                   "synth_mead": "Synth-MEAD", "synth_mono": "Synth-mono"}


def dataset_label(name: str) -> str:
    return _DATASET_LABELS.get(name, name or "all")


def load_metrics(paths: Sequence[str | os.PathLike], sheet: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per metric JSON: ``annotator, sequence, status, dataset, split`` + one column per metric.

    ``dataset`` / ``split`` come from the sample sheet (``dataset`` empty → ``"all"``); sequences missing from
    the sheet get ``dataset = split = "unknown"``. ``per_view_cvd`` and ``per_view`` (``{metric: {view:
    value}}``) hold the JSON's per-view values (dicts; drop them before writing a CSV).
    """
    rows = []
    for p in paths:
        path = Path(p)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise NeufaceError(f"cannot read metrics {path}: {exc}") from None
        metrics, per_view = data.get("metrics") or {}, data.get("per_view") or {}
        if data.get("format_version") == 1:
            metrics, per_view = _from_v1(metrics), _from_v1(per_view)
        row: dict[str, Any] = {"annotator": data.get("annotator") or path.parent.name,
                               "sequence": data.get("sequence") or path.stem, "status": data.get("status", "ok"),
                               "reason": data.get("reason", ""), "path": str(path),
                               "per_view_cvd": per_view.get("cvd"),
                               "per_view": {k: v for k, v in per_view.items() if isinstance(v, dict)}}
        for key in METRICS:
            value = metrics.get(key)
            row[key] = float(value) if value is not None else math.nan
        rows.append(row)
    df = pd.DataFrame(rows, columns=["annotator", "sequence", "status", "reason", "path", "per_view_cvd",
                                     "per_view", *METRICS])
    meta = {}
    if sheet is not None and len(sheet):
        cols = [c for c in ("dataset", "split") if c in sheet.columns]
        meta = sheet.groupby("sequence")[cols].first().to_dict("index")
    df["dataset"] = [(meta.get(s, {}).get("dataset") or "all") if s in meta else "unknown" for s in df["sequence"]]
    df["split"] = [meta.get(s, {}).get("split", "unknown") for s in df["sequence"]]
    return df


def _from_v1(values: dict[str, Any]) -> dict[str, Any]:
    """Keys of a format-version-1 ``metrics`` / ``per_view`` dict renamed to today's keys of that meaning."""
    return {_V1_KEYS.get(k, k): v for k, v in values.items()}


def _stats(vals: np.ndarray) -> dict[str, float | int]:
    vals = vals[np.isfinite(vals)]
    return {"n": int(vals.size), "mean": float(vals.mean()) if vals.size else math.nan,
            "std": float(vals.std()) if vals.size else math.nan,
            "median": float(np.median(vals)) if vals.size else math.nan}


def aggregate(df: pd.DataFrame, annotators: Sequence[str] | None = None, split: str | None = None
              ) -> pd.DataFrame:
    """Long table ``annotator, dataset, metric, mean, std, median, n, n_ok, n_failed``.

    ``n`` sequences have the metric, ``n_ok`` fits succeeded, ``n_failed`` failed (not averaged).
    """
    if split is not None:
        df = df[df["split"] == split]
    if annotators is not None:
        df = df[df["annotator"].isin(list(annotators))]
    out = []
    for (ann, ds), group in df.groupby(["annotator", "dataset"], sort=False):
        ok = group[group["status"] == "ok"]
        n_failed = int((group["status"] != "ok").sum())
        n_ok = len(ok)
        for key in METRICS:
            out.append({"annotator": ann, "dataset": ds, "metric": key, "n_ok": n_ok, "n_failed": n_failed,
                        **_stats(ok[key].to_numpy(dtype=float))})
    return pd.DataFrame(out, columns=["annotator", "dataset", "metric", "mean", "std", "median", "n", "n_ok",
                                     "n_failed"])


def aggregate_per_view(df: pd.DataFrame, annotators: Sequence[str] | None = None, split: str | None = None
                       ) -> pd.DataFrame:
    """Long per-view table ``annotator, dataset, view, metric, mean, std, median, n`` (ok sequences only).

    Statistics over the sequences of a dataset of each view's value (the ``per_view`` of the metrics JSONs:
    MSI, CVD, every NME and MPVE), in :data:`METRICS` order, views in order of appearance.
    """
    if split is not None:
        df = df[df["split"] == split]
    if annotators is not None:
        df = df[df["annotator"].isin(list(annotators))]
    out = []
    for (ann, ds), group in df[df["status"] == "ok"].groupby(["annotator", "dataset"], sort=False):
        per_view = [p for p in group["per_view"] if isinstance(p, dict)]
        for key in METRICS:
            views = list(dict.fromkeys(v for p in per_view for v in (p.get(key) or {})))
            for view in views:
                vals = [(p.get(key) or {}).get(view) for p in per_view]
                vals = np.array([math.nan if x is None else float(x) for x in vals], dtype=float)
                out.append({"annotator": ann, "dataset": ds, "view": view, "metric": key, **_stats(vals)})
    return pd.DataFrame(out, columns=["annotator", "dataset", "view", "metric", "mean", "std", "median", "n"])


def format_value(x: float) -> str:
    """3 decimals like the paper; 3 significant digits outside [0.001, 1000); '–' for missing."""
    if x is None or not math.isfinite(x):
        return "–"
    if x != 0 and (abs(x) >= 1000 or abs(x) < 0.001):
        return f"{x:.3g}"
    return f"{x:.3f}"


def _wide(long: pd.DataFrame, rows: Sequence[str]) -> tuple[list[tuple[str, str]], dict, dict]:
    """Columns (dataset, metric) that have at least one value, values[(row, dataset, metric)] (means) and the
    standard deviations over sequences where a cell averages more than one sequence."""
    values = {(r.annotator, r.dataset, r.metric): r.mean for r in long.itertuples()}
    spread = {(r.annotator, r.dataset, r.metric): r.std for r in long.itertuples() if r.n > 1}
    datasets = list(dict.fromkeys(long["dataset"]))
    order = {d: i for i, d in enumerate(["mead", "voxceleb2", "celebvhq", "synth_mead", "synth_mono"])}
    datasets.sort(key=lambda d: (order.get(d, 99), d))
    cols = [(d, m) for d in datasets for m in METRICS
            if any(math.isfinite(values.get((a, d, m), math.nan)) for a in rows)]
    return cols, values, spread


def _best(values: dict, rows: Sequence[str], col: tuple[str, str]) -> float | None:
    vals = [values.get((a, *col), math.nan) for a in rows]
    vals = [v for v in vals if math.isfinite(v)]
    if len(vals) < 2:
        return None
    return max(vals) if METRICS[col[1]][2] else min(vals)


def write_table(long: pd.DataFrame, rows: Sequence[str], out_stem: str | os.PathLike,
                labels: dict[str, str] | None = None, caption: str = "") -> dict[str, Path]:
    """Write ``<stem>.csv`` (wide), ``<stem>_long.csv``, ``<stem>.md`` and ``<stem>.tex``; returns the paths."""
    labels = labels or {}
    rows = [r for r in rows if r in set(long["annotator"])]
    long = long[long["annotator"].isin(rows)]
    cols, values, spread = _wide(long, rows)
    stem = Path(out_stem)
    paths = {k: stem.with_name(stem.name + suffix) for k, suffix in
             (("csv", ".csv"), ("long", "_long.csv"), ("md", ".md"), ("tex", ".tex"))}
    wide = pd.DataFrame([[labels.get(a, a)] + [values.get((a, *c), math.nan) for c in cols] for a in rows],
                        columns=["annotator"] + [f"{d}/{m}" for d, m in cols])
    for key, frame in (("csv", wide), ("long", long)):
        with atomic_path(paths[key], suffix=".csv") as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    best = {c: _best(values, rows, c) for c in cols}

    def cell(a: str, c: tuple[str, str], bold: str, pm: str = " ± ") -> str:
        v = values.get((a, *c), math.nan)
        text = format_value(v)
        text = bold.format(text) if best[c] is not None and math.isfinite(v) and v == best[c] else text
        std = spread.get((a, *c), math.nan)
        return f"{text}{pm}{format_value(std)}" if math.isfinite(v) and math.isfinite(std) else text

    md = [f"{caption}\n" if caption else ""]
    md.append("| Annotator | " + " | ".join(f"{dataset_label(d)} {METRICS[m][0]}" for d, m in cols) + " |")
    md.append("|---|" + "---:|" * len(cols))
    for a in rows:
        md.append(f"| {labels.get(a, a)} | " + " | ".join(cell(a, c, "**{}**") for c in cols) + " |")
    md.append("\n" + _counts_note(long, rows, labels))
    with atomic_path(paths["md"], suffix=".md") as tmp:
        tmp.write_text("\n".join(md).lstrip("\n") + "\n")

    datasets = list(dict.fromkeys(d for d, _ in cols))
    tex = [r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule"]
    head, rules, start = [""], [], 2
    for d in datasets:
        n = sum(1 for c in cols if c[0] == d)
        head.append(rf"\multicolumn{{{n}}}{{c}}{{{_tex(dataset_label(d))}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
        start += n
    tex += [" & ".join(head) + r" \\", " ".join(rules),
            "Annotator & " + " & ".join(METRICS[m][1] for _, m in cols) + r" \\", r"\midrule"]
    for a in rows:
        cells = " & ".join(cell(a, c, r"\textbf{{{}}}", r" $\pm$ ") for c in cols)
        tex.append(_tex(labels.get(a, a)) + " & " + cells + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}"]
    with atomic_path(paths["tex"], suffix=".tex") as tmp:
        tmp.write_text("\n".join(tex).replace("–", "--") + "\n")
    return paths


def _counts_note(long: pd.DataFrame, rows: Sequence[str], labels: dict[str, str]) -> str:
    parts = []
    for a in rows:
        sub = long[(long["annotator"] == a) & (long["metric"] == "nme")]
        for r in sub.itertuples():
            parts.append(f"{labels.get(a, a)}/{dataset_label(r.dataset)}: {r.n_ok} ok, {r.n_failed} failed")
    return "Sequences: " + "; ".join(parts) + "." if parts else ""


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)
