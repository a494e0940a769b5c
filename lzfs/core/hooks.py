"""What a mounted store may do beyond its own disk: the few moments at which a node of an object
store (lzfs/cluster/sync.py) acts, as a protocol with a do-nothing default for a local store.

The FUSE adapter and the core call these hooks unconditionally; a local store gets
``LocalHooks``, so neither layer branches on "is this a cluster node". A hook gets no
Operations object: what it needs of the mount it was given when it was made.
"""

from __future__ import annotations

from typing import Any, Protocol


class Hooks(Protocol):
    publishing: bool
    """True while a publication uploads packs: gc must not punch frames of sealed packs
    between their collection and their upload, so it waits (the committer retries)."""

    def on_top_level_gone(self, name: bytes) -> None:
        """A directory at the mount root was removed or renamed away."""

    async def before_snapshot_removed(self, name: bytes) -> None:
        """An empty directory at the mount root is about to be removed (the end of `rm -r`):
        a chance to refuse (raise FsError) or to make it known."""

    async def on_fsyncdir(self, ino: int) -> None:
        """fsync on a directory, after the commit it asks for."""

    async def maybe_refresh_root(self) -> None:
        """A listing of the mount root begins, or a name is not found there: a chance to
        show what others published."""

    async def enter_dir(self, ino: int) -> None:
        """A lookup in, or a listing of, directory ``ino`` begins: a chance to fill it (a
        snapshot a cluster node knows by name only until then)."""

    def dir_xattr(self, ino: int, key: str) -> bytes | None:
        """user.lzfs.KEY of a directory, or None when it has none."""

    async def publish_pending(self) -> None:
        """At unmount, after the last commit."""

    def describe(self) -> dict[str, Any] | None:
        """Figures for .lzfs/stats under "remote", or None."""

    def tick(self) -> None:
        """Every few seconds on the request thread (metrics.REFRESH): housekeeping."""


class LocalHooks:
    """A store on local disk: nothing to publish, nothing to import."""

    publishing = False

    def on_top_level_gone(self, name: bytes) -> None:
        return None

    async def before_snapshot_removed(self, name: bytes) -> None:
        return None

    async def on_fsyncdir(self, ino: int) -> None:
        return None

    async def maybe_refresh_root(self) -> None:
        return None

    async def enter_dir(self, ino: int) -> None:
        return None

    def dir_xattr(self, ino: int, key: str) -> bytes | None:
        return None

    async def publish_pending(self) -> None:
        return None

    def describe(self) -> dict[str, Any] | None:
        return None

    def tick(self) -> None:
        return None
