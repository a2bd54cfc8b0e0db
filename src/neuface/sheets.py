"""Sample sheets: the tab-separated list of input videos the workflow runs on.

Columns ``sequence, view, split, path`` (required) and ``dataset, subject, emotion, ground_truth``
(optional; more columns are kept). One row per view; a sequence with several rows is multi-view (e.g. MEAD's
7 cameras), and all its rows share one split. Sequence ids become file names
(``results/frames/<sequence>.h5``), so they may only use letters, digits, ``.``, ``_`` and ``-``. Lines
starting with ``#`` and blank lines are ignored. Relative paths are relative to the directory the workflow runs in.

Per-row rules are a JSON schema (``neuface/data/sample_sheet.schema.json``, usable with
``snakemake.utils.validate`` too); cross-row rules (unique ``(sequence, view)``, one split per sequence) are
checked here. Every problem is reported with its line number and column, all at once.
"""

from __future__ import annotations

import csv
import io
import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd

from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path

REQUIRED_COLUMNS = ("sequence", "view", "split", "path")
OPTIONAL_COLUMNS = ("dataset", "subject", "emotion", "ground_truth")
SPLITS = ("train", "val", "test")
_MAX_REPORTED = 25


class SheetError(NeufaceError, ValueError):
    """A sample sheet is malformed; ``problems`` lists every problem found (``line N, column 'c': ...``)."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        shown = problems[:_MAX_REPORTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        head = f"sample sheet {source}: {len(problems)} problem(s):\n  "
        super().__init__(head + "\n  ".join(shown) + more)


@lru_cache(maxsize=1)
def sheet_schema() -> dict[str, Any]:
    """The JSON schema of one sheet row (a dict)."""
    text = resources.files("neuface").joinpath("data/sample_sheet.schema.json").read_text()
    return json.loads(text)


def read_sheet(path: str | os.PathLike, sequences: list[str] | None = None) -> pd.DataFrame:
    """Read and validate a sample sheet; returns a DataFrame of strings sorted by ``(sequence, view)``.

    Args:
        path: the TSV file.
        sequences: validate and return only these sequences' rows (fast path for per-sequence jobs on large
            sheets); the header is always checked. Unknown ids are an error.

    Raises:
        SheetError: listing every problem (line and column) found.
    """
    path = Path(path)
    if not path.is_file():
        raise SheetError(str(path), [f"file not found: {path}"])
    header, df, lines = _parse_tsv(path)
    _raise_if(str(path), _check_header(header))
    df["_line"] = lines
    if sequences is not None:
        wanted = set(sequences)
        unknown = sorted(wanted - set(df["sequence"]))
        if unknown:
            raise SheetError(str(path), [f"sequence {s!r} is not in the sheet" for s in unknown])
        df = df[df["sequence"].isin(wanted)]
    _raise_if(str(path), _check_rows(df))
    return _finish(df.drop(columns="_line"))


def validate_sheet(df: pd.DataFrame, source: str = "<DataFrame>") -> pd.DataFrame:
    """Validate an in-memory sheet (same rules as :func:`read_sheet`); returns it sorted, as strings."""
    problems = _check_header(list(df.columns))
    _raise_if(source, problems)
    df = df.fillna("").astype(str).reset_index(drop=True).copy()
    df["_line"] = [f"row {i}" for i in range(len(df))]
    _raise_if(source, _check_rows(df, line_prefix=""))
    return _finish(df.drop(columns="_line"))


def write_sheet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Validate ``df`` and write it as a TSV (atomically), sorted by ``(sequence, view)``."""
    df = validate_sheet(df, source=str(path))
    bad = [
        f"row {i}, column {c!r}: value contains a tab or newline"
        for c in df.columns for i, v in enumerate(df[c]) if any(ch in v for ch in "\t\r\n")
    ]
    _raise_if(str(path), bad)
    with atomic_path(path, suffix=".tsv") as tmp:
        df.to_csv(tmp, sep="\t", index=False, lineterminator="\n", quoting=csv.QUOTE_NONE)


