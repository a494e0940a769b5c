"""Telling `criu lazy-pages` apart when it opens a pages image, so lzfs serves that image
through the page cache instead of with direct_io.

The lazy-pages daemon reads a pages image in small pieces: one 4 KiB pread per page the
restored process faults on (forward, as the process works through its memory) among 64 KiB
preads of its background transfer. With direct_io every one of them is a FUSE round trip;
the request thread, not decoding, then bounds the restore. Through the page cache the
kernel's readahead turns both streams into larger READs (up to 1 MiB: the daemon raises its
mount's readahead, lzfs/mounts.py) and serves the faults that follow from memory. Measured
on the 2-core test machine, a 512 MiB llm process restored lazily
until it had touched all its memory (three alternating rounds): 3.82-3.95 s with direct_io
(the daemon used 2.9-3.1 s of CPU for it), 1.39-1.87 s through the page cache (1.4-1.6 s of
CPU), against 0.67-1.24 s from a plain directory.

The socket `lazy-pages.socket` that the daemon creates in the images directory cannot tell
this: CRIU leaves it behind when the daemon exits, so a later full restore would find it too.
The opener's command line can: a process whose arguments include the action `lazy-pages`
is that daemon (`criu restore --lazy-pages` has `--lazy-pages`, a different argument).
"""

from __future__ import annotations

from pathlib import Path


def is_lazy_pages_daemon(pid: int) -> bool:
    """Whether process ``pid`` is `criu lazy-pages` (False when it cannot be told)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"lazy-pages" in args
