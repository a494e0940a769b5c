"""Which decoder a real mount uses (lzfs/store/_codec.c, or the Python reference when it is
missing or LZFS_PYTHON_DECODE=1 is set), that it says so, and that both give back every byte
after a remount (the frames decoded anew from the packs)."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import Mounted, _mounted

MiB = 1 << 20


def _content() -> bytes:
    parts = [os.urandom(MiB), bytes(MiB), b"tokens of a prompt " * 60_000, os.urandom(4096) * 200]
    return b"".join(p[:MiB] for p in parts) * 3


def _stats(m: Mounted) -> dict:
    return json.loads((m.mnt / ".lzfs" / "stats.json").read_text())


@pytest.mark.parametrize("decoder", ["native", "python"])
def test_a_mount_reads_back_every_byte_and_names_its_decoder(tmp_path, monkeypatch, decoder):
    if decoder == "python":
        monkeypatch.setenv("LZFS_PYTHON_DECODE", "1")  # the daemon inherits it
    m = _mounted(tmp_path)
    try:
        data = _content()
        (m.mnt / "pages-1.img").write_bytes(data)
        m.settle()
        m.remount()  # nothing decoded yet: every frame comes from the packs
        assert (m.mnt / "pages-1.img").read_bytes() == data
        assert _stats(m)["decoder"] == decoder
        said = "frames are decoded in Python (LZFS_PYTHON_DECODE is set)"
        log = (tmp_path / "store" / "lzfs.log").read_text()
        assert (said in log) == (decoder == "python")
    finally:
        m.umount()
