"""Which snapshots a retention policy keeps: what `lzfs prune` removes, as `borg prune` and
`restic forget` decide it.

Snapshots fall into series: by default a name without its numeric suffix (``vllm-7b-0012`` and
``vllm-7b-20261207T0412`` are of the series ``vllm-7b``; ``llama2-1`` and ``llama3-1`` are
not of one series, since a suffix starts at a separator), or the ``--prefix`` they start with.
Each series is pruned by itself, so a job that dumps rarely never loses its snapshots to one
that dumps often. In each series:

- ``keep_last`` keeps the N newest complete snapshots;
- ``keep_within`` keeps every complete snapshot written within that time of the series' newest
  one (not of now: a job that stopped dumping a month ago still has its last week);
- an incomplete snapshot (a dump that failed, or one still being written) is kept only while
  it is newer than every complete one of its series, as a dump in progress is;
- the newest complete snapshot is always kept, whatever the rules say.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from lzfs.report.dedup import snapshot_problems
from lzfs.store.snapshot import load_tree
from lzfs.store.store import Store

# a numeric suffix: runs of digits, each after a separator (dates, times, counters)
SUFFIX = re.compile(r"(?:[-_.:T]\d+)+$")


@dataclass
class Snapshot:
    name: str
    created: float  # seconds since the epoch
    complete: bool
    logical: int


@dataclass
class Decision:
    snapshot: Snapshot
    series: str
    keep: bool
    why: str

    def to_json(self) -> dict:
        s = self.snapshot
        return {"name": s.name, "series": self.series, "keep": self.keep, "why": self.why,
                "created": s.created, "complete": s.complete, "logical": s.logical}


def listing(store: Store, top_level_only: bool = False) -> list[Snapshot]:
    """Every snapshot directory of ``store`` (``top_level_only``: those directly under the
    root, the names a bucket publishes), with when it was written and whether it is whole."""
    tree = load_tree(store.ns)
    out = []
    for name in sorted(tree.snapshots):
        if name == "." or (top_level_only and "/" in name):
            continue  # the root cannot be removed; a bucket publishes top-level names
        top = tree.snapshots[name]
        logical = sum(tree.size.get(ino, 0) for _, ino in tree.children.get(top, []))
        out.append(Snapshot(name, tree.created(name),
                            not snapshot_problems(store, tree, name), logical))
    return out


def series_of(name: str, prefixes: list[str]) -> str | None:
    """The series ``name`` belongs to: the longest of ``prefixes`` it starts with (None:
    none, it is left alone), or without prefixes its name less its numeric suffix."""
    if prefixes:
        found = [p for p in prefixes if name.startswith(p)]
        return max(found, key=len) if found else None
    return SUFFIX.sub("", name) or name


def plan(snapshots: list[Snapshot], keep_last: int = 0, keep_within: float = 0.0,
         prefixes: list[str] | None = None) -> list[Decision]:
    """A decision for each snapshot of a series, newest first within each series; snapshots
    outside every prefix get none. ``keep_within`` is in seconds."""
    if keep_last <= 0 and keep_within <= 0:
        raise ValueError("a retention policy keeps something: give keep_last or keep_within")
    series: dict[str, list[Snapshot]] = defaultdict(list)
    for s in snapshots:
        name = series_of(s.name, prefixes or [])
        if name is not None:
            series[name].append(s)
    out = []
    for name in sorted(series):
        out += _decide(name, sorted(series[name], key=lambda s: (s.created, s.name),
                                    reverse=True), keep_last, keep_within)
    return out


def _decide(series: str, newest_first: list[Snapshot], keep_last: int, keep_within: float
            ) -> list[Decision]:
    complete = [s for s in newest_first if s.complete]
    newest = complete[0].created if complete else None
    out = []
    rank = 0  # of the complete ones, newest first
    for s in newest_first:
        if not s.complete:
            if newest is None or s.created > newest:
                out.append(Decision(s, series, True, "incomplete, newer than every complete "
                                                     "one (a dump in progress?)"))
            else:
                out.append(Decision(s, series, False, "incomplete"))
            continue
        rank += 1
        if rank == 1:
            out.append(Decision(s, series, True, "newest complete"))
        elif rank <= keep_last:
            out.append(Decision(s, series, True, f"last {keep_last}"))
        elif keep_within > 0 and newest is not None and newest - s.created <= keep_within:
            out.append(Decision(s, series, True, "within"))
        else:
            out.append(Decision(s, series, False, "older than the rules keep"))
    return out


def parse_interval(text: str) -> float:
    """Seconds in ``7d``, ``12h``, ``2w``, ``30m``, ``1y`` (365 days): borg's and restic's way
    of saying --keep-within."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy])\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not an interval such as 7d, 12h, 2w")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
    return float(m.group(1)) * unit[m.group(2)]
