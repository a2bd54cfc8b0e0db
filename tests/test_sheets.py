"""Sample sheets: reading, writing, and one clear error (line + column) for each kind of mistake."""

from __future__ import annotations

import jsonschema
import pandas as pd
import pytest

from neuface.sheets import (
    SheetError,
    _maybe_bad_rows,
    expected_views,
    read_sheet,
    sequence_table,
    sheet_schema,
    validate_sheet,
    write_sheet,
)

HEADER = "sequence\tview\tsplit\tpath\tdataset\tsubject"
GOOD = [
    "mead__M003__angry__level_1__001\tfront\ttrain\t/d/M003/front/001.mp4\tmead\tM003",
    "mead__M003__angry__level_1__001\tleft_30\ttrain\t/d/M003/left_30/001.mp4\tmead\tM003",
    "vox2__id001__abc__00001\tmono\ttest\t/v/id001/abc/00001.mp4\tvoxceleb2\tid001",
]


def _write(tmp_path, lines, header=HEADER):
    path = tmp_path / "videos.tsv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _problems(tmp_path, lines, header=HEADER) -> list[str]:
    with pytest.raises(SheetError) as exc:
        read_sheet(_write(tmp_path, lines, header))
    return exc.value.problems


def test_read_valid_sheet_sorted_with_optional_columns(tmp_path):
    path = _write(tmp_path, ["# a comment", GOOD[2], "", GOOD[1], GOOD[0]])
    df = read_sheet(path)
    assert list(df.columns) == ["sequence", "view", "split", "path", "dataset", "subject"]
    assert list(df["view"]) == ["front", "left_30", "mono"]
    assert df["sequence"].iloc[0] == "mead__M003__angry__level_1__001"
    table = sequence_table(df)
    assert list(table["n_views"]) == [2, 1] and table["views"].iloc[0] == "front,left_30"
    assert expected_views(df, "vox2__id001__abc__00001") == ["mono"]


def test_write_then_read_roundtrip_and_extra_columns(tmp_path):
    df = pd.DataFrame({"path": ["b.mp4", "a.mp4"], "sequence": ["s2", "s1"], "view": ["mono", "mono"],
                       "split": ["val", "train"], "notes": ["x", "y"]})
    out = tmp_path / "sub" / "sheet.tsv"
    write_sheet(df, out)
    back = read_sheet(out)
    assert list(back.columns) == ["sequence", "view", "split", "path", "notes"]
    assert list(back["sequence"]) == ["s1", "s2"] and list(back["notes"]) == ["y", "x"]
    assert [p.name for p in out.parent.iterdir()] == ["sheet.tsv"]  # no temporary left behind


def test_write_refuses_invalid_sheet_and_writes_nothing(tmp_path):
    df = pd.DataFrame({"sequence": ["a b"], "view": ["mono"], "split": ["train"], "path": ["x.mp4"]})
    with pytest.raises(SheetError, match="not a safe file name"):
        write_sheet(df, tmp_path / "s.tsv")
    assert list(tmp_path.iterdir()) == []


def test_missing_column(tmp_path):
    problems = _problems(tmp_path, ["s1\tmono\t/x.mp4"], header="sequence\tview\tpath")
    assert problems == ["header: missing column 'split'"]


def test_empty_value_names_line_and_column(tmp_path):
    problems = _problems(tmp_path, [GOOD[0], "s2\tmono\ttrain\t\tmead\tM1"])
    assert problems == ["line 3, column 'path': empty value"]


def test_duplicate_sequence_view(tmp_path):
    problems = _problems(tmp_path, [GOOD[0], GOOD[2], GOOD[0]])
    assert len(problems) == 1
    assert "line 2, line 4: duplicate (sequence, view)" in problems[0] and "'front'" in problems[0]


def test_bad_split(tmp_path):
    problems = _problems(tmp_path, [GOOD[2].replace("\ttest\t", "\ttraining\t")])
    assert problems == ["line 2, column 'split': 'training' is not one of train, val, test"]


