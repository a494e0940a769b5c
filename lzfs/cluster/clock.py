"""The object store's clock, read from this node: what every time the cluster compares with the
bucket's is measured on, so that nodes whose clocks disagree still agree on the order of
publications, see each other's journal entries, and never let gc take a pack within its grace.

Keys of manifests, tombstones and journal entries start with a time, and the object store
stamps every object with its own (LastModified). A node that stamped keys with its own clock
would, an hour behind, publish manifests that sort before older ones of other nodes (the newer
publication loses), write journal entries that other nodes never list (they list from their
last look on), and, an hour ahead, see packs as older than they are. So a node measures the
store's clock once (a PUT of an empty probe object and a HEAD of it: the offset between the
LastModified the store gave it and this node's clock at the middle of the two requests) and
stamps with its own clock plus that offset, re-measuring every ``RESYNC`` seconds. S3 gives
LastModified to the second, so the offset is good to about a second plus a request's time;
``listing.WINDOW`` covers that many times over.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid

from lzfs.objectstore.protocol import Backend, RemoteError

log = logging.getLogger(__name__)

PROBE_PREFIX = "clock/"
RESYNC = 600.0  # seconds between measurements on a long-running mount
SKEW_WARNING = 30.0  # seconds: worth a line in the log (NTP is off somewhere)


class BucketClock:
    """Seconds since the epoch on the object store's clock, as well as this node can tell."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.offset = 0.0  # store's clock minus ours
        self.synced_at = -RESYNC  # monotonic time of the last measurement (never)
        self.measured = False

    def sync(self) -> float:
        """Measure the offset (blocking: two or three requests); returns it. A failure leaves
        the last offset (none measured: this node's clock) and is only logged: the requests
        that need the store fail on their own, with their own message."""
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            t0 = time.time()
            self.backend.put(probe, b"")
            info = self.backend.head(probe)
            t1 = time.time()
        except (RemoteError, OSError) as exc:  # a shared directory fails with OSError
            log.warning("cannot read the object store's clock (%s): using this node's", exc)
            return self.offset
        finally:
            with contextlib.suppress(RemoteError, OSError):  # an empty object: harmless
                self.backend.delete(probe)
        self.synced_at = time.monotonic()
        if info is None:
            return self.offset
        stamped = info.mtime + (0.5 if info.mtime == int(info.mtime) else 0.0)  # to the second
        self.offset = stamped - (t0 + t1) / 2
        self.measured = True
        if abs(self.offset) > SKEW_WARNING:
            log.warning("this node's clock is %.0f s %s the object store's; lzfs uses the "
                        "store's for the bucket (fix NTP for the rest)", abs(self.offset),
                        "behind" if self.offset > 0 else "ahead of")
        return self.offset

    def maybe_sync(self) -> None:
        """Measure again when the last measurement is older than RESYNC (blocking)."""
        if time.monotonic() - self.synced_at >= RESYNC:
            self.sync()

    def now(self) -> float:
        return time.time() + self.offset

    def now_ns(self) -> int:
        return time.time_ns() + int(self.offset * 1e9)


def synced(backend: Backend) -> BucketClock:
    """A clock measured now: for the one-shot tools (gc, rm, prune) and a mount."""
    clock = BucketClock(backend)
    clock.sync()
    return clock
