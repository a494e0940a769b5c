"""`lzfs gc s3://...`: delete pack objects no live manifest names, and what deletions retired.

The rule, safe while other nodes read and write:

* a manifest is live unless a tombstone of its name (`lzfs rm`), newer than it, is older than
  the grace period; every pack a live manifest names stays, so every published snapshot stays
  readable, and a deleted one for the grace period after its deletion;
* a pack object no live manifest names is deleted only once it is older than the grace period
  (``gc_grace_s`` in the bucket's lzfs.json, 24 h by default): it may belong to a snapshot
  being published right now (packs go up first, the manifest last);
* a publishing node renews (copy onto itself) every pack its manifest names that it has not
  seen younger than half the grace period, before it PUTs the manifest; so a pack a new
  manifest names is younger than half the grace period when the manifest appears.

Each candidate is looked at again (HEAD) just before it is deleted, so a renewal after the
listing keeps it; a publisher checks, after its manifest PUT, that every pack it renewed is
still there, withdrawing the manifest (and failing the publication) if one is not. A pack the
publisher saw young needs no such check: gc deletes it only when its HEAD finds it older than
the grace period, more than half the grace period after the publisher saw it young, so more
than a quarter of it after the manifest PUT (publications take less than a quarter); and gc
stops deleting once a quarter of the grace period has passed since it began listing
manifests, so it listed after that PUT and saw the manifest. Every one of these times is the
object store's (LastModified, and each node's reading of the store's clock, clock.py): node
clocks need not agree with each other or with the store.

Deleting the manifests a tombstone retired is safe for the same reason: which manifests exist
never enters the argument for a concurrent publication, only which packs its own names.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from lzfs.cluster import hookindex, manifest
from lzfs.cluster.bucket import PACKS_PREFIX, fetch_manifests, read_remote_config
from lzfs.cluster.clock import synced
from lzfs.cluster.listing import JOURNAL, write_catalogue
from lzfs.objectstore.protocol import Backend, ObjectInfo


@dataclass
class GcResult:
    manifests: int
    packs: int
    deleted: int
    deleted_bytes: int
    young: int  # unreferenced but within the grace period: kept
    retired: int = 0  # manifests and tombstones of snapshots deleted longer than grace ago
    journal: int = 0  # journal entries older than the grace period, deleted
    index: hookindex.BaseResult | None = None  # the published page index, rebuilt
    stopped: bool = False  # ran past a quarter of the bucket's grace period: stopped deleting


def live_and_retired(objs: list[ObjectInfo], cutoff: float) -> tuple[list[str], list[str]]:
    """Split the keys under snapshots/ into the manifests whose packs stay (every manifest not
    behind a tombstone older than ``cutoff``) and the keys to delete (manifests of one name
    up to and including its newest tombstone older than ``cutoff``)."""
    by_name: dict[bytes, list[ObjectInfo]] = defaultdict(list)
    for o in objs:
        e = manifest.entry_of(o.key)
        if e is not None:
            by_name[e[0]].append(o)
    live: list[str] = []
    retired: list[str] = []
    for items in by_name.values():
        items.sort(key=lambda o: o.key)
        last = max((i for i, o in enumerate(items)
                    if manifest.is_tombstone(o.key) and o.mtime < cutoff), default=-1)
        retired += [o.key for o in items[:last + 1]]
        live += [o.key for o in items[last + 1:] if not manifest.is_tombstone(o.key)]
    return live, retired


def collect(backend: Backend, grace: float | None = None) -> GcResult:
    cfg = read_remote_config(backend)
    grace = cfg.gc_grace_s if grace is None else grace
    packs = backend.list(PACKS_PREFIX)  # list packs first: a pack that appears later is young
    clock = synced(backend)  # cutoffs on the store's clock: LastModified is the store's
    started = clock.now()  # before the manifests are listed
    cutoff = started - grace
    deltas = hookindex.list_deltas(backend)  # before the manifests: each one's is listed
    listed = backend.list(manifest.PREFIX)
    live_keys, retired = live_and_retired(listed, cutoff)
    live: set[str] = set()
    # the page index names what a new dump may share: each name's newest manifest, not one a
    # newer manifest replaced or a tombstone deleted (its packs stay for the grace period only)
    newest = manifest.newest_per_name([o.key for o in listed])
    indexed = {k for k in newest.values() if not manifest.is_tombstone(k)}
    hooks = hookindex.BaseBuilder()
    for key, doc in fetch_manifests(backend, live_keys):  # streaming: one window in memory
        live.update(doc["packs"])
        if key in indexed:
            hooks.add(key, doc)
    res = GcResult(len(live_keys), len(packs), 0, 0, 0)
    for o in packs:
        if o.key in live:
            continue
        if o.mtime > cutoff:
            res.young += 1
            continue
        if clock.now() - started > cfg.gc_grace_s / 4:  # the module docstring says why
            res.stopped = True
            break
        now = backend.head(o.key)  # renewed by a publisher since the listing? then keep it
        if now is None or now.mtime > clock.now() - grace:
            res.young += now is not None
            continue
        backend.delete(o.key)
        res.deleted += 1
        res.deleted_bytes += o.size
    for key in retired:  # their packs are decided: a later gc sees no trace of them
        backend.delete(key)
        res.retired += 1
    gone = set(retired)
    # the index names live manifests only: written after the retired ones went
    res.index = hookindex.write_base(backend, hooks.entries(), deltas, clock.now_ns())
    write_catalogue(backend, manifest.newest_per_name([o.key for o in listed
                                                       if o.key not in gone]), started)
    # nodes that looked longer ago than half the bucket's grace period list anew
    for o in backend.list(JOURNAL):
        if o.mtime < started - cfg.gc_grace_s:
            backend.delete(o.key)
            res.journal += 1
    return res
