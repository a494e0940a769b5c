"""Whether staging pays: the disk's write rate measured by writing packs behind the appends,
the encoder's rate, and the file map's choice between the two."""

from __future__ import annotations

import itertools
import os

import trio

from lzfs.core.filemap import FileMap
from lzfs.core.prefetch import FrameCache
from lzfs.report.render import stats_text
from lzfs.store import pace
from lzfs.store.codec import PAGE
from lzfs.store.layout import mkfs
from lzfs.store.pace import MIN_SAMPLE, Rate, WriteBehind
from lzfs.store.packs import PackSet
from lzfs.store.store import Store


def test_a_rate_ignores_samples_too_small_to_measure_bandwidth_and_averages_the_rest():
    r = Rate()
    r.add(MIN_SAMPLE - 1, 0.001)
    r.add(MIN_SAMPLE, 0.0)
    assert r.value is None
    r.add(100_000_000, 1.0)
    assert r.value == 100_000_000
    r.add(100_000_000, 0.5)
    assert r.value == 150_000_000  # half the new sample, half what it knew
    assert r.mbps() == 150.0


def test_packs_are_written_behind_the_appends_and_the_disk_rate_measured(tmp_path):
    packs = PackSet(tmp_path)
    packs.start({})
    packs.behind = WriteBehind(packs.flush, every=4 << 20)
    records = [os.urandom(4 << 20) for _ in range(3)]
    try:
        places = [packs.append([[r]])[0] for r in records]
        packs.behind.wait()
        assert packs.behind.disk.value is not None and packs.behind.disk.value > 0
        for r, (pid, off) in zip(records, places, strict=True):
            assert packs.read(pid, off, len(r)) == r
        # flushed ahead, but a commit still syncs them: durability is the commit's business
        assert packs.write_id in packs._dirty
    finally:
        packs.close()


def test_a_failed_flush_behind_the_appends_is_logged_and_measures_nothing(tmp_path, caplog):
    def failing() -> None:
        raise OSError(5, "Input/output error")

    behind = WriteBehind(failing, every=MIN_SAMPLE)
    behind.appended(MIN_SAMPLE)
    behind.wait()
    assert behind.disk.value is None
    assert "writing packs behind the appends" in caplog.text
    behind.appended(MIN_SAMPLE)  # and the next one runs again
    behind.wait()
    assert caplog.text.count("writing packs behind") == 2


