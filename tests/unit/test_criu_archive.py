"""Checkpoint archives (tars of CRIU images, as Podman and the kubelet write them): the images
are found by their tar headers alone, and an archive cut short says so."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from lzfs.criu import archive, images
from tests.conftest import criu_image

PAGES = os.urandom(8 * 4096)


def _images(pages: bytes = PAGES, nr_pages: int = 8) -> dict[str, bytes]:
    return {
        "inventory.img": criu_image(images.INVENTORY_MAGIC, [("pagemap_head", {"pages_id": 1})]),
        "pagemap-1.img": criu_image(images.PAGEMAP_MAGIC, [
            ("pagemap_head", {"pages_id": 1}),
            ("pagemap_entry", {"vaddr": 0x10000, "nr_pages": nr_pages,
                               "flags": images.PE_PRESENT})]),
        "pages-1.img": pages,
    }


def _tar(files: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A Podman-like export: config beside checkpoint/ and a rootfs diff."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for name, data in {"config.dump": b"{}" * 300, **files,
                           "rootfs-diff.tar": b"r" * 3072}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _find(data: bytes) -> archive.Archive | None:
    return archive.find_images(io.BytesIO(data), len(data))


def _problems(data: bytes, a: archive.Archive) -> list[str]:
    return a.problems(lambda off, n: data[off:off + n], "x.tar")


def test_images_are_found_at_their_offsets_in_the_archive():
    files = {f"checkpoint/{k}": v for k, v in _images().items()}
    data = _tar(files)
    a = _find(data)
    assert a is not None and a.directory == "checkpoint" and a.truncated is None
    assert set(a.images) == {"inventory.img", "pagemap-1.img", "pages-1.img"}
    for name, m in a.images.items():
        assert data[m.offset:m.offset + m.size] == files[f"checkpoint/{name}"]
        assert m.offset % 512 == 0
    assert _problems(data, a) == []


def test_only_tar_headers_are_read_never_the_pages():
    big = os.urandom(4 << 20)
    data = _tar({f"checkpoint/{k}": v for k, v in _images(big, len(big) // 4096).items()})
    read = []

    def read_at(off: int, n: int) -> bytes:
        read.append(n)
        return data[off:off + n]

    a = archive.find_images(archive.RangeFile(read_at, len(data)), len(data))
    assert a is not None and a.images["pages-1.img"].size == len(big)
    assert sum(read) < 64 << 10, sum(read)


def test_gnu_tar_archives_with_long_names_are_read(tmp_path: Path):
    d = tmp_path / "src" / ("checkpoint-" + "x" * 120)
    d.mkdir(parents=True)
    for name, blob in _images().items():
        (d / name).write_bytes(blob)
    out = tmp_path / "x.tar"
    subprocess.run(["tar", "--format=gnu", "-C", str(tmp_path / "src"), "-cf", str(out), "."],
                   check=True)
    data = out.read_bytes()
    a = _find(data)
    assert a is not None and a.directory == d.name and a.truncated is None
    assert data[a.images["pages-1.img"].offset:][:len(PAGES)] == PAGES


@pytest.mark.parametrize("what", ["random", "gzip", "no images", "empty"])
def test_a_file_that_is_no_uncompressed_checkpoint_tar_is_not_an_archive(what):
    data = {"random": os.urandom(10_000),
            "gzip": gzip.compress(_tar({f"checkpoint/{k}": v for k, v in _images().items()})),
            "no images": _tar({"etc/hosts": b"127.0.0.1 localhost\n"}),
            "empty": b""}[what]
    assert _find(data) is None


def test_an_export_cut_inside_the_pages_is_incomplete():
    data = _tar({f"checkpoint/{k}": v for k, v in _images().items()})
    a = _find(data)
    pages = a.images["pages-1.img"]
    cut = data[:pages.offset + 5000]
    b = _find(cut)
    assert b is not None
    assert "ends inside checkpoint/pages-1.img (5000 of 32768 bytes)" in b.truncated
    assert any("ends inside" in p for p in _problems(cut, b))


def test_an_export_without_the_end_marker_is_incomplete():
    data = _tar({f"checkpoint/{k}": v for k, v in _images().items()})
    end = len(data.rstrip(b"\0"))
    cut = data[:-(-end // 512) * 512]  # every member whole, tar's zero blocks missing
    b = _find(cut)
    assert b is not None and "end marker" in b.truncated


def test_missing_inventory_and_short_pages_are_named():
    imgs = _images()
    del imgs["inventory.img"]
    imgs["pages-1.img"] = PAGES[:4096]
    data = _tar({f"checkpoint/{k}": v for k, v in imgs.items()})
    problems = _problems(data, _find(data))
    assert any("no inventory.img" in p for p in problems), problems
    assert any("pages-1.img holds 4096 of the 32768 bytes" in p for p in problems), problems


def test_a_garbled_pagemap_is_named_not_raised():
    imgs = _images()
    imgs["pagemap-1.img"] = b"\x19\x43\x56\x54" + b"\xff" * 40
    data = _tar({f"checkpoint/{k}": v for k, v in imgs.items()})
    problems = _problems(data, _find(data))
    assert any("pagemap-1.img is unreadable" in p for p in problems), problems
