"""Bad input to every `lzfs` command that takes a store or a mount: a plain directory, a
missing path, a regular file, a newer format, a damaged meta.db, odd and overlong names, busy
or missing mount points, damaged CRIU images. Each fails with one `lzfs:` line on stderr and a
non-zero exit, and leaves the store exactly as it was: names, modes, sizes, mtimes and content
of every entry, the store directory itself included (so a -wal file created and removed again
is caught by the directory's mtime)."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

import pytest
import trio

from lzfs.cli.main import main
from lzfs.criu import images as I
from lzfs.mount.mountinfo import find_mount
from lzfs.store.layout import mkfs
from lzfs.store.store import Store
from tests.conftest import criu_image, fuse_unusable_reason, lzfs_cmd, tree_state

needs_fuse = pytest.mark.skipif(fuse_unusable_reason() is not None,
                                reason=fuse_unusable_reason() or "")
PAGE = 4096


def _damage_db(store: Path, how: str) -> None:
    db = store / "meta.db"
    data = bytearray(db.read_bytes())
    rnd = random.Random(how)
    if how == "garbage":
        data = bytearray(rnd.randbytes(len(data)))
    elif how == "truncated":
        del data[3 * PAGE + 100:]
    elif how == "header-only":  # a valid first page (header and schema), garbage pages after
        data[PAGE:] = rnd.randbytes(len(data) - PAGE)
    elif how == "empty":
        data = bytearray()
    db.write_bytes(bytes(data))


def _edit_config(path: Path, **fields) -> None:
    mkfs(path)
    cfg = json.loads((path / "lzfs.json").read_text())
    cfg.update(fields)
    (path / "lzfs.json").write_text(json.dumps(cfg))


def make_bad_store(tmp: Path, case: str) -> Path:
    """A path that is not a usable store, as ``case`` says."""
    path = tmp / "store"
    if case == "plain-dir":
        path.mkdir()
        (path / "notes.txt").write_text("not a store\n")
    elif case == "missing":
        pass
    elif case == "regular-file":
        path.write_bytes(b"just a file\n")
    elif case == "overlong-name":
        path = tmp / ("x" * 300)
    elif case in ("newer-format", "odd-name-newer-format"):
        if case.startswith("odd"):
            path = tmp / "st ore\nü*"
        _edit_config(path, version=99)
    elif case == "config-not-json":
        mkfs(path)
        (path / "lzfs.json").write_bytes(b"\x00\xff{not json")
    elif case == "bad-chunking":
        _edit_config(path, avg_pages=3)
    elif case == "no-meta-db":
        mkfs(path)
        (path / "meta.db").unlink()
    elif case.startswith("db-"):
        mkfs(path)
        _damage_db(path, case[3:])
    else:
        raise AssertionError(case)
    return path


STORE_CASES = ["plain-dir", "missing", "regular-file", "overlong-name", "newer-format",
               "odd-name-newer-format", "config-not-json", "bad-chunking", "no-meta-db",
               "db-garbage", "db-truncated", "db-header-only", "db-empty"]
READERS = [["stats"], ["stats", "--json"], ["report"], ["report", "--by", "region"], ["gc"]]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """`lzfs ARGV` in this process (an uncaught exception fails the test with its traceback);
    returns (exit code, stderr)."""
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str) -> None:
    assert code != 0
    assert err.startswith("lzfs: ") and err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert "Traceback" not in err


@pytest.mark.parametrize("case", STORE_CASES)
def test_store_commands_on_a_bad_store_fail_on_one_line_and_change_nothing(
        tmp_path, capsys, case):
    store = make_bad_store(tmp_path, case)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before = tree_state(store)
    runs = [[*r, str(store)] for r in READERS]
    if case != "missing":  # mkfs of a new path is the one that works
        runs.append(["mkfs", str(store)])
    runs += [["import", str(tmp_path), str(store / "snap")],
             ["export", str(store), str(tmp_path / "out")], ["umount", str(store)]]
    if fuse_unusable_reason() is None:
        runs.append(["mount", str(store), str(mnt)])
    try:
        for argv in runs:
            code, err = run_cli(capsys, *argv)
            assert_one_line_error(code, err)
            assert tree_state(store) == before, argv
    finally:
        if find_mount(mnt):
            lzfs_cmd("umount", str(mnt))
    assert not (tmp_path / "out").exists()
    assert os.listdir(mnt) == []


@pytest.mark.parametrize("case", ["db-header-only", "overlong-name", "odd-name-newer-format"])
def test_the_real_command_prints_one_line_too(tmp_path, case):
    store = make_bad_store(tmp_path, case)
    before = tree_state(store)
    res = lzfs_cmd("stats", str(store), check=False)
    assert_one_line_error(res.returncode, res.stderr)
    assert tree_state(store) == before


def test_read_only_commands_write_nothing_to_a_good_store(tmp_path, capsys):
    store = tmp_path / "store"
    mkfs(store)
    s = Store(store)
    runs, _ = trio.run(s.ingest, os.urandom(200_000), 0, True)
    s.maps.insert(1, runs)
    s.close()
    before = tree_state(store)
    for argv in READERS[:-1]:
        assert run_cli(capsys, *argv, str(store))[0] == 0
    assert tree_state(store) == before


@needs_fuse
@pytest.mark.parametrize("case", ["file", "overlong", "odd-name-missing"])
def test_mount_on_a_bad_mount_point_fails_on_one_line_and_changes_nothing(
        tmp_path, capsys, case):
    store = tmp_path / "store"
    mkfs(store)
    mnt = {"file": tmp_path / "f", "overlong": tmp_path / ("m" * 300),
           "odd-name-missing": tmp_path / "m\nnt"}[case]
    if case == "file":
        mnt.write_text("x")
    before = tree_state(store)
    try:
        assert_one_line_error(*run_cli(capsys, "mount", str(store), str(mnt)))
    finally:
        if find_mount(mnt):
            lzfs_cmd("umount", str(mnt))
    assert tree_state(store) == before


@needs_fuse
def test_a_busy_mount_is_not_unmounted_and_keeps_its_data(mounted, capsys):
    (mounted.mnt / "held").write_bytes(b"data")
    with open(mounted.mnt / "held", "rb"):
        code, err = run_cli(capsys, "umount", str(mounted.mnt))
        assert_one_line_error(code, err)
        assert "still open" in err
        assert find_mount(mounted.mnt) is not None
    mounted.remount()
    assert (mounted.mnt / "held").read_bytes() == b"data"


# ---- damaged CRIU images in a snapshot ---------------------------------------------------

def _snapshot(d: Path, pid: int, damage: dict[str, bytes]) -> None:
    """A small CRIU-like snapshot: 8 pages at 0x10000 in a heap VMA; ``damage`` replaces
    images (names with {pid})."""
    d.mkdir()
    imgs = {
        "inventory.img": struct.pack("<II", I.IMG_COMMON_MAGIC, I.INVENTORY_MAGIC),
        f"pagemap-{pid}.img": GOOD_PAGEMAP,
        f"mm-{pid}.img": criu_image(I.MM_MAGIC, [("mm_entry", {"vmas": [
            {"start": 0x10000, "end": 0x20000, "status": I.VMA_AREA_REGULAR | I.VMA_AREA_HEAP}]})]),
        "pstree.img": criu_image(I.PSTREE_MAGIC, [("pstree_entry", {"pid": pid, "ppid": 1})]),
        "pages-1.img": random.Random(pid).randbytes(8 * PAGE),
    }
    imgs.update({name.format(pid=pid): data for name, data in damage.items()})
    for name, data in imgs.items():
        (d / name).write_bytes(data)


GOOD_PAGEMAP = criu_image(I.PAGEMAP_MAGIC, [
    ("pagemap_head", {"pages_id": 1}),
    ("pagemap_entry", {"vaddr": 0x10000, "nr_pages": 8, "flags": I.PE_PRESENT})])


@needs_fuse
def test_report_marks_images_it_cannot_parse_and_reports_the_rest(mounted):
    cases = {
        "good": {},
        "pagemap-truncated": {"pagemap-{pid}.img": GOOD_PAGEMAP[:-3]},
        "pagemap-garbage": {"pagemap-{pid}.img": random.Random(1).randbytes(300)},
        "mm-garbage": {"mm-{pid}.img": struct.pack("<III", I.IMG_COMMON_MAGIC, I.MM_MAGIC, 5)
                       + b"\xff" * 5},
        "mm-empty": {"mm-{pid}.img": b""},
        "pstree-garbage": {"pstree.img": b"\x00" * 3},
    }
    for i, (name, damage) in enumerate(cases.items()):
        _snapshot(mounted.mnt / name, 100 + i, damage)
    res = lzfs_cmd("report", str(mounted.mnt), "--by", "region", "--json")
    assert res.stderr == ""
    rep = json.loads(res.stdout)
    # the report does not read pstree.img, so that snapshot is whole
    assert {s["snapshot"] for s in rep["snapshots"]} == {"good", "pstree-garbage"}
    for s in rep["snapshots"]:
        assert [(r["region"], r["logical"]) for r in s["regions"]] == [("[heap]", 8 * PAGE)]
    assert len(rep["errors"]) == 4
    unparsed = " | ".join(rep["errors"])
    for name in ("pagemap-truncated/pagemap-", "pagemap-garbage/pagemap-", "mm-garbage/mm-",
                 "mm-empty/mm-"):
        assert name in unparsed, unparsed
    assert lzfs_cmd("report", str(mounted.mnt), "--by", "region").stdout.count(
        "cannot parse:") == 4
    for by in ("snapshot", "file"):
        assert "pagemap-garbage" in lzfs_cmd("report", str(mounted.mnt), "--by", by).stdout
    assert "pagemap-garbage" in (mounted.mnt / ".lzfs" / "report").read_text()
