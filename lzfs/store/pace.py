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

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

FLUSH_EVERY = 64 << 20  # bytes appended between two timed flushes
MIN_SAMPLE = 4 << 20    # smaller samples say more about latency than about bandwidth
# Staging moves more bytes through the disk than compressing as data comes (the raw frames,
# then their compressed copies and a read of the raw ones when settling), so the disk must be
# clearly faster than the encoder, not just faster: a 200 MB/s disk against an encoder
# measured at 166 MB/s on a busy 2-core machine staged, and the dump was slower for it.
STAGE_MARGIN = 2.0


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
        them into frames. Until both rates are known: yes (what a fast disk wants, and a slow
        one shows itself within the first FLUSH_EVERY bytes)."""
        disk, enc = self.behind.disk.value, self.encode.value
        return disk is None or enc is None or disk > STAGE_MARGIN * enc

    def describe(self) -> dict[str, float | bool | None]:
        return {"disk_MBps": self.behind.disk.mbps(), "encode_MBps": self.encode.mbps(),
                "staging_pays": self.staging_pays()}
