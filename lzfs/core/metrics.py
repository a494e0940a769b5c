"""What a mount tells Prometheus (prometheus_client's conventions: `_total` counters, `_seconds`
histograms, base units), served on loopback (`--metrics 127.0.0.1:9108`) or written as a
textfile for node_exporter's collector (`--metrics-file PATH`), both from one registry.

Counts and latencies are recorded where they happen (the FUSE handlers, gc, the dump and
restore watcher); the store's figures are gauges the daemon refreshes on its own thread every
REFRESH seconds (they take SQL, which must not run on the scraper's thread). Object-store
counters are read from the node's own counters at scrape time.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

REFRESH = 15.0  # seconds between refreshes of the store's figures
_LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5)
_DURATION = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = time.time()
        self.request_seconds = Histogram(
            "lzfs_request_duration_seconds", "Time the daemon took to answer a FUSE request",
            ["op"], buckets=_LATENCY, registry=r)
        self.request_bytes = Counter("lzfs_request_bytes", "Bytes read and written through "
                                     "FUSE requests (not through passthrough)", ["op"],
                                     registry=r)
        self.errors = Counter("lzfs_errors", "FUSE requests answered with an error",
                              ["errno"], registry=r)
        self.enospc = Counter("lzfs_enospc_events", "Writes refused because the disk "
                              "reached the reserve (ENOSPC)", registry=r)
        self.gc_runs = Counter("lzfs_gc_runs", "Garbage collections", registry=r)
        self.gc_freed = Counter("lzfs_gc_freed_bytes", "Bytes gc gave back to the file system",
                                registry=r)
        self.dumps = Counter("lzfs_dumps", "Snapshot directories a dump completed "
                             "(inventory.img written)", registry=r)
        self.dump_seconds = Histogram("lzfs_dump_duration_seconds", "From the first image of "
                                      "a snapshot created to its inventory.img closed",
                                      buckets=_DURATION, registry=r)
        self.restores = Counter("lzfs_restores", "Restores CRIU started from a snapshot",
                                registry=r)
        self.restore_seconds = Histogram("lzfs_restore_duration_seconds", "From CRIU's first "
                                         "open of a snapshot's image to its last close",
                                         buckets=_DURATION, registry=r)
        self.scrub_damaged = Gauge("lzfs_scrub_damaged_files", "Damaged files the last scrub "
                                   "found", registry=r)
        self.store = Gauge("lzfs_store_bytes", "The store's figures: logical (the bytes "
                           "files hold, what came in), zero (pages of zeros, not stored), "
                           "deduplicated (bytes dedup saved), unique (after dedup), stored "
                           "(after compression), staged (raw, waiting to be settled), packs "
                           "(on disk)", ["kind"], registry=r)
        self.files = Gauge("lzfs_files", "Regular files in the store", registry=r)
        Gauge("lzfs_start_time_seconds", "When the daemon mounted the store (unix time)",
              registry=r).set(self.started)

    def error(self, err: int) -> None:
        self.errors.labels(errno.errorcode.get(err, str(err))).inc()
        if err == errno.ENOSPC:
            self.enospc.inc()

    def set_store(self, figures: dict[str, Any]) -> None:
        """From Core.figures (the daemon's thread)."""
        for kind in ("logical", "zero", "unique", "stored", "staged"):
            self.store.labels(kind).set(figures.get(kind, 0))
        self.store.labels("deduplicated").set(
            max(figures.get("referenced", 0) - figures.get("unique", 0), 0))
        self.store.labels("packs").set(figures.get("pack_bytes", 0))
        self.files.set(figures.get("files", 0))
        scrub = figures.get("scrub")
        if scrub:
            self.scrub_damaged.set(scrub["damaged_files"])

    def watch(self, describe: Callable[[], dict[str, Any] | None]) -> None:
        """Also export what ``describe`` says of the object store (a node's counters)."""
        self.registry.register(_RemoteCollector(describe))


class _RemoteCollector(Collector):
    def __init__(self, describe: Callable[[], dict[str, Any] | None]) -> None:
        self._describe = describe

    def collect(self) -> Any:
        d = self._describe()
        if not d:
            return
        for name, key, what in (("gets", "gets", "GETs"), ("puts", "puts", "PUTs"),
                                ("errors", "errors", "requests that failed")):
            c = CounterMetricFamily(f"lzfs_object_store_{name}", f"Object store {what}")
            c.add_metric([], d.get(key, 0))
            yield c
        for name, key in (("get_bytes", "get_bytes"), ("put_bytes", "put_bytes")):
            c = CounterMetricFamily(f"lzfs_object_store_{name}", f"Object store {name}")
            c.add_metric([], d.get(key, 0))
            yield c
        g = GaugeMetricFamily("lzfs_publication_backlog", "Snapshots written on this node "
                              "that are not published yet")
        g.add_metric([], len(d.get("unpublished") or {}))
        yield g
