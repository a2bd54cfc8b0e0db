"""The `neuface` CLI entry point: parsing, logging, and error handling at the boundary."""

import pytest

from neuface import __version__
from neuface.cli import build_parser, main


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_every_subcommand_registers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"index", "frames", "landmarks", "kit", "synth", "render", "summary"} <= set(sub.choices)


def test_user_error_is_one_log_line_and_exit_2(tmp_path, capsys):
    rc = main(["summary", str(tmp_path / "missing")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ERROR" in err[0] and "does not exist" in err[0]


def test_summary_lists_stage_outputs(tmp_path, capsys):
    (tmp_path / "preview").mkdir()
    (tmp_path / "preview" / "head.png").write_bytes(b"x")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("log")
    assert main(["summary", str(tmp_path)]) == 0
    text = capsys.readouterr().err
    assert "preview" in text and "head.png" in text
    assert "a.log" not in text


def test_log_file_receives_lines(tmp_path):
    log_file = tmp_path / "run.log"
    main(["--log-file", str(log_file), "summary", str(tmp_path / "nope")])
    assert "does not exist" in log_file.read_text()


def test_report_metrics_directory_expands_to_annotator_sequence_files(tmp_path):
    from neuface.cli.report import expand_metric_paths

    for rel in ("neuface/b.json", "neuface/a.json", "regress/a.json", "regress/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    single = tmp_path / "x.json"
    got = expand_metric_paths([str(tmp_path), str(single)])
    assert got == [str(tmp_path / "neuface/a.json"), str(tmp_path / "neuface/b.json"),
                   str(tmp_path / "regress/a.json"), str(single)]


def test_makefile_and_rules_call_existing_subcommands():
    """Every `neuface <command>` the Makefile and the rule files run is a registered subcommand."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    parser = build_parser()
    choices = set(next(a for a in parser._actions if a.dest == "command").choices)
    texts = [(repo / "Makefile").read_text()] + [p.read_text() for p in (repo / "rules").glob("*.smk")]
    called = {m for t in texts for m in re.findall(r"neuface (?:--log-file \{log\} )?([a-z][a-z-]*)", t)}
    assert called and called <= choices, called - choices


def test_building_the_command_line_imports_no_torch():
    """Every per-sequence job starts `neuface`: parsing must not pay torch's import (seconds) when the command
    does not need it (e.g. `frames`, `crops`, `shard` of CPU stages)."""
    import subprocess
    import sys

    code = "import sys; from neuface.cli import build_parser; build_parser(); print(sorted({m.split('.')[0] " \
           "for m in sys.modules} & {'torch', 'roma', 'cv2', 'dlib'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _fake_run(root, rejected=None):
    """A results tree of a finished run: 2 sequences, annotator neuface, split train."""
    from neuface.dataset.filter import FilterRecord, FilterThresholds, write_manifest

    for rel in ("frames/{s}.h5", "landmarks/{s}.h5", "crops/{s}.h5", "fits/neuface/{s}.h5",
                "metrics/neuface/{s}.json"):
        for seq in ("a", "b"):
            (root / rel.format(s=seq)).parent.mkdir(parents=True, exist_ok=True)
            (root / rel.format(s=seq)).write_bytes(b"x")
    recs = [FilterRecord("a", "train", "neuface", "accepted", warnings=["missing_views:left"])]
    recs.append(FilterRecord("b", "train", "neuface", "rejected", [rejected]) if rejected
                else FilterRecord("b", "train", "neuface", "accepted"))
    write_manifest(recs, root / "filter" / "neuface.tsv", FilterThresholds(), annotator="neuface")
    (root / "dataset" / "neuface").mkdir(parents=True)
    (root / "dataset" / "neuface" / "train.h5").write_bytes(b"x")
    (root / "report").mkdir()
    (root / "report" / "index.md").write_text("# report\n")


def _verdict(capsys, *argv):
    assert main(["summary", *map(str, argv)]) == 0  # make demo keeps its exit status: summary always exits 0
    lines = capsys.readouterr().err.splitlines()
    banner = [i for i, line in enumerate(lines) if line.endswith("=" * 40)]
    assert len(banner) == 2 and banner[1] == banner[0] + 2 == len(lines) - 1, lines  # the verdict comes last
    return lines[banner[0] + 1].split(": ", 1)[1], "\n".join(lines)


def test_summary_ends_with_a_verdict(tmp_path, capsys):
    _fake_run(tmp_path / "ok")
    headline, text = _verdict(capsys, tmp_path / "ok")
    assert headline.startswith("ALL STAGES COMPLETE: 2 sequence(s)") and "INFO" in text.splitlines()[-2]
    assert "neuface: 2 sequence(s): 2 accepted, 0 rejected by the filter, 0 failed; 1 with partial-input" in text

    _fake_run(tmp_path / "quality", rejected="shape norm 1.3 > 1")  # a quality rejection is not a failure
    headline, text = _verdict(capsys, tmp_path / "quality")
    assert headline.startswith("ALL STAGES COMPLETE") and "1 rejected by the filter" in text

    _fake_run(tmp_path / "failed", rejected="upstream fit: upstream frames: video file not found: b.mp4")
    headline, text = _verdict(capsys, tmp_path / "failed")
    assert headline.startswith("RUN COMPLETE, BUT 1 of 2 SEQUENCE(S) FAILED: b")
    assert "WARNING" in text.splitlines()[-2]
    assert "FAILED b [neuface]: upstream fit: upstream frames: video file not found" in text

    (tmp_path / "ok" / "metrics" / "neuface" / "b.json").unlink()
    headline, text = _verdict(capsys, tmp_path / "ok")
    assert headline.startswith("RUN INCOMPLETE") and "metrics/neuface: 1 of 2 sequence output(s) missing (b)" in text
    _fake_run(tmp_path / "crashed")
    headline, _ = _verdict(capsys, tmp_path / "crashed", "--snakemake-exit", 1)
    assert headline.startswith("RUN INCOMPLETE") and "snakemake exited with status 1" in headline
    (tmp_path / "crashed" / "report" / "index.md").unlink()
    (tmp_path / "crashed" / "dataset" / "neuface" / "train.h5").unlink()
    _, text = _verdict(capsys, tmp_path / "crashed")
    assert "dataset/neuface: split file(s) missing: train" in text and "report/index.md missing" in text
    (tmp_path / "early" / "frames").mkdir(parents=True)  # --until frames: the later stages are not there
    (tmp_path / "early" / "frames" / "a.h5").write_bytes(b"x")
    headline, text = _verdict(capsys, tmp_path / "early")
    assert headline.startswith("RUN INCOMPLETE") and "landmarks: 1 of 1" in text and "filter: no manifest" in text