def sequence_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per sequence: ``sequence, split, n_views, views`` (views comma-joined, sorted)."""
    grouped = df.groupby("sequence", sort=True)
    return pd.DataFrame({
        "split": grouped["split"].first(),
        "n_views": grouped["view"].count(),
        "views": grouped["view"].apply(lambda v: ",".join(sorted(v))),
    }).reset_index()


def expected_views(df: pd.DataFrame, sequence: str) -> list[str]:
    """Views that sequences of the same dataset have (union), for reporting a sequence's missing views.

    Without a ``dataset`` column all sequences count as one dataset.
    """
    rows = df[df["sequence"] == sequence]
    if rows.empty:
        raise NeufaceError(f"sequence {sequence!r} is not in the sheet")
    peers = df
    if "dataset" in df.columns:
        peers = df[df["dataset"] == rows["dataset"].iloc[0]]
    return sorted(set(peers["view"]))


# --------------------------------------------------------------------------------------------------- helpers
def _parse_tsv(path: Path) -> tuple[list[str], pd.DataFrame, list[str]]:
    """Header, rows (strings, stripped) and each row's ``line N`` label; blank and ``#`` lines skipped."""
    kept: list[str] = []
    numbers: list[int] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh.read().splitlines(), start=1):
            if line.strip() and not line.startswith("#"):
                kept.append(line)
                numbers.append(lineno)
    if not kept:
        raise SheetError(str(path), ["the file is empty (no header line)"])
    header = [h.strip() for h in kept[0].split("\t")]
    n_tabs = len(header) - 1
    problems = [f"line {n}: {line.count(chr(9)) + 1} fields, but the header has {len(header)}"
                for n, line in zip(numbers[1:], kept[1:], strict=True) if line.count("\t") != n_tabs]
    _raise_if(str(path), problems)
    body = "\n".join(kept[1:])
    if not body or _check_header(header):
        return header, pd.DataFrame([], columns=header, dtype=str), []
    df = pd.read_csv(io.StringIO(body), sep="\t", header=None, names=header, dtype=str, keep_default_na=False,
                     na_filter=False, quoting=csv.QUOTE_NONE, engine="c")
    for col in df.columns:
        df[col] = df[col].str.strip()
    return header, df, [f"line {n}" for n in numbers[1:]]


def _check_header(columns: list[str]) -> list[str]:
    problems = [f"header: missing column {c!r}" for c in REQUIRED_COLUMNS if c not in columns]
    seen: set[str] = set()
    for c in columns:
        if c in seen:
            problems.append(f"header: column {c!r} appears twice")
        seen.add(c)
    if "" in columns:
        problems.append("header: a column has an empty name")
    return problems


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = sheet_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


_FAST_KEYWORDS = {"type", "pattern", "enum", "minLength", "maxLength", "description"}


def _maybe_bad_rows(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Boolean mask of rows that may violate the schema, computed column-wise (vectorized).

    Rows outside the mask satisfy every per-column rule, so only masked rows go through jsonschema (which
    stays the source of truth for the messages). Falls back to "all rows" if the schema uses other keywords.
    """
    props = sheet_schema()["properties"]
    bad = pd.Series(False, index=df.index)
    for col in columns:
        rule = props.get(col, {})
        if set(rule) - _FAST_KEYWORDS or rule.get("type", "string") != "string":
            return pd.Series(True, index=df.index)
        values = df[col]
        bad |= values == ""
        if "pattern" in rule:
            bad |= ~values.str.contains(rule["pattern"], regex=True)
        if "enum" in rule:
            bad |= ~values.isin(rule["enum"])
        if "minLength" in rule:
            bad |= values.str.len() < rule["minLength"]
        if "maxLength" in rule:
            bad |= values.str.len() > rule["maxLength"]
    return bad


def _check_rows(df: pd.DataFrame, line_prefix: str = "") -> list[str]:
    validator = _validator()
    problems: list[str] = []
    known = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in df.columns]
    suspects = df[_maybe_bad_rows(df, known)]
    for rec in suspects[[*known, "_line"]].to_dict("records"):
        where = line_prefix + rec.pop("_line")
        for col in REQUIRED_COLUMNS:
            if rec[col] == "":
                problems.append(f"{where}, column {col!r}: empty value")
        row = {k: v for k, v in rec.items() if not (v == "" and k in REQUIRED_COLUMNS)}
        for err in validator.iter_errors(row):
            col = err.path[0] if err.path else None
            if col is None:  # "required" errors are the empty values already reported
                continue
            problems.append(f"{where}, column {col!r}: {_describe(err, rec[col])}")
    dup = df[df.duplicated(["sequence", "view"], keep=False)]
    for (seq, view), grp in dup.groupby(["sequence", "view"], sort=True):
        problems.append(f"{', '.join(grp['_line'])}: duplicate (sequence, view) = ({seq!r}, {view!r})")
    splits = df[df["split"] != ""].groupby("sequence")["split"].nunique()
    for seq in splits[splits > 1].index:
        grp = df[df["sequence"] == seq]
        detail = ", ".join(f"{ln}={s}" for ln, s in zip(grp["_line"], grp["split"], strict=True))
        problems.append(f"sequence {seq!r}: its rows disagree on split ({detail})")
    return problems


def _describe(err: jsonschema.ValidationError, value: str) -> str:
    if err.validator == "pattern":
        return (f"{value!r} is not a safe file name (use letters, digits, '.', '_', '-'; start with a letter "
                "or digit)")
    if err.validator == "enum":
        return f"{value!r} is not one of {', '.join(map(str, err.validator_value))}"
    return err.message


def _raise_if(source: str, problems: list[str]) -> None:
    if problems:
        raise SheetError(source, problems)


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    known = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in df.columns]
    extra = sorted(c for c in df.columns if c not in known)
    return df[known + extra].sort_values(["sequence", "view"], kind="stable").reset_index(drop=True)


__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "SheetError",
    "expected_views",
    "read_sheet",
    "sequence_table",
    "sheet_schema",
    "validate_sheet",
    "write_sheet",
]
