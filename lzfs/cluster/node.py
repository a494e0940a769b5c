"""One node of a cluster: its working store (the cache directory), the object store, and the
traffic between them: publishing snapshot directories, importing published ones, and reading
remote frames through the segment cache.

Pack ids: the working store's own packs keep their small ids (packs/NNNNNNNN.pack); packs
known only as objects get ids from ``REMOTE_BASE`` up, and ``PackSet.read`` hands those to
this node. ``pack_objects`` maps both kinds to object keys (an own pack has a key once it is
uploaded).
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import xxhash

from ..errors import CorruptDataError, LzfsError, NotAStoreError
from ..namespace import ROOT_INODE, FsError, Namespace
from ..store import Store, layout
from ..store.packs import REMOTE_BASE, pack_name
from . import manifest
from .backend import Backend, Counters, RemoteError
from .cache import SegmentCache

log = logging.getLogger(__name__)

CONFIG_KEY = "lzfs.json"
PACKS_PREFIX = "packs/"
NODE_FILE = "node.json"
SEGMENTS = "segments"
# Segments fetched ahead of each one a read or the readahead asks for (within the object): a
# restore reads a pack mostly in order, so this keeps several GETs in flight from the start.
AHEAD_SEGMENTS = 3
DEFAULT_GRACE = 24 * 3600.0

_TABLES = """
    -- Object key of each pack: an own pack once uploaded, or a pack known from a manifest
    -- (id >= REMOTE_BASE). verified: unix time its object was last seen or written.
    CREATE TABLE IF NOT EXISTS pack_objects (
        pack      INTEGER PRIMARY KEY,
        key       TEXT NOT NULL UNIQUE,
        verified  REAL NOT NULL DEFAULT 0
    );
    -- Top-level directories this node published or imported. origin: 'local' (written here,
    -- published at fsyncdir and unmount) or 'remote' (imported; local writes stay local).
    CREATE TABLE IF NOT EXISTS snapshots (
        name      BLOB PRIMARY KEY,
        origin    TEXT NOT NULL,
        manifest  TEXT,
        digest    TEXT
    );
    -- Manifests already imported or published here: never imported again (a snapshot removed
    -- on this node stays removed here).
    CREATE TABLE IF NOT EXISTS seen_manifests (key TEXT PRIMARY KEY);
