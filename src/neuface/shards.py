"""Sharding: run one stage for a batch ("shard") of sequences in one process, one job.

At a million clips a job per (stage, sequence) makes a DAG of millions of jobs that takes hours to plan. With
``scale.shard_size: K`` the workflow plans one job per (stage, shard) instead: :func:`partition` cuts the sorted
sequence ids into consecutive shards of ``K``, and :func:`run_shard` runs a stage's ordinary per-sequence
subcommand for every sequence of a shard, in-process (no interpreter start-up or model re-import per clip).

Per-sequence outputs keep their usual paths (``results/fits/<annotator>/<sequence>.h5``), so filtering, packing
and the report do not care how they were made. The job's Snakemake output is a *marker* TSV with one line per
sequence (``ok``, ``reused``, ``missing_input``, ``error``, ``crashed``) and the reason.

Isolation: a sequence whose command raises or exits non-zero is recorded and the others carry on. A shard whose
share of such failures exceeds ``max_crash_fraction`` (a systematic problem: broken environment, GPU) exits
non-zero *without* a marker, so the scheduler retries it.

Resumption: every finished sequence is appended (and fsync'ed) to a journal next to the marker with a fingerprint
of its exact command line (and neuface version) and its output's size and mtime. A rerun of the shard (preempted
job, retry, a sibling sequence added) reuses a sequence's output only if its journal entry has the same
fingerprint, the output is unchanged since, and no input is newer than the output: a changed parameter or a
re-made input redoes exactly the sequences it affects. Before a sequence is (re)made its old output is removed,
so a failed run never leaves a stale output behind.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from neuface import __version__
from neuface.errors import NeufaceError
from neuface.io_utils import atomic_path
from neuface.sheets import OPTIONAL_COLUMNS, read_sheet, write_sheet

log = logging.getLogger(__name__)

SHARD_PREFIX = "shard-"
#: Per-sequence outcomes in the marker. Only ``error`` and ``crashed`` count towards ``max_crash_fraction``:
#: ``missing_input`` means an upstream stage already failed (and said why) for that sequence.
STATUSES = ("ok", "reused", "missing_input", "error", "crashed")
MARKER_COLUMNS = ("sequence", "status", "seconds", "output", "message")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
#: Exit code of a command stopped by SIGTERM after checkpointing (= neuface.fitting.checkpoint's
#: PREEMPTED_EXIT_CODE): the whole shard stops with it, so that the scheduler requeues it and it resumes.
PREEMPTED_EXIT_CODE = 143


def shard_name(index: int) -> str:
    """``shard-00042``: the id of shard ``index`` (zero-padded to 5 digits; more digits past 99999)."""
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    return f"{SHARD_PREFIX}{index:05d}"


def shard_index(name: str) -> int:
    """Inverse of :func:`shard_name`; a clear error for anything else."""
    if not re.fullmatch(rf"{SHARD_PREFIX}\d+", name):
        raise NeufaceError(f"not a shard id: {name!r} (expected e.g. {shard_name(0)!r})")
    return int(name[len(SHARD_PREFIX):])


def partition(sequences: Iterable[str], size: int) -> dict[str, list[str]]:
    """Consecutive shards of ``size`` sequence ids, in sorted order: ``{"shard-00000": [...], ...}``.

    Deterministic for a set of ids; every id lands in exactly one shard and only the last shard may be smaller.
    Ids that sort after all existing ones (e.g. a new batch appended to a sheet) change only the last shard.
    """
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    ids = sorted(set(sequences))
    return {shard_name(i // size): ids[i:i + size] for i in range(0, len(ids), size)}


def shard_members(sequences: Iterable[str], shard: str, size: int) -> list[str]:
    """The sequence ids of ``shard`` (as :func:`partition` cuts them); error if the shard is out of range."""
    shard_index(shard)  # a clear error for a malformed id
    shards = partition(sequences, size)
    if shard not in shards:
        n_ids = sum(len(members) for members in shards.values())
        raise NeufaceError(f"{shard} does not exist: {n_ids} sequences make {len(shards)} shard(s) of {size}")
    return shards[shard]


def shard_rows_digests(sheet: pd.DataFrame, shards: dict[str, list[str]]) -> dict[str, str]:
    """shard -> SHA-1 of its sheet rows (every column, in sheet order): changes when any row of the shard does.

    Vectorized over the sheet (about a second for a million rows).
    """
    shard_of = {s: shard for shard, members in shards.items() for s in members}
    rows = sheet[sheet.columns[0]].astype(str)
    for column in sheet.columns[1:]:
        rows = rows.str.cat(sheet[column].astype(str), sep="\t")
    digests = {shard: hashlib.sha1(usedforsecurity=False) for shard in shards}
    for sequence, row in zip(sheet["sequence"], rows, strict=True):
        if sequence in shard_of:
            digests[shard_of[sequence]].update(row.encode() + b"\n")
    return {shard: d.hexdigest() for shard, d in digests.items()}


def fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` for the names in ``values``; other braces (e.g. JSON) are left as they are."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One stage over one shard.

    Attributes:
        command: the stage's subcommand line with placeholders: ``{sequence}``, ``{output}``, ``{shard_sheet}``
            (a sheet of this shard's rows only), ``{views}`` (the sequence's views, comma-joined),
            ``{dataset_views}`` (views of its dataset over the whole sheet), and the sheet's columns
            (``{split}``, ``{ground_truth}``, ...; optional columns absent from the sheet are empty).
        output: the per-sequence output path template.
        inputs: per-sequence input templates that must exist (else ``missing_input``); also checked for
            freshness.
        sheet_inputs: also treat the sequence's sheet paths (videos, ground truth) as inputs for freshness
            (not required: the stage records missing videos itself).
        fingerprint_extra: what else a sequence's result depends on that its command line does not show (the
            fit's settings with the package's defaults): part of every journal fingerprint, so a change redoes
            the sequences.
    """

    sheet: Path
    shard: str
    shard_size: int
    command: tuple[str, ...]
    output: str
    marker: Path
    inputs: tuple[str, ...] = ()
    sheet_inputs: bool = False
    max_crash_fraction: float = 0.05
    batch_size: int = 1
    fingerprint_extra: str = ""

    @property
    def journal(self) -> Path:
        return self.marker.with_name(self.marker.name.removesuffix(".tsv") + ".journal.tsv")


