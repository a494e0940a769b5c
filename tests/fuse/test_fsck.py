"""`lzfs fsck` on stores written through a real mount, then damaged on purpose: it finds each
fault, names the hurt files, and `--repair` mends what it can while every intact byte stays."""

from __future__ import annotations

import errno
import json
import os
import sqlite3

import pytest

from lzfs.report.fsck import fsck
from tests.conftest import lzfs_cmd, tree_state


def _fill(m) -> dict[str, bytes]:
    """A few files: a compressible pages-like one, an incompressible one, a nested one."""
    words = b" ".join(b"layer%d.weight" % (i % 97) for i in range(300_000))
    files = {
        "snap/pages-1.img": words[: 3 << 20],
        "snap/other.img": os.urandom(1 << 20),
        "snap/sub/deep.img": words[5000: 5000 + (700 << 10)],
    }
    for rel, data in files.items():
        (m.mnt / rel).parent.mkdir(parents=True, exist_ok=True)
        (m.mnt / rel).write_bytes(data)
    return files


def _check(store, *args: str) -> tuple[int, dict]:
    res = lzfs_cmd("fsck", "--json", *args, str(store), check=False)
    assert res.stderr == "", res.stderr
    return res.returncode, json.loads(res.stdout)


def _kinds(report: dict, errors_only: bool = True) -> set[str]:
    return {p["kind"] for p in report["problems"] if p["error"] or not errors_only}


def _db(store) -> sqlite3.Connection:
    return sqlite3.connect(store / "meta.db", isolation_level=None)


def _ino(db, name: str) -> int:
    return db.execute("SELECT ino FROM dentries WHERE name=?", (name.encode(),)).fetchone()[0]


def test_clean_store_and_mounted_store(mounted):
    _fill(mounted)
    res = lzfs_cmd("fsck", str(mounted.mnt), check=False)
    assert res.returncode == 8 and "umount" in res.stderr and len(res.stderr.splitlines()) == 1
    res = lzfs_cmd("fsck", str(mounted.store), check=False)  # the daemon holds the lock
    assert res.returncode == 8 and "in use" in res.stderr
    res = lzfs_cmd("fsck", str(mounted.store.parent / "nothing-here"), check=False)
    assert res.returncode == 8 and len(res.stderr.splitlines()) == 1
    mounted.umount()
    res = lzfs_cmd("fsck", str(mounted.store))
    assert "store is clean" in res.stdout
    code, rep = _check(mounted.store)
    assert code == 0 and rep["clean"] and rep["files"] == 3 and rep["frames"] > 0
    assert rep["problems"] == [{"kind": "snapshot", "error": False,
                                "message": "snapshot snap is incomplete: no inventory.img: the "
                                           "dump did not finish"}]