"""


@dataclass(frozen=True)
class RemoteConfig:
    format: str = "lzfs-bucket"
    version: int = 1
    avg_pages: int = 16
    max_pages: int = 64
    gc_grace_s: float = DEFAULT_GRACE
    created: float = 0.0


def remote_mkfs(backend: Backend, avg_pages: int, max_pages: int,
                grace: float = DEFAULT_GRACE) -> RemoteConfig:
    backend.check()
    if backend.head(CONFIG_KEY) is not None:
        raise NotAStoreError(f"{backend.url} already holds an lzfs store")
    if backend.list(""):
        raise NotAStoreError(f"{backend.url} is not empty; mkfs wants an empty prefix")
    cfg = RemoteConfig(avg_pages=avg_pages, max_pages=max_pages, gc_grace_s=grace,
                       created=time.time())
    backend.put(CONFIG_KEY, (json.dumps(asdict(cfg), indent=2) + "\n").encode())
    return cfg


def read_remote_config(backend: Backend) -> RemoteConfig:
    backend.check()
    from .backend import NoSuchObject

    try:
        raw = json.loads(backend.get(CONFIG_KEY))
    except NoSuchObject:
        raise NotAStoreError(f"{backend.url} is not an lzfs store (no {CONFIG_KEY}); create "
                             f"one with 'lzfs mkfs'") from None
    except ValueError as exc:
        raise NotAStoreError(f"{backend.url}/{CONFIG_KEY} is unreadable: {exc}") from None
    if raw.get("format") != "lzfs-bucket":
        raise NotAStoreError(f"{backend.url}/{CONFIG_KEY} is not an lzfs store config")
    if raw.get("version", 99) > 1:
        raise LzfsError(f"{backend.url} has bucket format {raw.get('version')}: upgrade lzfs")
    return RemoteConfig(**{k: raw[k] for k in RemoteConfig.__dataclass_fields__ if k in raw})


def prepare_cache(cache_dir: Path, backend: Backend, cfg: RemoteConfig) -> str:
    """Make ``cache_dir`` a working store for this bucket (mkfs on first use). Returns the
    node id. A cache directory belongs to one bucket: pointing it at another is refused."""
    node_file = cache_dir / NODE_FILE
    if not (cache_dir / layout.CONFIG).exists():
        layout.mkfs(cache_dir, avg_pages=cfg.avg_pages, max_pages=cfg.max_pages,
                    allow_log=True)
        node = f"{socket.gethostname()[:24]}.{uuid.uuid4().hex[:6]}".replace("/", "_")
        node_file.write_text(json.dumps({"url": backend.url, "node": node}) + "\n")
    try:
        info = json.loads(node_file.read_text())
    except (OSError, ValueError):
        raise NotAStoreError(f"{cache_dir} is an lzfs store but not a node cache; give "
                             f"--cache an empty or new directory") from None
    if info.get("url") != backend.url:
        raise NotAStoreError(f"{cache_dir} caches {info.get('url')}, not {backend.url}; give "
                             f"each store its own --cache directory")
    local = layout.read_config(cache_dir)
    if (local.avg_pages, local.max_pages) != (cfg.avg_pages, cfg.max_pages):
        raise NotAStoreError(f"{cache_dir} cuts blocks differently from {backend.url}")
    return info["node"]


class ClusterNode:
    """Attach to an open working store; call ``close`` after the store's last read."""

    def __init__(self, store: Store, backend: Backend, node: str, cache_limit: int,
                 grace: float = DEFAULT_GRACE) -> None:
        self.store = store
        self.backend = backend
        self.node = node
        self.grace = grace
        self.counters = Counters()
        self.segments = SegmentCache(backend, store.root / SEGMENTS, cache_limit, self.counters)
        self.errors: dict[bytes, str] = {}  # snapshot name -> last publication error
        db = store.db
        db.conn.executescript(_TABLES)  # commits the (empty) open transaction first
        db.conn.execute("BEGIN")
        self.keys: dict[int, str] = dict(db.execute("SELECT pack, key FROM pack_objects"))
        self.ids: dict[str, int] = {k: p for p, k in self.keys.items()}
        for pack, end in db.execute("SELECT pack, MAX(off + rlen) FROM frames WHERE pack >= ? "
                                    "GROUP BY pack", (REMOTE_BASE,)):
            if pack in self.keys:
                self.segments.sizes[self.keys[pack]] = end
        store.packs.remote = self
        self.trimmed: set[int] = {p for p in self.keys if p < REMOTE_BASE and not (
            store.root / layout.PACKS / pack_name(p)).exists()}
        if not store.readonly and store.packs.write_id in self.keys:
            store.packs.seal()  # an uploaded pack is immutable: never append to it again
        self.last_refresh = 0.0

    # ---- remote reads (any thread), called by PackSet --------------------------------------

    def read(self, pack_id: int, off: int, length: int) -> bytes:
        key = self.keys.get(pack_id)
        if key is None:
            raise CorruptDataError(f"pack {pack_id} has no object key")
        try:
            data = self.segments.read(key, off, length)
        except RemoteError as exc:
            raise CorruptDataError(f"cannot read {key}: {exc}") from None
        if len(data) != length:
            self.segments.drop(key, off, length)
            raise CorruptDataError(f"object {key} is shorter than its frame at {off}")
        return data

    def has(self, pack_id: int) -> bool:
        return pack_id in self.keys

    def warm(self, locs: list[tuple[int, int, int]]) -> None:
        self.segments.prefetch([(self.keys[p], off, n) for p, off, n in locs
                                if (p >= REMOTE_BASE or p in self.trimmed) and p in self.keys],
                               AHEAD_SEGMENTS)

    def trim_own_packs(self) -> list[int]:
        """Keep the node's disk within ``--cache-size``: delete the local copies of its own
        uploaded packs, oldest first, while they and the fetched segments are over the limit;
        their frames are read from the objects from then on (blocking)."""
        packs_dir = self.store.root / layout.PACKS
        own = []
        for p in sorted(self.keys):
            if p >= REMOTE_BASE or p == self.store.packs.write_id or p in self.trimmed:
                continue
            try:
                own.append((p, (packs_dir / pack_name(p)).stat().st_blocks * 512))
            except FileNotFoundError:
                self.trimmed.add(p)
        total = sum(n for _, n in own) + self.segments.describe()["cached_bytes"]
        done = []
        for p, n in own:
            if total <= self.segments.limit:
                break
            self.segments.sizes[self.keys[p]] = (packs_dir / pack_name(p)).stat().st_size
            self.trimmed.add(p)
            self.store.packs.remove(p)
            total -= n
            done.append(p)
        return done

    def forget_cached(self, pack_id: int, off: int, length: int) -> None:
        if pack_id in self.keys:
            self.segments.drop(self.keys[pack_id], off, length)

    # ---- importing published snapshots -------------------------------------------------------

    def list_new(self) -> list[tuple[bytes, str, dict]]:
        """Newest manifest of each snapshot name not yet seen here, fetched and checked
        (blocking: run in a thread). Returns (name, key, manifest)."""
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

    def install(self, ns: Namespace, found: list[tuple[bytes, str, dict]],
                replace: bool) -> list[bytes]:
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
                manifest.remove_tree(db, ns, existing)
            for k in doc["packs"]:
                if k not in self.ids:
                    pid = max([REMOTE_BASE - 1, *(p for p in self.keys if p >= REMOTE_BASE)]) + 1
                    db.execute("INSERT INTO pack_objects(pack, key, verified) VALUES (?,?,?)",
                               (pid, k, time.time()))
                    self.keys[pid] = k
                    self.ids[k] = pid
            manifest.install(db, ns, doc, self.ids)
            for p, off, rlen, *_ in doc["frames"]:
                k = doc["packs"][p]
                self.segments.sizes[k] = max(self.segments.sizes.get(k, 0), off + rlen)
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

    # ---- publishing ------------------------------------------------------------------------

    def origin(self, name: bytes) -> str:
        row = self.store.db.execute("SELECT origin FROM snapshots WHERE name=?",
                                    (name,)).fetchone()
        return row[0] if row else "local"

    def manifest_of(self, name: bytes) -> str | None:
        """The key of the manifest this snapshot was last published or imported as."""
        row = self.store.db.execute("SELECT manifest FROM snapshots WHERE name=?",
                                    (name,)).fetchone()
        return row[0] if row else None

    def forget_snapshot(self, name: bytes) -> None:
        self.store.db.execute("DELETE FROM snapshots WHERE name=?", (name,))

    def published_digest(self, name: bytes) -> str | None:
        row = self.store.db.execute("SELECT digest FROM snapshots WHERE name=?",
                                    (name,)).fetchone()
        return row[0] if row else None

    def upload_packs(self, pack_ids: set[int]) -> dict[int, str]:
        """Upload own packs (sealed) the manifest names and that have no object yet, and make
        sure every own pack it names was written or seen within half the grace period, so gc
        cannot take it before the manifest is up (blocking; parallel PUTs)."""
        todo = [p for p in pack_ids if p < REMOTE_BASE]
        shared = [p for p in pack_ids if p >= REMOTE_BASE]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self._renew_shared, shared))
            return {p: k for p, k in zip(todo, pool.map(self._upload_one, todo)) if k}

    def _renew_shared(self, pack_id: int) -> None:
        """A pack another node published that this snapshot reuses through dedup: it must
        still be there, and young enough that no gc takes it before our manifest is up."""
        key = self.keys[pack_id]
        info = self.backend.head(key)
        if info is None:
            raise RemoteError(f"pack object {key}, which this snapshot shares with another, "
                              f"is gone from {self.backend.url}; dump the snapshot again")
        if info.mtime < time.time() - self.grace / 2:
            self.backend.touch(key)

    def put_manifest(self, key: str, data: bytes, doc: dict) -> None:
        """PUT a manifest, then check that every pack it names is still there: a gc that
        listed the packs before a renewal and the manifests before this PUT may have taken
        one. If so the manifest is withdrawn and the publication fails (publish again)."""
        self.backend.put(key, data)
        gone = [k for k in doc["packs"] if self.backend.head(k) is None]
        if gone:
            self.backend.delete(key)
            raise RemoteError(f"pack object {gone[0]} vanished while the snapshot was published "
                              f"(a concurrent gc?); nothing was published, publish again")

    def _upload_one(self, pack_id: int) -> str:
        """Upload one own pack under the hash of its bytes, or renew the object it already has.

        A pack that has a key is never uploaded again with other bytes: gc may have punched
        holes in the local copy since, and other nodes read the object by offsets."""
        path = self.store.root / layout.PACKS / pack_name(pack_id)
        key = self.keys.get(pack_id)
        info = self.backend.head(key) if key is not None else None
        if info is not None:
            if info.mtime < time.time() - self.grace / 2:
                self.backend.touch(key)  # gc must see it young until the manifest is up
            return key
        fresh = f"{PACKS_PREFIX}{_file_hash(path)}.pack"
        if key is not None and fresh != key:
            raise RemoteError(f"pack object {key} is gone from {self.backend.url} and the "
                              f"local pack {pack_id} has changed since; this snapshot cannot "
                              f"be published (dump it again)")
        self.backend.put_file(fresh, path)  # idempotent: same name, same bytes
        self.counters.put(path.stat().st_size)
        return fresh

    def record_uploads(self, uploaded: dict[int, str]) -> None:
        now = time.time()
        for p, k in uploaded.items():
            self.store.db.execute("INSERT OR REPLACE INTO pack_objects(pack, key, verified) "
                                  "VALUES (?,?,?)", (p, k, now))
            self.keys[p] = k
            self.ids[k] = p

    def config_doc(self) -> dict:
        c = self.store.config
        return {"avg_pages": c.avg_pages, "max_pages": c.max_pages}

    def record_published(self, name: bytes, key: str, dig: str) -> None:
        db = self.store.db
        db.execute("INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)",
                   (name, self.origin(name), key, dig))
        db.execute("INSERT OR IGNORE INTO seen_manifests VALUES (?)", (key,))
        self.errors.pop(name, None)

    def describe(self) -> dict:
        return {"url": self.backend.url, "node": self.node, **self.segments.describe()}

    def close(self) -> None:
        self.segments.close()


def _file_hash(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_all(backend: Backend) -> list[tuple[str, dict]]:
    """Every manifest in the store (for gc and reports)."""
    return [(o.key, manifest.decode(backend.get(o.key), o.key))
            for o in backend.list(manifest.PREFIX) if manifest.name_of(o.key) is not None]
