"""When a mounted node talks to the object store: publishing a snapshot directory on fsyncdir
and at unmount, and picking up snapshots other nodes published (at mount, and on a listing of
the root once ``refresh`` seconds have passed).

Publication order is the whole safety argument: commit locally, seal the pack being written,
read the directory's tree and block maps in one step with no checkpoint (one consistent
moment), upload the packs it names, and only then PUT the manifest. A manifest therefore never
names an object that is not already there, and a snapshot is invisible to other nodes until
its manifest is up.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from typing import Any, Protocol

import trio

from lzfs.cluster import manifest
from lzfs.cluster.bucketdedup import BucketDedup
from lzfs.cluster.node import ClusterNode
from lzfs.errors import LzfsError
from lzfs.objectstore.protocol import RemoteError
from lzfs.store.namespace import ROOT_INODE, FsError, Namespace
from lzfs.store.packs import REMOTE_BASE
from lzfs.store.store import Store
from lzfs.units import plural

log = logging.getLogger(__name__)


class SyncCore(Protocol):
    """What publication and import need of a mount (lzfs.core.core.Core has it): no more."""

    store: Store
    ns: Namespace
    gate: trio.Lock  # held: no frame is registered meanwhile

    async def commit(self) -> None: ...

    async def flush_subtree(self, ino: int) -> None: ...


class ClusterSync:
    """The mount's hooks (lzfs.core.hooks.Hooks) on a node of an object store."""

    def __init__(self, core: SyncCore, node: ClusterNode, refresh: float = 10.0) -> None:
        self.core = core
        self.node = node
        self.exchange = node.exchange
        self.refresh = refresh
        self._lock = trio.Lock()  # one publication or refresh at a time
        # while a publication uploads, the core's gc waits: it must not punch frames of
        # sealed packs between their collection and their upload (Core.gc)
        self.publishing = False
        self._filling: dict[int, trio.Event] = {}  # stubs being imported
        # a dump deduplicates against every snapshot of the bucket (bucketdedup.py)
        self.dedup = BucketDedup(self.exchange)
        core.store.supplier = self.dedup

    # ---- hooks -----------------------------------------------------------------------------

    def on_top_level_gone(self, name: bytes) -> None:
        """A top-level directory was removed or renamed away: its record goes too, so a new
        directory of that name is this node's own (published at unmount, never replaced)."""
        self.exchange.forget_snapshot(name)
        for ino in [i for i, (n, _) in self.exchange.stubs.items() if n == name]:
            del self.exchange.stubs[ino]  # an empty directory now, this node's own

    async def before_snapshot_removed(self, name: bytes) -> None:
        """`rm -r MNT/NAME` of a published snapshot deletes it from the bucket, as `lzfs rm`
        does: a tombstone goes up before the directory goes here, so every node stops listing
        it (its packs go with the first bucket gc after the grace period). When the object
        store cannot take the tombstone, the directory stays (EIO) and the log says why."""
        key = self.exchange.manifest_of(name)
        if key is None or manifest.is_tombstone(key):
            return  # never published: this node's alone
        shown = name.decode(errors="replace")
        try:
            tomb = await trio.to_thread.run_sync(self.exchange.publish_deletion, name)
        except RemoteError as exc:
            backend = self.node.backend
            log.error("cannot delete published snapshot %s from %s (%s); its directory stays: "
                      "remove it again once the object store is back, or run: lzfs rm %s %s%s",
                      shown, backend.url, exc, backend.spec, shown,
                      f" --endpoint {backend.endpoint}" if backend.endpoint else "")
            raise FsError(errno.EIO) from None
        log.info("deleted published snapshot %s from %s (tombstone %s)", shown,
                 self.node.backend.url, tomb)

    async def on_fsyncdir(self, ino: int) -> None:
        name = self.snapshot_name(ino)
        if name is not None and ino not in self.exchange.stubs:  # a stub: nothing of ours
            await self.publish(ino, name)

    async def publish_pending(self) -> None:
        """At unmount: publish every snapshot written on this node that changed since its
        last publication. Imported snapshots are not (a restore's logs stay on this node).
        What fails is written down for `lzfs umount` to say (exchange.save_unpublished)."""
        for name, ino in self.core.ns.children(ROOT_INODE):
            if ino in self.exchange.stubs or self.exchange.origin(name) != "local" \
                    or not self.core.ns.get(ino).is_dir:
                continue
            # a failure is logged and kept (exchange.failed): it stays here, unpublished
            with contextlib.suppress(RemoteError, OSError, LzfsError):
                await self.publish(ino, name)

    async def maybe_refresh_root(self) -> None:
        exchange = self.exchange
        if time.monotonic() - exchange.last_refresh < self.refresh or self._lock.locked():
            return
        async with self._lock:
            exchange.last_refresh = time.monotonic()
            try:
                changed = await trio.to_thread.run_sync(exchange.look, False)
            except LzfsError as exc:  # a listing still answers from what is here
                log.warning("cannot look for new snapshots: %s", exc)
                return
            exchange.apply(self.core.ns, changed, at_mount=False)

    async def enter_dir(self, ino: int) -> None:
        """A snapshot known by name only is imported when first looked into: its manifest
        is fetched (in a thread) and installed into the directory; one fetch per snapshot,
        however many lookups wait for it."""
        ex = self.exchange
        while ino in ex.stubs:
            waiting = self._filling.get(ino)
            if waiting is not None:
                await waiting.wait()
                continue
            done = self._filling[ino] = trio.Event()
            try:
                key = ex.stubs[ino][1]
                doc = await trio.to_thread.run_sync(ex.fetch, key)
                ex.fill(self.core.ns, ino, key, doc)  # False: a newer key came; go again
            finally:
                del self._filling[ino]
                done.set()

    def dir_xattr(self, ino: int, key: str) -> bytes | None:
        """user.lzfs.manifest / user.lzfs.error of a snapshot directory."""
        name = self.snapshot_name(ino)
        if name is None:
            return None
        if key == "manifest":
            key_ = self.exchange.manifest_of(name)
            return key_.encode() if key_ else None
        if key == "error":
            err = self.exchange.errors.get(name)
            return err.encode() if err else None
        return None

    def describe(self) -> dict[str, Any]:
        return {**self.node.describe(), **self.dedup.describe()}

    def tick(self) -> None:
        self.dedup.tick()

    # ---- publication -----------------------------------------------------------------------

    def snapshot_name(self, ino: int) -> bytes | None:
        """The name of a top-level directory (a snapshot), else None."""
        entry = self.core.ns.dentry_of(ino)
        return entry[1] if entry is not None and entry[0] == ROOT_INODE else None

    async def publish(self, ino: int, name: bytes) -> str:
        """Publish one snapshot directory; returns its manifest key. Unchanged since the last
        publication: nothing is written and the old key is returned."""
        ex, core, store = self.exchange, self.core, self.core.store
        async with self._lock:
            try:
                await core.flush_subtree(ino)
                await core.commit()
                async with core.gate:  # no frame is registered while we seal and read
                    store.packs.seal()
                    snap = manifest.collect(store, ino, name)
                dig = manifest.digest(snap)
                if dig == ex.published_digest(name):
                    return ex.manifest_of(name) or ""
                self.publishing = True
                started = time.time()
                try:
                    await trio.to_thread.run_sync(ex.clock.maybe_sync)
                    uploaded, renewed = await trio.to_thread.run_sync(ex.upload_packs,
                                                                      snap.packs)
                    keys = {**ex.objects.keys, **uploaded}
                    doc = snap.doc(keys, ex.node, ex.config_doc())
                    key = manifest.new_key(name, ex.node, now_ns=ex.clock.now_ns())
                    own = {keys[p] for p in snap.packs if p < REMOTE_BASE}
                    await trio.to_thread.run_sync(ex.put_manifest, key, doc, renewed, own)
                finally:
                    self.publishing = False
                # only now are the uploads named by a manifest: before, trimming their local
                # copies could leave an object gc may take as the only copy
                ex.objects.record_uploads(uploaded, started)
                ex.record_published(name, key, dig)
                # committed now, not with the next commit: `lzfs stats CACHE` (and a crash)
                # must not see a snapshot as waiting that `lzfs publish` said is published
                await core.commit()
                if await trio.to_thread.run_sync(ex.objects.over_limit):
                    trimmed = await trio.to_thread.run_sync(ex.objects.trim_own_packs)
                    log.info("cache over its limit: local copies of uploaded packs %s removed",
                             trimmed)
            except (RemoteError, OSError) as exc:
                ex.failed(name, str(exc))
                log.error("publishing snapshot %s failed: %s", name.decode(errors="replace"),
                          exc)
                raise
        log.info("published snapshot %s as %s (%s uploaded)",
                 name.decode(errors="replace"), key, plural(len(uploaded), "pack"))
        return key
