"""The verdict on a workflow run, from its results directory alone: complete, complete with failed sequences, or
incomplete (``neuface summary`` prints it last).

* **incomplete** — an expected output is missing: a per-sequence file of frames / landmarks / crops / fits /
  metrics for a sequence of the sheet, a filter manifest, a packed split, the report's ``index.md``; a sharded
  sequence that errored or crashed; an unreadable manifest; or snakemake said so (its exit status, when given).
* **complete with failures** — every output exists, but some sequences failed (bad input, a failed fit: the
  filter's ``no fit output`` / ``upstream fit: ...`` / ``unreadable`` / ``malformed`` reasons).
* **complete** — every sequence went through; the filter may still have rejected some on quality (shape norm,
  NME, missing detections, partial input with ``partial_inputs: reject``): counted, not failures.

The sequences a run is expected to cover are those of the filter manifests (every sheet sequence has a line);
without manifests, those with a frames file.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from neuface.errors import NeufaceError
from neuface.input_warnings import split_codes

log = logging.getLogger(__name__)

COMPLETE, FAILURES, INCOMPLETE = "complete", "failures", "incomplete"
#: Per-sequence outputs, by stage: ``(name, path template under results)``; ``{a}`` is the annotator.
SEQUENCE_FILES = (("frames", "frames/{s}.h5"), ("landmarks", "landmarks/{s}.h5"), ("crops", "crops/{s}.h5"))
ANNOTATOR_FILES = (("fits", "fits/{a}/{s}.h5"), ("metrics", "metrics/{a}/{s}.json"))
#: Filter reasons that mean the sequence failed (as opposed to a quality rejection).
FAILURE_REASONS = ("no fit output", "upstream fit", "unreadable fit file", "malformed fit", "annotator mismatch",
                   "not in sample sheet", "duplicate fit")


@dataclass
class Verdict:
    """``state`` (:data:`COMPLETE`, :data:`FAILURES` or :data:`INCOMPLETE`), a one-line ``headline``, what makes
    the run incomplete (``problems``) and per-annotator counts and failed sequences (``lines``)."""

    state: str
    headline: str
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _names(items: list[str], shown: int) -> str:
    more = f", ... (+{len(items) - shown})" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _manifests(results: Path, problems: list[str]) -> dict[str, list[dict[str, str]]]:
    from neuface.dataset.filter import read_manifest

    rows: dict[str, list[dict[str, str]]] = {}
    for path in sorted((results / "filter").glob("*.tsv")):
        try:
            rows[path.stem] = read_manifest(path)[0]
        except NeufaceError as exc:
            problems.append(f"unreadable filter manifest {path}: {exc}")
    return rows


def _missing_files(results: Path, sequences: list[str], annotators: list[str], shown: int) -> list[str]:
    problems = []
    checks = [(name, [(s, tpl.format(s=s)) for s in sequences]) for name, tpl in SEQUENCE_FILES]
    checks += [(f"{name}/{a}", [(s, tpl.format(a=a, s=s)) for s in sequences])
               for name, tpl in ANNOTATOR_FILES for a in annotators]
    for name, expected in checks:
        missing = [s for s, rel in expected if not (results / rel).is_file()]
        if missing:
            problems.append(f"{name}: {len(missing)} of {len(expected)} sequence output(s) missing "
                            f"({_names(missing, shown)})")
    return problems


def run_verdict(results: str | Path, snakemake_exit: int | None = None, shown: int = 5) -> Verdict:
    """Judge the run whose outputs are under ``results`` (see the module docstring)."""
    from neuface.shards import marker_summary

    results = Path(results)
    incomplete: list[str] = []
    if snakemake_exit:
        incomplete.append(f"snakemake exited with status {snakemake_exit}: a job failed or the run was "
                          f"interrupted (failed jobs' logs: {results / 'logs'}, .snakemake/log/)")
    manifests = _manifests(results, incomplete)
    sequences = sorted({r["sequence"] for rows in manifests.values() for r in rows})
    if not sequences:
        sequences = sorted(p.stem for p in (results / "frames").glob("*.h5"))
    if not sequences:
        return Verdict(INCOMPLETE, f"RUN INCOMPLETE: no per-sequence outputs under {results} (no frames files, no "
                       "filter manifests)", incomplete)
    annotators = sorted(manifests) or sorted(p.name for p in (results / "fits").glob("*") if p.is_dir())
    incomplete += _missing_files(results, sequences, annotators, shown)
    if not manifests:
        incomplete.append(f"filter: no manifest ({results / 'filter'}/<annotator>.tsv)")
    for annotator, rows in manifests.items():
        missing = [s for s in sorted({r["split"] for r in rows})
                   if not (results / "dataset" / annotator / f"{s}.h5").is_file()]
        if missing:
            incomplete.append(f"dataset/{annotator}: split file(s) missing: {', '.join(missing)}")
    if not (results / "report" / "index.md").is_file():
        incomplete.append(f"report: {results / 'report' / 'index.md'} missing")
    markers = marker_summary(results / "shards") if (results / "shards").is_dir() else {}
    for stage, entry in markers.items():
        broken = [(s, st) for s, st, _ in entry["failed"] if st in ("error", "crashed")]
        if broken:
            incomplete.append(f"shards/{stage}: {len(broken)} sequence(s) errored or crashed "
                              f"({_names([s for s, _ in broken], shown)}; see the markers)")

    failed: dict[str, dict[str, str]] = defaultdict(dict)  # sequence -> annotator -> reason
    lines = []
    for annotator, rows in manifests.items():
        n_ok = sum(r["status"] == "accepted" for r in rows)
        n_failed = n_rejected = 0
        for r in rows:
            if r["status"] == "accepted":
                continue
            if any(reason.startswith(FAILURE_REASONS) for reason in r["reasons"].split(";")):
                failed[r["sequence"]][annotator] = r["reasons"]
                n_failed += 1
            else:
                n_rejected += 1
        partial = sum(bool(split_codes(r.get("warnings", ""))) for r in rows)
        lines.append(f"{annotator}: {len(rows)} sequence(s): {n_ok} accepted, {n_rejected} rejected by the filter, "
                     f"{n_failed} failed" + (f"; {partial} with partial-input warnings" if partial else ""))
    for seq in sorted(failed)[:shown]:
        by_reason: dict[str, list[str]] = defaultdict(list)
        for annotator, reason in sorted(failed[seq].items()):
            by_reason[reason].append(annotator)
        for reason, anns in by_reason.items():
            lines.append(f"FAILED {seq} [{', '.join(anns)}]: {reason}")
    if len(failed) > shown:
        lines.append(f"... {len(failed) - shown} more failed sequence(s): see {results / 'filter'}/*.tsv")

    if incomplete:
        headline = f"RUN INCOMPLETE: {len(incomplete)} problem(s): " + "; ".join(incomplete[:2]) + (
            "; ..." if len(incomplete) > 2 else "")
        return Verdict(INCOMPLETE, headline, incomplete, lines)
    if failed:
        return Verdict(FAILURES, f"RUN COMPLETE, BUT {len(failed)} of {len(sequences)} SEQUENCE(S) FAILED: "
                       f"{_names(sorted(failed), shown)} (reasons above and in {results / 'filter'}/*.tsv)", [], lines)
    return Verdict(COMPLETE, f"ALL STAGES COMPLETE: {len(sequences)} sequence(s) x {len(annotators)} "
                   f"annotator(s), no failed sequence", [], lines)


__all__ = ["COMPLETE", "FAILURES", "INCOMPLETE", "Verdict", "run_verdict"]
