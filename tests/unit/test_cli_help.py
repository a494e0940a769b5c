"""`lzfs --help`, each command's --help and the lzfs(1) page generated from the same parser."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import pytest

from lzfs.cli import main as cli
from tests.conftest import ROOT


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    [subs] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subs.choices)


def _help(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "lzfs", *args, "--help"], capture_output=True,
                         text=True, check=True)
    return res.stdout


def test_every_option_and_argument_says_what_it_is_for():
    parsers = {"lzfs": cli.build_parser(), **{f"lzfs {k}": v for k, v in _commands().items()}}
    missing = [f"{name} {action.dest}" for name, p in parsers.items() for action in p._actions
               if not isinstance(action, argparse._SubParsersAction)
               and action.help != argparse.SUPPRESS and not (action.help or "").strip()]
    assert missing == []


def test_top_level_help_describes_lzfs_for_a_user_with_examples():
    text = _help()
    assert "Nothing else" not in text  # the developer's note on cli.py is not the manual
    assert "CRIU" in text and "examples:" in text and "lzfs mount " in text
    assert "exit status:" in text
    for name in _commands():
        assert f"    {name} " in text


@pytest.mark.parametrize("command", sorted(_commands()))
def test_each_command_help_has_a_description_and_examples(command):
    text = _help(command)
    sub = _commands()[command]
    assert sub.description and sub.description.split()[0] in text
    examples = text.split("examples:\n", 1)[1]
    assert f"lzfs {command}" in examples


def test_man_page_is_generated_from_the_parser_and_names_every_command(tmp_path):
    page = tmp_path / "lzfs.1"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "manpage.py"), str(page)],
                   check=True, cwd=ROOT)
    roff = page.read_text()
    assert roff.startswith(".TH LZFS")
    for name, sub in _commands().items():
        assert f"COMMAND \\fI\\,'lzfs {name}'" in roff, name  # its own section
        assert f'.SS "lzfs {name}"' in roff  # and its examples
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            for opt in action.option_strings:
                roff_opt = opt.replace("-", "\\-")  # as roff writes a minus
                assert f"\\fB{roff_opt}\\fR" in roff, (name, opt)
    assert ".SH EXIT STATUS" in roff
    if shutil.which("groff"):
        res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                             capture_output=True, text=True)
        assert res.returncode == 0 and res.stderr == "", res.stderr
