"""What every command shares: one error mapping applied by the app factory, one declaration of
each common option, one resume syntax."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from salign_cli.cli import common
from salign_cli.cli.app import app
from salign_cli.cli.common import new_app, resume_target
from salign_cli.errors import InputError, OptionError, SalignError


def _app_raising(error: BaseException) -> typer.Typer:
    demo = new_app(name="demo")

    @demo.command("fail")
    def fail() -> None:
        raise error

    @demo.command("other")  # two commands, so Typer keeps the command name on the line
    def other() -> None:
        pass

    return demo


@pytest.mark.parametrize(
    ("error", "code"), [(InputError("scan.nii: 4D; split it"), 2), (SalignError("disk full"), 1)]
)
def test_every_command_of_a_new_app_reports_salign_errors_as_one_line(error, code):
    result = CliRunner().invoke(_app_raising(error), ["fail"])
    assert result.exit_code == code
    assert result.output.strip() == f"error: {error}"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_library_option_error_names_the_field_and_the_cli_renders_the_flag():
    """Issue 24: the library never quotes a flag; the command that owns the flag names it."""
    import pickle

    error = OptionError("batch_size", "must be at least 1, got 0")
    assert str(error) == "batch_size must be at least 1, got 0"
    again = pickle.loads(pickle.dumps(error))  # a worker process may raise it
    assert (again.option, again.problem, str(again)) == (error.option, error.problem, str(error))

    demo = new_app(name="demo")

    @demo.command("fail")
    def fail(
        batch_size: int = typer.Option(1, "--batch-size", "-b"),
        cases: str = typer.Option(""),
    ) -> None:
        raise OptionError({0: "batch_size", 1: "case_ids", 2: "width"}[batch_size], "is bad")

    @demo.command("other")
    def other() -> None:
        pass

    outputs = [CliRunner().invoke(demo, ["fail", "-b", str(n)]).output.strip() for n in range(3)]
    # the long flag; a renamed field (FIELD_FLAGS) by its flag; a field with no flag as itself
    assert outputs == ["error: --batch-size is bad", "error: --cases is bad", "error: width is bad"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--labels", "0"], "--labels must be at least 1, got 0"),
        (["--labels", "2", "--max-validation", "-1"], "--max-validation must be >= 0"),
    ],
)
def test_finetune_option_errors_quote_its_flags(cli, workspace, args, message):
    result = cli("finetune", "--data", str(workspace), *args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_bug_is_not_turned_into_a_one_line_error():
    result = CliRunner().invoke(_app_raising(ZeroDivisionError("bug")), ["fail"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_resume_target_maps_the_two_flags_to_what_the_stages_take(tmp_path: Path):
    assert resume_target(False, None) is False
    assert resume_target(True, None) is True
    assert resume_target(False, tmp_path) == tmp_path  # --resume-from implies --resume
    assert resume_target(True, tmp_path) == tmp_path


def _shared_help() -> dict[str, str]:
    """``--option`` → the help text declared once in cli/common.py."""
    aliases = {
        "--device": common.DeviceOption,
        "--quiet": common.QuietOption,
        "--seed": common.SeedOption,
        "--batch-size": common.BatchSizeOption,
        "--compile": common.CompileOption,
    }
    return {option: typing.get_args(alias)[1].help for option, alias in aliases.items()}


def _commands(command, path=()):
    if hasattr(command, "commands"):
        for name, child in command.commands.items():
            yield from _commands(child, (*path, name))
    else:
        yield path, command


def test_every_command_declares_the_shared_options_alike():
    shared = _shared_help()
    seen = {option: 0 for option in shared}
    for path, command in _commands(typer.main.get_command(app)):
        for parameter in command.params:
            if getattr(parameter, "secondary_opts", None):
                continue  # a switch of another meaning: info's --device/--no-device
            for option in set(parameter.opts) & set(shared):
                assert parameter.help == shared[option], f"salign {' '.join(path)} {option}"
                seen[option] += 1
    # device: pretrain, finetune, segment, suggest, demo, bench few-label, bench probe
    assert seen == {"--device": 7, "--quiet": 7, "--seed": 5, "--batch-size": 3, "--compile": 2}


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_both_training_commands_resume_a_named_run_with_resume_from(cli, workspace, command):
    missing = workspace / "runs" / "nowhere"
    result = cli(command, "--resume-from", str(missing))
    assert result.exit_code == 2
    assert "--resume-from" in result.output and "no such run folder" in result.output


def test_pretrain_still_takes_the_old_resume_spelling(cli, workspace):
    missing = workspace / "runs" / "nowhere"
    result = cli("pretrain", "--resume", str(missing))
    assert result.exit_code == 2 and "no such run folder" in result.output


def test_help_paragraphs_are_reflowed_and_examples_keep_their_lines():
    doc = """Title line.

    First sentence goes on
    over two lines.

    [bold]Examples[/]

      salign a --b      # one
      salign c          # two
    """
    assert common.reflowed_help(doc) == (
        "Title line.\n\nFirst sentence goes on over two lines.\n\n[bold]Examples[/]\n\n"
        "  salign a --b      # one\n  salign c          # two"
    )


def test_a_wide_terminal_shows_a_help_sentence_on_one_line(cli):
    result = cli("finetune", "--help", env={"COLUMNS": "200"})
    assert "prints the plan, one reason per choice: in-plane spacing, patch" in result.output


def test_case_lists_come_from_commas_or_from_a_file(tmp_path):
    listing = tmp_path / "next.txt"
    listing.write_text("case_1\ncase_2, case_3\n")
    assert common.case_list("a, b,,c") == ("a", "b", "c")
    assert common.case_list(str(listing)) == ("case_1", "case_2", "case_3")
    assert common.case_list(None) == ()
