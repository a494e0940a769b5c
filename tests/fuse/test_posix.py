"""What CRIU (and people with ls, cat, cp) do in an images directory, on a real mount."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from lzfs.store.codec import block_hash
from lzfs.store.pagetable import hook_key


def test_files_dirs_and_symlinks(mounted):
    m = mounted.mnt
    (m / "snap").mkdir()
    (m / "snap" / "inventory.img").write_bytes(b"\x19\x43\x56\x54" + b"x" * 100)
    os.symlink("../pre", m / "snap" / "parent")
    assert os.readlink(m / "snap" / "parent") == "../pre"
    assert sorted(os.listdir(m / "snap")) == ["inventory.img", "parent"]
    assert (m / "snap" / "inventory.img").stat().st_size == 104
    os.rename(m / "snap" / "inventory.img", m / "snap" / "inv2.img")
    assert not (m / "snap" / "inventory.img").exists()
    with pytest.raises(OSError) as e:
        os.rmdir(m / "snap")
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(m / "snap" / "inv2.img")
    os.unlink(m / "snap" / "parent")
    os.rmdir(m / "snap")
    assert os.listdir(m) == []


def test_open_flags_criu_uses(mounted):
    p = mounted.mnt / "pidfile"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"1234\n")
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    # the log: O_APPEND, 0600
    log = mounted.mnt / "dump.log"
    for line in (b"one\n", b"two\n"):
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(fd, line)
        os.close(fd)
    assert log.read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # images: O_TRUNC over an older one
    img = mounted.mnt / "core-1.img"
    img.write_bytes(b"a" * 10000)
    fd = os.open(img, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"short")
    os.close(fd)
    assert img.read_bytes() == b"short"
    with pytest.raises(FileNotFoundError):
        os.open(mounted.mnt / "pages-9.img", os.O_RDONLY)


def test_truncate_chmod_utimens_statfs_link(mounted):
    p = mounted.mnt / "f"
    p.write_bytes(os.urandom(300_000))
    data = p.read_bytes()
    os.truncate(p, 100_000)
    assert p.read_bytes() == data[:100_000]
    os.truncate(p, 200_000)
    assert p.read_bytes() == data[:100_000] + bytes(100_000)
    os.chmod(p, 0o600)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    os.chmod(p, 0o6750)  # a regular file keeps no setuid/setgid (handle_killpriv_v2)
    assert stat.S_IMODE(p.stat().st_mode) == 0o750
    os.chmod(p, 0o600)
    (mounted.mnt / "shared").mkdir()
    os.chmod(mounted.mnt / "shared", 0o2775)  # a directory does (group inheritance)
    assert stat.S_IMODE((mounted.mnt / "shared").stat().st_mode) == 0o2775
    os.utime(p, ns=(1_000_000_000, 2_000_000_000))
    assert p.stat().st_mtime_ns == 2_000_000_000
    os.link(p, mounted.mnt / "g")
    assert p.stat().st_nlink == 2
    assert (mounted.mnt / "g").read_bytes() == p.read_bytes()
    vfs = os.statvfs(mounted.mnt)
    assert vfs.f_blocks > 0 and vfs.f_namemax == 255
    fd = os.open(p, os.O_RDWR)
    os.fsync(fd)
    os.close(fd)


def _page(hook: bool) -> bytes:
    """A random page that is (or is not) a hook of the sparse page index (store/index.py):
    a repeated page must be stored once either way."""
    while True:
        page = os.urandom(4096)
        if (hook_key(block_hash(page)) is not None) == hook:
            return page


@pytest.mark.parametrize("hook", [False, True], ids=["plain-page", "hook-page"])
def test_sizes_are_exact_and_du_shows_stored_bytes(mounted, hook):
    p = mounted.mnt / "pages-1.img"
    page = _page(hook)
    with open(p, "wb") as f:
        f.write(page * 256)          # 1 MiB of one repeated page: compresses to almost nothing
        f.write(bytes(4 << 20))      # zero pages: stored as nothing
        f.write(os.urandom(12345))   # an odd tail
    mounted.settle()  # a new file is staged raw first (passthrough), compressed when idle
    st = p.stat()
    assert st.st_size == (1 << 20) + (4 << 20) + 12345
    assert st.st_blocks * 512 < 200_000
    stored = float(os.getxattr(p, "user.lzfs.stored"))
    assert abs(st.st_blocks * 512 - stored) < 512 + 1


def test_odd_and_overlong_names(mounted):
    for name in ["sp ace", "new\nline", "ünïcödé", "a" * 255, "-dash", "*?[]"]:
        (mounted.mnt / name).write_text(name)
        assert (mounted.mnt / name).read_text() == name
    with pytest.raises(OSError) as e:
        (mounted.mnt / ("b" * 256)).write_text("x")
    assert e.value.errno == errno.ENAMETOOLONG


def test_unlinked_open_file_stays_readable(mounted):
    p = mounted.mnt / "tmp"
    data = os.urandom(500_000)
    p.write_bytes(data)
    with open(p, "rb") as f:
        os.unlink(p)
        assert f.read() == data
    assert not p.exists()


def test_content_survives_remount(mounted):
    files = {f"d/f{i}": os.urandom(i * 70_001) + bytes(i * 8192) for i in range(6)}
    (mounted.mnt / "d").mkdir()
    for name, data in files.items():
        (mounted.mnt / name).write_bytes(data)
    mounted.remount()
    for name, data in files.items():
        assert (mounted.mnt / name).read_bytes() == data


def test_punching_a_hole_frees_pages_and_other_fallocate_modes_are_refused(mounted):
    """CRIU's --auto-dedup punches holes (PUNCH_HOLE | KEEP_SIZE) in what it restored: the
    range reads as zeros and gives its pages back. Other modes are refused (EOPNOTSUPP),
    never a silent no-op."""
    p = mounted.mnt / "pages-1.img"
    data = bytearray(os.urandom(65536))
    p.write_bytes(data)
    mounted.settle()
    fd = os.open(p, os.O_RDWR)
    try:
        _fallocate(fd, 0x03, 4096, 4096 * 4)
        data[4096:5 * 4096] = bytes(4 * 4096)
        assert os.pread(fd, 65536, 0) == data
        assert os.fstat(fd).st_size == 65536
        for mode in (0, 0x01, 0x10):  # allocate, keep size, zero range
            with pytest.raises(OSError) as e:
                _fallocate(fd, mode, 0, 4096)
            assert e.value.errno == errno.EOPNOTSUPP
    finally:
        os.close(fd)
    assert float(os.getxattr(p, "user.lzfs.logical")) == 65536


def _fallocate(fd: int, mode: int, off: int, length: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, mode, off, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_exchanging_a_directory_and_a_file_keeps_link_counts(mounted):
    import ctypes

    m = mounted.mnt
    (m / "p1" / "d").mkdir(parents=True)
    (m / "p2").mkdir()
    (m / "p2" / "f").write_bytes(b"file")
    libc = ctypes.CDLL(None, use_errno=True)
    rename_exchange = 2
    if libc.renameat2(-100, bytes(m / "p1" / "d"), -100, bytes(m / "p2" / "f"),
                      rename_exchange) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
    assert (m / "p1" / "d").read_bytes() == b"file"
    assert (m / "p2" / "f").is_dir()
    assert os.stat(m / "p1").st_nlink == 2 and os.stat(m / "p2").st_nlink == 3
    mounted.umount()
    from lzfs.report.fsck import fsck

    assert fsck(mounted.store).clean
