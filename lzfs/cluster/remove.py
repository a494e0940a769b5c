"""`lzfs rm s3://... NAME`: delete a published snapshot from the bucket.

A deletion is published like a snapshot: a **tombstone**, an empty object under the name's
manifests (``snapshots/NAME/TIME-NODE-RANDOM.rm``), newer than them, then its journal entry.
The newest key of a name decides: a tombstone hides the name from every node at its next
look (a node that already imported it keeps it until its next mount). Nothing is deleted
here: gc deletes the manifests the tombstone covers, and the tombstone, once it is older than
the grace period, and with them the packs only they named (gc.py). Publishing the name again
later makes a newer manifest, which wins as always.
"""

from __future__ import annotations

import socket
from urllib.parse import quote

from lzfs.cluster import manifest
from lzfs.cluster.bucket import read_remote_config
from lzfs.cluster.clock import synced
from lzfs.cluster.listing import journal_key
from lzfs.errors import LzfsError
from lzfs.objectstore.protocol import Backend


def remove(backend: Backend, name: bytes) -> tuple[str, int]:
    """Publish the deletion of snapshot ``name``: (tombstone key, manifests it covers)."""
    read_remote_config(backend)
    keys = [o.key for o in backend.list(f"{manifest.PREFIX}{quote(name, safe='')}/")]
    newest = manifest.newest_per_name(keys).get(name)
    shown = name.decode(errors="replace")
    if newest is None or manifest.is_tombstone(newest):
        raise LzfsError(f"{backend.url} has no published snapshot {shown!r}"
                        + (" (already deleted)" if newest else ""))
    who = f"rm.{socket.gethostname()[:24]}".replace("/", "_")
    clock = synced(backend)  # the tombstone must sort after the manifests, whatever our clock
    key = manifest.new_key(name, who, manifest.TOMBSTONE, clock.now_ns())
    backend.put(key, b"")
    backend.put(journal_key(key, clock.now_ns()), b"")
    return key, sum(1 for k in keys if manifest.name_of(k) is not None)