def _write_staging_or_not(tmp_path, disk_seconds: float) -> tuple[int, int, bytes, bytes]:
    """Write 2 MiB with a backlog limit of 0 (every batch would stage) after the disk was
    measured taking 64 MiB in ``disk_seconds``; returns (bytes staged, staged in the store,
    data written, data read back)."""
    mkfs(tmp_path / "s")
    store = Store(tmp_path / "s")
    store.stage_backlog = 0
    store.pace.behind.disk.add(64 << 20, disk_seconds)
    store.pace.encode.add(64 << 20, 0.5)  # 134 MB/s, as measured here during a dump
    data = os.urandom(1 << 20) + b"settle me " * (PAGE * 256 // 10)
    data = data[:2 << 20]

    async def main() -> tuple[int, int, bytes]:
        fm = FileMap(1, 0, store, FrameCache(store, 8 << 20), [], lambda *a: None)
        await fm.write(0, data)
        await fm.flush()
        return fm.staged, store.stats().staged, bytes(await fm.read(0, len(data)))

    try:
        staged, in_store, back = trio.run(main)
    finally:
        store.close()
    return staged, in_store, data, back


def test_a_disk_slower_than_the_encoder_gets_compressed_frames_not_staged_ones(tmp_path):
    staged, in_store, data, back = _write_staging_or_not(tmp_path, disk_seconds=2.0)  # 34 MB/s
    assert (staged, in_store) == (0, 0)
    assert back == data


def test_a_disk_only_somewhat_faster_than_the_encoder_is_not_worth_staging_for(tmp_path):
    # 201 MB/s against 134: staging would write about twice the bytes through it
    staged, in_store, data, back = _write_staging_or_not(tmp_path, disk_seconds=0.334)
    assert (staged, in_store) == (0, 0)
    assert back == data


def test_a_disk_faster_than_the_encoder_gets_the_dump_staged(tmp_path):
    staged, in_store, data, back = _write_staging_or_not(tmp_path, disk_seconds=0.01)
    assert staged == len(data) and in_store > 0
    assert back == data


def test_the_stats_say_whether_staging_pays_and_why():
    st = {"files": 1, "directories": 1, "logical": 10, "referenced": 10, "unique": 10,
          "stored": 5, "zero": 0, "pages": 1, "frames": 1, "garbage_frames": 0,
          "pack_bytes": 100, "staged": 0,
          "pace": {"disk_MBps": 180.2, "encode_MBps": 420.0, "staging_pays": False}}
    assert ("does not pay (the disk takes 171.9 MiB/s, the encoder 400.5 MiB/s)"
            in stats_text(st))
    st["pace"] = {"disk_MBps": None, "encode_MBps": None, "staging_pays": True}
    line = next(x for x in stats_text(st).splitlines() if x.startswith("staging"))
    assert line.split() == ["staging", "pays"]  # no rates known yet: nothing to compare


def test_warming_local_frames_asks_the_kernel_to_read_them_ahead_in_few_requests(
        tmp_path, monkeypatch):
    """A restore on slow storage left the disk idle while a batch decoded: the frames of the
    batches queued behind it are now handed to the kernel's readahead first (near ones
    merged into one request; a pack gc removed is skipped, its reader gets the error)."""
    packs = PackSet(tmp_path)
    packs.start({})
    records = [os.urandom(30_000) for _ in range(3)]  # gaps under 64 KiB: one request
    places = [packs.append([[r]])[0] for r in records]
    asked: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def fadvise(fd: int, off: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_WILLNEED
        asked.append((off, length))
        real(fd, off, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    try:
        (pid, first), _, (_, last) = places
        packs.warm([(pid, last, len(records[2])), (pid, first, len(records[0])),
                    (pid + 7, 0, 4096)])  # the last one names a pack that is not there
        # one run, asked for in pieces: the kernel reads no more than its readahead per call
        assert asked[0][0] == first and sum(n for _, n in asked) == last + len(records[2]) - first
        assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(asked))
        assert packs.read(pid, last, len(records[2])) == records[2]
    finally:
        packs.close()


def test_settling_does_not_count_in_the_encoders_rate(tmp_path, monkeypatch):
    """Settling runs while the daemon is idle: counted, it would make the encoder look faster
    than it is during a dump, and the next dump on a fast disk would not be staged."""
    monkeypatch.setattr(pace, "MIN_SAMPLE", 4096)  # settling's steps would all be samples
    mkfs(tmp_path / "s")
    store = Store(tmp_path / "s")
    store.stage_backlog = 0
    store.pace.behind.disk.add(64 << 20, 0.01)
    store.pace.encode.add(64 << 20, 0.5)
    data = (b"settle me " * (PAGE * 1024 // 10))[:8 << 20]  # settled in 4 MiB steps

    async def main() -> None:
        fm = FileMap(1, 0, store, FrameCache(store, 8 << 20), [], lambda *a: None)
        await fm.write(0, data)
        await fm.flush()
        assert fm.staged == len(data)
        rate = store.pace.encode.value
        assert await fm.settle(lambda: False) == len(data)
        assert store.pace.encode.value == rate
        assert bytes(await fm.read(0, len(data))) == data

    try:
        trio.run(main)
    finally:
        store.close()


def test_before_the_encoder_is_timed_a_slow_disk_does_not_stage(tmp_path):
    """A dump through passthrough decides at its first create, before anything was encoded
    (and settling is not timed): the encoder's prior decides against a 200 MB/s disk."""
    packs = PackSet(tmp_path)
    p = pace.Pace(packs.behind)
    assert p.staging_pays()  # nothing known: what a fast disk wants
    p.behind.disk.add(200 << 20, 1.0)
    assert not p.staging_pays()  # 210 MB/s against the prior's 250
    p.behind.disk.value = 2e9
    assert p.staging_pays()
    p.encode.add(64 << 20, 0.05)  # 1.3 GB/s measured: the measurement wins over the prior
    assert not p.staging_pays()


def test_a_mount_times_its_disk_once_and_the_next_mount_reads_it(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    packs = PackSet(tmp_path)
    p = pace.Pace(packs.behind)
    p.probe(tmp_path)
    assert p.behind.disk.value is not None and p.behind.disk.value > 0
    assert not (tmp_path / pace.PROBE_NAME).exists()  # the probe file is gone
    assert "written and synced at mount" in caplog.text
    again = pace.Pace(PackSet(tmp_path).behind)
    again.load(tmp_path)
    assert again.behind.disk.value == p.behind.disk.value
    caplog.clear()
    again.probe(tmp_path)  # known: no second probe
    assert "written and synced" not in caplog.text
    (tmp_path / pace.PACE).write_text('{"disk_Bps": 1e9, "time": 0}')  # too old: ignored
    stale = pace.Pace(PackSet(tmp_path).behind)
    stale.load(tmp_path)
    assert stale.behind.disk.value is None
