"""Prometheus metrics scraped while CRIU really dumps into the mount and restores from it: the
endpoint answers during the dump, and the dump, its bytes and the restore are counted; the
textfile for node_exporter holds the same families."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lzfs.fuse.passthrough import PATCHED
from lzfs.store.layout import mkfs
from lzfs.testing.criu import run_criu
from tests.conftest import Mounted

pytestmark = pytest.mark.criu


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return _samples(r.read().decode())


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_scraped_during_a_real_dump_and_restore(tmp_path: Path, workload):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mkfs(store)
    mnt.mkdir()
    port = _free_port()
    textfile = tmp_path / "lzfs.prom"
    m = Mounted(store, mnt, ("-o", f"metrics={port},metrics_file={textfile}"))
    m.mount()
    try:
        before = _scrape(port)
        assert _value(before, "lzfs_dumps_total") == 0
        assert _value(before, "lzfs_start_time_seconds") > time.time() - 600

        w = workload(size="64M", seed=5)
        snap = mnt / "s"
        snap.mkdir()
        failed: list[BaseException] = []

        def dump() -> None:
            try:
                run_criu("dump", snap, "-t", str(w.pid), "--shell-job")
            except Exception as exc:  # noqa: BLE001 - reported below, on the test's thread
                failed.append(exc)

        t = threading.Thread(target=dump)
        t.start()
        during = []
        while t.is_alive():
            during.append(_scrape(port))  # the daemon answers while CRIU writes
            time.sleep(0.05)
        t.join()
        assert not failed, failed
        assert during, "the dump ended before a scrape"
        w.wait_gone()

        deadline = time.monotonic() + 30
        while _value(after := _scrape(port), "lzfs_dumps_total") < 1:
            assert time.monotonic() < deadline, "the dump was never counted"
            time.sleep(0.2)
        assert _value(after, "lzfs_dump_duration_seconds_count") == 1
        assert _value(after, "lzfs_store_bytes", kind="logical") > 64 << 20
        assert _value(after, "lzfs_files") >= 5
        if PATCHED:  # SB_NOSEC (handle_killpriv_v2): a file's first write asks for
            # security.capability, not every one of them (85 of 64 MiB did before)
            assert _value(after, "lzfs_errors_total", errno="ENODATA") \
                <= _value(after, "lzfs_files") + 5
        assert "# TYPE lzfs_request_duration_seconds histogram" in textfile.read_text()

        m.settle()  # restored from frames: READs reach the daemon (passthrough bypasses it)
        run_criu("restore", snap, "--shell-job", "-d")
        assert w.ask_checksum() == w.checksum
        restored = _scrape(port)
        assert _value(restored, "lzfs_restores_total") >= 1
        assert _value(restored, "lzfs_request_duration_seconds_count", op="read") > 0
        assert _value(restored, "lzfs_request_bytes_total", op="read") > 1 << 20
    finally:
        m.umount()
