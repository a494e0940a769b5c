"""Write the lzfs(1) man page, generated from the `lzfs` argument parser by argparse-manpage.

Usage: .venv/bin/python scripts/manpage.py OUT.1   (scripts/setup runs it and installs the page)

argparse-manpage renders the description, every command and every option from the parser, so
the page says what --help says. It leaves out the commands' epilogs; their examples, the exit
status and pointers to the docs are added here as sections of their own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from argparse_manpage.manpage import Manpage

from lzfs import __version__
from lzfs.cli import main as cli


def _roff_lines(text: str) -> str:
    """Text shown as written (no filling): backslashes and leading dots escaped."""
    out = []
    for line in text.splitlines():
        line = line.replace("\\", "\\e").replace("-", "\\-")
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return ".nf\n" + "\n".join(out) + "\n.fi"


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def manpage() -> str:
    parser = cli.build_parser()
    parser.epilog = None  # its parts become sections of their own below
    page = Manpage(parser)
    page.description = "compressed, deduplicating FUSE file system for CRIU images"
    page.manual = "lzfs manual"
    page.source = f"lzfs {__version__}"
    examples = [_roff_lines(cli.EXAMPLES)]
    for name, sub in _commands(parser).items():
        if sub.epilog:
            body = sub.epilog.removeprefix("examples:\n")
            examples.append(f'.SS "lzfs {name}"\n{_roff_lines(body)}')
    page.add_section("EXAMPLES", ">", "\n".join(examples))
    page.add_section("EXIT STATUS", ">", cli.EXIT_STATUS.replace("-", "\\-"))
    page.add_section("SIGNALS", ">", cli.SIGNALS.replace("-", "\\-"))
    page.add_section("ENVIRONMENT", ">", _roff_lines(cli.ENVIRONMENT))
    page.add_section("FILES", ">", _roff_lines(cli.FILES))
    page.add_section("SEE ALSO", ">",
                     "criu(8), mount.fuse3(8), fusermount3(1). README.md and docs/ in the lzfs "
                     "source tree: the store format, the report's JSON, crash safety and "
                     "fsck, object stores, benchmarks.")
    return str(page)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: scripts/manpage.py OUT.1", file=sys.stderr)
        return 2
    out = Path(argv[0])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(manpage())
    tmp.replace(out)  # a reader never sees half a page
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
