"""Faults on a real mount: damaged packs give EIO for the damaged range only; a daemon killed
with SIGKILL mid-write loses nothing that was committed before."""

from __future__ import annotations

import errno
import os
import random
import sys
import signal
import subprocess
import time

import pytest

from lzfs.store import Store


def _daemon_pid(store) -> int:
    return int((store / "lock").read_text().strip())


def test_corrupt_pack_gives_eio_only_where_damaged(mounted):
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
        off, frame = s.db.execute(
            "SELECT e.off, b.frame FROM extents e JOIN blocks b ON b.id = e.block "
            "WHERE e.ino=? ORDER BY e.off LIMIT 1 OFFSET 3", (ino,)).fetchone()
        loc = s.frame_loc(frame)
        good_off = s.db.execute(
            "SELECT e.off FROM extents e JOIN blocks b ON b.id = e.block "
            "WHERE e.ino=? AND b.frame != ? ORDER BY e.off DESC LIMIT 1",
            (ino, frame)).fetchone()[0]
    finally:
        s.close()
    pack = mounted.store / "packs" / f"{loc.pack:08d}.pack"
    with open(pack, "r+b") as f:
        f.seek(loc.off + loc.rlen - 8)  # the payload's last bytes
        f.write(b"\xff" * 8)
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
    os.kill(_daemon_pid(mounted.store), signal.SIGKILL)
    writer.wait(timeout=60)
    subprocess.run(["fusermount3", "-uz", str(mounted.mnt)], check=False)
    time.sleep(0.5)
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
