"""The one native module of lzfs (lzfs/store/_codec.c: decoding frames without the GIL); the
rest of the metadata is in pyproject.toml. It links the system's liblz4 and libxxhash
(liblz4-dev and libxxhash-dev, which scripts/setup installs)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("lzfs.store._codec", ["lzfs/store/_codec.c"],
                             libraries=["lz4", "xxhash"], extra_compile_args=["-O2", "-Wall"])])
