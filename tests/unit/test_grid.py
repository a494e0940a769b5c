"""Where pages are cut in a checkpoint archive: from each tar member's data, so the pages of an
image inside a tar dedup with the same image in a directory."""

from __future__ import annotations

import io
import itertools
import os
import tarfile

import trio

from lzfs.core.filemap import FileMap
from lzfs.core.prefetch import FrameCache
from lzfs.store.codec import PAGE
from lzfs.store.grid import TarGrid, header_size, is_tar
from lzfs.store.layout import mkfs
from lzfs.store.store import Store


def _tar(members: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_headers_are_read_and_damage_ends_the_grid():
    pages = os.urandom(3 * PAGE)
    data = _tar({"config.dump": b"x" * 1000, "checkpoint/pages-1.img": pages})
    assert is_tar(data) and not is_tar(os.urandom(1024)) and not is_tar(bytes(1024))
    assert header_size(data[:512]) == 1000
    grid = TarGrid()
    grid.feed(data, 0)
    segs, known = grid.segments(0, len(data))
    assert known == len(data) and grid.done
    # the segments tile the archive; a member's data begins a segment with its own phase
    assert segs[0].start == 0 and segs[-1].end == len(data)
    assert all(a.end == b.start for a, b in itertools.pairwise(segs))
    pages_at = data.index(pages[:64])
    assert any(s.start <= pages_at < s.end and (pages_at - s.phase) % PAGE == 0
               for s in segs)
    damaged = bytearray(data)
    damaged[1024 + 148] ^= 0x7  # the second header's checksum
    g2 = TarGrid()
    g2.feed(damaged, 0)
    assert g2.done and g2.points[-1][1] == 0  # file pages from the damage on


def test_a_header_split_across_batches_waits_for_its_rest():
    data = _tar({"a": os.urandom(5000), "b": os.urandom(9000)})
    second = 512 + 5120  # where the second header starts
    grid = TarGrid()
    grid.feed(data[:second + 100], 0)
    _, known = grid.segments(0, second + 100)
    assert known == second  # the header is not whole yet
    grid.feed(data[second:], second)
    _segs, known = grid.segments(second, len(data))
    assert known == len(data)


def _store_pages(tmp_path, files: dict[str, bytes]) -> tuple[Store, dict[str, int]]:
    """A store holding ``files``, each streamed in 1 MiB writes and read back."""
    mkfs(tmp_path / "s")
    store = Store(tmp_path / "s")
    inos = {}

    async def main():
        cache = FrameCache(store)
        for i, (name, data) in enumerate(files.items()):
            fm = FileMap(i + 1, 0, store, cache, [], lambda *a: None)
            for off in range(0, len(data), 1 << 20):  # as a writer streams it
                await fm.write(off, data[off:off + (1 << 20)])
            await fm.flush()
            assert await fm.read(0, len(data)) == data
            inos[name] = i + 1

    trio.run(main)
    return store, inos


def test_an_image_inside_a_tar_dedups_with_the_same_image_alone(tmp_path):
    pages = b"".join(os.urandom(PAGE) for _ in range(1500))  # 6 MiB, not compressible
    archive = _tar({"config.dump": b'{"id": 1}' * 100, "checkpoint/pages-1.img": pages,
                    "checkpoint/core-1.img": os.urandom(700)})
    assert archive.index(pages[:64]) % PAGE != 0  # off the file's page grid
    store, _ = _store_pages(tmp_path, {"pages-1.img": pages})
    try:
        alone = store.stats().unique
        runs_before = store.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        _store_pages_into(store, 50, archive)
        added = store.stats().unique - alone
        assert added < 64 * 1024, added  # headers, the config, the core image, edges
        assert store.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] - runs_before < 5
    finally:
        store.close()


def _store_pages_into(store: Store, ino: int, data: bytes) -> None:
    async def main():
        fm = FileMap(ino, 0, store, FrameCache(store), [], lambda *a: None)
        for off in range(0, len(data), 1 << 20):
            await fm.write(off, data[off:off + (1 << 20)])
        await fm.flush()
        assert await fm.read(0, len(data)) == data
        reloaded = FileMap.load(ino, len(data), store, FrameCache(store), lambda *a: None)
        assert await reloaded.read(0, len(data)) == data

    trio.run(main)
