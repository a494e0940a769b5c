"""How fast the disk under a store takes pack data and how fast the encoder compresses: the
two figures that decide whether staging a dump pays.

Staging (Store.stage) writes a dump's pages raw and compresses them once the daemon is idle.
On a fast disk that lets CRIU run at the speed of the FUSE request path. On slow storage it
does the opposite: it writes about twice the bytes the compressed frames take, through the
bottleneck, and then writes the compressed frames again when it settles (2 GiB through a
200 MB/s throttle: a staged dump took 7.5x a plain one). So the daemon measures both sides
while it works and stages only while the disk takes raw bytes faster than the encoder
compresses them (by a margin: STAGE_MARGIN).

The disk side is measured by writing packs out behind the appends: every FLUSH_EVERY bytes
appended, a thread fdatasyncs the packs and times it. This also keeps the dirty data of a
dump small, so the commit that ends the dump has little left to write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lzfs.store.layout import PACE

log = logging.getLogger(__name__)

FLUSH_EVERY = 64 << 20  # bytes appended between two timed flushes
MIN_SAMPLE = 4 << 20    # smaller samples say more about latency than about bandwidth
# Staging moves more bytes through the disk than compressing as data comes (the raw frames,
# then their compressed copies and a read of the raw ones when settling), so the disk must be
# clearly faster than the encoder, not just faster: a 200 MB/s disk against an encoder
# measured at 166 MB/s on a busy 2-core machine staged, and the dump was slower for it.
STAGE_MARGIN = 2.0
# What the encoder is taken to do until it has been timed in this mount: the middle of what it
# did on the 2-core test machine (110-400 MB/s, docs/benchmarks.md). A dump through
# passthrough decides at its first create, before any data was encoded, and settling does not
# time the encoder; without a prior a slow disk would stage every dump of a mount (a 1 GiB
# dump through a 200 MB/s throttle: 9.4x plain staged, 3.9x inline).
ENCODE_PRIOR = 250e6
PROBE_BYTES = 32 << 20  # the disk's rate at mount: a write this big, then fdatasync
PROBE_NAME = ".pace-probe"
PROBE_KEEP_S = 7 * 86400.0  # a disk's speed changes with its hardware, not from day to day


class Rate:
    """A moving average of bytes per second; None until the first sample."""

    def __init__(self, weight: float = 0.5) -> None:
        self.value: float | None = None
        self._weight = weight

    def add(self, nbytes: int, seconds: float) -> None:
        if nbytes < MIN_SAMPLE or seconds <= 0:
            return
        sample = nbytes / seconds
        self.value = sample if self.value is None else \
            self._weight * sample + (1 - self._weight) * self.value

    def mbps(self) -> float | None:
        return None if self.value is None else round(self.value / 1e6, 1)


class WriteBehind:
    """Runs ``flush`` (write the packs' dirty data to disk) on a thread of its own once
    FLUSH_EVERY bytes were appended since the last one, never two at once, and keeps the
    rate at which the disk took them. A failed flush is only logged: the commit's own sync
    decides whether the data is durable."""

    def __init__(self, flush: Callable[[], None], every: int = FLUSH_EVERY) -> None:
        self._flush = flush
        self._every = every
        self._lock = threading.Lock()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self.disk = Rate()

    def appended(self, nbytes: int) -> None:
        with self._lock:
            self._pending += nbytes
            if self._pending < self._every or self._thread is not None:
                return
            sample, self._pending = self._pending, 0
            self._thread = threading.Thread(target=self._run, args=(sample,),
                                            name="lzfs-write-behind", daemon=True)
        self._thread.start()

    def _run(self, nbytes: int) -> None:
        t = time.monotonic()
        try:
            self._flush()
        except OSError as exc:
            log.warning("writing packs behind the appends: %s", exc)
        else:
            self.disk.add(nbytes, time.monotonic() - t)
        finally:
            with self._lock:
                self._thread = None

    def wait(self) -> None:
        """Let a flush in progress finish (before the packs are closed)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()


class Pace:
    """The store's two rates and the rule that compares them."""

    def __init__(self, behind: WriteBehind) -> None:
        self.behind = behind
        self.encode = Rate()

    def encoded(self, nbytes: int, seconds: float) -> None:
        """The encoder took ``seconds`` (cutting, hashing, compressing, writing) for
        ``nbytes`` of file data."""
        self.encode.add(nbytes, seconds)

    def staging_pays(self) -> bool:
        """Whether raw bytes reach the disk STAGE_MARGIN times faster than the encoder turns
        them into frames (ENCODE_PRIOR until the encoder was timed). Until the disk's rate is
        known (``probe`` at mount): yes, what a fast disk wants."""
        disk = self.behind.disk.value
        enc = ENCODE_PRIOR if self.encode.value is None else self.encode.value
        return disk is None or disk > STAGE_MARGIN * enc

    def load(self, directory: Path) -> None:
        """The disk's rate the last probe of this store measured, if it is recent: a mount
        then writes no probe."""
        try:
            saved = json.loads((directory / PACE).read_text())
            if time.time() - float(saved["time"]) < PROBE_KEEP_S:
                self.behind.disk.value = float(saved["disk_Bps"])
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def probe(self, directory: Path) -> None:
        """Time a PROBE_BYTES write and fdatasync in ``directory`` (the store's disk) as the
        disk's first sample, unless it has one (blocking: run it on a thread at mount). A
        dump through passthrough decides at its first create whether it stages, before any
        pack was written: without this, a slow disk would show itself only after it."""
        path = directory / PROBE_NAME
        with contextlib.suppress(OSError):  # what a daemon killed while it probed left
            path.unlink(missing_ok=True)
        if self.behind.disk.value is not None:
            return
        block = bytes(range(256)) * 4096  # 1 MiB, not zeros: some file systems skip those
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                t = time.monotonic()
                for _ in range(PROBE_BYTES // len(block)):
                    os.write(fd, block)
                os.fdatasync(fd)
                seconds = time.monotonic() - t
            finally:
                os.close(fd)
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.info("cannot time the disk (%s): staging decided by the packs' writes", exc)
            return
        if self.behind.disk.value is None:
            self.behind.disk.add(PROBE_BYTES, seconds)
        with contextlib.suppress(OSError):  # a hint for the next mount, no more
            fd = os.open(directory / PACE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:  # private, like every store file
                f.write(json.dumps({"disk_Bps": PROBE_BYTES / seconds, "time": time.time()})
                        + "\n")
        log.info("disk takes %.0f MB/s (%d MiB written and synced at mount): staging %s",
                 PROBE_BYTES / seconds / 1e6, PROBE_BYTES >> 20,
                 "pays" if self.staging_pays() else "does not pay")

    def describe(self) -> dict[str, float | bool | None]:
        return {"disk_MBps": self.behind.disk.mbps(), "encode_MBps": self.encode.mbps(),
                "staging_pays": self.staging_pays()}
