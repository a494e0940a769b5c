"""The bucket's format and a node cache's set-up: the store config object (`lzfs.json`), remote
mkfs, turning a local directory into a node's working store, the tables a node cache adds to
the metadata DB, and reading every manifest (for gc and reports).

Pack ids: the working store's own packs keep their small ids (packs/NNNNNNNN.pack); packs
known only as objects get ids from ``REMOTE_BASE`` up, and ``PackSet.read`` hands those to
the node (objects.py). ``pack_objects`` maps both kinds to object keys (an own pack has a key
once it is uploaded).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from lzfs.cluster import manifest
from lzfs.cluster.options import NODE_FILE
from lzfs.errors import LzfsError, NotAStoreError
from lzfs.objectstore.protocol import Backend, NoSuchObject
from lzfs.store import layout

CONFIG_KEY = "lzfs.json"
PACKS_PREFIX = "packs/"
SEGMENTS = "segments"
DEFAULT_GRACE = 24 * 3600.0

NODE_TABLES = """
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


def remote_mkfs(backend: Backend, avg_pages: int = 16, max_pages: int = 64,
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
        if cache_dir.is_dir() and any(e.name != layout.LOG for e in cache_dir.iterdir()):
            raise NotAStoreError(f"--cache {cache_dir} is not empty and not a node cache: give "
                                 f"--cache an empty or new directory")
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
    return str(info["node"])


def fetch_manifests(backend: Backend, keys: Iterable[str], workers: int = 8,
                    ahead: int = 32) -> Iterator[tuple[str, dict]]:
    """(key, decoded manifest) for each of ``keys``, in order, fetched ``workers`` at a time
    with at most ``ahead`` waiting: streaming, so memory holds a window of manifests, never
    all of them (gc and reports of buckets with thousands of snapshots)."""
    def get(key: str) -> dict:
        return manifest.decode(backend.get(key), key)

    pool = ThreadPoolExecutor(workers, thread_name_prefix="lzfs-manifest")
    it = iter(keys)
    window: deque[tuple[str, Future[dict]]] = deque()
    try:
        for key in it:
            window.append((key, pool.submit(get, key)))
            if len(window) >= ahead:
                k, fut = window.popleft()
                yield k, fut.result()
        while window:
            k, fut = window.popleft()
            yield k, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def pack_bytes(backend: Backend) -> int:
    """What the bucket's pack objects occupy (one listing of packs/)."""
    return sum(o.size for o in backend.list(PACKS_PREFIX))
