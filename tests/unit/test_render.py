"""Figures as people read them (issue 22): units that agree, plurals, long names cut with a
sign that they are, tables that fit the terminal and do not break a value in two."""

from __future__ import annotations

import io

from rich.console import Console

from lzfs.report.render import print_report, stats_text
from lzfs.units import human, plural, rate


def test_plurals_and_rates_in_the_units_sizes_are_in():
    assert [plural(n, "manifest") for n in (0, 1, 2)] == ["0 manifests", "1 manifest",
                                                          "2 manifests"]
    assert rate(200 * 1024 * 1024) == "200.0 MiB/s"
    text = stats_text({"files": 1, "directories": 1, "logical": 1, "zero": 0, "referenced": 1,
                       "unique": 1, "stored": 1, "pages": 1, "frames": 1, "garbage_frames": 0,
                       "pack_bytes": 1, "pace": {"disk_MBps": 209.7, "encode_MBps": 100.0,
                                                 "staging_pays": False}})
    assert "MiB/s" in text and "MB/s" not in text


def _report(width: int, data: dict) -> str:
    buf = io.StringIO()
    print_report(data, Console(file=buf, width=width, color_system=None))
    return buf.getvalue()


def test_a_long_region_name_is_cut_with_an_ellipsis():
    region = "/opt/models/" + "very-long-directory-name/" * 4 + "weights.safetensors"
    out = _report(160, {"by": "region", "errors": [], "snapshots": [{
        "snapshot": "s", "regions": [{"region": region, "logical": 4096, "zero": 0,
                                      "unique_raw": 4096, "shared_raw": 0,
                                      "shared_with": {}}]}]})
    assert "\u2026" in out and "weights.safetensors" in out
    assert "pages stored" not in out  # the column holds logical bytes, and says so


def test_the_store_summary_keeps_each_value_whole_on_a_narrow_terminal():
    tot = {"logical": 3 << 30, "zero": 1 << 30, "referenced": 2 << 30, "unique_raw": 1 << 30,
           "stored": 512 << 20, "pack_bytes": 520 << 20, "garbage_frames": 0,
           "dedup_ratio": 2.0, "compression_ratio": 2.0, "overall_ratio": 6.0}
    out = _report(80, {"by": "snapshot", "store": "/s", "groups": [], "totals": tot,
                       "matrix": {}})
    for value in (human(3 << 30), human(512 << 20), human(520 << 20)):
        assert value in out, out  # "3.0 GiB" never split over two lines
    assert max(len(line) for line in out.splitlines()) <= 80
