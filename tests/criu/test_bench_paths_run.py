"""`scripts/bench --profile lazy|page-server|random-read` end to end, small: real CRIU through
each method, one round, and what each writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lzfs.testing.criu import criu_command


def _bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "lzfs.testing.bench", *args, "--rounds", "1",
                          "--out", str(out)], capture_output=True, text=True, timeout=900,
                         check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    profile = args[args.index("--profile") + 1]
    return json.loads((out / f"bench-{profile}.json").read_text())


def test_lazy_profile_times_all_four_ways_back(tmp_path):
    lazy = subprocess.run([*criu_command(), "check", "--feature", "uffd-noncoop"],
                          capture_output=True, check=False)
    if lazy.returncode != 0:
        pytest.skip("no non-cooperative userfaultfd here (lazy restore)")
    meta = _bench(tmp_path, "--profile", "lazy", "--size", "32M")
    rows = {r["method"]: r for r in meta["results"]}
    assert set(rows) == {"plain", "plain-lazy", "lzfs-lazy", "lzfs"}
    for r in rows.values():
        assert r["intact"], r
        assert 0 < r["restore_s"] <= r["first_s"] <= r["all_s"]
    assert rows["plain"]["all_ratio"] == rows["plain"]["first_ratio"] == 1.0


def test_page_server_profile_dumps_into_both_and_restores(tmp_path):
    meta = _bench(tmp_path, "--profile", "page-server", "--size", "32M")
    rows = {r["method"]: r for r in meta["results"]}
    assert set(rows) == {"plain", "lzfs"}
    assert all(r["intact"] and r["dump_s"] > 0 and r["restore_s"] > 0 for r in rows.values())
    assert rows["lzfs"]["stored"] < rows["plain"]["stored"]  # compressed and zero pages gone


def test_random_read_profile_reads_through_a_mount_and_a_directory(tmp_path):
    meta = _bench(tmp_path, "--profile", "random-read", "--size", "16M", "--reads", "300")
    got = {(r["method"], r["pattern"]) for r in meta["results"]}
    assert got == {(m, p) for m in ("plain", "lzfs") for p in ("uniform", "local")}
    assert all(r["cold_MBps"] > 0 and r["warm_MBps"] > 0 for r in meta["results"])
