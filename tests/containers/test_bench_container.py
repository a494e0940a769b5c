"""`scripts/bench --profile container` end to end, small: runc checkpoints and restores a
container through a plain directory and through lzfs, and the figures land in the JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lzfs.testing.container import runtime_unusable_reason
from lzfs.testing.criu import criu_unusable_reason
from tests.conftest import fuse_unusable_reason

pytestmark = [pytest.mark.criu, pytest.mark.fuse]


def test_bench_container_profile_runs_runc_beside_a_plain_directory(tmp_path) -> None:
    reason = runtime_unusable_reason("runc") or criu_unusable_reason() or fuse_unusable_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "lzfs.testing.bench", "--profile", "container", "--size", "32M",
         "--throttle-mbps", "0", "--methods", "plain,lz4,lzfs", "--rounds", "1",
         "--out", str(out)], capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = {r["method"]: r for r in json.loads((out / "bench-container.json").read_text())
            ["results"]}
    assert set(rows) == {"plain", "lzfs"}  # lz4 is not a container method: left out
    assert all(r["intact"] for r in rows.values()), rows
    assert rows["plain"]["logical"] > 32 << 20
    assert rows["lzfs"]["stored_ratio"] < 0.7  # a third zeros, a third text
