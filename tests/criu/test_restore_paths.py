"""Real CRIU on the other ways a snapshot comes back or arrives: a lazy restore, whose pages
the `criu lazy-pages` daemon reads from the mount on first touch, and a dump whose pages a
`criu page-server` writes into the mount while the source keeps the other images."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess

import pytest

from lzfs.testing import criu

pytestmark = pytest.mark.criu


@pytest.fixture(scope="module", autouse=True)
def _need_lazy_pages():
    res = subprocess.run([*criu.criu_command(), "check", "--feature", "uffd-noncoop"],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip("this kernel has no non-cooperative userfaultfd, which lazy restore needs: "
                    + (res.stdout + res.stderr).strip()[-200:])


def _reads(mounted) -> dict[int, int]:
    """READ requests the daemon has answered since it mounted, by size bucket."""
    reqs = json.loads((mounted.mnt / ".lzfs" / "stats.json").read_text())["requests"]
    return {int(k[6:]): n for k, n in reqs.items() if k.startswith("read<=")}


def test_lazy_pages_socket_can_be_made_in_a_mount(mounted):
    """`criu lazy-pages` binds `lazy-pages.socket` in the images directory and the restore
    connects to it there: the mount takes the socket node and connections reach the
    listener through it."""
    snap = mounted.mnt / "snap"
    snap.mkdir()
    path = snap / "lazy-pages.socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen(1)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as cli:
            cli.connect(str(path))
            conn, _ = srv.accept()
            with conn:
                cli.sendall(b"page")
                assert conn.recv(4) == b"page"
    path.unlink()
    assert not path.exists()


def test_lazy_restore_from_a_remounted_store_brings_all_memory_back(mounted, workload):
    """The process is restored before its memory: `criu lazy-pages` reads each page from the
    mount when the process first touches it (and the rest in the background). Touching a
    tenth and then all of its memory gives the checksums it had before the dump."""
    w = workload(size="96M", seed=6)
    tenth = w.ask_checksum(fraction=0.1)
    snap = mounted.mnt / "lazy"
    snap.mkdir()
    criu.run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
    w.wait_gone()
    mounted.remount()  # pages come from the store on disk, through a fresh daemon
    server = criu.start_lazy_pages(snap)
    try:
        criu.run_criu("restore", snap, "--shell-job", "-d", "--lazy-pages")
        assert w.ask_checksum(fraction=0.1) == tenth
        assert w.ask_checksum() == w.checksum
        server.wait(timeout=300)  # exits once every page is transferred
    finally:
        server.kill()
    log = (snap / "lazy-pages.log").read_text(errors="replace")
    assert "Error" not in log, log[-2000:]
    # lzfs recognised the lazy-pages daemon and served it through the page cache, where
    # readahead (raised to 1 MiB on the mount) gathers its 4 KiB faults and 64 KiB background
    # preads into large READs. With direct_io: 5,500 READs of 4 KiB and 27 of 128 KiB; with
    # the kernel's 128 KiB readahead about 800 of 4 KiB and 740 of 128 KiB.
    reads = _reads(mounted)
    print("READs by size:", reads)
    assert sum(n for size, n in reads.items() if size > 128 << 10) > 20, reads
    assert reads.get(4096, 0) < 2500, reads
    # CRIU leaves its socket in the snapshot; the next lazy restore of it still works
    assert stat.S_ISSOCK(os.lstat(snap / "lazy-pages.socket").st_mode)
    w.stop()
    server = criu.start_lazy_pages(snap)
    try:
        criu.run_criu("restore", snap, "--shell-job", "-d", "--lazy-pages",
                      log_name="restore-again.log")
        assert w.ask_checksum() == w.checksum
        server.wait(timeout=300)
    finally:
        server.kill()


def test_page_server_dump_into_a_mount_restores_intact(mounted, workload, tmp_path):
    """`criu page-server` on the receiving side writes the pagemaps and pages images into the
    mount while `criu dump --page-server` keeps the other images at the source; with those
    copied over, a restore from the remounted store brings the memory back."""
    w = workload(size="96M", seed=7)
    src = tmp_path / "src"
    src.mkdir()
    snap = mounted.mnt / "received"
    snap.mkdir()
    port = criu.free_port()
    server = criu.start_page_server(snap, port)
    try:
        criu.run_criu("dump", src, "-t", str(w.pid), "--shell-job", "--page-server",
                 "--address", "127.0.0.1", "--port", str(port))
        server.wait(timeout=120)
    finally:
        server.kill()
    w.wait_gone()
    received = sorted(n for n in os.listdir(snap) if n.startswith(("pages-", "pagemap-")))
    assert any(n.startswith("pagemap-") for n in received), received
    pages = [n for n in received if n.startswith("pages-")]
    assert pages and all(int(n[6:-4]) >= 65537 for n in pages), pages  # page-server's ids
    assert sum((snap / n).stat().st_size for n in pages) > 64 << 20
    assert not any(n.startswith("pages-") for n in os.listdir(src))
    for p in src.iterdir():
        if p.is_file() and p.suffix == ".img":
            shutil.copyfile(p, snap / p.name)
    mounted.remount()
    criu.run_criu("restore", snap, "--shell-job", "-d")
    assert w.ask_checksum() == w.checksum
