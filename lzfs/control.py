"""The read-only `.lzfs/` directory at the mount root: store-wide figures and the dedup report,
readable with cat. It is hidden from readdir (ls -a does not show it, `rm -r MNT/*` and CRIU
never meet it) but found by name, like ZFS's `.zfs`. Its inode numbers sit far above any
SQLite rowid.
"""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Callable
from dataclasses import asdict

from rich.console import Console

from . import report
from .render import human, print_report

CONTROL_NAME = b".lzfs"
CONTROL_DIR = 1 << 62


class ControlTree:
    def __init__(self, ops) -> None:
        self.ops = ops
        self.files: dict[bytes, tuple[int, Callable[[], bytes]]] = {
            b"stats": (CONTROL_DIR + 1, self._stats_text),
            b"stats.json": (CONTROL_DIR + 2, self._stats_json),
            b"report": (CONTROL_DIR + 3, self._report_text),
            b"report.json": (CONTROL_DIR + 4, self._report_json),
        }
        self.by_ino = {ino: (name, fn) for name, (ino, fn) in self.files.items()}

    @staticmethod
    def is_control(ino: int) -> bool:
        return ino >= CONTROL_DIR

    def lookup(self, name: bytes) -> int | None:
        entry = self.files.get(name)
        return entry[0] if entry else None

    def mode(self, ino: int) -> int:
        return stat.S_IFDIR | 0o555 if ino == CONTROL_DIR else stat.S_IFREG | 0o444

    def content(self, ino: int) -> bytes:
        return self.by_ino[ino][1]()

    def listing(self) -> list[tuple[bytes, int]]:
        return [(name, ino) for name, (ino, _) in self.files.items()]

    # ---- contents --------------------------------------------------------------------------

    def _stats(self) -> dict:
        ops = self.ops
        st = asdict(ops.store.stats())
        st["cache"] = ops.cache.describe()
        st["open_files"] = len(ops.files)
        st["requests"] = {f"{op}<={size}": n for (op, size), n in sorted(ops.request_sizes.items())}
        if ops.cluster is not None:
            st["remote"] = ops.cluster.node.describe()
        return st

    def _stats_json(self) -> bytes:
        return (json.dumps(self._stats(), indent=2) + "\n").encode()

    def _stats_text(self) -> bytes:
        st = self._stats()
        ratio = st["logical"] / st["stored"] if st["stored"] else 1.0
        lines = [
            f"logical size        {human(st['logical'])} in {st['files']} files",
            f"zero pages / holes  {human(st['zero'])}",
            f"after dedup         {human(st['unique'])}",
            f"after compression   {human(st['stored'])}  ({ratio:.2f}x overall)",
            f"pages / frames      {st['pages']} / {st['frames']}",
            f"unreferenced frames {st['garbage_frames']}",
            f"pack files on disk  {human(st['pack_bytes'])}",
            f"frame cache         {human(st['cache']['bytes'])} of {human(st['cache']['budget'])},"
            f" {st['cache']['hits']} hits, {st['cache']['misses']} misses,"
            f" {st['cache']['prefetched']} prefetched",
        ]
        return ("\n".join(lines) + "\n").encode()

    def _report_json(self) -> bytes:
        return (json.dumps(report.snapshot_report(self.ops.store), indent=2) + "\n").encode()

    def _report_text(self) -> bytes:
        buf = io.StringIO()
        print_report(report.snapshot_report(self.ops.store),
                     Console(file=buf, width=150, color_system=None, force_terminal=False))
        return buf.getvalue().encode()
