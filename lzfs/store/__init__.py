"""Block store: layout of the store directory, metadata DB, pack files, the page index, block
maps and reference counts."""

from lzfs.store.blockmap import BlockMaps, Coverage, FrameShape, Run
from lzfs.store.layout import mkfs, read_config
from lzfs.store.store import FrameLoc, Store, StoreStats

__all__ = ["BlockMaps", "Coverage", "FrameLoc", "FrameShape", "Run", "Store", "StoreStats",
           "mkfs", "read_config"]
