"""Name length conformance on a real mount (what pjdfstest checks): a name is at most 255 bytes,
and every operation on a longer one fails with ENAMETOOLONG and changes nothing."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

import pytest

LONG = b"n" * 256  # one byte too many
LONG_UTF8 = "é".encode() * 128  # 128 characters, 256 bytes: the limit counts bytes


def _max_name(prefix: str, utf8: bool) -> bytes:
    """A 255-byte name: ``prefix`` padded with two-byte characters (or ASCII ones)."""
    pad = 255 - len(prefix)
    name = prefix + ("é" * (pad // 2) + "e" * (pad % 2) if utf8 else "m" * pad)
    assert len(name.encode()) == 255
    return name.encode()


@pytest.fixture
def here(module_mount, request) -> bytes:
    """A fresh directory on the module's mount, holding a file `f`, a directory `d` and a
    symlink `s`, as bytes (names are bytes to the kernel)."""
    d = bytes(module_mount.mnt / request.node.name.replace("/", "_"))
    os.mkdir(d)
    with open(os.path.join(d, b"f"), "wb") as f:
        f.write(b"data")
    os.mkdir(os.path.join(d, b"d"))
    os.symlink(b"f", os.path.join(d, b"s"))
    return d


def _operations(d: bytes, name: bytes) -> dict[str, Callable[[], object]]:
    """Every way a process can hand lzfs the name ``name`` in directory ``d``."""
    p = os.path.join(d, name)
    f, sub = os.path.join(d, b"f"), os.path.join(d, b"d")
    return {
        "stat": lambda: os.stat(p),
        "lstat": lambda: os.lstat(p),
        "open": lambda: os.close(os.open(p, os.O_RDONLY)),
        "create": lambda: os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)),
        "create-excl": lambda: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
        "mkdir": lambda: os.mkdir(p),
        "mknod-fifo": lambda: os.mkfifo(p),
        "mknod-file": lambda: os.mknod(p, stat.S_IFREG | 0o600),
        "mknod-char": lambda: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        "symlink": lambda: os.symlink(b"f", p),
        "link-new-name": lambda: os.link(f, p),
        "link-source": lambda: os.link(p, os.path.join(d, b"other")),
        "rename-source": lambda: os.rename(p, os.path.join(d, b"other")),
        "rename-target": lambda: os.rename(f, p),
        "rename-target-dir": lambda: os.rename(sub, p),
        "unlink": lambda: os.unlink(p),
        "rmdir": lambda: os.rmdir(p),
        "readlink": lambda: os.readlink(p),
        "listdir": lambda: os.listdir(p),
        "chmod": lambda: os.chmod(p, 0o600),
        "chown": lambda: os.chown(p, 0, 0),
        "truncate": lambda: os.truncate(p, 0),
        "utime": lambda: os.utime(p, ns=(0, 0)),
        "setxattr": lambda: os.setxattr(p, b"user.x", b"1"),
        "getxattr": lambda: os.getxattr(p, b"user.lzfs.stored"),
        "inner-component": lambda: os.stat(os.path.join(p, b"f")),
    }


def _tree(d: bytes) -> dict[bytes, tuple[int, int, int]]:
    """(mode, nlink, size) of everything in ``d``, to show an operation changed nothing."""
    return {n: (st.st_mode, st.st_nlink, st.st_size)
            for n in os.listdir(d) for st in [os.lstat(os.path.join(d, n))]}


OPERATIONS = sorted(_operations(b"", b""))


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("name", [LONG, LONG_UTF8], ids=["ascii", "utf8"])
def test_every_operation_on_a_256_byte_name_gives_enametoolong(here, operation, name):
    before = _tree(here)
    with pytest.raises(OSError) as e:
        _operations(here, name)[operation]()
    assert e.value.errno == errno.ENAMETOOLONG, (operation, os.strerror(e.value.errno))
    assert _tree(here) == before


@pytest.mark.parametrize("utf8", [False, True], ids=["ascii", "utf8"])
def test_a_255_byte_name_works_for_every_kind_of_file_and_survives_remount(mounted, utf8):
    m = bytes(mounted.mnt)
    made = [_max_name(kind, utf8) for kind in ("file-", "dir-", "fifo-", "sym-", "link-")]
    file, directory, fifo, sym, link = made
    with open(os.path.join(m, file), "wb") as f:
        f.write(b"kept")
    os.mkdir(os.path.join(m, directory))
    os.mkfifo(os.path.join(m, fifo))
    os.symlink(file, os.path.join(m, sym))
    os.link(os.path.join(m, file), os.path.join(m, link))
    os.rename(os.path.join(m, directory), os.path.join(m, b"x" + directory[1:]))
    os.rename(os.path.join(m, b"x" + directory[1:]), os.path.join(m, directory))
    mounted.remount()
    assert sorted(os.listdir(m)) == sorted(made)
    with open(os.path.join(m, sym), "rb") as f:
        assert f.read() == b"kept"
    assert os.stat(os.path.join(m, file)).st_nlink == 2
    assert stat.S_ISDIR(os.stat(os.path.join(m, directory)).st_mode)
    assert stat.S_ISFIFO(os.stat(os.path.join(m, fifo)).st_mode)
    for n in (file, fifo, sym, link):
        os.unlink(os.path.join(m, n))
    os.rmdir(os.path.join(m, directory))
    assert os.listdir(m) == []


def test_link_to_a_256_byte_name_is_refused_and_the_link_count_stays_1(here):
    f = os.path.join(here, b"f")
    with pytest.raises(OSError) as e:
        os.link(f, os.path.join(here, LONG))
    assert e.value.errno == errno.ENAMETOOLONG
    assert os.stat(f).st_nlink == 1
    assert sorted(os.listdir(here)) == [b"d", b"f", b"s"]


def test_mknod_reports_the_name_before_refusing_a_device_node(here):
    char = stat.S_IFCHR | 0o600
    cases = {LONG: errno.ENAMETOOLONG,  # as any file system: the name is checked first
             b"f": errno.EEXIST,  # then whether it exists
             b"null": errno.EPERM}  # and only then is the device refused
    for name, err in cases.items():
        with pytest.raises(OSError) as e:
            os.mknod(os.path.join(here, name), char, os.makedev(1, 3))
        assert e.value.errno == err, (name, os.strerror(e.value.errno))
    with pytest.raises(OSError) as e:
        os.mknod(os.path.join(here, b"blk"), stat.S_IFBLK | 0o600, os.makedev(7, 0))
    assert e.value.errno == errno.EPERM
    os.mknod(os.path.join(here, b"fifo"), stat.S_IFIFO | 0o600)  # not a device: made
    assert sorted(os.listdir(here)) == [b"d", b"f", b"fifo", b"s"]
