"""Space comes back on its own: `rm -r` of a snapshot shrinks the store within a few seconds
(the daemon's committer collects what nobody references), while other snapshots read on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time


def _pack_bytes(store) -> int:
    return sum(p.stat().st_blocks * 512 for p in (store / "packs").iterdir())


def test_rm_of_a_snapshot_gives_its_space_back_by_itself(mounted):
    keep, gone = mounted.mnt / "keep", mounted.mnt / "gone"
    keep.mkdir()
    gone.mkdir()
    kept = {f"pages-{i}.img": os.urandom(4 << 20) for i in range(2)}
    for name, data in kept.items():
        (keep / name).write_bytes(data)
    for i in range(3):
        (gone / f"pages-{i}.img").write_bytes(os.urandom(8 << 20))
    os.sync()
    before = _pack_bytes(mounted.store)
    shutil.rmtree(gone)
    deadline = time.monotonic() + 30  # the committer runs every 5 s by default
    while _pack_bytes(mounted.store) > before - (23 << 20):
        assert time.monotonic() < deadline, (before, _pack_bytes(mounted.store))
        for name, data in kept.items():  # others read on meanwhile
            got = (keep / name).read_bytes()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        time.sleep(0.5)
    stats = json.loads((mounted.mnt / ".lzfs" / "stats.json").read_text())
    assert stats["garbage_frames"] == 0, stats
    mounted.remount()
    for name, data in kept.items():
        assert (keep / name).read_bytes() == data
