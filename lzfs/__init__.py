"""lzfs: a compressed, deduplicating FUSE filesystem for CRIU images."""
__version__ = "0.1.0"
