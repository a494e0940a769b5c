"""Snapshots between this node and the bucket: which published snapshots the node knows (by
name, and imported on first use), and the object-store side of publishing this node's own
(uploading packs, putting the manifest, recording both). The order of a publication, and why
it is safe, is in sync.py; the grace-period rule it relies on is in gc.py.

Import is lazy. A listing (listing.py) gives the newest manifest key of every name without a
GET; each name the node does not hold yet becomes an empty top-level directory, a **stub**
(origin 'stub' in the ``snapshots`` table, its key recorded), so `ls` of the root lists every
snapshot. The first lookup or listing inside a stub fetches that one manifest and installs it
into the stub (``fill``): a restore fetches its own manifest and packs, nothing per other
snapshot, and the mount costs one listing plus a row per name.

This module is the one owner of the ``snapshots`` and ``seen_manifests`` tables.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xxhash

from lzfs.cluster import hookindex, manifest
from lzfs.cluster.bucket import DEFAULT_GRACE, PACKS_PREFIX, fetch_manifests
from lzfs.cluster.clock import BucketClock
from lzfs.cluster.listing import BucketView, journal_key
from lzfs.cluster.objects import PackObjects
from lzfs.objectstore.protocol import Backend, NoSuchObject, RemoteError
from lzfs.store import layout
from lzfs.store.namespace import ROOT_INODE, Namespace
from lzfs.store.packs import REMOTE_BASE, pack_name
from lzfs.store.pagetable import decode_table
from lzfs.store.store import Store

log = logging.getLogger(__name__)

UNPUBLISHED = "unpublished.json"  # in the cache: what the last unmount could not publish


class Exchange:
    def __init__(self, store: Store, backend: Backend, node: str, objects: PackObjects,
                 clock: BucketClock, grace: float = DEFAULT_GRACE) -> None:
        self.store = store
        self.backend = backend
        self.clock = clock  # the object store's time: keys and grace periods (clock.py)
        self.node = node
        self.objects = objects
        self.grace = grace
        self.errors: dict[bytes, str] = {}  # snapshot name -> last publication error
        self.last_refresh = 0.0
        self.view = BucketView(backend, grace, clock)
        # snapshots known by name only: directory inode -> (name, manifest key)
        self.stubs: dict[int, tuple[bytes, str]] = {}
        top = store.ns.top_dirs()
        for name, key in store.db.execute(
                "SELECT name, manifest FROM snapshots WHERE origin = 'stub'"):
            ino = top.get(bytes(name))
            if ino is not None:
                self.stubs[ino] = (bytes(name), key)
        try:
            left = json.loads((store.root / UNPUBLISHED).read_text())
            self.errors.update((n.encode("utf-8", "surrogateescape"), why)
                               for n, why in left.items())
        except (OSError, ValueError):
            pass

    # ---- knowing what is published -----------------------------------------------------------

    def apply(self, ns: Namespace, newest: Mapping[bytes, str | None], at_mount: bool
              ) -> list[bytes]:
        """Bring the root in line with the bucket (DB thread): a stub for each name not held
        here, a stub's key moved to a newer manifest, stubs of deleted names removed. At mount,
        before the kernel holds any inode, an imported snapshot with a newer manifest goes back
        to a stub, and one deleted from the bucket goes; while mounted imported ones stay. A
        name written on this node is never replaced by another's. Returns the names changed."""
        db = self.store.db
        seen, rows, root = self._state(newest, at_mount)
        names = dict(newest)
        if at_mount:  # held here as published, but no longer in the bucket at all
            names.update((n, None) for n, (o, _) in rows.items()
                         if o in ("stub", "remote") and n not in names)
        done = []
        new: list[tuple[bytes, str]] = []
        for name, key in sorted(names.items()):
            origin, old = rows.get(name, (None, None))
            ino = root.get(name)
            if key is None or manifest.is_tombstone(key):
                if ino is not None and origin == "stub":
                    self._drop_stub(ns, ino, name, at_mount)
                elif ino is not None and origin == "remote" and at_mount:
                    manifest.remove_tree(self.store, ns, ino)
                    self.forget_snapshot(name)
                else:
                    continue
                log.info("snapshot %s was deleted from the bucket",
                         name.decode(errors="replace"))
                done.append(name)
                continue
            if key in seen or key == old:
                continue
            if ino is None:
                new.append((name, key))
            elif origin == "stub":
                db.execute("UPDATE snapshots SET manifest=? WHERE name=?", (key, name))
                self.stubs[ino] = (name, key)
            elif origin == "remote" and at_mount:
                manifest.remove_tree(self.store, ns, ino)
                new.append((name, key))
            else:
                if origin == "local":
                    log.warning("snapshot %s: keeping this node's version; %s is another",
                                name.decode(errors="replace"), key)
                    db.execute("INSERT OR IGNORE INTO seen_manifests VALUES (?)", (key,))
                continue
            db.execute("INSERT OR IGNORE INTO seen_manifests VALUES (?)", (key,))
            done.append(name)
        inos = ns.create_dirs(ROOT_INODE, [n for n, _ in new], 0o755, 0, 0)
        db.executemany("INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)",
                       [(n, "stub", k, None) for n, k in new])
        self.stubs.update((i, nk) for i, nk in zip(inos, new, strict=True))
        return done

    def _state(self, newest: Mapping[bytes, str | None], everything: bool
               ) -> tuple[set[str], dict[bytes, tuple[str, str]], dict[bytes, int]]:
        """(seen manifest keys, name -> (origin, manifest), name -> top-level inode): all of
        them at mount, else only for the names a refresh brought (its cost is what is new)."""
        db = self.store.db
        if everything:
            return ({k for (k,) in db.execute("SELECT key FROM seen_manifests")},
                    {bytes(n): (o, k) for n, o, k in db.execute(
                        "SELECT name, origin, manifest FROM snapshots")},
                    dict(self.store.ns.children(ROOT_INODE)))
        seen: set[str] = set()
        rows: dict[bytes, tuple[str, str]] = {}
        root: dict[bytes, int] = {}
        for name, key in newest.items():
            if key and db.execute("SELECT 1 FROM seen_manifests WHERE key=?",
                                  (key,)).fetchone():
                seen.add(key)
            row = db.execute("SELECT origin, manifest FROM snapshots WHERE name=?",
                             (name,)).fetchone()
            if row is not None:
                rows[name] = (row[0], row[1])
            ino = self.store.ns.child(ROOT_INODE, name)
            if ino is not None:
                root[name] = ino
        return seen, rows, root

    def _drop_stub(self, ns: Namespace, ino: int, name: bytes, at_mount: bool) -> None:
        """Remove an empty stub directory (while mounted the kernel may still hold its inode:
        the row goes when the kernel forgets it, or at the next mount)."""
        ns.unlink(ROOT_INODE, name, want_dir=True)
        if at_mount:
            ns.delete(ino)
        self.forget_snapshot(name)
        self.stubs.pop(ino, None)

    def look(self, full: bool) -> Mapping[bytes, str | None]:
        """What changed in the bucket (blocking: run in a thread): every name's newest key
        (``full``, at mount), else only what the journal announces since the last look."""
        return self.view.full() if full else self.view.changes()

    def refresh_now(self, ns: Namespace, at_mount: bool) -> list[bytes]:
        """List and apply in this thread (at mount, and for tools)."""
        got = self.apply(ns, self.look(full=at_mount), at_mount)
        self.last_refresh = time.monotonic()
        return got

    # ---- importing a snapshot's manifest ---------------------------------------------------

    def fetch(self, key: str) -> dict[str, Any]:
        """GET and check one manifest (blocking: run in a thread)."""
        data = self.backend.get(key)
        self.objects.counters.got_manifest(len(data))
        return manifest.decode(data, key)

    def fill(self, ns: Namespace, ino: int, key: str, doc: dict[str, Any]) -> bool:
        """Install a fetched manifest into its stub (DB thread). False when the stub changed
        meanwhile (a newer key, or gone): fetch again or give up."""
        stub = self.stubs.get(ino)
        if stub is None or stub[1] != key:
            return False
        name = stub[0]
        for k in doc["packs"]:
            self.objects.remote_id(k)
        manifest.install(self.store, ns, doc, self.objects.ids, top=ino)
        for p, off, rlen, *_ in doc["frames"]:
            self.objects.saw_frame_end(doc["packs"][p], off + rlen)
        self.store.db.execute("INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)",
                              (name, "remote", key, None))
        del self.stubs[ino]
        log.info("imported snapshot %s from %s", name.decode(errors="replace"), key)
        return True

    def adopt(self, doc: dict[str, Any]) -> list[int]:
        """Add a manifest's frames to the store without its tree (DB thread), so that a dump
        deduplicates against a snapshot it never imported (hookindex.py). Frames the store
        holds already are skipped; the rest have no reference, and the caller holds them
        (pinned) while dumps may use them (bucketdedup.py). Returns the frames added."""
        added: list[int] = []
        frames, tables = manifest.frames_and_tables(doc)
        for (p, off, rlen, st, raw, codec), table in zip(frames, tables, strict=True):
            key = doc["packs"][p]
            own = self.objects.ids.get(key)
            if own is not None and own < REMOTE_BASE:
                continue  # this node's pack: a frame gc took may be a hole in it by now
            pid = self.objects.remote_id(key)
            self.objects.saw_frame_end(key, off + rlen)
            if self.store.frames.at(pid, off) is None and table:
                added.append(self.store.add_frame(pid, off, rlen, st, raw, codec,
                                                  decode_table(table)))
        return added

    def fill_all(self, ns: Namespace, inos: Iterable[int]) -> int:
        """Import the given stubs now, fetching manifests in parallel and installing them one
        at a time (reports, and the recent snapshots a mount imports for dedup)."""
        todo = [(ino, self.stubs[ino][1]) for ino in inos if ino in self.stubs]
        n = 0
        for (ino, key), (_, doc) in zip(todo, fetch_manifests(self.backend,
                                                              [k for _, k in todo]),
                                        strict=True):
            self.objects.counters.got_manifest(0)
            n += self.fill(ns, ino, key, doc)
        return n

    def recent_stubs(self, n: int) -> list[int]:
        """The ``n`` stubs published most recently."""
        return sorted(self.stubs, key=lambda i: manifest.time_of(self.stubs[i][1]))[-n:] \
            if n > 0 else []

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
        if self.errors.pop(name, None) is not None:  # removed: nothing waits any more
            self.save_unpublished()

    # ---- publishing ------------------------------------------------------------------------

    def upload_packs(self, pack_ids: set[int]) -> tuple[dict[int, str], list[str]]:
        """Upload own packs (sealed) the manifest names and that have no object yet, and make
        sure every pack it names is younger than half the grace period, so gc cannot take it
        before the manifest is up (blocking; parallel requests). Returns the uploads and the
        keys renewed here, which the manifest PUT must check again (gc.py says why only those).
        An own pack uploaded or seen young within half the grace period costs no request."""
        todo = [p for p in pack_ids if p < REMOTE_BASE]
        shared = [p for p in pack_ids if p >= REMOTE_BASE]
        if len(todo) + len(shared) <= 1:  # a small snapshot: no pool to start and stop
            results = [self._renew_shared(p) for p in shared] + \
                      [self._upload_one(p) for p in todo]
        else:
            with ThreadPoolExecutor(4) as pool:
                results = list(pool.map(self._renew_shared, shared)) + \
                          list(pool.map(self._upload_one, todo))
        renewed = [k for k, _, touched in results if touched]
        uploaded = {p: k for p, (k, fresh, touched) in zip(shared + todo, results, strict=True)
                    if p < REMOTE_BASE and (fresh or touched)}
        return uploaded, renewed

    def _renew_shared(self, pack_id: int) -> tuple[str, bool, bool]:
        """A pack another node published that this snapshot reuses through dedup: it must
        still be there, and young enough that no gc takes it before our manifest is up."""
        key = self.objects.keys[pack_id]
        gone = RemoteError(f"pack object {key}, which this snapshot shares with another, is "
                           f"gone from {self.backend.url}; dump the snapshot again")
        info = self.backend.head(key)
        if info is None:
            raise gone
        if info.mtime < self.clock.now() - self.grace / 2:
            try:
                self.backend.touch(key)
            except NoSuchObject:  # taken by a gc since the HEAD
                raise gone from None
            return key, False, True
        return key, False, False

    def _upload_one(self, pack_id: int) -> tuple[str, bool, bool]:
        """Upload one own pack under the hash of its bytes, or renew the object it already has:
        (key, uploaded now, renewed now).

        A pack that has a key is never uploaded again with other bytes: gc may have punched
        holes in the local copy since, and other nodes read the object by offsets."""
        path = self.store.root / layout.PACKS / pack_name(pack_id)
        key = self.objects.keys.get(pack_id)
        if key is not None and self.objects.young(pack_id, self.grace / 2):
            return key, False, False  # written (or renewed) by us lately: gc keeps it
        info = self.backend.head(key) if key is not None else None
        if key is not None and info is not None:
            if info.mtime >= self.clock.now() - self.grace / 2:
                return key, False, False
            try:
                self.backend.touch(key)  # gc must see it young until the manifest is up
                return key, False, True
            except NoSuchObject:  # taken by a gc since the HEAD: send it again (below)
                pass
        fresh = f"{PACKS_PREFIX}{_file_hash(path)}.pack"
        if key is not None and fresh != key:
            raise RemoteError(f"pack object {key} is gone from {self.backend.url} and the "
                              f"local pack {pack_id} has changed since; this snapshot cannot "
                              f"be published (dump it again)")
        self.backend.put_file(fresh, path)  # idempotent: same name, same bytes
        self.objects.counters.put(path.stat().st_size)
        return fresh, True, False

    def put_manifest(self, key: str, doc: dict[str, Any], renewed: list[str],
                     own: set[str]) -> None:
        """PUT a manifest, then check that every pack renewed for it is still there: a gc that
        HEADed one just before its renewal may have taken it. If so the manifest is withdrawn
        and the publication fails (publish again). Then publish the hooks of the frames in
        ``own`` packs (this node's) to the bucket's page index, and announce the manifest in
        the journal."""
        self.backend.put(key, manifest.encode(doc))
        gone = [k for k in renewed if self.backend.head(k) is None]
        if gone:
            self.backend.delete(key)
            raise RemoteError(f"pack object {gone[0]} vanished while the snapshot was published "
                              f"(a concurrent gc?); nothing was published, publish again")
        try:
            hookindex.put_delta(self.backend, key, doc, own, self.node, self.clock.now_ns())
        except RemoteError as exc:  # the snapshot is published; only wider dedup misses it
            log.warning("published %s, but not its page index (%s): other nodes deduplicate "
                        "against it once a bucket gc has run", key, exc)
        self.announce(key)

    def publish_deletion(self, name: bytes) -> str:
        """PUT a tombstone for ``name`` and announce it (blocking): the deletion `lzfs rm`
        publishes, from a node. Returns its key."""
        key = manifest.new_key(name, self.node, manifest.TOMBSTONE, self.clock.now_ns())
        self.backend.put(key, b"")
        self.announce(key)
        self.view.newest[name] = key
        return key

    def announce(self, key: str) -> None:
        """The journal entry other nodes find new snapshots by (listing.py); without it they
        find this one at their next mount, so a failure is only logged."""
        try:
            self.backend.put(journal_key(key, self.clock.now_ns()), b"")
        except RemoteError as exc:
            log.warning("published %s, but could not add it to the journal (%s): other "
                        "nodes see it at their next mount", key, exc)

    def config_doc(self) -> dict[str, int]:
        c = self.store.config
        return {"avg_pages": c.avg_pages, "max_pages": c.max_pages}

    def record_published(self, name: bytes, key: str, dig: str) -> None:
        db = self.store.db
        db.execute("INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)",
                   (name, self.origin(name), key, dig))
        db.execute("INSERT OR IGNORE INTO seen_manifests VALUES (?)", (key,))
        if self.errors.pop(name, None) is not None:
            self.save_unpublished()

    def failed(self, name: bytes, why: str) -> None:
        self.errors[name] = why
        self.save_unpublished()

    # ---- what waits to be published ------------------------------------------------------------

    def awaiting(self) -> dict[str, str]:
        """Snapshots written on this node that are not published (name -> why): never
        published yet, or their last publication failed (also one the last unmount could not
        publish). One changed since its publication is published at unmount, not listed."""
        out = {n.decode(errors="replace"): why for n, why in self.errors.items()}
        known = {bytes(n) for (n,) in self.store.db.execute("SELECT name FROM snapshots")}
        for name in self.store.ns.top_dirs().keys() - known:
            out.setdefault(name.decode(errors="replace"), "not published yet")
        return dict(sorted(out.items()))

    def save_unpublished(self) -> None:
        """Keep the failed publications in the cache (UNPUBLISHED), for `lzfs umount` to say
        after the last one, and `lzfs stats`/`report` and the next mount to list."""
        path = self.store.root / UNPUBLISHED
        if self.errors:
            path.write_text(json.dumps({n.decode("utf-8", "surrogateescape"): why
                                        for n, why in self.errors.items()}) + "\n")
        else:
            path.unlink(missing_ok=True)


def _file_hash(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()
