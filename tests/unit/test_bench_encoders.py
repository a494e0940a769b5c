"""The encoder-process simulation stores what it is given, in processes or inline, and
`scripts/bench --profile encoders` prints and records its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lzfs.testing import bench_encoders

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_every_frame_the_pipeline_writes_decodes_to_the_bytes_it_was_cut_from(tmp_path,
                                                                             workers):
    data = bench_encoders.llm_data(12 << 20)
    row = bench_encoders.run(data, workers, tmp_path, verify=True)
    assert row.workers == workers
    assert row.gib_per_s > 0 and row.workers_cpu_per_gib > 0
    # a third zero pages, a third text: well under the logical size, weights stored raw
    assert 0.3 < row.stored_ratio < 0.8


def test_verify_catches_a_frame_that_decodes_to_other_bytes(tmp_path):
    data = bench_encoders.llm_data(4 << 20)
    pack = tmp_path / "p.pack"
    fd = os.open(pack, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        places, _ = bench_encoders.encode_batch(memoryview(data), 0, fd, 0)
    finally:
        os.close(fd)
    frames = [(str(pack), foff + 4096, poff, n) for foff, poff, n in places]  # shifted
    with pytest.raises(AssertionError, match="decodes to other bytes"):
        bench_encoders._verify(data, frames)


def test_bench_encoders_profile_prints_the_table_and_writes_json(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lzfs.testing.bench", "--profile",
                          "encoders", "--size", "8M", "--workers", "0,2", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "request thread per GiB" in res.stdout
    results = json.loads((tmp_path / "bench-encoders.json").read_text())["results"]
    assert [r["workers"] for r in results] == [0, 2]
    bad = subprocess.run([sys.executable, "-m", "lzfs.testing.bench", "--profile",
                          "encoders", "--workers", "two"], capture_output=True, text=True,
                         cwd=ROOT)
    assert bad.returncode == 2 and "--workers takes counts" in bad.stderr
