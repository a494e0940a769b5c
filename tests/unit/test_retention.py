"""Which snapshots `lzfs prune` keeps: series, rules, incomplete dumps."""

from __future__ import annotations

import pytest

from lzfs.report.retention import Snapshot, parse_interval, plan, series_of

DAY = 86400.0


def snaps(*specs: tuple[str, float, bool]) -> list[Snapshot]:
    return [Snapshot(name, created, complete, 1000) for name, created, complete in specs]


def kept(decisions) -> set[str]:
    return {d.snapshot.name for d in decisions if d.keep}


@pytest.mark.parametrize(("name", "series"), [
    ("vllm-7b-0001", "vllm-7b"),
    ("vllm-7b-20261207T0412", "vllm-7b"),
    ("vllm-7b-2026-12-07T04:12:00", "vllm-7b"),
    ("server.3", "server"),
    ("llama3-001", "llama3"),   # a digit after a letter is part of the name
    ("llama2-001", "llama2"),
    ("GPT", "GPT"),
    ("ckpt1", "ckpt1"),          # no separator: a series of its own, never merged
    ("jobs/a-1", "jobs/a"),
    ("-1", "-1"),                # all suffix: the name itself
])
def test_a_series_is_the_name_less_its_separated_numeric_suffix(name, series):
    assert series_of(name, []) == series


def test_prefixes_choose_series_and_leave_other_names_alone():
    assert series_of("vllm-a-1", ["vllm-", "vllm-a-"]) == "vllm-a-"
    assert series_of("other-1", ["vllm-"]) is None
    d = plan(snaps(("vllm-a", 1, True), ("vllm-b", 2, True), ("other-1", 0, True)),
             keep_last=1, prefixes=["vllm-"])
    assert [x.snapshot.name for x in d] == ["vllm-b", "vllm-a"]
    assert kept(d) == {"vllm-b"}


def test_keep_last_counts_complete_snapshots_per_series():
    s = snaps(*((f"a-{i}", i * DAY, True) for i in range(5)),
              *((f"b-{i}", i * DAY, True) for i in range(2)))
    d = plan(s, keep_last=3)
    assert kept(d) == {"a-4", "a-3", "a-2", "b-1", "b-0"}
    assert {x.snapshot.name: x.why for x in d}["a-1"] == "older than the rules keep"


def test_keep_within_is_measured_from_the_series_newest_not_from_now():
    s = snaps(*((f"a-{i}", 1000 * DAY + i * DAY, True) for i in range(10)))
    assert kept(plan(s, keep_within=3 * DAY)) == {"a-9", "a-8", "a-7", "a-6"}
    both = plan(s, keep_last=5, keep_within=1 * DAY)
    assert kept(both) == {f"a-{i}" for i in range(5, 10)}  # either rule keeps


def test_incomplete_snapshots_go_once_a_complete_one_is_newer():
    s = snaps(("a-1", 1, True), ("a-2", 2, False), ("a-3", 3, True), ("a-4", 4, False))
    d = {x.snapshot.name: x for x in plan(s, keep_last=5)}
    assert not d["a-2"].keep and d["a-2"].why == "incomplete"
    assert d["a-4"].keep  # newer than every complete one: maybe being dumped now
    assert d["a-1"].keep and d["a-3"].keep


def test_the_newest_complete_snapshot_is_kept_whatever_the_rules():
    s = snaps(("a-1", 0, True), ("a-2", 100 * DAY, True), ("a-3", 200 * DAY, False))
    assert kept(plan(s, keep_within=1.0)) == {"a-2", "a-3"}
    with pytest.raises(ValueError):
        plan(s)


def test_ties_in_time_are_broken_by_name_so_a_plan_is_repeatable():
    s = snaps(("a-1", 5, True), ("a-2", 5, True), ("a-3", 5, True))
    assert kept(plan(s, keep_last=2)) == {"a-3", "a-2"}


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 7 * DAY), ("36h", 36 * 3600), ("2w", 14 * DAY), ("30m", 1800), ("1y", 365 * DAY),
    (" 1.5d ", 1.5 * DAY)])
def test_intervals(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["7", "d", "7 days", "-1d", "7D"])
def test_bad_intervals_are_refused(text):
    with pytest.raises(ValueError, match="not an interval"):
        parse_interval(text)
