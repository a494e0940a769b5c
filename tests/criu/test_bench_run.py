"""`scripts/bench` end to end, small: the benchmark has to run on a fresh machine after set-up,
so CI runs its real code path (real CRIU dumping and restoring through each method, twice,
interleaved) and checks what it writes."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys


def test_bench_runs_end_to_end_and_reports_paired_ratios(tmp_path) -> None:
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "lzfs.testing.bench", "--size", "48M", "--throttle-mbps", "0",
         "--methods", "plain,lz4,lzfs", "--rounds", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    meta = json.loads((out / "bench-llm.json").read_text())
    assert meta["rounds"] == 2
    rows = {r["method"]: r for r in meta["results"]}
    assert set(rows) == {"plain", "lz4", "lzfs"}
    for r in rows.values():
        assert r["intact"], r
        assert r["rounds"] == 2 and len(r["dump_runs"]) == len(r["restore_runs"]) == 2
        assert r["dump_s"] == statistics.median(r["dump_runs"])
        assert r["restore_ratio"] == statistics.median(r["restore_ratios"])
    assert rows["plain"]["dump_ratios"] == rows["plain"]["restore_ratios"] == [1.0, 1.0]
    # the llm profile is a third zeros and a third text: both compressed ways store far less
    assert rows["lzfs"]["stored_ratio"] < 0.7 and rows["lz4"]["stored_ratio"] < 0.7
    assert rows["lzfs"]["daemon_peak_rss"] > 0
    assert rows["lzfs"]["micro"]["seq_MBps"] > 0 and rows["plain"]["micro"]["seq_MBps"] > 0
    assert "per round, x of plain" in res.stdout
    if importlib.util.find_spec("matplotlib"):
        assert (out / "bench-llm.png").stat().st_size > 0
