"""Who opens an image: CRIU restoring (served with direct_io: its large preadv arrive whole),
`criu lazy-pages` (through the page cache, below), or anybody else (cat, cp, a reader at
random: through the page cache, kept across opens, so a second read costs no FUSE round trip).

Telling `criu lazy-pages` apart when it opens a pages image, so lzfs serves that image
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

import os
from pathlib import Path


def _args(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def is_lazy_pages_daemon(pid: int) -> bool:
    """Whether process ``pid`` is `criu lazy-pages` (False when it cannot be told)."""
    return b"lazy-pages" in _args(pid)


def is_criu(pid: int) -> bool:
    """Whether process ``pid`` runs CRIU: its program (or, for CRIU run through a loader as
    scripts/setup installs it, the program the loader runs) is named `criu`."""
    return any(os.path.basename(a) == b"criu" for a in _args(pid)[:8])
