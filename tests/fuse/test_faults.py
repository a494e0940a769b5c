"""Faults on a real mount: damaged packs give EIO for the damaged range only; a daemon killed
with SIGKILL mid-write loses nothing that was committed before."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from lzfs.store.store import Store
from tests.conftest import lzfs_cmd


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_damaged_pack_gives_eio_only_where_damaged(mounted, damage):
    good = os.urandom(3 << 20)
    rnd = random.Random(5)
    words = [b"model", b"weights", b"cache", b"token", b"layer", b"attention", b"head"]
    victim = b" ".join(rnd.choice(words) for _ in range(700_000))
    (mounted.mnt / "good").write_bytes(good)
    (mounted.mnt / "victim").write_bytes(victim)
    mounted.umount()
    s = Store(mounted.store)
    try:
        ino = s.db.execute("SELECT ino FROM dentries WHERE name=?", (b"victim",)).fetchone()[0]
        # flipped: a frame in the middle; truncated: the pack is cut inside the last frame
        off, frame = s.db.execute(
            "SELECT e.off, e.frame FROM extents e "
            "WHERE e.ino=? ORDER BY e.off " + ("LIMIT 1 OFFSET 3" if damage == "flipped"
                                               else "DESC LIMIT 1"), (ino,)).fetchone()
        loc = s.frame_loc(frame)
        good_off = s.db.execute(
            "SELECT e.off FROM extents e "
            "WHERE e.ino=? AND e.frame != ? ORDER BY e.off LIMIT 1 OFFSET 1",
            (ino, frame)).fetchone()[0]
    finally:
        s.close()
    pack = mounted.store / "packs" / f"{loc.pack:08d}.pack"
    if damage == "flipped":
        with open(pack, "r+b") as f:
            f.seek(loc.off + loc.rlen - 8)  # the payload's last bytes
            f.write(b"\xff" * 8)
    else:
        os.truncate(pack, loc.off + loc.rlen // 2)
    mounted.mount()
    fd = os.open(mounted.mnt / "victim", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.pread(fd, 4096, off)
        assert e.value.errno == errno.EIO
        # another frame of the same file still reads
        assert os.pread(fd, 4096, good_off) == victim[good_off:good_off + 4096]
    finally:
        os.close(fd)
    assert (mounted.mnt / "good").read_bytes() == good
    assert f"corrupt data: /victim at offset {off} " in mounted.log()


def test_sigkill_mid_write_keeps_what_was_committed(mounted):
    before = os.urandom(8 << 20)
    (mounted.mnt / "before").write_bytes(before)
    fd = os.open(mounted.mnt, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)  # committed: must survive anything
    os.close(fd)
    script = ("import random,sys\n"
              "f=open(sys.argv[1],'wb',buffering=0)\n"
              "import time\n"
              "for i in range(3000):\n"
              "    f.write(random.Random(i).randbytes(1<<20)); time.sleep(0.004)\n")
    writer = subprocess.Popen([sys.executable, "-c", script, str(mounted.mnt / "during")],
                              stderr=subprocess.DEVNULL)
    time.sleep(7)  # past one background commit (every 5 s), in the middle of the file
    mounted.crash()
    writer.wait(timeout=60)
    mounted.mount()
    assert (mounted.mnt / "before").read_bytes() == before
    during = mounted.mnt / "during"
    assert during.exists()  # the commit at 5 s recorded it
    # shorter than written, but every byte it has is right
    data = during.read_bytes()
    assert len(data) >= 1 << 20
    want = b"".join(random.Random(i).randbytes(1 << 20)
                    for i in range(len(data) // (1 << 20) + 1))
    assert data == want[:len(data)]


@pytest.mark.parametrize("how", ["fsync", "fdatasync", "dir-fsync", "sync-command", "umount"])
def test_acknowledged_data_survives_a_power_cut(mounted, how):
    """What fsync (or fdatasync, or fsync of a directory, or `lzfs umount`) acknowledged is
    there after the daemon is SIGKILLed and the page cache dropped; what came after the
    acknowledgement may be lost but never reads wrong."""
    rnd = random.Random(how)
    acked = {f"snap/f{i}": rnd.randbytes(rnd.choice([100, 5000, 1 << 20, 3 << 20]))
             for i in range(6)}
    (mounted.mnt / "snap").mkdir()
    for name, data in acked.items():
        fd = os.open(mounted.mnt / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        if how == "fsync":
            os.fsync(fd)
        elif how == "fdatasync":
            os.fdatasync(fd)
        os.close(fd)
    if how == "dir-fsync":
        fd = os.open(mounted.mnt / "snap", os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
    if how == "sync-command":  # what an operator types after a dump: sync(1) fsyncs the dir
        subprocess.run(["sync", str(mounted.mnt / "snap")], check=True)
    late = rnd.randbytes(2 << 20)
    if how == "umount":
        mounted.umount()
        mounted.mount()
    (mounted.mnt / "snap" / "late").write_bytes(late)  # not acknowledged by anything
    mounted.crash(drop_caches=True)
    mounted.mount()
    for name, data in acked.items():
        assert (mounted.mnt / name).read_bytes() == data, name
    if (mounted.mnt / "snap" / "late").exists():
        got = (mounted.mnt / "snap" / "late").read_bytes()
        assert got == late[:len(got)]


def test_many_readers_and_gc_while_reading(mounted):
    data = random.Random(3).randbytes(24 << 20)
    (mounted.mnt / "pages-1.img").write_bytes(data)
    (mounted.mnt / "doomed").write_bytes(os.urandom(16 << 20))
    mounted.remount()
    errors: list[str] = []

    def reader(i: int) -> None:
        rnd = random.Random(i)
        with open(mounted.mnt / "pages-1.img", "rb", buffering=0) as f:
            for _ in range(40):
                off = rnd.randrange(0, len(data))
                n = rnd.choice([4096, 65536, 1 << 20])
                f.seek(off)
                if f.read(n) != data[off:off + n]:
                    errors.append(f"reader {i}: wrong bytes at {off}")
            f.seek(0)
            if f.read() != data:
                errors.append(f"reader {i}: whole file differs")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    doomed = (mounted.mnt / "doomed").read_bytes()  # its frames are in the cache now
    (mounted.mnt / "doomed").unlink()
    lzfs_cmd("gc", str(mounted.mnt))
    # new frames written after gc must never be answered from what the cache held for the
    # frames gc removed (ids are never reused, and gc drops them from the cache)
    fresh = os.urandom(len(doomed))
    (mounted.mnt / "fresh").write_bytes(fresh)
    assert (mounted.mnt / "fresh").read_bytes() == fresh
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert (mounted.mnt / "pages-1.img").read_bytes() == data
