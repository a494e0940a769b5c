"""The one native module of lzfs (lzfs/store/_codec.c: decoding frames without the GIL); the
rest of the metadata is in pyproject.toml. It links the system's liblz4 (liblz4-dev, which
scripts/setup installs) and compiles xxHash's header inline (libxxhash-dev)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("lzfs.store._codec", ["lzfs/store/_codec.c"], libraries=["lz4"],
                             extra_compile_args=["-O2", "-Wall"])])
