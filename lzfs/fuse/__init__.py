"""The FUSE adapter: pyfuse3 requests to calls on the core, and the read-only `.lzfs/` tree."""
