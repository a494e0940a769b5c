"""Dedup across snapshots, the report's figures against an independent page-hash count, space
given back after deleting a snapshot, and inspection with du, getfattr and cat."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess

import pytest

from tests.conftest import lzfs_cmd

PAGE = 4096


def _region(seed: int, pages: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(PAGE) for _ in range(pages)]


def _write_pages_file(path, regions: list[list[bytes]]) -> None:
    """Regions of distinct random pages, each followed by a zero page (as unmapped gaps and
    guard pages separate VMAs in a real pages image)."""
    with open(path, "wb") as f:
        for reg in regions:
            f.write(b"".join(reg))
            f.write(bytes(PAGE))


def _page_model(files: list) -> tuple[int, int, set[bytes]]:
    """(logical bytes, zero bytes, distinct non-zero page digests) of some files."""
    logical = zero = 0
    pages: set[bytes] = set()
    for p in files:
        data = p.read_bytes()
        logical += len(data)
        for i in range(0, len(data), PAGE):
            page = data[i:i + PAGE]
            if page == bytes(len(page)):
                zero += len(page)
            else:
                pages.add(hashlib.sha256(page).digest())
    return logical, zero, pages


def test_report_figures_equal_an_independent_page_count(mounted):
    common = _region(1, 300)         # e.g. weights two replicas hold
    other = _region(2, 150)
    layouts = {
        "replica-a": [_region(10, 70), common, _region(11, 33)],
        "replica-b": [_region(20, 5), _region(21, 90), common, other],  # shifted
        "solo": [_region(30, 120), other],
    }
    for name, regions in layouts.items():
        d = mounted.mnt / name
        d.mkdir()
        _write_pages_file(d / "pages-1.img", regions)
        # magics and one empty entry: 12 bytes
        (d / "inventory.img").write_bytes(b"\x19\x43\x56\x54\x16\x31\x31\x58" + bytes(4))
    models = {n: _page_model([mounted.mnt / n / "pages-1.img"]) for n in layouts}
    rep = json.loads(lzfs_cmd("report", str(mounted.mnt), "--json").stdout)
    groups = {g["name"]: g for g in rep["groups"]}
    inventory = 12  # one 12-byte block per snapshot, the same content in all three
    for name, (logical, zero, pages) in models.items():
        g = groups[name]
        others = set().union(*(models[o][2] for o in models if o != name))
        assert g["logical"] == logical + inventory
        assert g["zero"] == zero
        assert g["distinct_raw"] == len(pages) * PAGE + inventory
        assert g["unique_raw"] == len(pages - others) * PAGE
        for o in models:
            if o != name:
                assert g["shared_with_raw"][o] == len(pages & models[o][2]) * PAGE + inventory
        assert g["complete"] is True, g["problems"]
    assert abs(sum(g["unique"] for g in groups.values()) + 0) <= rep["totals"]["stored"]
    text = lzfs_cmd("report", str(mounted.mnt)).stdout
    assert "replica-a" in text and "shared stored bytes between snapshots" in text


def test_deleting_a_snapshot_gives_its_space_back(mounted):
    keep = mounted.mnt / "keep"
    drop = mounted.mnt / "drop"
    keep.mkdir()
    drop.mkdir()
    shared = _region(5, 200)
    _write_pages_file(keep / "pages-1.img", [shared, _region(6, 100)])
    _write_pages_file(drop / "pages-1.img", [shared, _region(7, 2000)])
    want = (keep / "pages-1.img").read_bytes()
    lzfs_cmd("gc", str(mounted.mnt))
    packs = mounted.store / "packs"
    before = sum(p.stat().st_blocks * 512 for p in packs.iterdir())
    shutil.rmtree(drop)
    lzfs_cmd("gc", str(mounted.mnt))
    after = sum(p.stat().st_blocks * 512 for p in packs.iterdir())
    assert before - after >= 2000 * PAGE * 0.9, (before, after)
    assert (keep / "pages-1.img").read_bytes() == want
    mounted.remount()
    assert (keep / "pages-1.img").read_bytes() == want
    rep = json.loads(lzfs_cmd("report", str(mounted.store), "--json").stdout)
    assert [g["name"] for g in rep["groups"]] == ["keep"]
    assert rep["totals"]["garbage_frames"] == 0


def test_du_getfattr_and_cat_show_what_files_cost(mounted):
    d = mounted.mnt / "snap"
    d.mkdir()
    with open(d / "pages-1.img", "wb") as f:
        f.write(b"".join(_region(8, 256)))          # 1 MiB incompressible
        f.write(bytes(3 << 20))                    # 3 MiB of zero pages
        f.write(b"model server heap text " * 45590)  # ~1 MiB compressible
    mounted.settle()
    logical = (d / "pages-1.img").stat().st_size
    du = int(subprocess.run(["du", "-sb", "--apparent-size", str(d)], capture_output=True,
                            text=True, check=True).stdout.split()[0])
    du_real = int(subprocess.run(["du", "-sk", str(d)], capture_output=True, text=True,
                                 check=True).stdout.split()[0]) * 1024
    assert du == logical
    assert (1 << 20) < du_real < (1 << 20) + (300 << 10)
    out = subprocess.run(["getfattr", "-d", "-m", "user.lzfs", str(d / "pages-1.img")],
                         capture_output=True, text=True, check=True).stdout
    attrs = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    attrs = {k.removeprefix("user.lzfs."): v.strip('"') for k, v in attrs.items()}
    assert int(attrs["logical"]) == logical
    assert int(attrs["zero"]) == 3 << 20
    assert int(attrs["unique"]) == int(attrs["stored"])
    assert abs(int(attrs["stored"]) - du_real) < 64 << 10
    assert float(attrs["ratio"]) > 2
    stats = (mounted.mnt / ".lzfs" / "stats").read_text()
    assert "after compression" in stats
    js = json.loads((mounted.mnt / ".lzfs" / "stats.json").read_text())
    assert js["logical"] == logical
    assert "snap" in (mounted.mnt / ".lzfs" / "report").read_text()
    assert ".lzfs" not in os.listdir(mounted.mnt)
    for attempt in (lambda: (mounted.mnt / ".lzfs" / "stats").write_text("x"),
                    lambda: (mounted.mnt / ".lzfs" / "new").write_text("x"),
                    lambda: os.unlink(mounted.mnt / ".lzfs" / "report"),
                    lambda: os.rmdir(mounted.mnt / ".lzfs"),
                    lambda: os.mkdir(mounted.mnt / ".lzfs")):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno in (30, 1, 17)  # EROFS, EPERM, EEXIST
