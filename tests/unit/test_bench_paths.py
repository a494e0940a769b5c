"""The lazy/page-server benchmark's arithmetic and argument checks, and finding the disk to
throttle (the runs themselves: tests/criu/test_bench_paths_run.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lzfs.testing.bench import block_device, throttle_unavailable
from lzfs.testing.bench_paths import LAZY_KEYS, summarize


def test_ratios_are_medians_of_per_round_ratios_to_plain():
    runs = []
    for rnd, (plain, lazy) in enumerate([(1.0, 3.0), (2.0, 2.0), (4.0, 2.0)]):
        runs.append({"method": "plain", "round": rnd, "intact": True,
                     "restore_s": plain, "first_s": plain, "all_s": plain})
        runs.append({"method": "lzfs-lazy", "round": rnd, "intact": rnd != 1,
                     "restore_s": lazy, "first_s": lazy, "all_s": lazy})
    rows = {r["method"]: r for r in summarize(runs, LAZY_KEYS)}
    assert rows["plain"]["all_ratio"] == 1.0
    assert rows["lzfs-lazy"]["all_s"] == 2.0
    assert rows["lzfs-lazy"]["all_ratio"] == 1.0  # median of 3.0, 1.0, 0.5
    assert rows["lzfs-lazy"]["all_runs"] == [3.0, 2.0, 2.0]
    assert not rows["lzfs-lazy"]["intact"]


@pytest.mark.parametrize("args", [
    ["--profile", "lazy", "--methods", "plain,lzfs-fast"],
    ["--profile", "lazy", "--methods", "lzfs-lazy"],
    ["--profile", "page-server", "--methods", "plain,lz4"],
])
def test_bad_methods_get_a_one_line_error(args, tmp_path):
    res = subprocess.run([sys.executable, "-m", "lzfs.testing.bench", *args, "--out",
                          str(tmp_path)], capture_output=True, text=True, check=False)
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "plain" in res.stderr
    assert not list(tmp_path.iterdir())


def test_the_disk_under_a_directory_is_found_from_its_device_number():
    here = Path(__file__)
    dev = block_device(here)
    st = os.stat(here).st_dev
    if dev is None:
        pytest.skip(f"{here} is on no block device here")
    major, minor = map(int, dev.split(":"))
    node = Path(f"/sys/dev/block/{os.major(st)}:{os.minor(st)}")
    # the device itself, or the disk a partition of it belongs to
    assert (major, minor) == (os.major(st), os.minor(st)) or (node / "partition").exists()


def test_no_block_device_means_no_throttle_with_the_reason():
    assert block_device(Path("/proc/self")) is None
    reason = throttle_unavailable(Path("/proc/self"))
    assert reason is not None and "\n" not in reason
