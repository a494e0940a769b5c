"""Real CRIU through both write paths: by default a dump's images go through FUSE
passthrough to staging files (no WRITE reaches the daemon) and restore straight from them or,
once settled, from frames; with -o nopassthrough (and wherever the kernel cannot pass through)
every byte goes through the daemon, as before. The process comes back whole either way."""

from __future__ import annotations

import json
import os

import pytest

from lzfs.fuse.passthrough import PATCHED
from lzfs.store.layout import mkfs
from lzfs.testing.criu import run_criu
from tests.conftest import Mounted

pytestmark = pytest.mark.criu


def _requests(m: Mounted) -> dict[str, int]:
    return json.loads((m.mnt / ".lzfs" / "stats.json").read_text())["requests"]


def _writes(m: Mounted) -> int:
    return sum(n for k, n in _requests(m).items() if k.startswith("write"))


@pytest.fixture(params=["passthrough", "through-the-daemon"])
def path_mount(request, tmp_path):
    if request.param == "passthrough" and not PATCHED:
        pytest.skip("pyfuse3 without passthrough (scripts/setup builds it)")
    mkfs(tmp_path / "store")
    (tmp_path / "mnt").mkdir()
    opts = () if request.param == "passthrough" else ("-o", "nopassthrough")
    m = Mounted(tmp_path / "store", tmp_path / "mnt", opts)
    m.mount()
    yield request.param, m
    m.umount()


@pytest.mark.parametrize("restore_from", ["staging files", "frames"])
def test_a_dump_restores_from_either_write_path(path_mount, workload, restore_from):
    how, m = path_mount
    w = workload(size="96M", seed=11)
    snap = m.mnt / "s"
    snap.mkdir()
    run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
    w.wait_gone()
    writes = _writes(m)
    if how == "passthrough":
        assert writes == 0, _requests(m)  # pages and protobuf images alike
        assert len(os.listdir(m.store / "staging")) > 3
    else:
        assert writes > 96, _requests(m)  # at least one per MiB of pages
    if restore_from == "frames":
        m.settle()
        assert not (m.store / "staging").exists() or not os.listdir(m.store / "staging")
    run_criu("restore", snap, "--shell-job", "-d")
    assert w.ask_checksum() == w.checksum
    w.stop()
    m.remount()  # what the store holds on disk restores too
    run_criu("restore", snap, "--shell-job", "-d", log_name="restore-again.log")
    assert w.ask_checksum() == w.checksum
