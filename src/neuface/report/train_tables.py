"""Table 4 (motion prior) and Table 5 (regressor fine-tuning) from the training evaluations' JSON files.

``neuface eval-regressor`` writes one ``neuface.eval.regressor`` JSON per encoder and ``neuface prior eval`` one
``neuface.eval.motion_prior`` JSON per prior (docs/training.md). Each table is written as ``<stem>.csv``,
``<stem>.md`` and ``<stem>.tex`` (atomically), rows in the order the files are given.
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
from neuface.report.tables import _tex, format_value
from neuface.train.regressor_settings import seed_suffix, split_seed_suffix

REGRESSOR_FORMAT = "neuface.eval.regressor"
PRIOR_FORMAT = "neuface.eval.motion_prior"


def read_eval(path: str | os.PathLike, fmt: str) -> dict[str, Any]:
    """One evaluation JSON of format ``fmt`` (a clear error for anything else)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise NeufaceError(f"{path}: not a readable evaluation JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise NeufaceError(f"{path}: format {got!r}, expected {fmt!r}")
    return data


def _num(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _trained_on(lineage: Any) -> str:
    """"<annotator> <split> (N seq.)" from a lineage record's datasets, '–' for the original weights."""
    if not isinstance(lineage, dict):
        return "–"
    parts = []
    for d in lineage.get("datasets") or []:
        n = d.get("n_sequences_used", d.get("n_sequences"))
        label = " ".join(str(x) for x in (d.get("annotator"), d.get("split")) if x)
        parts.append(f"{label} ({n} seq.)" if n is not None else label)
    return ", ".join(parts) or "?"


def _supervision(lineage: Any) -> str:
    """The Table 5 "Supervision" cell of a fine-tuned encoder's lineage ("–" for the original encoder)."""
    if lineage is None:
        return "–"
    settings = lineage.get("settings") or {}
    if settings.get("use_3d") is False:
        return "2D"
    left_out = [name for name, out in (("identity", settings.get("identity_3d") == "predicted"),
                                       ("head pose", settings.get("pose_3d") == "canonical")) if out]
    return "2D + 3D" + (f" w/o {' or '.join(left_out)}" if left_out else "")


def _sequence_means(data: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """sequence → (mean aligned MPVE, number of (frame, view) samples) of the GT sequences evaluated ok."""
    out = {}
    for s in data.get("sequences") or []:
        mean = _num((s.get("mpve_aligned_mm") or {}).get("mean"))
        n = int(s.get("n_frames") or 0) * int(s.get("n_views") or 0)
        if s.get("status") == "ok" and math.isfinite(mean) and n > 0:
            out[str(s["sequence"])] = (mean, n)
    return out


def paired_change_ci(model: dict[str, tuple[float, int]], base: dict[str, tuple[float, int]],
                     n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the change (%) of the pooled mean error of ``model`` against ``base``.

    The unit of resampling is the sequence (its frames are correlated): each draw takes the shared sequences
    with replacement and compares ``Σ n_i m_i / Σ n_i`` of the two (the pooled per-sample mean, as the table's
    MPVE mean) on the same draw, so the interval is paired.

    Args:
        model / base: sequence → (mean error over its samples, number of samples).
        n_boot: bootstrap draws.  level: coverage of the percentile interval.  seed: RNG seed (reproducible).
    Returns:
        (low, high) in %; (nan, nan) with fewer than 2 shared sequences.
    """
    shared = sorted(set(model) & set(base))
    if len(shared) < 2:
        return math.nan, math.nan
    m = np.array([model[k][0] * model[k][1] for k in shared])
    b = np.array([base[k][0] * base[k][1] for k in shared])
    nm = np.array([model[k][1] for k in shared], dtype=np.float64)
    nb = np.array([base[k][1] for k in shared], dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(shared), size=(n_boot, len(shared)))
    change = 100.0 * ((m[idx].sum(1) / nm[idx].sum(1)) / (b[idx].sum(1) / nb[idx].sum(1)) - 1.0)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(change, [tail, 100.0 - tail])
    return float(low), float(high)


def seed_paired_change_ci(pairs: Sequence[tuple[dict[str, tuple[float, int]], dict[str, tuple[float, int]]]],
                          n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the mean over training seeds of the paired change (%) of a model against its base.

    Two sources of chance are resampled together: which training seeds were drawn (a recipe's seed spread) and
    which held-out sequences were drawn. Each draw takes the seeds with replacement and, once for all seeds, the
    sequences shared by every pair with replacement; each drawn seed's change is that of the pooled mean error
    ``Σ n_i m_i / Σ n_i`` (as :func:`paired_change_ci`), and the draw's value is their mean. An interval that
    excludes 0 says the recipe's difference is larger than both its seed spread and the test-set sampling.

    Args:
        pairs: one ``(model, base)`` per seed, each sequence → (mean error over its samples, number of samples).
        n_boot / level / seed: as :func:`paired_change_ci`.
    Returns:
        (low, high) in %; (nan, nan) with fewer than 2 seeds or fewer than 2 sequences shared by all pairs.
    """
    if len(pairs) < 2:
        return math.nan, math.nan
    shared = _shared_sequences(pairs)
    if len(shared) < 2:
        return math.nan, math.nan
    def weighted(side: int) -> tuple[np.ndarray, np.ndarray]:  # (S, Q) sums n_i m_i and counts n_i
        n = np.array([[pair[side][k][1] for k in shared] for pair in pairs], dtype=np.float64)
        return np.array([[pair[side][k][0] for k in shared] for pair in pairs]) * n, n
    (m, nm), (b, nb) = weighted(0), weighted(1)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, len(pairs), size=(n_boot, len(pairs)))  # (D, S)
    seqs = rng.integers(0, len(shared), size=(n_boot, len(shared)))  # (D, Q)
    def pooled(x: np.ndarray, n: np.ndarray) -> np.ndarray:  # (D, S): per drawn seed, over the drawn sequences
        rows = seeds[:, :, None]
        cols = seqs[:, None, :]
        return x[rows, cols].sum(-1) / n[rows, cols].sum(-1)
    change = 100.0 * (pooled(m, nm) / pooled(b, nb) - 1.0)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(change.mean(axis=1), [tail, 100.0 - tail])
    return float(low), float(high)


def _shared_sequences(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """The sequences present on both sides of every ``(model, base)`` pair, sorted."""
    return sorted(set.intersection(*(set(m) & set(b) for m, b in pairs)))


def regressor_rows(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per encoder: aligned MPVE median/mean/std (mm) and the means of its identity / expression parts,
    NME, NME vs GT, counts; ``mpve_change_pct`` is the mean aligned MPVE relative to the ``original`` row (when
    there is one) and ``change_ci_low`` / ``change_ci_high`` its 95 % paired bootstrap interval over the
    sequences (:func:`paired_change_ci`); ``per_sequence`` (JSON: sequence → [mean, samples]) feeds
    :func:`seed_summary` and is not written to the table."""
    rows, per_sequence = [], []
    for path in paths:
        data = read_eval(path, REGRESSOR_FORMAT)
        per_sequence.append(_sequence_means(data))
        summary = data.get("summary") or {}
        mpve = summary.get("mpve_aligned_mm") or {}
        lineage = (data.get("encoder") or {}).get("lineage")
        no_gt = {s["sequence"]: _num(s.get("nme")) for s in data.get("sequences") or [] if not s.get("has_gt")}
        rows.append({
            "encoder": str(data.get("label")), "trained_on": _trained_on(lineage), "supervision": _supervision(lineage),
            "mpve_median": _num(mpve.get("median")), "mpve_mean": _num(mpve.get("mean")),
            "mpve_std": _num(mpve.get("std")),
            "identity_mean": _num((summary.get("mpve_identity_mm") or {}).get("mean")),
            "expression_mean": _num((summary.get("mpve_expression_mm") or {}).get("mean")),
            "nme": _num((summary.get("nme") or {}).get("mean")),
            "nme_gt": _num((summary.get("nme_gt") or {}).get("mean")),
            "n_sequences": summary.get("n_sequences"), "n_frames": summary.get("n_frames"),
            "nme_no_gt": json.dumps(no_gt, sort_keys=True),
            "per_sequence": json.dumps(per_sequence[-1], sort_keys=True),
        })
    df = pd.DataFrame(rows)
    originals = [i for i, r in enumerate(rows) if r["encoder"] == "original"]
    ref = rows[originals[0]]["mpve_mean"] if originals else math.nan
    df["mpve_change_pct"] = [100.0 * (v / ref - 1.0) if math.isfinite(ref) and ref > 0 else math.nan
                             for v in df.get("mpve_mean", [])]
    cis = [paired_change_ci(seqs, per_sequence[originals[0]]) if originals and i != originals[0]
           else (math.nan, math.nan) for i, seqs in enumerate(per_sequence)]
    df["change_ci_low"] = [c[0] for c in cis]
    df["change_ci_high"] = [c[1] for c in cis]
    df["change_ci"] = [f"[{format_value(lo)}, {format_value(hi)}]" if math.isfinite(lo) else "–" for lo, hi in cis]
    _add_change_vs_2d(df, rows, per_sequence)
    return df


def seed_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe (a label without its ``_seed<S>`` suffix) that was trained with more than one seed:
    ``n_seeds``, mean / std / min / max over seeds of the MPVE mean, the mean over seeds of the change against
    the original and against the 2D-only sibling of the same seed, and the mean identity / expression parts.

    A 3D-supervised recipe with a 2D-only sibling for at least two seeds also gets ``vs_2d_ci_low`` /
    ``vs_2d_ci_high`` (:func:`seed_paired_change_ci` over those seeds and the held-out sequences, when ``df`` has
    the ``per_sequence`` column of :func:`regressor_rows`), ``vs_2d_better`` ("k/n": the seeds where it beat
    its sibling) and ``vs_2d_sequences_better`` ("k/n": the held-out sequences where it did, mean over seeds)."""
    if df.empty:
        return pd.DataFrame()
    recipes = [split_seed_suffix(e)[0] for e in df["encoder"]]
    index = {e: i for i, e in enumerate(df["encoder"])}
    out = []
    for recipe in dict.fromkeys(recipes):
        part = df[[r == recipe for r in recipes]]
        if len(part) < 2:
            continue
        values = part["mpve_mean"].astype(float)
        row = {"recipe": recipe, "n_seeds": len(part), "mpve_mean": values.mean(),
               "mpve_seed_std": values.std(ddof=1), "mpve_min": values.min(), "mpve_max": values.max(),
               "mpve_change_pct": part["mpve_change_pct"].astype(float).mean(),
               "vs_2d_pct": part["vs_2d_pct"].astype(float).mean(),
               "vs_2d_ci_low": math.nan, "vs_2d_ci_high": math.nan, "vs_2d_better": "–",
               "vs_2d_sequences_better": "–",
               "identity_mean": part["identity_mean"].astype(float).mean(),
               "expression_mean": part["expression_mean"].astype(float).mean()}
        paired = part[part["vs_2d_pct"].astype(float).notna()]
        if len(paired):
            row["vs_2d_better"] = f"{int((paired['vs_2d_pct'].astype(float) < 0).sum())}/{len(paired)}"
        if len(paired) >= 2 and "per_sequence" in df.columns:
            pairs = []
            for encoder in paired["encoder"]:
                sibling = df.iloc[index[_two_d_sibling(encoder)]]
                pairs.append((_per_sequence(df.iloc[index[encoder]]), _per_sequence(sibling)))
            row["vs_2d_ci_low"], row["vs_2d_ci_high"] = seed_paired_change_ci(pairs)
            row["vs_2d_sequences_better"] = _sequences_better(pairs)
        out.append(row)
    return pd.DataFrame(out)


def _sequences_better(pairs: Sequence[tuple[dict[str, tuple[float, int]], dict[str, tuple[float, int]]]]) -> str:
    """"k/n": the held-out sequences (shared by every pair) whose error, averaged over the seeds, is lower for the
    model than for its base -- a count in which every sequence weighs the same, however many views it has."""
    shared = _shared_sequences(pairs)
    if not shared:
        return "–"
    better = sum(np.mean([model[k][0] - base[k][0] for model, base in pairs]) < 0 for k in shared)
    return f"{int(better)}/{len(shared)}"


def _per_sequence(row: pd.Series) -> dict[str, tuple[float, int]]:
    return {k: (float(v[0]), int(v[1])) for k, v in json.loads(row["per_sequence"]).items()}


def _seed_note(summary: pd.DataFrame) -> str:
    """Markdown table of a :func:`seed_summary` ("" when no recipe has repeats)."""
    if summary.empty:
        return ""
    cols = ("recipe", "n_seeds", "mpve_mean", "mpve_seed_std", "mpve_min", "mpve_max", "mpve_change_pct",
            "vs_2d_pct", "vs_2d_better", "vs_2d_sequences_better", "identity_mean", "expression_mean")
    lines = ["Mean over training seeds (`train.regressor.repeats`; Δ vs 2D-only: mean of the per-seed changes "
             "against the 2D-only fine-tune of the same seed, with its 95 % bootstrap interval over both the seeds "
             "and the held-out sequences; better: the seeds, and the held-out sequences (error averaged over the "
             "seeds, each sequence weighing the same), where it beat that fine-tune):", "",
             "| Recipe | seeds | MPVE mean (mm) | seed std (mm) | min | max | Δ vs original (%) | Δ vs 2D-only (%) "
             "[95 % CI] | seeds better | sequences better | identity part (mm) | expression part (mm) |",
             "|---|---:|" + "---:|" * (len(cols) - 2)]
    for row in summary.itertuples(index=False):
        values = row._asdict()
        cells = []
        for c in cols:
            if c in ("recipe", "n_seeds", "vs_2d_better", "vs_2d_sequences_better"):
                cells.append(str(values[c]))
            elif c == "vs_2d_pct" and math.isfinite(values["vs_2d_ci_low"]):
                cells.append(f"{format_value(values[c])} [{format_value(values['vs_2d_ci_low'])}, "
                             f"{format_value(values['vs_2d_ci_high'])}]")
            else:
                cells.append(format_value(values[c]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _two_d_sibling(label: str) -> str | None:
    """``<annotator>_<variant>[_seed<S>]`` → ``<annotator>_2d[_seed<S>]``, the 2D-only fine-tune of the same data
    and seed; None for a 2D-only row or a label without a variant."""
    recipe, seed = split_seed_suffix(label)
    stem, _, variant = recipe.rpartition("_")
    return f"{stem}_2d{seed_suffix(seed)}" if stem and variant != "2d" else None


def _add_change_vs_2d(df: pd.DataFrame, rows: list[dict[str, Any]],
                      per_sequence: list[dict[str, tuple[float, int]]]) -> None:
    """Columns ``vs_2d_pct`` / ``vs_2d_ci_low`` / ``vs_2d_ci_high`` / ``vs_2d``: a 3D-supervised row
    ``<annotator>_<variant>`` against its 2D-only sibling ``<annotator>_2d`` (same data, landmark loss only), the
    comparison the paper's Table 5 makes; NaN / "–" for rows without one."""
    index = {r["encoder"]: i for i, r in enumerate(rows)}
    pct, lows, highs, cells = [], [], [], []
    for i, r in enumerate(rows):
        sibling = _two_d_sibling(r["encoder"])
        j = index.get(sibling) if sibling and r["supervision"].startswith("2D + 3D") else None
        if j is None or not (math.isfinite(r["mpve_mean"]) and rows[j]["mpve_mean"] > 0):
            pct.append(math.nan), lows.append(math.nan), highs.append(math.nan), cells.append("–")
            continue
        change = 100.0 * (r["mpve_mean"] / rows[j]["mpve_mean"] - 1.0)
        lo, hi = paired_change_ci(per_sequence[i], per_sequence[j])
        pct.append(change), lows.append(lo), highs.append(hi)
        interval = f" [{format_value(lo)}, {format_value(hi)}]" if math.isfinite(lo) else ""
        cells.append(f"{format_value(change)}{interval}")
    df["vs_2d_pct"], df["vs_2d_ci_low"], df["vs_2d_ci_high"], df["vs_2d"] = pct, lows, highs, cells


def prior_rows(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per motion prior: FD (vs the eval split), the training data's own FD, APD (cm), stability and
    the one-step NLL against the constant-velocity baseline."""
    rows = []
    for path in paths:
        data = read_eval(path, PRIOR_FORMAT)
        lineage = (data.get("prior") or {}).get("lineage")
        rows.append({
            "prior": str(data.get("label")), "trained_on": _trained_on(lineage), "fd": _num(data.get("fd")),
            "fd_train_vs_test": _num(data.get("fd_train_vs_test")), "apd_cm": _num(data.get("apd_cm")),
            "stable": bool(data.get("stable")), "max_landmark_dev_m": _num(data.get("max_landmark_dev_m")),
            "one_step_nll": _num(data.get("one_step_nll")), "const_velocity_nll": _num(data.get("const_velocity_nll")),
            "own_nll": _num((data.get("own_test") or {}).get("one_step_nll")),
            "own_const_velocity_nll": _num((data.get("own_test") or {}).get("const_velocity_nll")),
            "seconds": _num(data.get("seconds")), "n_samples": data.get("n_samples"),
        })
    return pd.DataFrame(rows)


#: (column, Markdown header, LaTeX header, lower is better (True) / higher (False) / not ranked (None)).
TABLE5_COLUMNS = (
    ("encoder", "Encoder", "Encoder", None), ("trained_on", "Fine-tuned on", "Fine-tuned on", None),
    ("supervision", "Supervision", "Supervision", None),
    ("mpve_median", "MPVE median (mm)", r"MPVE med. (mm) $\downarrow$", True),
    ("mpve_mean", "MPVE mean (mm)", r"MPVE mean (mm) $\downarrow$", True),
    ("mpve_std", "MPVE std (mm)", r"MPVE std (mm) $\downarrow$", True),
    ("mpve_change_pct", "Δ mean vs original (%)", r"$\Delta$ mean (\%)", True),
    ("change_ci", "Δ 95 % CI (%)", r"$\Delta$ 95\,\% CI", None),
    ("vs_2d", "Δ vs 2D-only (%) [95 % CI]", r"$\Delta$ vs 2D (\%) [CI]", None),
    ("identity_mean", "identity part (mm)", r"identity (mm) $\downarrow$", True),
    ("expression_mean", "expression part (mm)", r"expression (mm) $\downarrow$", True),
    ("nme", "NME (%)", r"NME (\%) $\downarrow$", True), ("nme_gt", "NME-GT (%)", r"NME-GT (\%) $\downarrow$", True),
)
TABLE4_COLUMNS = (
    ("prior", "Prior", "Prior", None), ("trained_on", "Trained on", "Trained on", None),
    ("fd", "FD", r"FD $\downarrow$", True), ("apd_cm", "APD (cm)", r"APD (cm) $\uparrow$", False),
    ("one_step_nll", "1-step NLL", r"1-step NLL $\downarrow$", True),
    ("const_velocity_nll", "const.-velocity NLL", "const.-vel. NLL", None),
    ("own_nll", "1-step NLL, own kind", "NLL own", None),
    ("own_const_velocity_nll", "const.-velocity NLL, own kind", "c.-v. NLL own", None),
    ("fd_train_vs_test", "FD of its training data", "FD train data", None), ("stable", "stable 10 s", "stable", None),
)


def _cell(df: pd.DataFrame, i: int, col: str, better: bool | None, bold: str) -> str:
    value = df.iloc[i][col]
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, str) or value is None:
        return str(value)
    text = format_value(float(value))
    finite = [float(v) for v in df[col] if isinstance(v, float) and math.isfinite(v)]
    if better is not None and len(finite) > 1 and math.isfinite(value):
        best = min(finite) if better else max(finite)
        text = bold.format(text) if value == best else text
    return text


def write_train_table(df: pd.DataFrame, columns: Sequence[tuple], out_stem: str | os.PathLike,
                      caption: str = "", note: str = "") -> dict[str, Path]:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``<stem>.tex``; the best value of each ranked column is bold."""
    stem = Path(out_stem)
    paths = {k: stem.with_name(stem.name + f".{k}") for k in ("csv", "md", "tex")}
    with atomic_path(paths["csv"], suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    cols = [c for c in columns if c[0] in df.columns]
    md = [caption, ""] if caption else []
    md.append("| " + " | ".join(c[1] for c in cols) + " |")
    md.append("|" + "|".join("---" if c[3] is None and i < 3 else "---:" for i, c in enumerate(cols)) + "|")
    for i in range(len(df)):
        md.append("| " + " | ".join(_cell(df, i, c[0], c[3], "**{}**") for c in cols) + " |")
    if note:
        md += ["", note]
    with atomic_path(paths["md"], suffix=".md") as tmp:
        tmp.write_text("\n".join(md) + "\n")
    tex = [r"\begin{tabular}{" + "l" * min(3, len(cols)) + "c" * max(0, len(cols) - 3) + "}", r"\toprule",
           " & ".join(c[2] for c in cols) + r" \\", r"\midrule"]
    for i in range(len(df)):
        tex.append(" & ".join(_tex(_cell(df, i, c[0], c[3], "\0{}\1")).replace("\0", r"\textbf{").replace("\1", "}")
                              for c in cols) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}"]
    with atomic_path(paths["tex"], suffix=".tex") as tmp:
        tmp.write_text("\n".join(tex).replace("–", "--").replace("Δ", r"$\Delta$") + "\n")
    return paths


def _no_gt_note(df: pd.DataFrame) -> str:
    """NME of the evaluated sequences without ground truth (real clips), per encoder."""
    per = {r.encoder: json.loads(r.nme_no_gt) for r in df.itertuples()}
    sequences = sorted({s for v in per.values() for s in v})
    if not sequences:
        return ""
    lines = ["Sequences without ground truth (NME %, bounding-box normalised, vs the detections):", "",
             "| Encoder | " + " | ".join(sequences) + " |", "|---|" + "---:|" * len(sequences)]
    for enc, vals in per.items():
        lines.append(f"| {enc} | " + " | ".join(format_value(_num(vals.get(s))) for s in sequences) + " |")
    return "\n".join(lines)


def build_train_tables(regressor_evals: Sequence[str | os.PathLike] = (),
                       prior_evals: Sequence[str | os.PathLike] = (), out: str | os.PathLike = ".") -> list[Path]:
    """Write ``table5.*`` from ``regressor_evals`` and ``table4.*`` from ``prior_evals`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if regressor_evals:
        df = regressor_rows(regressor_evals)
        caption = ("Table 5 analogue: per-frame regression on held-out sequences with the original encoder and "
                   "encoders fine-tuned on packed datasets (aligned MPVE over all frame-view samples with ground "
                   "truth; NME vs the detections). Δ 95 % CI: paired bootstrap over the held-out sequences; "
                   "Δ vs 2D-only: a 3D-supervised row against the 2D-only fine-tune on the same dataset. "
                   "Identity part: aligned MPVE of the predicted β's neutral mesh; expression part: predicted ψ and "
                   "pose on the true β (docs/training.md).")
        summary = seed_summary(df)
        note = "\n\n".join(n for n in (_seed_note(summary), _no_gt_note(df)) if n)
        seeds_csv = out / "table5_seeds.csv"
        if summary.empty:
            seeds_csv.unlink(missing_ok=True)  # no repeats now: a table from an earlier run would mislead
        else:
            with atomic_path(seeds_csv, suffix=".csv") as tmp:
                summary.to_csv(tmp, index=False, float_format="%.6g")
            written.append(seeds_csv)
        written += list(write_train_table(df.drop(columns=["nme_no_gt", "per_sequence"]), TABLE5_COLUMNS,
                                          out / "table5", caption, note).values())
    if prior_evals:
        df = prior_rows(prior_evals)
        caption = ("Table 4 analogue: motion priors trained on each dataset; FD between generated motion and the "
                   "held-out split's motion, APD of samples from one start state (docs/metrics.md).")
        written += list(write_train_table(df, TABLE4_COLUMNS, out / "table4", caption).values())
    if not written:
        raise NeufaceError("give --regressor-evals and/or --prior-evals")
    return written
