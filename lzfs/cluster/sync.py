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

import logging
import time
from typing import TYPE_CHECKING

import trio

from ..errors import LzfsError
from ..namespace import ROOT_INODE
from . import manifest
from .backend import RemoteError
from .node import ClusterNode

if TYPE_CHECKING:
    from ..fs import LzfsOperations

log = logging.getLogger(__name__)


class ClusterSync:
    def __init__(self, node: ClusterNode, refresh: float = 10.0) -> None:
        self.node = node
        self.refresh = refresh
        self._lock = trio.Lock()  # one publication or refresh at a time
        # while a publication uploads, the daemon's gc waits: it must not punch frames of
        # sealed packs between their collection and their upload (LzfsOperations.gc)
        self.publishing = False

    def forget(self, name: bytes) -> None:
        """A top-level directory was removed or renamed away: its record goes too, so a new
        directory of that name is this node's own (published at unmount, never replaced)."""
        self.node.store.db.execute("DELETE FROM snapshots WHERE name=?", (name,))

    def snapshot_name(self, ops: LzfsOperations, ino: int) -> bytes | None:
        """The name of a top-level directory (a snapshot), else None."""
        row = ops.store.db.execute("SELECT name FROM dentries WHERE parent=? AND ino=?",
                                   (ROOT_INODE, ino)).fetchone()
        return bytes(row[0]) if row else None

    async def publish(self, ops: LzfsOperations, ino: int, name: bytes) -> str:
        """Publish one snapshot directory; returns its manifest key. Unchanged since the last
        publication: nothing is written and the old key is returned."""
        node, store = self.node, ops.store
        async with self._lock:
            try:
                for i in _subtree(store.db, ino):
                    fm = ops.files.get(i)
                    if fm is not None:
                        await fm.flush()
                await ops.commit()
                async with ops.gate:  # no frame is registered while we seal and read
                    store.packs.seal()
                    snap = manifest.collect(store, ino, name)
                dig = manifest.digest(snap)
                if dig == node.published_digest(name):
                    return store.db.execute("SELECT manifest FROM snapshots WHERE name=?",
                                            (name,)).fetchone()[0]
                self.publishing = True
                try:
                    uploaded = await trio.to_thread.run_sync(node.upload_packs, snap.packs)
                    doc = snap.doc({**node.keys, **uploaded}, node.node, node.config_doc())
                    key = manifest.new_key(name, node.node)
                    data = manifest.encode(doc)
                    await trio.to_thread.run_sync(node.put_manifest, key, data, doc)
                finally:
                    self.publishing = False
                # only now are the uploads named by a manifest: before, trimming their local
                # copies could leave an object gc may take as the only copy
                node.record_uploads(uploaded)
                node.record_published(name, key, dig)
                await ops.commit()
                trimmed = await trio.to_thread.run_sync(node.trim_own_packs)
                if trimmed:
                    log.info("cache over its limit: local copies of uploaded packs %s removed",
                             trimmed)
            except (RemoteError, OSError) as exc:
                node.errors[name] = str(exc)
                log.error("publishing snapshot %s failed: %s", name.decode(errors="replace"),
                          exc)
                raise
        log.info("published snapshot %s as %s (%d packs uploaded)",
                 name.decode(errors="replace"), key, len(uploaded))
        return key

    async def on_fsyncdir(self, ops: LzfsOperations, ino: int) -> None:
        name = self.snapshot_name(ops, ino)
        if name is not None:
            await self.publish(ops, ino, name)

    async def publish_pending(self, ops: LzfsOperations) -> None:
        """At unmount: publish every snapshot written on this node that changed since its
        last publication. Imported snapshots are not (a restore's logs stay on this node)."""
        for name, ino in ops.store.db.execute(
                "SELECT name, ino FROM dentries WHERE parent=? ORDER BY id",
                (ROOT_INODE,)).fetchall():
            if not ops.ns.get(ino).is_dir or self.node.origin(bytes(name)) != "local":
                continue
            try:
                await self.publish(ops, ino, bytes(name))
            except (RemoteError, OSError):
                pass  # logged; the snapshot stays on this node, unpublished

    async def maybe_refresh(self, ops: LzfsOperations) -> None:
        if time.monotonic() - self.node.last_refresh < self.refresh or self._lock.locked():
            return
        async with self._lock:
            self.node.last_refresh = time.monotonic()
            self.node.prefetch_seen()
            try:
                found = await trio.to_thread.run_sync(self.node.list_new)
            except LzfsError as exc:  # a listing still answers from what is here
                log.warning("cannot look for new snapshots: %s", exc)
                return
            self.node.install(ops.ns, found, replace=False)

    def xattr(self, ops: LzfsOperations, ino: int, key: str) -> bytes | None:
        """user.lzfs.manifest / user.lzfs.error of a snapshot directory."""
        name = self.snapshot_name(ops, ino)
        if name is None:
            return None
        if key == "manifest":
            row = ops.store.db.execute("SELECT manifest FROM snapshots WHERE name=?",
                                       (name,)).fetchone()
            return row[0].encode() if row and row[0] else None
        if key == "error":
            err = self.node.errors.get(name)
            return err.encode() if err else None
        return None


def _subtree(db, ino: int) -> list[int]:
    out, stack = [], [ino]
    while stack:
        d = stack.pop()
        out.append(d)
        stack.extend(i for (i,) in db.execute("SELECT ino FROM dentries WHERE parent=?", (d,)))
    return out