@dataclasses.dataclass
class Outcome:
    sequence: str
    status: str
    seconds: float
    output: str
    message: str = ""


Executor = Callable[[list[str]], int]
#: ``execute_batch(argvs) -> exit codes``: run several sequences' commands as one batch (e.g. K NeuFace fits as
#: one batched computation); one code per command, in order.
BatchExecutor = Callable[[list[list[str]]], list[int]]


@dataclasses.dataclass
class _Pending:
    """A sequence whose command is to run: its filled command line, output and journal fingerprint."""

    sequence: str
    argv: list[str]
    output: Path
    fingerprint: str


def run_shard(task: ShardTask, execute: Executor, execute_batch: BatchExecutor | None = None
              ) -> tuple[int, list[Outcome]]:
    """Run ``task`` with ``execute(argv) -> exit code`` per sequence; returns the exit code and the outcomes.

    With ``task.batch_size`` K > 1 and an ``execute_batch``, the sequences that need running (not reused, inputs
    present) go K at a time to ``execute_batch``, grouped by view count (a batched fit pads every clip's window
    to the largest; monocular clips batch with monocular clips) and in sheet order within a group, so a rerun of
    a preempted shard forms the same batches; each gets its own outcome and journal entry as in one-at-a-time
    mode.

    Exit code 0 (marker written) unless more than ``max_crash_fraction`` of the sequences ended ``error`` or
    ``crashed``: then 1 and no marker (the journal keeps what finished). A command that returns
    :data:`PREEMPTED_EXIT_CODE` (it caught SIGTERM and checkpointed) stops the shard with that code, no marker.
    """
    sheet = read_sheet(task.sheet)
    members = shard_members(sheet["sequence"].unique(), task.shard, task.shard_size)
    rows = sheet[sheet["sequence"].isin(members)]
    dataset_views = _dataset_views(sheet)
    journal = read_journal(task.journal)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix=f"neuface-{task.shard}-") as scratch:
        shard_sheet = Path(scratch) / "sheet.tsv"  # this shard's rows: cheap for per-sequence commands to read
        write_sheet(rows, shard_sheet)
        by_sequence = dict(tuple(rows.groupby("sequence", sort=True)))
        bar = tqdm(members, desc=f"{task.shard} {task.command[0]}", unit="seq", mininterval=10)
        batched = task.batch_size > 1 and execute_batch is not None
        pending: dict[int, list[_Pending]] = {}  # by view count: a batch pads every window to its largest
        for i, sequence in enumerate(bar):
            values = _placeholders(by_sequence[sequence], dataset_views, shard_sheet, sheet.columns)
            if not batched:
                done = [_run_one(task, values, journal, execute)]
            else:
                prepared = _prepare(task, values, journal)
                done = [prepared] if isinstance(prepared, Outcome) else []
                if not done:
                    n_views = len(values["views"].split(","))
                    pending.setdefault(n_views, []).append(prepared)
                    if len(pending[n_views]) == task.batch_size:
                        done += _run_batch(task, pending.pop(n_views), execute_batch)
                if i + 1 == len(members):
                    for key in sorted(pending):
                        done += _run_batch(task, pending[key], execute_batch)
            for outcome in done:
                if outcome.status == "preempted":
                    log.warning("%s: stopped by a signal during %s; exiting with %d (finished sequences are kept "
                                "in %s)", task.shard, outcome.sequence, PREEMPTED_EXIT_CODE, task.journal)
                    return PREEMPTED_EXIT_CODE, outcomes
                outcomes.append(outcome)
                (log.info if outcome.status in ("ok", "reused") else log.warning)(
                    "%s %s: %s%s (%.1f s)", task.command[0], outcome.sequence, outcome.status,
                    f" - {outcome.message}" if outcome.message else "", outcome.seconds)
    position = {s: i for i, s in enumerate(members)}
    outcomes.sort(key=lambda o: position[o.sequence])  # batch mode finishes reused sequences first
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    failed = counts["error"] + counts["crashed"]
    log.info("%s %s: %s", task.shard, task.command[0], ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if outcomes and counts["missing_input"] == len(outcomes):
        log.error("%s: no sequence has its inputs (%s): the upstream stage did not run, or the templates are "
                  "wrong; the shard fails", task.shard, ", ".join(task.inputs))
        return 1, outcomes
    if outcomes and failed / len(outcomes) > task.max_crash_fraction:
        log.error("%s: %d of %d sequences failed (> max crash fraction %.3g): the shard fails so that it is "
                  "retried; finished sequences are kept in %s", task.shard, failed, len(outcomes),
                  task.max_crash_fraction, task.journal)
        return 1, outcomes
    write_marker(task.marker, outcomes)
    return 0, outcomes


def _prepare(task: ShardTask, values: dict[str, str], journal: dict[str, dict]) -> Outcome | _Pending:
    """``reused`` / ``missing_input`` outcomes, or the sequence's command to run (its stale output removed)."""
    sequence = values["sequence"]
    output = Path(fill(task.output, values))
    values = {**values, "output": str(output)}
    argv = [fill(a, values) for a in task.command]
    # what the sequence's result depends on: its command line (the scratch shard sheet's path replaced by a
    # constant) and its own sheet rows (views, paths, ground truth, ...), which the shard sheet carries
    stable = {**values, "shard_sheet": "<shard_sheet>"}
    extra = [task.fingerprint_extra] if task.fingerprint_extra else []  # journals without one stay valid
    fingerprint = _fingerprint([*(fill(a, stable) for a in task.command), *extra], stable)
    required = [Path(fill(t, values)) for t in task.inputs]
    extra = [Path(p) for p in values["_sheet_paths"].split("\t") if p] if task.sheet_inputs else []
    if _is_fresh(journal.get(sequence), fingerprint, output, required + [p for p in extra if p.exists()]):
        return Outcome(sequence, "reused", 0.0, str(output))
    output.unlink(missing_ok=True)  # never leave a stale output behind a failed rerun
    missing = [str(p) for p in required if not p.exists()]
    if missing:
        return Outcome(sequence, "missing_input", 0.0, str(output), "missing " + ", ".join(missing))
    output.parent.mkdir(parents=True, exist_ok=True)
    return _Pending(sequence, argv, output, fingerprint)


def _finish(task: ShardTask, p: _Pending, result: int | BaseException, seconds: float) -> Outcome:
    """The outcome of a command that returned ``result`` (an exit code, or the exception it raised)."""
    if isinstance(result, BaseException):
        log.error("%s %s crashed:\n%s", task.command[0], p.sequence,
                  "".join(traceback.format_exception(result)))
        p.output.unlink(missing_ok=True)  # written before the crash or not: not a result to pass downstream
        _release_memory()
        return Outcome(p.sequence, "crashed", seconds, str(p.output), f"{type(result).__name__}: {result}")
    if result == PREEMPTED_EXIT_CODE:
        return Outcome(p.sequence, "preempted", seconds, str(p.output))
    if result != 0:
        p.output.unlink(missing_ok=True)
        return Outcome(p.sequence, "error", seconds, str(p.output), f"exit code {result} (see the log above)")
    if not p.output.exists():
        return Outcome(p.sequence, "error", seconds, str(p.output), "the command wrote no output")
    append_journal(task.journal, p.sequence, p.fingerprint, p.output)
    return Outcome(p.sequence, "ok", seconds, str(p.output))


def _run_one(task: ShardTask, values: dict[str, str], journal: dict[str, dict], execute: Executor) -> Outcome:
    prepared = _prepare(task, values, journal)
    if isinstance(prepared, Outcome):
        return prepared
    t0 = time.perf_counter()
    try:
        code: int | BaseException = execute(prepared.argv)
    except Exception as exc:  # noqa: BLE001 - isolate the sequence; the traceback goes to the log
        code = exc
    return _finish(task, prepared, code, time.perf_counter() - t0)


def _run_batch(task: ShardTask, pending: list[_Pending], execute_batch: BatchExecutor) -> list[Outcome]:
    """Run ``pending`` as one batch; a batch that raises marks each of its sequences crashed."""
    t0 = time.perf_counter()
    try:
        codes: list[int | BaseException] = list(execute_batch([p.argv for p in pending]))
        if len(codes) != len(pending):
            raise RuntimeError(f"the batch executor returned {len(codes)} exit codes for {len(pending)} commands")
    except Exception as exc:  # noqa: BLE001 - isolate the batch; the traceback goes to the log
        codes = [exc] * len(pending)
    share = (time.perf_counter() - t0) / len(pending)
    return [_finish(task, p, code, share) for p, code in zip(pending, codes, strict=True)]


def _placeholders(rows: pd.DataFrame, dataset_views: dict[str, str], shard_sheet: Path,
                  columns: Sequence[str]) -> dict[str, str]:
    first = rows.iloc[0]
    values = {c: "" for c in OPTIONAL_COLUMNS}
    values.update({c: str(first[c]) for c in columns if c not in ("view", "path")})
    paths = list(rows["path"])
    if "ground_truth" in rows.columns:
        paths += [p for p in rows["ground_truth"].unique() if p]
    values.update(views=",".join(rows["view"]), shard_sheet=str(shard_sheet), _sheet_paths="\t".join(paths),
                  dataset_views=dataset_views[str(first.get("dataset", ""))])
    return values


def _dataset_views(sheet: pd.DataFrame) -> dict[str, str]:
    """dataset -> its views over the whole sheet (all rows are one dataset without a ``dataset`` column)."""
    if "dataset" not in sheet.columns:
        return {"": ",".join(sorted(set(sheet["view"])))}
    return {str(d): ",".join(sorted(set(v))) for d, v in sheet.groupby("dataset")["view"]}


def _fingerprint(argv: list[str], values: dict[str, str]) -> str:
    payload = json.dumps([__version__, argv, sorted(values.items())])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _is_fresh(entry: dict | None, fingerprint: str, output: Path, inputs: list[Path]) -> bool:
    if entry is None or entry["fingerprint"] != fingerprint:
        return False
    try:
        st = output.stat()
        if st.st_mtime_ns != entry["mtime_ns"] or st.st_size != entry["size"]:
            return False
        return all(p.stat().st_mtime_ns <= st.st_mtime_ns for p in inputs)
    except FileNotFoundError:
        return False


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


# ----------------------------------------------------------------------------------------- journal and marker
def read_journal(path: Path) -> dict[str, dict]:
    """sequence -> its last journal entry; unreadable lines (a write cut short by a kill) are skipped."""
    entries: dict[str, dict] = {}
    if not path.exists():
        return entries
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            continue
        entries[parts[0]] = {"fingerprint": parts[1], "mtime_ns": int(parts[2]), "size": int(parts[3])}
    return entries


def append_journal(path: Path, sequence: str, fingerprint: str, output: Path) -> None:
    """Append (and fsync) one finished sequence: ``sequence, fingerprint, mtime_ns, size``."""
    st = output.stat()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{sequence}\t{fingerprint}\t{st.st_mtime_ns}\t{st.st_size}\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_marker(path: Path, outcomes: list[Outcome]) -> None:
    """The shard's marker TSV (atomically): one line per sequence, columns :data:`MARKER_COLUMNS`."""
    with atomic_path(path, suffix=".tsv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(MARKER_COLUMNS)
        for o in outcomes:
            message = " ".join(o.message.split())  # one line, no tabs
            writer.writerow([o.sequence, o.status, f"{o.seconds:.2f}", o.output, message])


def read_marker(path: str | os.PathLike) -> pd.DataFrame:
    """A marker written by :func:`write_marker` as a DataFrame of strings."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)


def marker_summary(shards_dir: str | os.PathLike) -> dict[str, dict]:
    """Markers under ``results/shards`` by stage (``fit/neuface``, ``frames``, ...): shard count, sequence count
    per status, and the failed (``error``/``crashed``/``missing_input``) sequences with their messages."""
    summary: dict[str, dict] = {}
    for path in sorted(Path(shards_dir).rglob(f"{SHARD_PREFIX}*.tsv")):
        if path.name.endswith(".journal.tsv"):
            continue
        stage = path.parent.relative_to(shards_dir).as_posix()
        entry = summary.setdefault(stage, {"shards": 0, "counts": dict.fromkeys(STATUSES, 0), "failed": []})
        entry["shards"] += 1
        marker = read_marker(path)
        for sequence, status, message in zip(marker["sequence"], marker["status"], marker["message"], strict=True):
            entry["counts"][status] = entry["counts"].get(status, 0) + 1
            if status in ("error", "crashed", "missing_input"):
                entry["failed"].append((sequence, status, message))
    return summary
