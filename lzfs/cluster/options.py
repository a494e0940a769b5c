"""How a node reaches its object store and what it keeps (``RemoteOptions``), with the
defaults the cluster code owns. Imports nothing heavy: the `lzfs` command reads the defaults
for its options and help texts."""

from __future__ import annotations

from dataclasses import dataclass

CACHE_SIZE = 10 << 30  # bytes of remote segments kept on a node's disk
REFRESH = 10.0         # seconds between looks for newly published snapshots
IMPORT_RECENT = 16     # snapshots imported at mount, most recently published first
NODE_FILE = "node.json"  # in a node's cache directory: which bucket it caches, the node's id


@dataclass(frozen=True)
class RemoteOptions:
    endpoint: str | None = None
    profile: str | None = None
    cache: str | None = None          # the node's cache directory (its working store)
    cache_size: int = CACHE_SIZE
    refresh: float = REFRESH
    import_recent: int = IMPORT_RECENT
