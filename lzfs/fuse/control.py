"""The read-only `.lzfs/` directory at the mount root: store-wide figures and the dedup report,
readable with cat. It is hidden from readdir of the root (`rm -r MNT/*` and CRIU never meet
it) but found by name, like ZFS's `.zfs`. Its inode numbers sit far above any SQLite rowid.

The tree gets two callables, not the mount: one for the figures, one for the report.
"""

from __future__ import annotations

import io
import json
import stat
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from lzfs.report.render import STATS_SCHEMA, print_report, stats_text

CONTROL_NAME = b".lzfs"
CONTROL_DIR = 1 << 62
FRESH_FOR = 1.0  # seconds a file's content is reused (stat, then read, computes it once)


def is_control(ino: int) -> bool:
    return ino >= CONTROL_DIR


class ControlTree:
    def __init__(self, figures: Callable[[], dict[str, Any]],
                 report: Callable[[], dict[str, Any]]) -> None:
        self._figures = figures
        self._report = report
        self.files: dict[bytes, tuple[int, Callable[[], bytes]]] = {
            b"stats": (CONTROL_DIR + 1, self._stats_text),
            b"stats.json": (CONTROL_DIR + 2, self._stats_json),
            b"report": (CONTROL_DIR + 3, self._report_text),
            b"report.json": (CONTROL_DIR + 4, self._report_json),
        }
        self.by_ino = {ino: (name, fn) for name, (ino, fn) in self.files.items()}
        self._cache: dict[int, tuple[float, bytes]] = {}

    def lookup(self, name: bytes) -> int | None:
        entry = self.files.get(name)
        return entry[0] if entry else None

    def mode(self, ino: int) -> int:
        return stat.S_IFDIR | 0o555 if ino == CONTROL_DIR else stat.S_IFREG | 0o444

    def content(self, ino: int, fresh: bool = False) -> bytes:
        """The file's bytes, computed at most once a second unless ``fresh`` (an open)."""
        hit = self._cache.get(ino)
        now = time.monotonic()
        if hit is None or fresh or now - hit[0] > FRESH_FOR:
            hit = (now, self.by_ino[ino][1]())
            self._cache[ino] = hit
        return hit[1]

    def listing(self) -> list[tuple[bytes, int]]:
        return [(name, ino) for name, (ino, _) in self.files.items()]

    # ---- contents --------------------------------------------------------------------------

    def _stats_json(self) -> bytes:
        return (json.dumps({"schema": STATS_SCHEMA, **self._figures()}, indent=2)
                + "\n").encode()

    def _stats_text(self) -> bytes:
        return stats_text(self._figures()).encode()

    def _report_json(self) -> bytes:
        return (json.dumps(self._report(), indent=2) + "\n").encode()

    def _report_text(self) -> bytes:
        buf = io.StringIO()
        print_report(self._report(),
                     Console(file=buf, width=150, color_system=None, force_terminal=False))
        return buf.getvalue().encode()
