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