def test_progress_reports_every_frame_byte(mounted):
    _fill(mounted)
    mounted.umount()
    seen: list[tuple[int, int]] = []
    result = fsck(mounted.store, progress=lambda done, total: seen.append((done, total)))
    assert result.clean
    assert seen[-1] == (result.frame_bytes, result.frame_bytes)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_corrupt_frame_is_named_marked_and_never_reused(mounted):
    files = _fill(mounted)
    mounted.umount()
    db = _db(mounted.store)
    ino = _ino(db, "pages-1.img")
    off, frame = db.execute(
        "SELECT e.off, e.frame FROM extents e WHERE e.ino=? AND e.frame NOT IN "
        "(SELECT frame FROM extents WHERE ino != ?) ORDER BY e.off LIMIT 1 OFFSET 2",
        (ino, ino)).fetchone()  # a frame no other file shares: the damage is this file's
    pack, foff, rlen = db.execute("SELECT pack, off, rlen FROM frames WHERE id=?",
                                  (frame,)).fetchone()
    db.close()
    with open(mounted.store / "packs" / f"{pack:08d}.pack", "r+b") as f:
        f.seek(foff + rlen // 2)
        f.write(b"\x00\xff" * 16)

    code, rep = _check(mounted.store)
    assert code == 4 and {"frame", "damaged"} <= _kinds(rep)
    ranges = rep["damaged"]["/snap/pages-1.img"]
    assert any(lo <= off < lo + n for lo, n in ranges)
    assert set(rep["damaged"]) == {"/snap/pages-1.img"}

    code, rep = _check(mounted.store, "--repair")
    assert code == 4  # the lost bytes stay lost: an error until the file goes
    assert any("marked" in r for r in rep["repaired"])
    assert [p["kind"] for p in rep["remaining"]] == ["damaged"]

    mounted.mount()
    pages = mounted.mnt / "snap" / "pages-1.img"
    assert int(os.getxattr(pages, "user.lzfs.damaged")) > 0
    with pytest.raises(OSError):
        pages.read_bytes()
    # the other files are whole, and the same content written again is stored afresh
    assert (mounted.mnt / "snap" / "other.img").read_bytes() == files["snap/other.img"]
    assert (mounted.mnt / "snap/sub/deep.img").read_bytes() == files["snap/sub/deep.img"]
    (mounted.mnt / "again.img").write_bytes(files["snap/pages-1.img"])
    assert (mounted.mnt / "again.img").read_bytes() == files["snap/pages-1.img"]
    pages.unlink()
    mounted.umount()
    code, rep = _check(mounted.store, "--repair")
    assert code == 0 and rep["clean"]
    code, rep = _check(mounted.store)
    assert code == 0 and _kinds(rep, errors_only=False) <= {"snapshot"}


def test_metadata_faults_are_found_and_repaired_losing_nothing(mounted):
    files = _fill(mounted)
    (mounted.mnt / "keep").mkdir()
    (mounted.mnt / "keep" / "lost.img").write_bytes(b"find me" * 1000)
    files["lost+found/#LOST"] = b"find me" * 1000
    mounted.umount()
    db = _db(mounted.store)
    pages = _ino(db, "pages-1.img")
    lost = _ino(db, "lost.img")
    frame = db.execute("SELECT frame FROM extents WHERE ino=? LIMIT 1", (pages,)).fetchone()[0]
    db.execute("UPDATE frames SET refs = refs + 5 WHERE id=?", (frame,))         # refcount
    db.execute("DELETE FROM dentries WHERE ino=?", (lost,))                      # disconnected
    db.execute("INSERT INTO dentries(parent, name, ino) "
               "VALUES (1, X'67686f7374', 99999)")                              # dangling
    db.execute("INSERT INTO dentries(parent, name, ino) VALUES (?, X'726f6f74', 1)",
               (_ino(db, "keep"),))                                      # the root, named
    db.execute("UPDATE inodes SET nlink = 7 WHERE id=?", (_ino(db, "other.img"),))   # nlink
    db.execute("INSERT INTO inodes(mode, uid, gid, nlink, atime_ns, mtime_ns, ctime_ns) "
               "VALUES (33188, 0, 0, 0, 0, 0, 0)")                               # orphan
    db.close()
    with open(mounted.store / "packs" / "00000001.pack", "ab") as f:
        f.write(os.urandom(5000))                                                # torn tail
    (mounted.store / "packs" / "00000077.pack").write_bytes(b"LZFSPACK" + bytes(100))

    code, rep = _check(mounted.store)
    assert code == 4
    assert {"refcount", "tree", "dentry", "nlink"} <= _kinds(rep)
    assert {"orphan", "pack"} <= _kinds(rep, errors_only=False)

    code, rep = _check(mounted.store, "--repair")
    assert code == 1 and rep["remaining"] == [], rep
    assert any("cut uncommitted tail" in r for r in rep["repaired"])
    assert any("lost+found" in r for r in rep["repaired"])
    assert not (mounted.store / "packs" / "00000077.pack").exists()

    code, rep = _check(mounted.store)
    assert code == 0 and _kinds(rep, errors_only=False) <= {"snapshot"}, rep
    mounted.mount()
    found = os.listdir(mounted.mnt / "lost+found")
    assert found == [f"#{lost}"]
    files[f"lost+found/#{lost}"] = files.pop("lost+found/#LOST")
    for rel, data in files.items():
        assert (mounted.mnt / rel).read_bytes() == data, rel
    assert os.stat(mounted.mnt / "snap" / "other.img").st_nlink == 1


def test_directory_cycle_is_cut_into_lost_and_found(mounted):
    (mounted.mnt / "a" / "b").mkdir(parents=True)
    (mounted.mnt / "a" / "b" / "f").write_bytes(b"x" * 5000)
    mounted.umount()
    db = _db(mounted.store)
    a, b = _ino(db, "a"), _ino(db, "b")
    db.execute("UPDATE dentries SET parent=? WHERE ino=?", (b, a))  # a under b under a
    db.close()
    code, rep = _check(mounted.store)
    assert code == 4 and "tree" in _kinds(rep)
    code, rep = _check(mounted.store, "--repair")
    assert code == 1 and rep["remaining"] == []
    mounted.mount()
    assert len(os.listdir(mounted.mnt / "lost+found")) == 1
    tree = [os.path.relpath(os.path.join(d, f), mounted.mnt)
            for d, _, fs in os.walk(mounted.mnt / "lost+found") for f in fs]
    assert len(tree) == 1 and tree[0].endswith("/b/f")
    assert (mounted.mnt / tree[0]).read_bytes() == b"x" * 5000


def test_incomplete_snapshots_are_named_by_report_and_fsck(mounted):
    from lzfs.criu import images as I
    from tests.conftest import criu_image as _image

    inventory = _image(I.INVENTORY_MAGIC, [("pagemap_head", {"pages_id": 1})])  # any entry
    pagemap = _image(I.PAGEMAP_MAGIC, [
        ("pagemap_head", {"pages_id": 1}),
        ("pagemap_entry", {"vaddr": 0x10000, "nr_pages": 8, "flags": I.PE_PRESENT})])
    cases = {
        "whole": {"inventory.img": inventory, "pages-1.img": os.urandom(8 * 4096)},
        "no-inventory": {"pages-1.img": os.urandom(8 * 4096)},
        "empty-inventory": {"inventory.img": b"", "pages-1.img": os.urandom(8 * 4096)},
        "short-pages": {"inventory.img": inventory, "pages-1.img": os.urandom(5 * 4096)},
        "no-pages": {"inventory.img": inventory},
    }
    for snap, files in cases.items():
        (mounted.mnt / snap).mkdir()
        for name, data in {**files, "pagemap-7.img": pagemap}.items():
            (mounted.mnt / snap / name).write_bytes(data)
    rep = json.loads(lzfs_cmd("report", "--json", str(mounted.mnt)).stdout)
    problems = {g["name"]: g["problems"] for g in rep["groups"] if g["complete"] is not None}
    assert problems["whole"] == []
    assert "no inventory.img" in problems["no-inventory"][0]
    assert "inventory.img is unreadable" in problems["empty-inventory"][0]
    assert problems["short-pages"] == ["pages-1.img holds 20480 of the 32768 bytes "
                                       "short-pages/pagemap-7.img maps"]
    assert "which is missing" in problems["no-pages"][0]
    mounted.umount()
    code, rep = _check(mounted.store)
    assert code == 0
    named = {p["message"].split()[1] for p in rep["problems"] if p["kind"] == "snapshot"}
    assert named == set(cases) - {"whole"}


def test_check_only_fsck_writes_nothing(mounted):
    _fill(mounted)
    mounted.umount()
    before = tree_state(mounted.store)
    code, _ = _check(mounted.store)
    assert code == 0
    assert tree_state(mounted.store) == before  # no -wal/-shm, the lock file untouched


def _filled_then(mounted, *sql: str) -> dict[str, bytes]:
    """Fill the store, unmount, run ``sql`` on its database; returns the files written."""
    files = _fill(mounted)
    mounted.umount()
    db = _db(mounted.store)
    for statement in sql:
        db.execute(statement)
    db.close()
    return files


def _all_read_back(mounted, files: dict[str, bytes]) -> None:
    mounted.mount()
    for rel, data in files.items():
        assert (mounted.mnt / rel).read_bytes() == data, rel


def test_a_damaged_pack_table_is_mended_from_the_frames(mounted):
    """The pack table saying too little must not make a repair cut intact frames off."""
    files = _filled_then(mounted, "UPDATE packs SET size = 20000")
    code, rep = _check(mounted.store)
    assert code == 4 and "pack" in _kinds(rep)
    code, rep = _check(mounted.store, "--repair")
    assert code == 1 and rep["remaining"] == [], rep
    assert rep["damaged"] == {}
    _all_read_back(mounted, files)


def test_lost_frame_and_inode_rows(mounted):
    """A run whose frame row is gone stays lost (EIO, never zeros, an error until the file
    goes); a file whose inode row is gone comes back with its data."""
    files = _fill(mounted)
    mounted.umount()
    db = _db(mounted.store)
    pages, other = _ino(db, "pages-1.img"), _ino(db, "other.img")
    off, frame = db.execute("SELECT off, frame FROM extents WHERE ino=? AND frame NOT IN "
                            "(SELECT frame FROM extents WHERE ino != ?) ORDER BY off "
                            "LIMIT 1 OFFSET 1", (pages, pages)).fetchone()
    db.execute("DELETE FROM frames WHERE id=?", (frame,))
    db.execute("DELETE FROM inodes WHERE id=?", (other,))
    db.close()
    code, rep = _check(mounted.store)
    assert code == 4 and {"extent", "dentry"} <= _kinds(rep)
    code, rep = _check(mounted.store, "--repair")
    assert code == 4 and {p["kind"] for p in rep["remaining"]} >= {"damaged"}
    code, rep = _check(mounted.store)
    assert code == 4 and list(rep["damaged"]) == ["/snap/pages-1.img"]
    mounted.mount()
    assert (mounted.mnt / "snap" / "other.img").read_bytes() == files["snap/other.img"]
    assert int(os.getxattr(mounted.mnt / "snap" / "pages-1.img", "user.lzfs.damaged")) > 0
    fd = os.open(mounted.mnt / "snap" / "pages-1.img", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.pread(fd, 4096, off)
        assert e.value.errno == errno.EIO
        assert os.pread(fd, 4096, 0) == files["snap/pages-1.img"][:4096]
    finally:
        os.close(fd)


def test_missing_root_is_reported_then_recreated(mounted):
    files = _filled_then(mounted, "DELETE FROM inodes WHERE id=1")
    code, rep = _check(mounted.store)
    assert code == 4 and any("root directory is missing" in p["message"]
                             for p in rep["problems"])
    code, rep = _check(mounted.store, "--repair")
    assert code == 1 and rep["remaining"] == [], rep
    _all_read_back(mounted, files)