def test_rows_of_a_sequence_disagree_on_split(tmp_path):
    problems = _problems(tmp_path, [GOOD[0], GOOD[1].replace("\ttrain\t", "\tval\t")])
    assert len(problems) == 1
    assert "sequence 'mead__M003__angry__level_1__001': its rows disagree on split" in problems[0]
    assert "line 2=train" in problems[0] and "line 3=val" in problems[0]


@pytest.mark.parametrize("name", ["a/b", "../etc", "has space", ".hidden", "-dash", "é"])
def test_unsafe_sequence_name(tmp_path, name):
    problems = _problems(tmp_path, [f"{name}\tmono\ttrain\t/x.mp4\tfiles\tx"])
    assert len(problems) == 1
    assert problems[0].startswith("line 2, column 'sequence':") and "not a safe file name" in problems[0]


def test_unsafe_view_name(tmp_path):
    problems = _problems(tmp_path, ["s1\tleft 30\ttrain\t/x.mp4\tfiles\tx"])
    assert problems[0].startswith("line 2, column 'view':")


def test_wrong_field_count_and_empty_file(tmp_path):
    assert _problems(tmp_path, ["s1\tmono\ttrain"]) == ["line 2: 3 fields, but the header has 6"]
    (tmp_path / "empty.tsv").write_text("# only a comment\n\n")
    with pytest.raises(SheetError, match="empty"):
        read_sheet(tmp_path / "empty.tsv")
    with pytest.raises(SheetError, match="file not found"):
        read_sheet(tmp_path / "nope.tsv")


def test_all_problems_reported_at_once(tmp_path):
    problems = _problems(tmp_path, ["bad name\tmono\tnope\t/x.mp4\tf\ts", "s2\t\ttrain\t/y.mp4\tf\ts"])
    assert len(problems) == 3
    assert any("column 'sequence'" in p for p in problems)
    assert any("column 'split'" in p for p in problems)
    assert any("line 3, column 'view': empty value" == p for p in problems)
    with pytest.raises(SheetError) as exc:
        read_sheet(_write(tmp_path, ["bad name\tmono\tnope\t/x.mp4\tf\ts"]))
    assert "2 problem(s)" in str(exc.value)


def test_sequence_filter_validates_only_selected_rows(tmp_path):
    path = _write(tmp_path, [*GOOD, "bad name\tmono\ttrain\t/x.mp4\tf\ts"])
    df = read_sheet(path, sequences=["vox2__id001__abc__00001"])
    assert list(df["view"]) == ["mono"]
    with pytest.raises(SheetError, match="'nope' is not in the sheet"):
        read_sheet(path, sequences=["nope"])
    with pytest.raises(SheetError, match="not a safe file name"):
        read_sheet(path)


def test_validate_dataframe_reports_rows():
    df = pd.DataFrame({"sequence": ["s1", "s1"], "view": ["a", "a"], "split": ["train", "train"],
                       "path": ["x", "y"]})
    with pytest.raises(SheetError, match="row 0, row 1: duplicate"):
        validate_sheet(df)


def test_fast_prefilter_never_hides_a_schema_violation():
    """Rows the vectorized pre-check passes must be valid for jsonschema (it only skips known-good rows)."""
    values = {
        "sequence": ["ok", "a/b", "", ".x", "x" * 201, "a.b-c_d", "ü"],
        "view": ["front", "left 30", "", "v" * 65],
        "split": ["train", "val", "test", "Train", ""],
        "path": ["p", ""],
    }
    rows = [dict(sequence=s, view=v, split=sp, path=p) for s in values["sequence"] for v in values["view"]
            for sp in values["split"] for p in values["path"]]
    df = pd.DataFrame(rows)
    suspects = _maybe_bad_rows(df, ["sequence", "view", "split", "path"])
    validator = jsonschema.Draft202012Validator(sheet_schema())
    for i, row in enumerate(rows):
        if not suspects.iloc[i]:
            assert validator.is_valid(row), row
    assert suspects.sum() < len(rows) and suspects.any()
