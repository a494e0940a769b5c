"""Block store: layout of the store directory, metadata DB, pack files, dedup and refcounts."""

from .layout import mkfs, read_config
from .store import DAMAGED_PREFIX, BlockRef, Cut, FrameLoc, Store, StoreStats

__all__ = ["DAMAGED_PREFIX", "BlockRef", "Cut", "FrameLoc", "Store", "StoreStats", "mkfs", "read_config"]
