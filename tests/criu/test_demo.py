"""`scripts/demo`, the README's first command, end to end and small: it checkpoints a real
process into a mount, restores it, and shows what it costs; and the README's worked example is
the output of that same sequence of commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _commands(text: str) -> list[str]:
    """The commands a demo transcript shows, without its temporary paths, pids and times, and
    with `lzfs` for however the demo ran it."""
    out = []
    for line in text.splitlines():
        if line.startswith(("$ ", "# criu")):
            line = re.sub(r"/tmp/lzfs-demo-\w+", "T", line)
            line = re.sub(r"^\$ \S*python\S* -m lzfs ", "$ lzfs ", line)
            out.append(re.sub(r"\d+(\.\d+)?", "N", line))
    return out


def test_the_demo_checkpoints_and_restores_and_matches_the_readme() -> None:
    res = subprocess.run([sys.executable, "-m", "lzfs.testing.demo", "--size", "48M"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "memory checksum" in out and ": intact" in out
    assert "store is clean" in out
    assert re.search(r"^server-1|│ server-1 ", out, re.M)  # the report's row
    readme = (ROOT / "README.md").read_text()
    example = readme.split("### Worked example", 1)[1].split("```", 2)[1]
    assert _commands(example) == _commands(out)
