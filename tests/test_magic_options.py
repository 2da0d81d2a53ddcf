"""The run options are declared once (``magics/options.py::RUN_OPTIONS``) and reach ``%%nothing_train``,
``%nothing_train script.py`` and ``nothing submit`` alike; ``%nothing_train?`` prints their real help."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nothing.magics.options import RUN_OPTIONS, make_parser
from nothing.magics.train import NothingMagics


@pytest.fixture
def ip():
    shell = InteractiveShell.instance()
    shell.register_magics(NothingMagics)
    yield shell
    InteractiveShell.clear_instance()


def option_strings(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def test_the_magic_and_the_cli_parse_the_same_declared_options():
    declared = {s for arg in RUN_OPTIONS for s in arg.args if s.startswith("-")}
    assert "--gpus" in declared and "--hp" in declared
    assert option_strings(NothingMagics.nothing_train.parser) == declared
    assert option_strings(make_parser("nothing submit", with_script=True)) == declared
    assert option_strings(make_parser("%%nothing_train", with_script=False)) == declared


def test_question_mark_help_lists_every_option_with_its_help(ip, capsys):
    ip.run_cell("%nothing_train?")
    shown = capsys.readouterr().out
    assert "%nothing_train SCRIPT [options] [-- script arguments]" in shown
    assert "%%nothing_train [options] [-- arguments] sends the cell as the code" in shown
    for arg in RUN_OPTIONS:
        assert arg.args[0] in shown
        assert " ".join(arg.kwds["help"].split()[:3]) in " ".join(shown.split()), arg.args[0]


def test_other_magics_have_argument_help_too(ip, capsys):
    for magic, expected in (("nothing_runs", "--state STATE"), ("nothing_logs", "--tail TAIL"),
                            ("nothing_download", "%nothing_download run [path]"), ("nothing_cancel", "run"),
                            ("nothing_watch", "run")):
        ip.run_cell(f"%{magic}?")
        assert expected in capsys.readouterr().out, magic


def test_options_go_anywhere_before_the_separator_in_the_line_magic(ip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print(1)\n")
    sent = []

    class FakeClient:  # the service is not needed to see what would be sent
        def submit(self, spec, archive):
            sent.append(spec)
            raise UsageError("stop here")

    ip.find_magic("nothing_train").__self__._client = FakeClient()
    with pytest.raises(UsageError, match="stop here"):
        ip.run_line_magic("nothing_train", "--gpus 1 train.py --hp lr=0.2 -- --epochs 3 --gpus 9")
    assert (sent[0]["gpus"], sent[0]["hyperparameters"], sent[0]["args"]) == (1, {"lr": "0.2"},
                                                                             ["--epochs", "3", "--gpus", "9"])


@pytest.mark.parametrize("line,message", [
    ("train.py --epochs 3", "%nothing_train: unknown option --epochs 3; arguments for the code go after --, "
                            "e.g. %nothing_train train.py [options] -- --epochs 3"),
    ("train.py --gpu 1", "%nothing_train: unknown option --gpu"),
    ("train.py --gpus two", "%nothing_train: argument --gpus: invalid int value: 'two'"),
])
def test_bad_line_magic_options_are_one_clear_line(ip, line, message):
    with pytest.raises(UsageError) as e:
        ip.run_line_magic("nothing_train", line)
    assert str(e.value).startswith(message)


def test_the_cell_magic_takes_no_script(ip):
    with pytest.raises(UsageError, match="%%nothing_train: unknown option extra; the cell is the code"):
        ip.run_cell_magic("nothing_train", "extra", "print(1)\n")
