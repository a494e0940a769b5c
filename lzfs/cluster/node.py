"""One node of a cluster: its working store (the cache directory) joined to the object store.

The work is in three rooms: bucket.py (the bucket's format and the cache directory's set-up),
objects.py (which object holds each pack, remote reads through the segment cache, trimming)
and exchange.py (importing published snapshots, publishing this node's). This class only opens
them over one store and closes them.
"""

from __future__ import annotations

from typing import Any

from lzfs.cluster.bucket import DEFAULT_GRACE, NODE_TABLES
from lzfs.cluster.clock import BucketClock, synced
from lzfs.cluster.exchange import Exchange
from lzfs.cluster.objects import PackObjects
from lzfs.objectstore.protocol import Backend
from lzfs.store.namespace import Namespace
from lzfs.store.store import Store


class ClusterNode:
    """Attach to an open working store; call ``close`` after the store's last read."""

    def __init__(self, store: Store, backend: Backend, node: str, cache_limit: int,
                 grace: float = DEFAULT_GRACE) -> None:
        self.store = store
        self.backend = backend
        self.node = node
        # a node that writes measures the store's clock; a read-only look writes nothing
        self.clock = BucketClock(backend) if store.readonly else synced(backend)
        db = store.db
        db.conn.executescript(NODE_TABLES)  # commits the (empty) open transaction first
        db.conn.execute("BEGIN")
        self.objects = PackObjects(store, backend, cache_limit)
        self.exchange = Exchange(store, backend, node, self.objects, self.clock, grace)
        store.packs.remote = self.objects
        if not store.readonly and store.packs.write_id in self.objects.keys:
            store.packs.seal()  # an uploaded pack is immutable: never append to it again

    def mount_view(self, ns: Namespace, import_recent: int = 0) -> None:
        """At mount: one listing of the bucket; a stub per published snapshot not held here;
        the ``import_recent`` most recently published imported now (new dumps deduplicate
        against imported snapshots only), the others when first looked into."""
        self.exchange.refresh_now(ns, at_mount=True)
        self.exchange.fill_all(ns, self.exchange.recent_stubs(import_recent))

    def describe(self) -> dict[str, Any]:
        ex = self.exchange
        return {"url": self.backend.url, "node": self.node, **self.objects.describe(),
                "manifest_gets": self.objects.counters.manifest_gets,
                "listings": ex.view.listings, "from_catalogue": ex.view.from_catalogue,
                "snapshots_not_imported": len(ex.stubs),
                "unpublished": ex.awaiting()}

    def close(self) -> None:
        self.objects.close()
