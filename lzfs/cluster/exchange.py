"""Snapshots between this node and the bucket: importing what other nodes published into the
working store, and the object-store side of publishing this node's own (uploading packs,
putting the manifest, recording both). The order of a publication, and why it is safe, is in
sync.py; the grace-period rule it relies on is in gc.py.

This module is the one owner of the ``snapshots`` and ``seen_manifests`` tables.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xxhash

from ..namespace import ROOT_INODE, FsError, Namespace
from ..store import Store, layout
from ..store.packs import REMOTE_BASE, pack_name
from . import manifest
from .backend import Backend, RemoteError
from .bucket import DEFAULT_GRACE, PACKS_PREFIX
from .objects import PackObjects

log = logging.getLogger(__name__)

Found = list[tuple[bytes, str, dict[str, Any]]]  # (snapshot name, manifest key, manifest)


class Exchange:
    def __init__(self, store: Store, backend: Backend, node: str, objects: PackObjects,
                 grace: float = DEFAULT_GRACE) -> None:
        self.store = store
        self.backend = backend
        self.node = node
        self.objects = objects
        self.grace = grace
        self.errors: dict[bytes, str] = {}  # snapshot name -> last publication error
        self.last_refresh = 0.0
        self._seen: set[str] = set()

    # ---- importing published snapshots -------------------------------------------------------

    def list_new(self) -> Found:
        """Newest manifest of each snapshot name not yet seen here, fetched and checked
        (blocking: run in a thread, after ``prefetch_seen``)."""
        newest = manifest.newest_per_name([o.key for o in self.backend.list(manifest.PREFIX)])
        seen = self._seen
        out = []
        for name, key in sorted(newest.items()):
            if key not in seen:
                out.append((name, key, manifest.decode(self.backend.get(key), key)))
        return out

    def prefetch_seen(self) -> None:
        """Read the seen set on the DB thread before list_new runs in a worker thread."""
        self._seen = {k for (k,) in self.store.db.execute("SELECT key FROM seen_manifests")}

    def install(self, ns: Namespace, found: Found, replace: bool) -> list[bytes]:
        """Add published snapshots to the namespace (DB thread). An imported snapshot with a
        newer manifest is replaced only when ``replace`` (at mount, before the kernel holds
        any of its inodes); a name written on this node is never replaced by another's."""
        db = self.store.db
        done = []
        for name, key, doc in found:
            row = db.execute("SELECT origin FROM snapshots WHERE name=?", (name,)).fetchone()
            try:
                existing = ns.lookup(ROOT_INODE, name)
            except FsError:
                existing = None
            if existing is not None:
                if row is None or row[0] != "remote" or not replace:
                    if row is not None and row[0] == "local":
                        log.warning("snapshot %s: keeping this node's version; %s is another",
                                    name.decode(errors="replace"), key)
                        db.execute("INSERT OR IGNORE INTO seen_manifests VALUES (?)", (key,))
                    continue
                manifest.remove_tree(self.store, ns, existing)
            for k in doc["packs"]:
                self.objects.remote_id(k)
            manifest.install(self.store, ns, doc, self.objects.ids)
            for p, off, rlen, *_ in doc["frames"]:
                self.objects.saw_frame_end(doc["packs"][p], off + rlen)
            db.execute("INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)",
                       (name, "remote", key, None))
            db.execute("INSERT OR IGNORE INTO seen_manifests VALUES (?)", (key,))
            log.info("imported snapshot %s from %s", name.decode(errors="replace"), key)
            done.append(name)
        return done

    def refresh_now(self, ns: Namespace, replace: bool) -> list[bytes]:
        """List, fetch and install in this thread (at mount, and for tools)."""
        self.prefetch_seen()
        got = self.install(ns, self.list_new(), replace)
        self.last_refresh = time.monotonic()
        return got

    # ---- what this node holds ----------------------------------------------------------------

    def origin(self, name: bytes) -> str:
        row = self.store.db.execute("SELECT origin FROM snapshots WHERE name=?",
                                    (name,)).fetchone()
        return row[0] if row else "local"

    def published_digest(self, name: bytes) -> str | None:
        row = self.store.db.execute("SELECT digest FROM snapshots WHERE name=?",
                                    (name,)).fetchone()
        return row[0] if row else None

    def manifest_of(self, name: bytes) -> str | None:
        """The key of the manifest this snapshot was last published or imported as."""
        row = self.store.db.execute("SELECT manifest FROM snapshots WHERE name=?",
                                    (name,)).fetchone()
        return row[0] if row else None

    def forget_snapshot(self, name: bytes) -> None:
        self.store.db.execute("DELETE FROM snapshots WHERE name=?", (name,))

    # ---- publishing ------------------------------------------------------------------------

    def upload_packs(self, pack_ids: set[int]) -> dict[int, str]:
        """Upload own packs (sealed) the manifest names and that have no object yet, and make
        sure every own pack it names was written or seen within half the grace period, so gc
        cannot take it before the manifest is up (blocking; parallel PUTs)."""
        todo = [p for p in pack_ids if p < REMOTE_BASE]
        shared = [p for p in pack_ids if p >= REMOTE_BASE]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self._renew_shared, shared))
            keys = list(pool.map(self._upload_one, todo))
        return {p: k for p, k in zip(todo, keys, strict=True) if k}

    def _renew_shared(self, pack_id: int) -> None:
        """A pack another node published that this snapshot reuses through dedup: it must
        still be there, and young enough that no gc takes it before our manifest is up."""
        key = self.objects.keys[pack_id]
        info = self.backend.head(key)
        if info is None:
            raise RemoteError(f"pack object {key}, which this snapshot shares with another, "
                              f"is gone from {self.backend.url}; dump the snapshot again")
        if info.mtime < time.time() - self.grace / 2:
            self.backend.touch(key)

    def _upload_one(self, pack_id: int) -> str:
        """Upload one own pack under the hash of its bytes, or renew the object it already has.

        A pack that has a key is never uploaded again with other bytes: gc may have punched
        holes in the local copy since, and other nodes read the object by offsets."""
        path = self.store.root / layout.PACKS / pack_name(pack_id)
        key = self.objects.keys.get(pack_id)
        info = self.backend.head(key) if key is not None else None
        if key is not None and info is not None:
            if info.mtime < time.time() - self.grace / 2:
                self.backend.touch(key)  # gc must see it young until the manifest is up
            return key
        fresh = f"{PACKS_PREFIX}{_file_hash(path)}.pack"
        if key is not None and fresh != key:
            raise RemoteError(f"pack object {key} is gone from {self.backend.url} and the "
                              f"local pack {pack_id} has changed since; this snapshot cannot "
                              f"be published (dump it again)")
        self.backend.put_file(fresh, path)  # idempotent: same name, same bytes
        self.objects.counters.put(path.stat().st_size)
        return fresh

    def put_manifest(self, key: str, data: bytes, doc: dict[str, Any]) -> None:
        """PUT a manifest, then check that every pack it names is still there: a gc that
        listed the packs before a renewal and the manifests before this PUT may have taken
        one. If so the manifest is withdrawn and the publication fails (publish again)."""
        self.backend.put(key, data)
        gone = [k for k in doc["packs"] if self.backend.head(k) is None]
        if gone:
            self.backend.delete(key)
            raise RemoteError(f"pack object {gone[0]} vanished while the snapshot was published "
                              f"(a concurrent gc?); nothing was published, publish again")

    def config_doc(self) -> dict[str, int]:
        c = self.store.config
        return {"avg_pages": c.avg_pages, "max_pages": c.max_pages}

    def record_published(self, name: bytes, key: str, dig: str) -> None:
        db = self.store.db
        db.execute("INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)",
                   (name, self.origin(name), key, dig))
        db.execute("INSERT OR IGNORE INTO seen_manifests VALUES (?)", (key,))
        self.errors.pop(name, None)


def _file_hash(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()
