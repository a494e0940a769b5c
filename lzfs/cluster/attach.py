"""Opening a node: the object store, its config, the cache directory as working store, and the
published snapshots imported into it. Used by the daemon, `lzfs report` and `lzfs gc`."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lzfs.cluster.bucket import prepare_cache, read_remote_config
from lzfs.cluster.node import ClusterNode
from lzfs.cluster.options import NODE_FILE, RemoteOptions
from lzfs.errors import LzfsError
from lzfs.objectstore.backend import open_backend
from lzfs.store.store import Store


def open_node(url: str, opts: RemoteOptions, readonly: bool = False
              ) -> tuple[Store, ClusterNode]:
    """Open (creating on first use) the node cache for ``url`` and list what the bucket
    publishes (exchange.py: a stub per snapshot, ``opts.import_recent`` imported). Raises
    LzfsError with one line for any bad input."""
    if not opts.cache:
        raise LzfsError(f"mounting {url} needs --cache DIR: a local directory for this node's "
                        f"working store and block cache")
    backend = open_backend(url, opts.endpoint, opts.profile)
    cfg = read_remote_config(backend)
    cache = Path(opts.cache).resolve()
    node_id = prepare_cache(cache, backend, cfg)
    info = json.loads((cache / NODE_FILE).read_text())
    info.update(spec=url, endpoint=opts.endpoint, profile=opts.profile,
                cache_size=opts.cache_size)
    (cache / NODE_FILE).write_text(json.dumps(info) + "\n")
    store = Store(cache, readonly=readonly)
    try:
        node = ClusterNode(store, backend, node_id, opts.cache_size, cfg.gc_grace_s)
        if not readonly:
            store.ns.ensure_root()
            node.mount_view(store.ns, opts.import_recent)
            store.commit()
    except BaseException:
        store.close()
        raise
    return store, node


def attach_readonly(store: Store) -> ClusterNode | None:
    """A store opened read-only beside a running node daemon: reads of remote packs go to the
    object store like the daemon's (for reports that parse images)."""
    path = store.root / NODE_FILE
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    backend = open_backend(info["spec"], info.get("endpoint"),
                           info.get("profile"))
    return ClusterNode(store, backend, info["node"], info.get("cache_size", 1 << 30))


@contextmanager
def snapshot_view(url: str, opts: RemoteOptions) -> Iterator[Store]:
    """Every published snapshot of ``url`` in a throwaway working store (no data is fetched
    until something reads it): what `lzfs report s3://...` reports on. Manifests are fetched
    in parallel and installed one at a time, so memory holds a window of them."""
    tmp = Path(tempfile.mkdtemp(prefix="lzfs-view-"))
    try:
        store, node = open_node(url, RemoteOptions(opts.endpoint, opts.profile,
                                                   str(tmp / "cache"), opts.cache_size,
                                                   import_recent=0))
        try:
            node.exchange.fill_all(store.ns, list(node.exchange.stubs))
            yield store
        finally:
            store.close()
            node.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
