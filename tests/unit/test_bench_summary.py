"""The benchmark's arithmetic and its argument checks (the runs themselves: tests/criu)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lzfs.testing.bench import summarize


def _run(method: str, rnd: int, dump: float, restore: float, stored: int, **extra) -> dict:
    return {"method": method, "storage": "unthrottled", "round": rnd, "dump_s": dump,
            "restore_s": restore, "stored": stored, "intact": True, **extra}


def test_ratios_are_medians_of_ratios_paired_by_round() -> None:
    # plain is slow in round 1 and fast in round 2; lzfs follows it. Ratios of medians would
    # mix rounds (2.0/2.5 = 0.8); paired ratios see lzfs at 1.0x and 2.0x of plain.
    runs = [
        _run("plain", 0, 4.0, 2.0, 1000), _run("lzfs", 0, 4.0, 3.0, 400, daemon_peak_rss=10,
                                                micro={"seq_MBps": 1.0}),
        _run("plain", 1, 1.0, 1.0, 1000), _run("lzfs", 1, 2.0, 1.0, 400, daemon_peak_rss=30),
        _run("plain", 2, 3.0, 4.0, 1000), _run("lzfs", 2, 4.5, 2.0, 400, daemon_peak_rss=20),
    ]
    rows = {r["method"]: r for r in summarize(runs)}
    lz = rows["lzfs"]
    assert lz["dump_runs"] == [4.0, 2.0, 4.5] and lz["dump_s"] == 4.0
    assert lz["dump_ratios"] == [1.0, 2.0, 1.5] and lz["dump_ratio"] == 1.5
    assert lz["restore_ratios"] == [1.5, 1.0, 0.5] and lz["restore_ratio"] == 1.0
    assert lz["stored_ratio"] == 0.4
    assert lz["daemon_peak_rss"] == 30 and lz["micro"] == {"seq_MBps": 1.0}
    assert lz["rounds"] == 3 and "round" not in lz
    assert rows["plain"]["dump_ratios"] == [1.0, 1.0, 1.0]


def test_a_throttled_restore_is_also_given_against_its_floor() -> None:
    """The floor of a restore from slow storage: the bytes stored (packs and metadata) read
    at the throttled rate. 200 MB stored at 100 MB/s is 2 s; restores of 2.5 and 3 s are
    1.25x and 1.5x of it."""
    runs = [_run("plain", 0, 1, 10, 1000, mbps=100),
            _run("lzfs", 0, 1, 2.5, 190_000_000, mbps=100, meta_bytes=10_000_000),
            _run("plain", 1, 1, 10, 1000, mbps=100),
            _run("lzfs", 1, 1, 3.0, 190_000_000, mbps=100, meta_bytes=10_000_000)]
    for r in runs:
        r["storage"] = "100 MB/s"
    lz = {r["method"]: r for r in summarize(runs)}["lzfs"]
    assert lz["restore_floor_ratios"] == [1.25, 1.5]
    assert lz["restore_floor_ratio"] == 1.375
    unthrottled = summarize([_run("plain", 0, 1, 1, 10), _run("lzfs", 0, 1, 1, 5)])
    assert all("restore_floor_ratio" not in r for r in unthrottled)


def test_a_damaged_restore_in_any_round_marks_the_row() -> None:
    runs = [_run("plain", 0, 1, 1, 10), _run("lzfs", 0, 1, 1, 5),
            _run("plain", 1, 1, 1, 10), {**_run("lzfs", 1, 1, 1, 5), "intact": False}]
    rows = {r["method"]: r for r in summarize(runs)}
    assert rows["plain"]["intact"] and not rows["lzfs"]["intact"]


@pytest.mark.parametrize("args, message", [
    (["--methods", "lzfs"], "must include plain"),
    (["--methods", "plain,zstd"], "unknown method(s) zstd"),
    (["--rounds", "0"], "at least 1"),
])
def test_bad_arguments_are_refused_before_anything_runs(args: list[str], message: str) -> None:
    res = subprocess.run([sys.executable, "-m", "lzfs.testing.bench", *args],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and message in res.stderr, res.stderr
