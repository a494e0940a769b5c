"""Real CRIU dumping and restoring a real process through a real lzfs mount."""

from __future__ import annotations

import os
import subprocess

import pytest

from lzfs.testing.criu import criu_command, run_criu

pytestmark = pytest.mark.criu


def _du(path) -> tuple[int, int]:
    """(apparent bytes, stored bytes) of a tree, as du computes them."""
    apparent = stored = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            apparent += st.st_size
            stored += st.st_blocks * 512
    return apparent, stored


def test_dump_kill_restore_keeps_memory_intact(mounted, workload):
    w = workload(size="240M")
    snap = mounted.mnt / "server-1"
    snap.mkdir()
    run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
    w.wait_gone()
    assert not w.alive()
    names = set(os.listdir(snap))
    assert {"inventory.img", "pages-1.img", "dump.log"} <= names
    assert any(n.startswith("pagemap-") for n in names)
    mounted.settle()  # what the dump staged raw, compressed (du shows it a moment later)
    apparent, stored = _du(snap)
    assert apparent > 240 << 20
    assert stored < apparent / 2, (apparent, stored)
    mounted.remount()  # restore from what is on disk, not from daemon memory
    run_criu("restore", snap, "--shell-job", "-d")
    assert w.ask_checksum() == w.checksum
    assert "stats-restore" in os.listdir(snap)


def test_forked_workers_restore_through_the_page_cache(mounted, workload):
    """A server that forked two workers after loading its memory: CRIU restores the workers'
    copy-on-write memory one 4 KiB pread at a time. lzfs serves those images through the page
    cache (lzfs/criu/cow.py), so they arrive as readahead-sized READs, not one per page, and
    the parent's image keeps direct_io (1 MiB READs). Every process's memory comes back."""
    import json

    w = workload(size="96M", children=2)
    assert len(w.children) == 2
    snap = mounted.mnt / "forked"
    snap.mkdir()
    run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
    w.wait_gone()
    assert len([n for n in os.listdir(snap) if n.startswith("pages-")]) == 3
    mounted.remount()
    run_criu("restore", snap, "--shell-job", "-d")
    assert w.ask_checksum() == w.checksum
    for i in range(2):
        assert w.ask_checksum(child=i) == w.checksum
    st = json.loads((mounted.mnt / ".lzfs" / "stats.json").read_text())
    reqs, fast = st["requests"], st["fast_reads"]
    small = sum(n for k, n in reqs.items() if k.startswith("read<=") and int(k[6:]) <= 4096)
    large = sum(n for k, n in reqs.items() if k.startswith("read<=") and int(k[6:]) > 512 << 10)
    # 2 x 96 MiB page by page would be about 50,000 READs of 4 KiB. READs answered from the
    # frame cache without the handler (fast reads) are not in `requests`: counted by bytes
    assert small + fast["answered"] < 2000, (reqs, fast)
    # the parent's 96 MiB, read with direct_io in 1 MiB READs
    assert large * (1 << 20) + fast["bytes"] >= 90 << 20, (reqs, fast)
    if fast["answered"]:
        assert fast["bytes"] / fast["answered"] >= 64 << 10, fast


def _dirty_tracking_reason() -> str | None:
    cmd = criu_command()
    res = subprocess.run([*cmd, "check", "--feature", "mem_dirty_track"], capture_output=True,
                         text=True)
    if res.returncode != 0:
        return ("this kernel has no soft-dirty page tracking (CONFIG_MEM_SOFT_DIRTY is off), "
                "so CRIU refuses pre-dump --track-mem and any dump with a parent")
    return None


def test_incremental_chain_restores(mounted, workload):
    reason = _dirty_tracking_reason()
    if reason:
        pytest.skip(reason)
    w = workload(size="160M", seed=2)
    pre, final = mounted.mnt / "pre", mounted.mnt / "final"
    pre.mkdir()
    final.mkdir()
    run_criu("pre-dump", pre, "-t", str(w.pid), "--shell-job", "--track-mem")
    run_criu("dump", final, "-t", str(w.pid), "--shell-job", "--track-mem",
             "--prev-images-dir", "../pre")
    w.wait_gone()
    assert os.readlink(final / "parent") == "../pre"
    # the final dump holds only what changed since the pre-dump
    assert _du(final)[0] < _du(pre)[0] / 2
    mounted.remount()
    run_criu("restore", final, "--shell-job", "-d")
    assert w.ask_checksum() == w.checksum


