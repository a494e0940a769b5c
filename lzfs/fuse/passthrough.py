"""FUSE passthrough as the core asks for it (core/backing.py's ``Passthrough``): registering a
staging file with the kernel as an open file's backing file, through the pyfuse3 that
scripts/setup builds (third_party/: `backing_open`, `FileInfo.backing_id`). A pyfuse3 from PyPI,
a kernel older than 6.9 or one built without CONFIG_FUSE_PASSTHROUGH, or a daemon without
CAP_SYS_ADMIN leave it off, and the core says why once."""

from __future__ import annotations

import contextlib

import pyfuse3

PATCHED = hasattr(pyfuse3, "backing_open") and hasattr(pyfuse3, "passthrough_supported")


class KernelPassthrough:
    def available(self) -> bool:
        return PATCHED and pyfuse3.passthrough_supported()

    def why_not(self) -> str:
        if not PATCHED:
            return ("this pyfuse3 has no passthrough; scripts/setup builds one "
                    "(third_party/build-fuse.sh)")
        return ("the kernel did not offer it at mount: it needs Linux 6.9 or later with "
                "CONFIG_FUSE_PASSTHROUGH, and a daemon running as root")

    def open(self, fd: int) -> int:
        return int(pyfuse3.backing_open(fd))

    def close(self, backing_id: int) -> None:
        with contextlib.suppress(OSError):  # unknown to the kernel: nothing to let go of
            pyfuse3.backing_close(backing_id)
