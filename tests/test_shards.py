"""Sharding (neuface.shards, `neuface shard`): partition, per-sequence isolation, reuse on reruns, and the CLI on
real frames extraction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from neuface.errors import NeufaceError
from neuface.shards import (
    ShardTask,
    fill,
    partition,
    read_journal,
    read_marker,
    run_shard,
    shard_index,
    shard_members,
    shard_name,
    shard_rows_digests,
)
from neuface.status import read_status


def make_sheet(path: Path, sequences: list[str], video: str = "v.mp4", ground_truth: bool = False) -> Path:
    head = "sequence\tview\tsplit\tpath\tdataset" + ("\tground_truth" if ground_truth else "")
    rows = [head]
    for i, s in enumerate(sequences):
        views = ("front", "left") if s.startswith("mv") else ("front",)
        for v in views:
            gt = f"\t{s}.npz" if ground_truth and i % 2 == 0 else ("\t" if ground_truth else "")
            rows.append(f"{s}\t{v}\ttrain\t{video}\t{'mead' if s.startswith('mv') else 'vox'}{gt}")
    path.write_text("\n".join(rows) + "\n")
    return path


class FakeStage:
    """An executor standing in for a subcommand: writes `--out`'s file from `--in`'s, records its calls, and can
    crash or fail for chosen sequences."""

    def __init__(self, crash: set[str] = frozenset(), fail: set[str] = frozenset()):
        self.calls: list[list[str]] = []
        self.crash, self.fail = set(crash), set(fail)

    def __call__(self, argv: list[str]) -> int:
        self.calls.append(argv)
        args = dict(zip(argv[1::2], argv[2::2], strict=False))
        seq = args["--seq"]
        if seq in self.crash:
            Path(args["--out"]).write_text("written, then the command crashed")
            raise RuntimeError(f"CUDA error on {seq}")
        if seq in self.fail:
            return 2
        out = Path(args["--out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"{argv}\n")
        return 0

    def ran(self) -> list[str]:
        return [dict(zip(a[1::2], a[2::2], strict=False))["--seq"] for a in self.calls]


def task(tmp_path: Path, sheet: Path, shard: str = "shard-00000", size: int = 4, **kw) -> ShardTask:
    defaults = dict(command=("stage", "--seq", "{sequence}", "--in", str(tmp_path / "in/{sequence}.txt"),
                             "--out", "{output}"),
                    output=str(tmp_path / "out/{sequence}.txt"), marker=tmp_path / f"markers/{shard}.tsv",
                    inputs=(str(tmp_path / "in/{sequence}.txt"),))
    return ShardTask(sheet=sheet, shard=shard, shard_size=size, **{**defaults, **kw})


@pytest.fixture
def inputs(tmp_path):
    ids = [f"seq{i:02d}" for i in range(10)]
    for s in ids:
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / f"in/{s}.txt").write_text(s)
    return ids, make_sheet(tmp_path / "sheet.tsv", ids)


# ------------------------------------------------------------------------------------------------------ partition
def test_partition_covers_every_id_once_in_sorted_consecutive_blocks():
    ids = [f"s{i:03d}" for i in range(23)][::-1] + ["s005"]  # unsorted, one duplicate
    shards = partition(ids, 5)
    assert list(shards) == [shard_name(i) for i in range(5)]
    flat = [s for members in shards.values() for s in members]
    assert flat == sorted(set(ids)) and [len(m) for m in shards.values()] == [5, 5, 5, 5, 3]
    assert partition(reversed(ids), 5) == shards  # order of the sheet does not matter
    grown = partition(ids + ["s999"], 5)  # an id sorting last changes only the last shard
    assert {k: v for k, v in grown.items() if v != shards.get(k)} == {"shard-00004": shards["shard-00004"] + ["s999"]}
    for name, members in shards.items():
        assert shard_members(ids, name, 5) == members
    assert partition([], 3) == {}


def test_shard_ids_and_bad_requests():
    assert shard_index(shard_name(42)) == 42 and shard_name(123456) == "shard-123456"
    with pytest.raises(NeufaceError, match="not a shard id"):
        shard_index("chunk-1")
    with pytest.raises(NeufaceError, match="3 sequences make 2 shard"):
        shard_members(["a", "b", "c"], "shard-00002", 2)
    with pytest.raises(ValueError, match=">= 1"):
        partition(["a"], 0)


def test_rows_digest_changes_only_for_the_shard_whose_rows_changed(tmp_path):
    from neuface.sheets import read_sheet

    ids = [f"s{i}" for i in range(7)]
    sheet = read_sheet(make_sheet(tmp_path / "a.tsv", ids))
    shards = partition(ids, 3)
    before = shard_rows_digests(sheet, shards)
    assert len(set(before.values())) == 3
    edited = sheet.copy()
    edited.loc[edited["sequence"] == "s4", "path"] = "other.mp4"
    after = shard_rows_digests(edited, shards)
    assert [k for k in before if before[k] != after[k]] == ["shard-00001"]


def test_fill_replaces_known_placeholders_only():
    values = {"sequence": "abc", "output": "o.h5"}
    assert fill("--out {output} --id {sequence}", values) == "--out o.h5 --id abc"
    settings = '{"lr":5e-4,"window":{sequence}}'
    assert fill(settings, values) == '{"lr":5e-4,"window":abc}'
    assert fill("{unknown}/{sequence}", values) == "{unknown}/abc"


# ------------------------------------------------------------------------------------------------------ running
def test_runs_every_member_and_writes_marker_and_journal(tmp_path, inputs):
    ids, sheet = inputs
    stage = FakeStage()
    code, outcomes = run_shard(task(tmp_path, sheet, "shard-00001"), stage)
    assert code == 0 and stage.ran() == ids[4:8]
    marker = read_marker(tmp_path / "markers/shard-00001.tsv")
    assert list(marker["sequence"]) == ids[4:8] and set(marker["status"]) == {"ok"}
    assert list(marker["output"]) == [str(tmp_path / f"out/{s}.txt") for s in ids[4:8]]
    assert set(read_journal(tmp_path / "markers/shard-00001.journal.tsv")) == set(ids[4:8])
    for s in ids[4:8]:
        assert f"'{tmp_path}/in/{s}.txt'" in (tmp_path / f"out/{s}.txt").read_text()  # placeholders filled


def test_rerun_reuses_finished_sequences_and_redoes_exactly_what_changed(tmp_path, inputs):
    ids, sheet = inputs
    run_shard(task(tmp_path, sheet), FakeStage())
    stage = FakeStage()
    code, outcomes = run_shard(task(tmp_path, sheet), stage)
    assert code == 0 and stage.calls == [] and {o.status for o in outcomes} == {"reused"}
    # a newer input: only its sequence; a modified output: only its sequence
    newer = tmp_path / f"in/{ids[1]}.txt"
    st = newer.stat()
    os.utime(newer, ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))
    (tmp_path / f"out/{ids[2]}.txt").write_text("edited by hand")
    stage = FakeStage()
    run_shard(task(tmp_path, sheet), stage)
    assert stage.ran() == [ids[1], ids[2]]
    # a changed command line (a parameter of the stage) redoes every sequence
    stage = FakeStage()
    changed = task(tmp_path, sheet).command + ("--lr", "0.1")
    run_shard(task(tmp_path, sheet, command=changed), stage)
    assert stage.ran() == ids[:4]


def test_a_crash_is_recorded_and_the_others_finish(tmp_path, inputs, caplog):
    ids, sheet = inputs
    (tmp_path / "out").mkdir()
    (tmp_path / f"out/{ids[5]}.txt").write_text("stale output of an earlier run")
    stage = FakeStage(crash={ids[5]}, fail={ids[6]})
    code, outcomes = run_shard(task(tmp_path, sheet, size=10, max_crash_fraction=0.25), stage)
    assert code == 0 and stage.ran() == ids
    status = dict(zip(read_marker(tmp_path / "markers/shard-00000.tsv")["sequence"],
                      read_marker(tmp_path / "markers/shard-00000.tsv")["status"], strict=True))
    assert status[ids[5]] == "crashed" and status[ids[6]] == "error"
    assert [s for s, v in status.items() if v == "ok"] == [s for s in ids if s not in (ids[5], ids[6])]
    assert not (tmp_path / f"out/{ids[5]}.txt").exists()  # the stale output is gone, not passed downstream
    assert "CUDA error on seq05" in caplog.text and "Traceback" in caplog.text
    marker = read_marker(tmp_path / "markers/shard-00000.tsv")
    assert "RuntimeError: CUDA error on seq05" in marker.set_index("sequence").loc[ids[5], "message"]


def test_too_many_crashes_fail_the_shard_and_a_retry_redoes_only_those(tmp_path, inputs):
    ids, sheet = inputs
    code, _ = run_shard(task(tmp_path, sheet), FakeStage(crash={ids[0]}))  # 1 of 4 > 5%
    assert code == 1 and not (tmp_path / "markers/shard-00000.tsv").exists()
    retry = FakeStage()
    code, outcomes = run_shard(task(tmp_path, sheet), retry)
    assert code == 0 and retry.ran() == [ids[0]]
    assert [o.status for o in outcomes] == ["ok", "reused", "reused", "reused"]


def test_a_preempted_command_stops_the_shard_for_a_requeue(tmp_path, inputs):
    from neuface.fitting.checkpoint import PREEMPTED_EXIT_CODE as FIT_PREEMPTED
    from neuface.shards import PREEMPTED_EXIT_CODE

    assert PREEMPTED_EXIT_CODE == FIT_PREEMPTED
    ids, sheet = inputs
    stage = FakeStage()

    def execute(argv):  # SIGTERM arrives during the second sequence: it checkpoints and returns 143
        return PREEMPTED_EXIT_CODE if ids[1] in argv else stage(argv)

    code, outcomes = run_shard(task(tmp_path, sheet), execute)
    assert code == PREEMPTED_EXIT_CODE and [o.sequence for o in outcomes] == [ids[0]]
    assert not (tmp_path / "markers/shard-00000.tsv").exists() and stage.ran() == [ids[0]]
    resumed = FakeStage()
    assert run_shard(task(tmp_path, sheet), resumed)[0] == 0 and resumed.ran() == ids[1:4]


def test_summary_reports_failed_sequences_per_stage(tmp_path, inputs, run_cli, capfd):
    from neuface.shards import marker_summary

    ids, sheet = inputs
    (tmp_path / f"in/{ids[9]}.txt").unlink()
    for shard in ("shard-00000", "shard-00001", "shard-00002"):
        t = task(tmp_path, sheet, shard, marker=tmp_path / f"results/shards/stage/{shard}.tsv",
                 max_crash_fraction=0.5)
        run_shard(t, FakeStage(crash={ids[5]}))
    summary = marker_summary(tmp_path / "results/shards")
    assert list(summary) == ["stage"] and summary["stage"]["shards"] == 3
    assert summary["stage"]["counts"] == {"ok": 8, "reused": 0, "missing_input": 1, "error": 0, "crashed": 1}
    assert [f[:2] for f in summary["stage"]["failed"]] == [(ids[5], "crashed"), (ids[9], "missing_input")]
    capfd.readouterr()
    assert run_cli("summary", tmp_path / "results") == 0
    err = capfd.readouterr().err
    assert "3 shard(s): 8 ok, 1 missing_input, 1 crashed" in err and "CUDA error on seq05" in err


def test_missing_inputs_are_recorded_but_all_missing_fails(tmp_path, inputs):
    ids, sheet = inputs
    (tmp_path / f"in/{ids[2]}.txt").unlink()
    stage = FakeStage()
    code, outcomes = run_shard(task(tmp_path, sheet), stage)
    assert code == 0 and ids[2] not in stage.ran()
    missing = [o for o in outcomes if o.status == "missing_input"]
    assert [o.sequence for o in missing] == [ids[2]] and f"in/{ids[2]}.txt" in missing[0].message
    for s in ids[:4]:
        (tmp_path / f"in/{s}.txt").unlink(missing_ok=True)
    code, outcomes = run_shard(task(tmp_path, sheet), FakeStage())
    assert code == 1 and {o.status for o in outcomes} == {"missing_input"}


def test_placeholders_from_the_sheet(tmp_path):
    from neuface.sheets import read_sheet

    sheet = make_sheet(tmp_path / "sheet.tsv", ["mv_a", "mv_b", "vox_c"], ground_truth=True)
    seen, shard_rows = [], []

    def execute(argv):
        seen.append(argv[1:6])
        shard_rows.append(sorted(set(read_sheet(argv[6])["sequence"])))  # exists while the shard runs
        Path(argv[7]).write_text("x")
        return 0

    command = ("stage", "{sequence}", "{views}", "{dataset_views}", "{ground_truth}", "{split}", "{shard_sheet}",
               "{output}")
    for shard in ("shard-00000", "shard-00001"):
        assert run_shard(task(tmp_path, sheet, shard, size=2, command=command, inputs=()), execute)[0] == 0
    assert seen == [["mv_a", "front,left", "front,left", "mv_a.npz", "train"],
                    ["mv_b", "front,left", "front,left", "", "train"],
                    ["vox_c", "front", "front", "vox_c.npz", "train"]]
    assert shard_rows == [["mv_a", "mv_b"], ["mv_a", "mv_b"], ["vox_c"]]


# ---------------------------------------------------------------------------------------------------------- CLI
def test_cli_shard_runs_real_frames_extraction_in_process(tmp_path, carphone_path, run_cli):
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("sequence\tview\tsplit\tpath\n"
                     f"clip_a\tfront\ttrain\t{carphone_path}\n"
                     f"clip_b\tfront\ttrain\t{tmp_path}/missing.mp4\n"
                     f"clip_c\tfront\ttrain\t{carphone_path}\n")
    marker = tmp_path / "shards/frames/shard-00000.tsv"
    argv = ["shard", "--sheet", sheet, "--shard", "shard-00000", "--shard-size", 2,
            "--output", f"{tmp_path}/frames/{{sequence}}.h5", "--sheet-inputs", "--marker", marker, "--",
            "frames", "--sheet", "{shard_sheet}", "--sequence", "{sequence}", "--expected-views",
            "{dataset_views}", "--max-frames", 3, "--out", "{output}"]
    assert run_cli(*argv) == 0
    assert dict(zip(*(read_marker(marker)[c] for c in ("sequence", "status")), strict=True)) == {
        "clip_a": "ok", "clip_b": "ok"}  # the bad video is a recorded failure inside its frames file
    assert read_status(tmp_path / "frames/clip_a.h5").ok
    bad = read_status(tmp_path / "frames/clip_b.h5")
    assert not bad.ok and "missing.mp4" in bad.summary()
    assert not (tmp_path / "frames/clip_c.h5").exists()  # another shard's sequence
    assert run_cli(*argv) == 0 and set(read_marker(marker)["status"]) == {"reused"}


def test_cli_shard_usage_errors(tmp_path, inputs, run_cli):
    _, sheet = inputs
    base = ["shard", "--sheet", sheet, "--shard", "shard-00000", "--shard-size", 4, "--output", "o/{sequence}",
            "--marker", tmp_path / "m.tsv"]
    assert run_cli(*base) == 2  # no subcommand
    assert run_cli(*base, "--", "shard", "--help") == 2
    assert run_cli(*base, "--", "frames", "--no-such-flag") == 1  # every sequence fails its usage: shard fails
    assert not (tmp_path / "m.tsv").exists()
    with pytest.raises(SystemExit):
        run_cli(*base[:-2], "--marker", tmp_path / "m.tsv", "--max-crash-fraction", 2, "--", "frames")


# ------------------------------------------------------------------------------------------------ batch mode
class FakeBatch:
    """A batch executor over FakeStage: records the batches it got; `preempt` makes the n-th batch return 143."""

    def __init__(self, stage: FakeStage, preempt_batch: int | None = None):
        self.stage, self.batches, self.preempt_batch = stage, [], preempt_batch

    def __call__(self, argvs: list[list[str]]) -> list[int]:
        self.batches.append([dict(zip(a[1::2], a[2::2], strict=False))["--seq"] for a in argvs])
        if self.preempt_batch is not None and len(self.batches) == self.preempt_batch:
            return [143] * len(argvs)
        codes = []
        for a in argvs:
            try:
                codes.append(self.stage(a))
            except RuntimeError:
                codes.append(2)
        return codes


def test_batch_mode_runs_the_sequences_to_do_k_at_a_time_and_journals_each(tmp_path, inputs):
    ids, sheet = inputs
    stage = FakeStage(fail={"seq03"})
    t = task(tmp_path, sheet, size=10, batch_size=3, max_crash_fraction=0.2)
    first = FakeBatch(stage)
    code, outcomes = run_shard(t, stage, first)
    assert code == 0 and first.batches == [ids[0:3], ids[3:6], ids[6:9], ids[9:10]]
    assert {o.sequence: o.status for o in outcomes}["seq03"] == "error"
    assert sum(o.status == "ok" for o in outcomes) == 9 and set(read_journal(t.journal)) == set(ids) - {"seq03"}
    (tmp_path / "in/seq05.txt").write_text("changed")  # a rerun batches only what is not reused
    os.utime(tmp_path / "in/seq05.txt", (2e9, 2e9))
    second = FakeBatch(FakeStage())
    code, outcomes = run_shard(t, stage, second)
    assert code == 0 and second.batches == [["seq03", "seq05"]]
    assert [o.sequence for o in outcomes] == ids  # outcomes in sheet order


def test_a_preempted_batch_stops_the_shard_and_a_rerun_forms_the_same_batch(tmp_path, inputs):
    ids, sheet = inputs
    t = task(tmp_path, sheet, size=10, batch_size=4)
    code, _ = run_shard(t, FakeStage(), FakeBatch(FakeStage(), preempt_batch=2))
    assert code == 143 and not t.marker.exists() and set(read_journal(t.journal)) == set(ids[:4])
    again = FakeBatch(FakeStage())
    code, _ = run_shard(t, FakeStage(), again)
    assert code == 0 and again.batches == [ids[4:8], ids[8:10]]  # the preempted batch again, whole


def test_a_batch_executor_that_raises_marks_its_sequences_crashed(tmp_path, inputs, caplog):
    ids, sheet = inputs

    def broken(argvs):
        raise RuntimeError("CUDA error in the batch")

    code, outcomes = run_shard(task(tmp_path, sheet, size=4, batch_size=2, max_crash_fraction=1.0), FakeStage(),
                               broken)
    assert code == 0 and [o.status for o in outcomes] == ["crashed"] * 4
    assert "CUDA error in the batch" in outcomes[0].message and "CUDA error in the batch" in caplog.text


def test_batches_group_sequences_of_equal_view_count(tmp_path):
    """Monocular and 2-view sequences interleaved in the shard: each batch holds one view count (a batched fit
    pads to the largest window), in sheet order within a count; leftovers run at the end, fewest views first."""
    ids = [f"s{i}" for i in range(7)]  # odd ones have two views
    (tmp_path / "in").mkdir()
    rows = ["sequence\tview\tsplit\tpath"]
    for i, s in enumerate(ids):
        (tmp_path / f"in/{s}.txt").write_text(s)
        rows += [f"{s}\t{v}\ttrain\tv.mp4" for v in (("front", "left") if i % 2 else ("front",))]
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    batches = FakeBatch(FakeStage())
    code, outcomes = run_shard(task(tmp_path, sheet, size=7, batch_size=2), FakeStage(), batches)
    assert code == 0 and [o.sequence for o in outcomes] == ids
    assert batches.batches == [["s0", "s2"], ["s1", "s3"], ["s4", "s6"], ["s5"]]


def test_a_changed_fingerprint_extra_redoes_the_sequences(tmp_path, inputs):
    """The fit shard passes the hash of the resolved settings: a changed package default (same command line)
    redoes every sequence instead of reusing the journal; the same value reuses them."""
    ids, sheet = inputs
    stage = FakeStage()
    assert run_shard(task(tmp_path, sheet, fingerprint_extra="settings-a"), stage)[0] == 0
    assert run_shard(task(tmp_path, sheet, fingerprint_extra="settings-a"), stage)[0] == 0
    assert len(stage.calls) == 4
    code, outcomes = run_shard(task(tmp_path, sheet, fingerprint_extra="settings-b"), stage)
    assert code == 0 and [o.status for o in outcomes] == ["ok"] * 4 and len(stage.calls) == 8
