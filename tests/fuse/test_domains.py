"""Dedup domains: a store serving tenants that must not share (shared dedup would tell one
tenant whether another holds a page). Blocks dedup only within the domain they were written
in, every domain's data stays readable from any mount, and fsck verifies each frame in its
own domain."""

from __future__ import annotations

import os

from lzfs.report.fsck import fsck
from lzfs.store.store import Store
from tests.conftest import lzfs_cmd


def _unique(store) -> int:
    s = Store(store, readonly=True)
    try:
        return s.stats().unique
    finally:
        s.close()


def test_domains_never_share_blocks(mounted):
    data = os.urandom(2 << 20)
    mounted.umount()

    def mount(*opts: str) -> None:
        lzfs_cmd("mount", *opts, str(mounted.store), str(mounted.mnt))

    mount("--domain", "tenant-a")
    (mounted.mnt / "a.img").write_bytes(data)
    (mounted.mnt / "a2.img").write_bytes(data)       # same domain: stored once
    mounted.umount()
    assert _unique(mounted.store) == len(data)

    mount("-o", "domain=tenant-b")                   # the fstab spelling
    (mounted.mnt / "b.img").write_bytes(data)
    assert (mounted.mnt / "a.img").read_bytes() == data  # other domains stay readable
    mounted.umount()
    assert _unique(mounted.store) == 2 * len(data)

    mount()                                          # the default domain is a domain too
    (mounted.mnt / "c.img").write_bytes(data)
    mounted.umount()
    assert _unique(mounted.store) == 3 * len(data)

    mount("--domain", "tenant-a")
    (mounted.mnt / "a3.img").write_bytes(data)
    assert "dedup domain 'tenant-a'" in mounted.log()
    for name in ("a.img", "a2.img", "a3.img", "b.img", "c.img"):
        assert (mounted.mnt / name).read_bytes() == data
    mounted.umount()
    assert _unique(mounted.store) == 3 * len(data)
    result = fsck(mounted.store)
    assert result.clean and not [p for p in result.problems if p.kind == "frame"]