def test_successive_dumps_of_one_server_add_about_what_changed(mounted, workload):
    """A server snapshotted again and again (--leave-running): a second dump with nothing
    changed adds almost nothing; one after 1% of its pages changed, scattered as a serving
    process changes them, adds about those pages, under 3% of the first snapshot (format 1,
    with 16-page blocks, added 10-13% for 0.8% of pages changed). The last one restores."""
    w = workload(size="200M", seed=3)
    one, two, three = (mounted.mnt / n for n in ("one", "two", "three"))
    for d in (one, two, three):
        d.mkdir()
    run_criu("dump", one, "-t", str(w.pid), "--shell-job", "--leave-running")
    mounted.remount()
    stored_one = _store_bytes(mounted)
    run_criu("dump", two, "-t", str(w.pid), "--shell-job", "--leave-running")
    mounted.remount()
    stored_two = _store_bytes(mounted)
    assert stored_two - stored_one < 0.01 * stored_one, (stored_one, stored_two)
    assert _du(two)[0] > 200 << 20
    changed = w.mutate(0.01, seed=5)
    assert changed > 300
    run_criu("dump", three, "-t", str(w.pid), "--shell-job")
    w.wait_gone()
    mounted.remount()
    added = _store_bytes(mounted) - stored_two
    # each changed page is stored once (at most a page), plus the other images and frame
    # headers; the bound the write-path issue set is 3% of the first snapshot
    assert added < 0.03 * stored_one, (stored_one, added, changed)
    assert added < 2 * changed * 4096 + (1 << 20), (added, changed)
    run_criu("restore", three, "--shell-job", "-d")
    assert w.ask_checksum() == w.checksum


def _store_bytes(mounted) -> int:
    return sum(p.stat().st_blocks * 512 for p in (mounted.store / "packs").iterdir())


@pytest.mark.parametrize("settled", [False, True], ids=["staged", "settled"])
def test_auto_dedup_gives_back_what_it_restored(mounted, workload, settled):
    """--auto-dedup punches holes (fallocate PUNCH_HOLE | KEEP_SIZE) in the pages images as
    it restores from them: the process comes back whole, the images keep their sizes, and
    the pages they held are given back, whether the image is still a staging file (a dump
    written through passthrough) or stored as frames."""
    w = workload(size="64M", seed=4)
    snap = mounted.mnt / "ad"
    snap.mkdir()
    run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
    w.wait_gone()
    if settled:
        mounted.settle()
    size = (snap / "pages-1.img").stat().st_size
    run_criu("restore", snap, "--shell-job", "-d", "--auto-dedup")
    log = (snap / "restore.log").read_text(errors="replace")
    assert "Failed to punch holes" not in log
    assert w.ask_checksum() == w.checksum
    st = (snap / "pages-1.img").stat()
    assert st.st_size == size and st.st_blocks * 512 < size / 8  # given back
    assert (snap / "pages-1.img").read_bytes().count(0) > 0.9 * size
    w.stop()


def test_criu_is_a_real_criu():
    cmd = os.environ.get("LZFS_CRIU") or "criu"
    out = subprocess.run([*cmd.split(), "--version"], capture_output=True, text=True).stdout
    assert "Version: " in out
    assert int(out.split("Version: ")[1].split(".")[0]) >= 4


def test_four_replicas_store_in_less_than_one_and_a_half(mounted, workload):
    """Four replicas of one model server (same weights, different heaps and addresses)."""
    stored = []
    for i in range(4):
        w = workload(size="120M", profile="replica", seed=100 + i, weights_seed=7)
        snap = mounted.mnt / f"replica-{i}"
        snap.mkdir()
        run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
        w.wait_gone()
        mounted.remount()
        stored.append(_store_bytes(mounted))
    one = stored[0]
    assert stored[-1] < 1.5 * one, stored
    import json

    from tests.conftest import lzfs_cmd

    rep = json.loads(lzfs_cmd("report", str(mounted.mnt), "--json").stdout)
    groups = {g["name"]: g for g in rep["groups"]}
    assert all(groups[f"replica-{i}"]["shared"] > groups[f"replica-{i}"]["unique"]
               for i in range(4))
    regions = json.loads(lzfs_cmd("report", str(mounted.mnt), "--json", "--by",
                                  "region").stdout)
    anon = [r for s in regions["snapshots"] for r in s["regions"] if r["region"] == "[anon]"]
    assert anon and all(r["shared_raw"] > 0 for r in anon)
