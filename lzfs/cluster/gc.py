"""`lzfs gc s3://...`: delete pack objects no published manifest names.

The rule, safe while other nodes read and write:

* manifests are never deleted by gc, so every pack a published snapshot names stays;
* a pack object no manifest names is deleted only once it is older than the grace period
  (``gc_grace_s`` in the bucket's lzfs.json, 24 h by default): it may belong to a snapshot
  being published right now (packs go up first, the manifest last);
* a publishing node re-uploads (which renews LastModified) any pack of its own that it has
  not written or seen within half the grace period, before it PUTs the manifest; so a pack a
  new manifest names is always younger than the grace period when the manifest appears, and a
  gc that listed manifests just before that manifest appeared cannot have taken it.

Each candidate is looked at again (HEAD) just before it is deleted, so a renewal after the
listing keeps it; and a publisher checks, after its manifest PUT, that every pack it names is
still there, withdrawing the manifest (and failing the publication) if one is not. Node clocks
and the object store's clock must agree to well within half the grace period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .backend import Backend
from .bucket import PACKS_PREFIX, load_all, read_remote_config


@dataclass
class GcResult:
    manifests: int
    packs: int
    deleted: int
    deleted_bytes: int
    young: int  # unreferenced but within the grace period: kept


def collect(backend: Backend, grace: float | None = None) -> GcResult:
    cfg = read_remote_config(backend)
    grace = cfg.gc_grace_s if grace is None else grace
    packs = backend.list(PACKS_PREFIX)  # list packs first: a pack that appears later is young
    manifests = load_all(backend)
    live = {k for _, doc in manifests for k in doc["packs"]}
    cutoff = time.time() - grace
    res = GcResult(len(manifests), len(packs), 0, 0, 0)
    for o in packs:
        if o.key in live:
            continue
        if o.mtime > cutoff:
            res.young += 1
            continue
        now = backend.head(o.key)  # renewed by a publisher since the listing? then keep it
        if now is None or now.mtime > time.time() - grace:
            res.young += now is not None
            continue
        backend.delete(o.key)
        res.deleted += 1
        res.deleted_bytes += o.size
    return res
