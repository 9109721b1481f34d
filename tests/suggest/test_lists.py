"""The suggestion list on disk: what `salign finetune --cases FILE` accepts and refuses."""

from __future__ import annotations

import pytest

from salign_cli.errors import InputError
from salign_cli.suggest.lists import Suggestion, SuggestResult, read_case_list, write_suggestions


def result() -> SuggestResult:
    rows = (
        Suggestion(1, "case_b", "/scans/b.nii.gz", 4, None, "the most typical of 4 similar"),
        Suggestion(2, "case_a", "/scans/a.nii.gz", 2, 0.71, "of 2 similar scans, ..."),
    )
    return SuggestResult(
        rows, model="m", model_kind="finetuned", candidates=6, labelled=1, seconds=2
    )


@pytest.mark.parametrize("name", ["next.csv", "next.json"])
def test_what_is_written_reads_back_in_rank_order(tmp_path, name):
    write_suggestions(tmp_path / name, result())
    assert read_case_list(tmp_path / name) == ("case_b", "case_a")


def test_the_csv_keeps_every_column_and_an_empty_cell_for_no_score(tmp_path):
    write_suggestions(tmp_path / "next.csv", result())
    lines = (tmp_path / "next.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "rank,case_id,image_path,group_size,expected_dice,reason"
    assert lines[1].startswith("1,case_b,/scans/b.nii.gz,4,,")
    assert lines[2].startswith("2,case_a,/scans/a.nii.gz,2,0.71,")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.json", '{"cases": [1, 2]}', "expected"),
        ("bad.csv", "id,score\na,1\n", "no case_id column"),
        ("empty.txt", "\n , \n", "lists no case ids"),
    ],
)
def test_a_bad_list_is_one_clear_error_naming_the_file(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message) as raised:
        read_case_list(tmp_path / name)
    assert name in str(raised.value)


def test_an_unwritable_list_path_is_refused_before_any_work(tmp_path, cli):
    from salign_cli.suggest.lists import check_list_path

    with pytest.raises(InputError, match="a folder"):
        check_list_path(tmp_path)
    with pytest.raises(InputError, match="no folder"):
        check_list_path(tmp_path / "missing" / "next.csv")
    check_list_path(tmp_path / "next.csv")  # fine
    result = cli("suggest", "2", "-o", str(tmp_path / "missing" / "x.csv"), "-w", str(tmp_path))
    assert result.exit_code == 2 and "no folder" in result.output


def test_a_write_that_fails_is_one_clear_error(tmp_path, monkeypatch):
    import salign_cli.suggest.lists as lists

    def refuse(path, result):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lists, "_write", refuse)
    with pytest.raises(InputError, match=r"cannot write the list \(Permission denied"):
        write_suggestions(tmp_path / "next.csv", result())
