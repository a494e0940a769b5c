"""Operation sequences the exerciser (lzfs/testing/exerciser.py) found failing, shrunk, and
fixed since: every CI run replays them through every layer and mode. Add what scripts/soak
finds here (its shrunk case is printed as JSON, and kept in bench-results/soak-failures.jsonl).
"""

from __future__ import annotations

from lzfs.testing.exerciser import Op

PINNED: dict[str, list[Op]] = {
    # issue 18, found by Hypothesis: a page of zeros over stored data, the file ending in a
    # partial page; the cut at the page's end glued the run before it back on
    "zero-page-over-partial-tail": [
        ("write", 0, 8193, "rand", 0), ("write", 4096, 4096, "zero", 0), ("read", 0, 9000)],
    # issue 18, the exerciser (seed 0): a rewrite inside the last run left the old run whole
    # under the new one; the truncate then cut only the new one
    "rewrite-then-truncate": [
        ("write", 172722, 127217, "text", 758825440), ("truncate", 287769),
        ("write", 277626, 100, "text", 236338458)],
    # issue 18, the exerciser (seed 1): mapped writes (page-aligned writebacks) inside the
    # last run, the second over the first's tail
    "mapped-writes-in-the-last-run": [
        ("mwrite", 262143, 259949, "text", 500545052),
        ("mwrite", 481929, 11267, "repeat", 214748959)],
    # fsx's report (issue 18): a mapped page inside the last run, a truncate down into it and
    # up again: the bytes past the cut must be zeros
    "mapped-write-truncate-down-up": [
        ("write", 0, 40961, "rand", 3), ("reopen",), ("mwrite", 16384, 4096, "rand", 4),
        ("truncate", 18000), ("truncate", 40961), ("read", 16000, 8000)],
}
